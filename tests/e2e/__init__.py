"""Whole-pipeline tests: real workers, simulator, exporters and services of the local stack."""
