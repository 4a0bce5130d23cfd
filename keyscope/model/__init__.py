"""Small shared vocabulary: keys, limits, consumer-assignor load."""
