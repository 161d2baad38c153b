"""Tests of arcbeat.dashboards."""
