"""arcbeat.bench."""
