"""arcbeat.streams: the stream processor. ``decide/`` holds the heartbeat contract and every
decision (pure), ``kafka/`` the batched heartbeat loop and its shared state, ``api/`` the
worker's HTTP API, ``replay/`` the what-if replay; a Faust app (``app.py``) hosts a worker.

Nothing here imports arcbeat.exporters, arcbeat.dashboards or arcbeat.deploy.
"""
