"""transcribe-serve: the HTTP ingress, the application builder and its settings."""
