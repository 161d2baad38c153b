"""Tests of arcbeat.exporters."""
