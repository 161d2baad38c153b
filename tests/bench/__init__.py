"""Tests of arcbeat.bench."""
