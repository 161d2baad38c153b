"""The history exporter (``arcbeat history``): status, fleet and maintenance records from
Kafka to InfluxDB, losing nothing (docs/metrics-alerts-history.md, History in InfluxDB).

- :mod:`.exporter`: :class:`~.exporter.HistoryExporter`, the consumer of ``<prefix>.status``
  and ``<prefix>.fleet``, its delivery contract, back-pressure and ``/metrics``;
- :mod:`.maintenance`: the maintenance windows of ``<prefix>.maintenance``;
- :mod:`.writer`: the buffered entries, the ``arcbeat_history_*`` metrics and the writer that
  singles out a line InfluxDB refuses.

The exporter also runs the capacity report (:mod:`arcbeat.exporters.capacity.task`).
"""
