"""The decisions: the heartbeat contract, the status machine, deadlines, maintenance windows
and the engine that applies them to a partition's records. Pure: no Kafka, no HTTP, no clock
of its own (times come in with the records); tests/test_layering.py keeps it so."""
