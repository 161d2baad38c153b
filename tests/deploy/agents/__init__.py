"""Tests of arcbeat.deploy.agents: the heartbeat agent and the simulated fleet."""
