"""arcbeat.deploy."""
