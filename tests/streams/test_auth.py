"""Bearer tokens and roles of the worker HTTP API (arcbeat.streams.api.auth), its TLS, and the
caller's identity carried on worker-to-worker calls.

Pure parts first (token file, comparison, role checks), then real aiohttp servers on
loopback ports: a minimal app behind the same middleware, and real workers' WorkerAPI on
faust's own web driver (no Kafka needed: the API is served before the heartbeat loop runs).
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
import secrets
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from arcbeat.deploy.worker import Worker
from arcbeat.streams.api.auth import (
    ANONYMOUS,
    MAINTENANCE,
    NOBODY,
    READ,
    Authenticator,
    AuthError,
    Principal,
    TokenFile,
    TokenFileError,
    audit,
    install,
    is_loopback,
    parse_tokens,
    principal_of,
    require,
)
from arcbeat.streams.api.tls import client_context, server_context
from arcbeat.streams.app import create_app
from arcbeat.streams.kafka.pipeline import Pipeline
from arcbeat.streams.settings import Settings, SettingsError

READ_TOKEN = secrets.token_hex(32)
MAINT_TOKEN = secrets.token_urlsafe(32)
OTHER_TOKEN = secrets.token_hex(32)  # listed nowhere
TOKENS = f"""\
# who may call the worker API
read grafana {READ_TOKEN}

maintenance alice {MAINT_TOKEN}   # on-call lead
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.txt"
    path.write_text(TOKENS)
    return path


# ---- the tokens file ------------------------------------------------------------------------


def test_parse_tokens_roles_comments_and_blank_lines() -> None:
    table = parse_tokens(TOKENS, "tokens.txt")
    assert len(table) == 2
    grafana = table.lookup(READ_TOKEN)
    alice = table.lookup(MAINT_TOKEN)
    assert grafana == Principal("grafana", frozenset({READ}))
    assert alice is not None and alice.name == "alice"
    assert alice.has(MAINTENANCE) and alice.has(READ)  # maintenance implies read
    assert not grafana.has(MAINTENANCE)
    assert table.lookup(OTHER_TOKEN) is None
    assert table.lookup(READ_TOKEN[:-1]) is None
    assert table.lookup("") is None


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f"read grafana {READ_TOKEN} extra", "expected `<role> <name> <token>`"),
        (f"grafana {READ_TOKEN}", "found 2 field(s)"),
        (f"admin root {READ_TOKEN}", "unknown role 'admin'; use one of read, maintenance"),
        (f"read graf/ana {READ_TOKEN}", "name 'graf/ana'"),
        ("read grafana 0123456789abcdef0123456789abcde", "31 characters, at least 32"),
        (f"read grafana {READ_TOKEN[:20]}\u00e9{READ_TOKEN[20:]}", "cannot carry"),
        (f"maintenance bob {READ_TOKEN}", "also on line 2"),
    ],
    # ids without the random tokens: the same on every run and in every xdist worker
    ids=["extra-field", "two-fields", "unknown-role", "bad-name", "short-token", "non-ascii",
         "token-twice"],
)
def test_token_file_errors_name_file_and_line_never_the_token(line: str, why: str) -> None:
    text = f"# header\nread grafana {READ_TOKEN}\n{line}\n"
    with pytest.raises(TokenFileError) as err:
        parse_tokens(text, "/etc/arcbeat/tokens")
    message = str(err.value)
    assert message.startswith("/etc/arcbeat/tokens:3: "), message
    assert why in message
    assert READ_TOKEN[:16] not in message and READ_TOKEN[-16:] not in message


def test_a_file_without_tokens_or_unreadable_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match=r"t\.txt: no tokens"):
        parse_tokens("# nothing yet\n\n", "t.txt")
    missing = tmp_path / "absent.txt"
    with pytest.raises(TokenFileError, match=r"ARCBEAT_API_TOKENS_FILE.*absent\.txt"):
        TokenFile(missing)


