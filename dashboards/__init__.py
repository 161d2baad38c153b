"""arcbeat.dashboards."""
