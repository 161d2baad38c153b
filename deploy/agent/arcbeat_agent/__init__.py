"""arcbeat-agent: the program on a machine that sends its heartbeats to arcbeat.

- :mod:`.contract`: the heartbeat contract's writing side (Resource IDs, the message body,
  signatures), kept equal in behaviour to the server's ``arcbeat.streams.decide.records`` and
  ``arcbeat.streams.decide.identity`` by the server's test suite;
- :mod:`.config`: the TOML configuration file and the secret files;
- :mod:`.platform_info`: operating system, host name and default paths (Linux and Windows);
- :mod:`.state`: the local status file that ``show`` prints;
- :mod:`.kafka`: the producer's connection options (TLS 1.2 or newer, SASL);
- :mod:`.daemon`: ``run``, the heartbeat loop;
- :mod:`.commands`: ``connect`` and ``disconnect``; :mod:`.check`: the connectivity self-test;
- :mod:`.service`: the systemd unit and the Windows service;
- :mod:`.cli`: the ``arcbeat-agent`` command and its exit codes.

Its only dependencies are aiokafka and orjson; it imports nothing of the arcbeat server.
"""

from importlib import metadata


def version() -> str:
    try:
        return metadata.version("arcbeat-agent")
    except metadata.PackageNotFoundError:  # run from a source tree
        return "0.0.0"
