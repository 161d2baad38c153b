"""What the tests share, by role.

- :mod:`~tests.support.paths`: where the repository is.
- :mod:`~tests.support.progress`: progress lines of the long tests (``pytest -s``).
- :mod:`~tests.support.waiting`: polling until something holds, failing with what was seen.
- :mod:`~tests.support.net`: free loopback ports and small HTTP clients.
- :mod:`~tests.support.kafka`: reading a topic back and deleting a run's topics.
- :mod:`~tests.support.processes`: a subprocess in its own session with its log.
- :mod:`~tests.support.deployment`: an isolated arcbeat deployment on the shared broker, with
  its ``arcbeat worker`` and ``arcbeat simulate`` subprocesses.
- :mod:`~tests.support.observed`: what the workers emitted (status transitions, scope events,
  ticks) and figures measured from it.
- :mod:`~tests.support.groundtruth`: the simulator's log of what it did, read for the tests.
- :mod:`~tests.support.oracle`: the transitions docs/how-it-decides.md requires, computed
  independently of the engine, and the comparison with what the workers emitted.
- :mod:`~tests.support.prometheus`, :mod:`~tests.support.alertmanager`,
  :mod:`~tests.support.influx`: clients of the local stack's services.
- :mod:`~tests.support.dashboards`: checks of the answers to the dashboards' queries.
- :mod:`~tests.support.observability`: one whole pipeline run with Prometheus, Alertmanager,
  InfluxDB and the dashboards, for tests/e2e/test_observability_e2e.py.
- :mod:`~tests.support.webhook`: an Alertmanager webhook receiver.
"""
