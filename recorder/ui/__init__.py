"""The web archive browser at /ui: server-rendered pages over the same core as the operator API."""
