"""What-if replay (``arcbeat replay``): the heartbeats log read back (read-only, no consumer
group) and fed through the same decisions as the live worker, with other settings."""
