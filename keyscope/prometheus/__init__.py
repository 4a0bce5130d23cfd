"""What the deployed Prometheus rules compute, and the rules keyscope ships."""
