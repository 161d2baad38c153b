"""A small Alertmanager webhook receiver for tests: records every notification POSTed to it.

Alertmanager's webhook_configs post one JSON document per notification (one per alert group
and flush): ``{"receiver", "status", "alerts": [...], "groupLabels", "commonLabels",
"commonAnnotations", "externalURL", "groupKey", "truncatedAlerts", "version"}``.

deploy/alertmanager/alertmanager.yml sends every receiver to http://127.0.0.1:9095/alerts,
the default here. The server runs in a daemon thread, so it works from plain and from asyncio
tests::

    with WebhookReceiver() as hook:                 # 127.0.0.1:9095, path /alerts
        ...                                         # make Alertmanager notify
        hook.wait_for(lambda ns: len(ns) >= 2, timeout=30)
        await hook.wait_for_async(lambda ns: any(n["receiver"] == "pager" for n in ns))

``WebhookReceiver(port=0)`` takes a free port (``hook.url`` tells which). Run it by hand with
``python tests/support/webhook.py [port]`` to watch notifications of the local stack.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Notification = dict[str, Any]
Predicate = Callable[[list[Notification]], bool]

DEFAULT_PORT = 9095
DEFAULT_PATH = "/alerts"


class WebhookReceiver:
    """Records Alertmanager webhook notifications posted to ``http://host:port/path``."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, path: str = DEFAULT_PATH):
        self.host = host
        self.path = path
        self._port = port
        self._notifications: list[Notification] = []
        self._errors: list[str] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> WebhookReceiver:
        if self._server is not None:
            return self
        try:
            server = ThreadingHTTPServer((self.host, self._port), self._handler_class())
        except OSError as exc:
            raise RuntimeError(
                f"webhook receiver: cannot listen on {self.host}:{self._port} ({exc}); "
                "stop whatever holds the port or pass port=0 for a free one"
            ) from exc
        server.daemon_threads = True
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"webhook-{self._port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what was received -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}{self.path}"

    @property
    def notifications(self) -> list[Notification]:
        """A copy of the notifications received so far, oldest first."""
        with self._cond:
            return list(self._notifications)

    @property
    def errors(self) -> list[str]:
        """Requests that were not a JSON notification on ``path`` (answered 400/404)."""
        with self._cond:
            return list(self._errors)

    def clear(self) -> None:
        with self._cond:
            self._notifications.clear()
            self._errors.clear()

    def wait_for(self, predicate: Predicate, timeout: float = 30.0) -> list[Notification]:
        """Block until ``predicate(notifications)`` holds; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self._notifications):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"webhook {self.url}: condition not met within {timeout:g}s; "
                        f"received {len(self._notifications)} notification(s): "
                        + summarize(self._notifications)
                    )
                self._cond.wait(left)
            return list(self._notifications)

    async def wait_for_async(
        self, predicate: Predicate, timeout: float = 30.0
    ) -> list[Notification]:
        """Like :meth:`wait_for` without blocking the event loop."""
        return await asyncio.to_thread(self.wait_for, predicate, timeout)

    # -- HTTP --------------------------------------------------------------------------------

    def _record(self, body: bytes) -> str | None:
        try:
            doc = json.loads(body)
        except ValueError as exc:
            return f"body is not JSON ({exc})"
        if not isinstance(doc, dict) or not isinstance(doc.get("alerts"), list):
            return 'body is not an Alertmanager notification (no "alerts" list)'
        doc["_receivedAt"] = time.time()
        with self._cond:
            self._notifications.append(doc)
            self._cond.notify_all()
        return None

    def _reject(self, why: str) -> None:
        with self._cond:
            self._errors.append(why)
            self._cond.notify_all()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path.split("?", 1)[0] != receiver.path:
                    receiver._reject(f"POST {self.path}: unknown path")
                    self._answer(404, b"unknown path\n")
                    return
                why = receiver._record(body)
                if why is not None:
                    receiver._reject(f"POST {self.path}: {why}")
                    self._answer(400, why.encode() + b"\n")
                    return
                self._answer(200, b"ok\n")

            def do_GET(self) -> None:
                self._answer(200, b"arcbeat test webhook: POST notifications here\n")

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean; everything is recorded instead

        return Handler


# -- helpers for assertions -------------------------------------------------------------------


def alert_label_values(notification: Notification, label: str) -> list[str]:
    """The values of one label over the alerts of a notification, sorted."""
    return sorted(str(a.get("labels", {}).get(label, "")) for a in notification["alerts"])


def with_alertname(notifications: list[Notification], alertname: str) -> list[Notification]:
    """The notifications whose group is about ``alertname``."""
    return [n for n in notifications if n.get("commonLabels", {}).get("alertname") == alertname]


def summarize(notifications: list[Notification]) -> str:
    """One line per notification, for assertion messages."""
    if not notifications:
        return "(none)"
    lines = []
    for n in notifications:
        names = sorted({str(a.get("labels", {}).get("alertname")) for a in n["alerts"]})
        lines.append(
            f"[{n.get('receiver')} {n.get('status')} group={n.get('groupLabels')} "
            f"alerts={len(n['alerts'])} {','.join(names)}]"
        )
    return " ".join(lines)


def main(argv: list[str]) -> int:
    port = int(argv[1]) if len(argv) > 1 else DEFAULT_PORT
    with WebhookReceiver(port=port) as hook:
        print(f"listening on {hook.url}; Ctrl-C stops", flush=True)
        seen = 0

        def more(notifications: list[Notification]) -> bool:
            return len(notifications) > seen

        try:
            while True:
                try:
                    got = hook.wait_for(more, timeout=60)
                except AssertionError:
                    continue  # nothing new this minute
                for n in got[seen:]:
                    print(summarize([n]), flush=True)
                seen = len(got)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