def test_lookup_compares_every_token_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    table = parse_tokens(
        f"maintenance alice {MAINT_TOKEN}\n"
        + "".join(f"read r{i} {secrets.token_hex(32)}\n" for i in range(4)),
        "t",
    )
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for token in (MAINT_TOKEN, OTHER_TOKEN, "short"):
        compared.clear()
        table.lookup(token)
        # no early exit: a match, a miss and a short token cost the same 5 comparisons of
        # fixed-size digests (neither which entry matched nor the token's length shows)
        assert compared == [(32, 32)] * 5


# ---- checks ---------------------------------------------------------------------------------


def test_check_answers_401_403_or_the_principal(tokens_file: Path) -> None:
    a = Authenticator(TokenFile(tokens_file))
    for header, error in [
        (None, ""),
        ("", ""),
        (f"Basic {READ_TOKEN}", "invalid_request"),
        ("Bearer", "invalid_request"),
        (f"Bearer {READ_TOKEN} {READ_TOKEN}", "invalid_request"),
        (f"Bearer {OTHER_TOKEN}", "invalid_token"),
    ]:
        with pytest.raises(AuthError) as err:
            a.check(header, READ)
        assert (err.value.status, err.value.error) == (401, error), header
    with pytest.raises(AuthError) as err:
        a.check(f"Bearer {READ_TOKEN}", MAINTENANCE, "POST /maintenance")
    assert err.value.status == 403
    assert "grafana holds role(s) read; POST /maintenance needs role maintenance" in str(err.value)
    assert a.check(f"bearer {READ_TOKEN}", READ).name == "grafana"
    assert a.check(f"Bearer  {MAINT_TOKEN} ", MAINTENANCE).name == "alice"
    assert a.check(None, None) == NOBODY  # an open route
    assert Authenticator(None).check(None, MAINTENANCE) == ANONYMOUS  # authentication off


def test_require_knows_only_the_roles() -> None:
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        require("admin")


def test_tokens_file_is_reread_when_it_changes(
    tokens_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    tokens = TokenFile(tokens_file, clock=lambda: now[0])
    rotated = secrets.token_hex(32)
    tokens_file.write_text(f"read grafana {rotated}\n# a longer file than before\n")
    assert tokens.current().lookup(READ_TOKEN) is not None  # looked at once a second at most
    now[0] += 1.0
    assert tokens.current().lookup(READ_TOKEN) is None
    assert tokens.current().lookup(rotated) is not None
    # a broken edit is logged (file and line, no token) and the tokens in force stay
    tokens_file.write_text(f"read grafana {rotated}\nread x short\n")
    now[0] += 1.0
    with caplog.at_level(logging.ERROR, "arcbeat.auth"):
        assert tokens.current().lookup(rotated) is not None
    assert f"{tokens_file}:2: the token of x has 5 characters" in caplog.text
    assert rotated not in caplog.text
    tokens_file.write_text(f"maintenance grafana {rotated}\n")
    now[0] += 1.0
    principal = tokens.current().lookup(rotated)
    assert principal is not None and principal.has(MAINTENANCE)


def test_an_open_api_is_refused_on_a_routable_address(caplog: pytest.LogCaptureFixture) -> None:
    assert Authenticator.from_settings(Settings().worker).tokens is None  # 127.0.0.1
    with pytest.raises(SettingsError) as err:
        Authenticator.from_settings(Settings().replace(web_host="0.0.0.0").worker)
    assert "ARCBEAT_API_TOKENS_FILE" in str(err.value)
    assert "api_insecure = true" in str(err.value)
    with caplog.at_level(logging.WARNING, "arcbeat.auth"):
        a = Authenticator.from_settings(
            Settings().replace(web_host="0.0.0.0", api_insecure=True).worker
        )
    assert a.tokens is None
    assert "has no authentication (api_insecure)" in caplog.text
    assert [is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost")] == [
        True
    ] * 5
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "", "10.0.0.5", "worker-1")] == [False] * 5


