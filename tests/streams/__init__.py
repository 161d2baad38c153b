"""Tests of arcbeat.streams."""
