"""Recording and VOD callback processor."""