def test_api_settings_load_and_validate(tokens_file: Path) -> None:
    env = {
        "ARCBEAT_API_TOKENS_FILE": str(tokens_file),
        "ARCBEAT_API_PROTECT_PROBES": "true",
        "ARCBEAT_API_TLS_CERT": "/c.pem",
        "ARCBEAT_API_TLS_KEY": "/k.pem",
        "ARCBEAT_API_TLS_CA": "/ca.pem",
    }
    s = Settings.load(env=env, toml_path="/nonexistent.toml")
    assert (s.worker.api_tokens_file, s.worker.api_protect_probes, s.worker.api_insecure) == (
        str(tokens_file),
        True,
        False,
    )
    with pytest.raises(SettingsError, match=r"api_tls_key \(ARCBEAT_API_TLS_KEY\)"):
        Settings().replace(api_tls_cert="/c.pem").validate()
    with pytest.raises(SettingsError, match=r"api_protect_probes .*needs api_tokens_file"):
        Settings().replace(api_protect_probes=True).validate()
    with pytest.raises(SettingsError, match=r"api_tls_cert/api_tls_key .*/c\.pem"):
        server_context(s.worker)
    with pytest.raises(SettingsError, match=r"api_tls_ca .*/ca\.pem"):
        client_context(s.worker)


def test_audit_writes_one_line_per_change(caplog: pytest.LogCaptureFixture) -> None:
    alice = Principal("alice", frozenset({READ, MAINTENANCE}))
    with caplog.at_level(logging.INFO, "arcbeat.audit"):
        audit(alice, "maintenance.create", {"id": "mw-1", "reason": "patching\nrack 4"})
    (record,) = caplog.records
    assert record.name == "arcbeat.audit" and record.levelno == logging.WARNING
    line = record.getMessage()
    assert "\n" not in line
    assert line == (
        "audit who=alice action=maintenance.create "
        'what={"id": "mw-1", "reason": "patching\\nrack 4"}'
    )


# ---- a real server: the middleware in front of a stub write route --------------------------


