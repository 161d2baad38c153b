"""Capacity planning: use, limits, headroom and a days-to-limit forecast
(docs/metrics-alerts-history.md, Capacity planning).

The model is pure: the input is an iterable of :class:`~.model.MachineSummary` (or the workers'
merged :class:`~arcbeat.streams.decide.fleet_summary.FleetSummary`) plus
:class:`~.model.CapacityLimits`; the output is a :class:`~.model.CapacityReport`. The same
report feeds ``arcbeat capacity`` (table or JSON), the ``arcbeat_capacity_*`` Prometheus
metrics and the InfluxDB ``capacity`` history. By role:

- :mod:`.model`: the checks and their limits, the report and what it is computed from;
- :mod:`.os_rules`: which operating systems count as supported;
- :mod:`.forecast`: days to the limit from the growth history, and that history;
- :mod:`.report`: counting the fleet into a report (:func:`~.report.build_report`,
  :func:`~.report.build_report_from_summary`);
- :mod:`.to_json`, :mod:`.to_text`: the ``arcbeat capacity --json`` document and the text table;
- :mod:`.collector`: the ``arcbeat_capacity_*`` gauges, read at scrape time;
- :mod:`.task`: the history exporter's periodic report (the only part that does I/O).
"""
