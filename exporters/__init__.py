"""arcbeat.exporters."""
