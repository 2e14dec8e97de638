"""Callback providers: each turns a request body into verified, typed events."""
