"""Files from elsewhere (kcat JSON, CSV, JSON lines) read into a Sample."""