@asynccontextmanager
async def serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def stub_app(authenticator: Authenticator) -> tuple[web.Application, list[dict[str, Any]]]:
    stored: list[dict[str, Any]] = []

    @require(READ)
    async def list_windows(request: web.Request) -> web.Response:
        return web.json_response({"items": stored, "caller": principal_of(request).name})

    @require(MAINTENANCE)
    async def create_window(request: web.Request) -> web.Response:
        body = await request.json()
        stored.append(body)
        audit(principal_of(request), "maintenance.create", body)
        return web.json_response(body, status=201)

    async def delete_window(request: web.Request) -> web.Response:  # declares nothing
        stored.clear()
        return web.json_response({}, status=200)

    async def probe(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    class Export:  # a handler that is a method, as WorkerAPI's are
        @require(MAINTENANCE)
        async def get(self, request: web.Request) -> web.Response:
            return web.json_response(stored)

    app = web.Application()
    install(app, authenticator)
    app.router.add_get("/maintenance", list_windows)
    app.router.add_post("/maintenance", create_window)
    app.router.add_delete("/maintenance/{id}", delete_window)
    app.router.add_get("/maintenance-export", Export().get)
    for path in ("/healthz", "/readyz", "/metrics"):
        app.router.add_get(path, probe)
    return app, stored


async def test_roles_on_a_real_server(tokens_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    app, stored = stub_app(Authenticator(TokenFile(tokens_file)))
    window = {"scope": "location:westus2", "minutes": 30}
    async with serve(app) as base, aiohttp.ClientSession() as http:
        async with http.post(f"{base}/maintenance", json=window) as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"] == 'Bearer realm="arcbeat"'
            assert "Authorization: Bearer <token>" in (await r.json())["error"]
        async with http.post(f"{base}/maintenance", json=window, headers=bearer(OTHER_TOKEN)) as r:
            assert r.status == 401
            assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
            assert "unknown or revoked token" in (await r.json())["error"]
        async with http.post(f"{base}/maintenance", json=window, headers=bearer(READ_TOKEN)) as r:
            assert r.status == 403
            assert "POST /maintenance needs role maintenance" in (await r.json())["error"]
        assert stored == []  # refused before the handler ran
        with caplog.at_level(logging.INFO, "arcbeat.audit"):
            async with http.post(
                f"{base}/maintenance", json=window, headers=bearer(MAINT_TOKEN)
            ) as r:
                assert r.status == 201
        assert stored == [window]
        assert [r.getMessage() for r in caplog.records if r.name == "arcbeat.audit"] == [
            'audit who=alice action=maintenance.create what={"minutes": 30, '
            '"scope": "location:westus2"}'
        ]
        async with http.get(f"{base}/maintenance", headers=bearer(READ_TOKEN)) as r:
            assert r.status == 200
            assert (await r.json())["caller"] == "grafana"
        async with http.get(f"{base}/maintenance-export", headers=bearer(READ_TOKEN)) as r:
            assert r.status == 403  # the role a method declares holds for GET too
        async with http.get(f"{base}/maintenance-export", headers=bearer(MAINT_TOKEN)) as r:
            assert r.status == 200
        # a write route that declares no role needs maintenance
        async with http.delete(f"{base}/maintenance/1", headers=bearer(READ_TOKEN)) as r:
            assert r.status == 403
        assert stored == [window]
        async with http.delete(f"{base}/maintenance/1", headers=bearer(MAINT_TOKEN)) as r:
            assert r.status == 200
        # an unknown path tells an anonymous caller nothing
        async with http.get(f"{base}/nothing-here") as r:
            assert r.status == 401
        async with http.get(f"{base}/nothing-here", headers=bearer(READ_TOKEN)) as r:
            assert r.status == 404
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(base + path) as r:
                assert r.status == 200, path  # probes stay open by default
    assert READ_TOKEN not in caplog.text and MAINT_TOKEN not in caplog.text


async def test_probes_behind_read_with_the_setting(tokens_file: Path) -> None:
    app, _ = stub_app(Authenticator(TokenFile(tokens_file), protect_probes=True))
    async with serve(app) as base, aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(base + path) as r:
                assert r.status == 401, path
            async with http.get(base + path, headers=bearer(READ_TOKEN)) as r:
                assert r.status == 200, path


# ---- TLS ------------------------------------------------------------------------------------


def self_signed(folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Settings:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arcbeat worker test")])
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "api.crt", folder / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Settings().replace(
        api_tls_cert=str(cert_path), api_tls_key=str(key_path), api_tls_ca=str(cert_path)
    )


async def test_tls_round_trip(tmp_path: Path, tokens_file: Path) -> None:
    settings = self_signed(tmp_path)
    app, _ = stub_app(Authenticator(TokenFile(tokens_file)))
    async with serve(app, server_context(settings.worker)) as base:
        assert base.startswith("https://")
        trusted = aiohttp.TCPConnector(ssl=client_context(settings.worker))
        async with (
            aiohttp.ClientSession(connector=trusted) as http,
            http.get(f"{base}/maintenance", headers=bearer(READ_TOKEN)) as r,
        ):
            assert r.status == 200
        # the peer is verified: the system's CAs do not know this certificate
        system = aiohttp.TCPConnector(ssl=client_context(Settings().worker))
        async with aiohttp.ClientSession(connector=system) as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"{base}/healthz")
        # and nothing is served in clear text
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                await http.get(base.replace("https://", "http://") + "/healthz")


def test_the_faust_app_serves_and_advertises_https(tmp_path: Path) -> None:
    settings = self_signed(tmp_path).replace(data_dir=str(tmp_path / "w"), web_port=7123)
    app = create_app(settings)
    ctx = app.conf.web_ssl_context
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert str(app.conf.canonical_url) == "https://127.0.0.1:7123"
    plain = create_app(Settings().replace(data_dir=str(tmp_path / "p"), web_port=7124))
    assert plain.conf.web_ssl_context is None
    assert str(plain.conf.canonical_url) == "http://127.0.0.1:7124"


# ---- real workers: WorkerAPI on faust's web driver, routed calls ---------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def worker(settings: Settings, tmp_path: Path, name: str) -> AsyncIterator[Pipeline]:
    s = settings.replace(web_port=free_port(), data_dir=str(tmp_path / name))
    pipe = Worker.build(s).pipeline
    web_driver: Any = pipe.app.web
    await web_driver.start_server()  # the listener faust starts, TLS included
    try:
        yield pipe
    finally:
        await web_driver.stop_server()


def own(pipe: Pipeline, partition: int, url: str) -> None:
    """Make the scope board say that ``url`` owns ``partition`` (as a rebalance would)."""
    pipe.board.committed[f"o|{partition}"] = url.encode()


async def test_worker_api_routes_need_read_and_routed_calls_carry_the_token(
    tmp_path: Path, tokens_file: Path
) -> None:
    settings = self_signed(tmp_path).replace(api_tokens_file=str(tokens_file))
    rid = "/subscriptions/s1/resourceGroups/rg1/providers/Microsoft.HybridCompute/machines/m1"
    async with (
        worker(settings, tmp_path, "a") as a,
        worker(settings, tmp_path, "b") as b,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context(settings.worker))
        ) as http,
    ):
        assert a.url().startswith("https://127.0.0.1:")
        for path in ("/machines", "/fleet", "/capacity", "/machines" + rid):
            async with http.get(a.url() + path) as r:
                assert r.status == 401, path
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(a.url() + path) as r:
                assert r.status in (200, 503), path  # open; /readyz: 503 until partitions
        # worker b owns the machine's partition: a routes the query there, with the caller's
        # token, and b (which checks it too) answers for itself
        own(a, a.partition_of(rid.lower()), b.url())
        async with http.get(a.url() + "/machines" + rid, headers=bearer(READ_TOKEN)) as r:
            assert r.status == 404
            assert (await r.json())["error"] == f"no machine {rid} on this worker"
        async with http.get(a.url() + "/fleet", headers=bearer(READ_TOKEN)) as r:
            assert r.status == 200
            assert (await r.json())["workers"] == 2  # b answered its part of the fan-out
        async with http.get(a.url() + "/fleet", headers=bearer(OTHER_TOKEN)) as r:
            assert r.status == 401


