"""The Faust application object, configured from :class:`Settings`.

Faust runs the worker process (signals, start-up and shut-down order), its web server and
its timers. It consumes and produces nothing itself: the heartbeat path is the batch loop
of :mod:`arcbeat.streams.kafka.batch` (faust's per-event path alone caps a worker at ~6,000
events/s on two cores, before any work).
"""

from __future__ import annotations

import socket
from pathlib import Path

import faust
from faust.app.base import BootStrategy

from arcbeat.streams.api.tls import api_scheme, server_context
from arcbeat.streams.settings import Settings


class _WebAndTimers(BootStrategy):
    enable_kafka_consumer = False
    enable_kafka_producer = False


def create_app(settings: Settings, *, worker_id: str = "0") -> faust.App:
    datadir = Path(settings.worker.data_dir) / f"worker-{worker_id}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    # bind where told; advertise a name other workers can reach (for key routing: the
    # advertised_host setting, e.g. a pod's name under a headless Service), with https
    # when the listener has a certificate (which must then name that host)
    host = settings.worker.advertised_host or (
        socket.gethostname()
        if settings.worker.web_host in ("0.0.0.0", "::")
        else settings.worker.web_host
    )
    url_host = f"[{host}]" if ":" in host else host
    app = faust.App(
        settings.kafka.app_id,
        broker=f"kafka://{settings.kafka.bootstrap}",
        store="memory://",
        web_host=host,
        web_bind=settings.worker.web_host,
        web_port=settings.worker.web_port,
        web_ssl_context=server_context(settings.worker),
        canonical_url=f"{api_scheme(settings.worker)}://{url_host}:{settings.worker.web_port}",
        web_in_thread=False,
        datadir=str(datadir),
    )
    app.boot_strategy = _WebAndTimers(app)
    return app
