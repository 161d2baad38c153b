"""The image's health check (arcbeat.deploy.healthcheck): which command runs, what it probes,
and its answer against a small local HTTP server. Pure and fast: no container, no stack."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arcbeat.deploy import healthcheck
from arcbeat.deploy.healthcheck import Running, find_running, parse_command_line, probe_url
from arcbeat.deploy.settings import Settings


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/opt/arcbeat/bin/python3", "/opt/arcbeat/bin/arcbeat", "worker"], Running("worker")),
        (["/opt/arcbeat/bin/arcbeat", "worker", "--id", "2"], Running("worker", 2)),
        (["arcbeat", "worker", "--loglevel", "info", "--id=3"], Running("worker", 3)),
        (["python", "-m", "arcbeat.deploy.cli", "history"], Running("history")),
        (["arcbeat", "simulate", "-n", "10"], Running("simulate")),
        (["python", "-m", "arcbeat.deploy.healthcheck"], None),
        (["arcbeat"], None),
        (["/usr/bin/catatonit", "--"], None),
        (["arcbeat", "worker", "--id", "x"], Running("worker", 0)),
    ],
)
def test_parse_command_line(argv: list[str], expected: Running | None) -> None:
    assert parse_command_line(argv) == expected


@given(st.lists(st.text(max_size=12), max_size=8))
def test_parse_command_line_takes_any_argv(argv: list[str]) -> None:
    found = parse_command_line(argv)
    assert found is None or found.command in argv


def _proc(root: Path, pid: int, argv: list[str]) -> None:
    (root / str(pid)).mkdir()
    (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def test_find_running_takes_the_lowest_arcbeat_process(tmp_path: Path) -> None:
    _proc(tmp_path, 1, ["/usr/bin/catatonit", "--", "arcbeat"])  # an init: passed over
    _proc(tmp_path, 12, ["python", "-m", "arcbeat.deploy.healthcheck"])
    _proc(tmp_path, 7, ["/opt/arcbeat/bin/python", "/opt/arcbeat/bin/arcbeat", "worker", "--id=1"])
    (tmp_path / "self").mkdir()
    assert find_running(tmp_path) == Running("worker", 1)
    assert find_running(tmp_path / "self") is None


def test_probe_urls() -> None:
    s = Settings.load(env={"ARCBEAT_WEB_HOST": "0.0.0.0", "ARCBEAT_WEB_PORT": "7000"}, toml_path="")
    assert probe_url(Running("worker", 1), s) == "http://127.0.0.1:7001/readyz"
    assert probe_url(Running("history"), s) == "http://127.0.0.1:6070/healthz"
    assert probe_url(Running("simulate"), s) is None
    assert probe_url(Running("topics"), s) is None
    tls = s.replace(api_tls_cert="/run/secrets/api.crt", api_tls_key="/run/secrets/api.key")
    assert probe_url(Running("worker"), tls) == "https://127.0.0.1:7000/readyz"


class _Server:
    """A local HTTP server answering every GET with ``status``; it keeps the requests' headers."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.headers.append(dict(self.headers))
                body = b'{"status": "not ready", "reason": "recovering"}'
                self.send_response(owner.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[_Server]:
    srv = _Server()
    for var in ("ARCBEAT_API_TOKEN", "ARCBEAT_API_TOKEN_FILE", "ARCBEAT_API_PROTECT_PROBES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ARCBEAT_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("ARCBEAT_WEB_HOST", "127.0.0.1")
    monkeypatch.setenv("ARCBEAT_WEB_PORT", str(srv.port - 1))  # worker --id 1
    monkeypatch.setenv("ARCBEAT_HISTORY_PORT", str(srv.port))
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def test_healthy_worker_and_history(server: _Server, capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main(["worker", "--id", "1"]) == 0
    assert healthcheck.main(["history"]) == 0
    assert "200" in capsys.readouterr().out
    assert all("Authorization" not in h for h in server.headers)


def test_unready_worker_is_unhealthy_and_says_why(
    server: _Server, capsys: pytest.CaptureFixture[str]
) -> None:
    server.status = 503
    assert healthcheck.main(["worker", "--id", "1"]) == 1
    out = capsys.readouterr().out
    assert "answered 503" in out and "recovering" in out


def test_unreachable_worker_is_unhealthy(
    server: _Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert healthcheck.main(["worker"]) == 1  # --id 0: nothing listens on that port
    assert "healthcheck: arcbeat worker:" in capsys.readouterr().out


def test_protected_probes_send_the_token(
    server: _Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ARCBEAT_API_PROTECT_PROBES", "true")
    monkeypatch.setenv("ARCBEAT_API_TOKENS_FILE", str(tmp_path / "tokens.toml"))  # the worker's
    (tmp_path / "token").write_text("s3cret\n")
    monkeypatch.setenv("ARCBEAT_API_TOKEN_FILE", str(tmp_path / "token"))
    assert healthcheck.main(["worker", "--id", "1"]) == 0
    assert server.headers[-1]["Authorization"] == "Bearer s3cret"


def test_other_commands_are_healthy_while_they_run(server: _Server) -> None:
    assert healthcheck.main(["simulate"]) == 0


def test_bad_settings_are_unhealthy_with_the_setting_named(
    server: _Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ARCBEAT_WEB_PORT", "not-a-port")
    assert healthcheck.main(["worker"]) == 1
    assert "ARCBEAT_WEB_PORT" in capsys.readouterr().out
