"""Tests of arcbeat.deploy."""
