"""arcbeat.streams: heartbeat contract, status machine and the Faust stream processor.

Nothing here imports arcbeat.exporters, arcbeat.dashboards or arcbeat.deploy.
"""
