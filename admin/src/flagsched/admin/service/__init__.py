"""The operator actions, one home each, called by the HTTP API and by the CLI alike."""