async def test_forwarded_authorization_reaches_the_other_server(tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        assert request.query["local"] == "1"
        if request.path == "/fleet":
            return web.json_response({"partitions": [1], "byStatus": {}, "byLocation": {}})
        return web.json_response({"error": "not here"}, status=404)

    other = web.Application()
    other.router.add_get("/fleet", record)
    other.router.add_get("/machines/{rid:.+}", record)
    async with serve(other) as other_url, worker(Settings(), tmp_path, "a") as a:
        own(a, 1, other_url)
        own(a, a.partition_of("/m/x"), other_url)
        header = f"Bearer {READ_TOKEN}"
        async with aiohttp.ClientSession(headers={"Authorization": header}) as http:
            async with http.get(a.url() + "/fleet") as r:
                assert r.status == 200
            async with http.get(a.url() + "/machines/m/x") as r:
                assert r.status == 404
        async with aiohttp.ClientSession() as http, http.get(a.url() + "/fleet") as r:
            assert r.status == 200  # authentication off on loopback: nothing to forward
    assert seen == [header, header, None]


def test_the_worker_refuses_an_open_routable_listener(tmp_path: Path) -> None:
    settings = Settings().replace(web_host="0.0.0.0", data_dir=str(tmp_path), web_port=free_port())
    with pytest.raises(SettingsError, match="api_insecure"):
        Worker.build(settings)
