"""The simulated machine side: what sends heartbeats to arcbeat in tests, demos and benchmarks.

The agent of a real machine is its own distribution, ``arcbeat-agent`` (folder
``deploy/agent``, import root ``arcbeat_agent``), so that a machine installs it without the
server.

- :mod:`.simulate`: a simulated fleet of agents with outage scenarios and a ground-truth log
  (``arcbeat simulate``), built from :mod:`.scenarios` (the fleet and its scenarios, as pure,
  seed-deterministic data) and writing :mod:`.groundtruth`;
- :mod:`.load`: heartbeats as fast as the producer goes, for load runs
  (``arcbeat simulate --load``);
- :mod:`.payloads`: the fleet's heartbeat bodies and its malformed messages;
- :mod:`.producer`: the Kafka producer of the simulated fleet and the topic check;
- :mod:`.running`: stopping on SIGINT/SIGTERM, progress lines.

"Agent" in arcbeat means the program on a machine that sends its heartbeats.

Why here: the repository's top-level folders are fixed, and each is one package
(``deploy/`` is ``arcbeat.deploy``, as ``streams/`` is ``arcbeat.streams``). The machine side
is a sub-package of ``deploy/``, the folder of what runs outside the stream processor (the
``arcbeat`` command, the local stack, and the simulated fleet), so its folder path still gives its
import name. A second mapping of this folder as ``arcbeat.agents`` would make the same files
importable under two names. The agents are self-contained all the same: they use only the
heartbeat contract and the settings of :mod:`arcbeat.streams` (records, identity, settings,
Kafka client options, the partitioner) and nothing else of ``arcbeat.deploy``
(tests/test_layering.py checks it), and the stream processor never imports them.
"""
