"""The Kafka runtime: the batched heartbeat loop, ticks, checkpoints, the shared scope and
maintenance state (compacted topics), membership and the client options. It feeds records to
:mod:`arcbeat.streams.decide` and writes what the decisions emit."""
