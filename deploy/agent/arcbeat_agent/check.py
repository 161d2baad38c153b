"""``arcbeat-agent check``: a connectivity self-test, one verdict a line with the fix.

For each bootstrap broker: name resolution, TCP, TLS (version 1.2 or newer, certificate
verified, days to its expiry); then the SASL login; then what the credentials may do: write
the heartbeats topic (required) and not write the status topic (only the workers may). The
write test sends a Produce request whose record set is empty: Kafka checks the ACL before the
records, so the answer tells the permission and nothing is ever written.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.conn import create_conn
from aiokafka.protocol.produce import ProduceRequest

from arcbeat_agent.config import AgentConfig
from arcbeat_agent.errors import AgentError
from arcbeat_agent.kafka import REFUSALS, client_options

Outcome = Literal["PASS", "WARN", "FAIL"]
TOPIC_AUTHORIZATION_FAILED = 29
UNKNOWN_TOPIC_OR_PARTITION = 3
CERT_WARN_DAYS = 30


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    check: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.outcome:<4}  {self.check:<11} {self.detail}"
        return f"{text}; fix: {self.fix}" if self.fix else text


async def run_check(config: AgentConfig, *, timeout: float = 10.0) -> list[Verdict]:
    verdicts: list[Verdict] = []
    k = config.kafka
    try:
        options = client_options(config)
    except AgentError as exc:
        return [Verdict("FAIL", "config", str(exc), "correct the setting named above")]
    tls = k.security_protocol in ("SSL", "SASL_SSL")
    reachable: list[tuple[str, int]] = []
    for broker in k.brokers:
        host, _, port_text = broker.rpartition(":")
        port = int(port_text)
        verdict = await _resolve(host, port)
        verdicts.append(verdict)
        if verdict.outcome == "FAIL":
            continue
        verdict = await _tcp(host, port, timeout)
        verdicts.append(verdict)
        if verdict.outcome == "FAIL":
            continue
        if tls:
            verdict = await _tls(host, port, options["ssl_context"], timeout, k.ca_file)
            verdicts.append(verdict)
            if verdict.outcome == "FAIL":
                continue
        reachable.append((host, port))
    if not reachable:
        verdicts.append(
            Verdict("FAIL", "kafka", f"no broker of [kafka] bootstrap = {k.bootstrap!r} is "
                    "reachable", "see the lines above")
        )
        return verdicts
    host, port = reachable[0]
    try:
        conn = await asyncio.wait_for(
            create_conn(host, port, client_id="arcbeat-agent-check",
                        request_timeout_ms=int(timeout * 1000), **_conn_options(options)),
            timeout,
        )
    except REFUSALS as exc:
        verdicts.append(Verdict(
            "FAIL", "sasl", f"{host}:{port} refused the login of {k.username!r} "
            f"({k.sasl_mechanism}): {exc}",
            "check [kafka] username, the password file and that the SCRAM user exists",
        ))
        return verdicts
    except Exception as exc:
        verdicts.append(Verdict("FAIL", "kafka", f"{host}:{port}: no Kafka handshake: {exc!r}",
                                "is this a Kafka listener, with the right security_protocol?"))
        return verdicts
    try:
        if k.security_protocol == "SASL_SSL":
            verdicts.append(Verdict("PASS", "sasl", f"logged in as {k.username!r} "
                                    f"({k.sasl_mechanism}) on {host}:{port}"))
        verdicts.append(await _write_permission(conn, k.heartbeats_topic, must=True, config=config))
        verdicts.append(await _write_permission(conn, k.status_topic, must=False, config=config))
    finally:
        conn.close()
    return verdicts


def _conn_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in (
        "security_protocol", "ssl_context", "sasl_mechanism", "sasl_plain_username",
        "sasl_plain_password")}


async def _resolve(host: str, port: int) -> Verdict:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return Verdict("FAIL", "dns", f"{host}: does not resolve ({exc.strerror})",
                       f"check the name in [kafka] bootstrap and this machine's DNS ({host})")
    addresses = sorted({str(info[4][0]) for info in infos})
    return Verdict("PASS", "dns", f"{host} resolves to {', '.join(addresses)}")


async def _tcp(host: str, port: int, timeout: float) -> Verdict:
    started = time.monotonic()
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or repr(exc))
        return Verdict("FAIL", "tcp", f"{host}:{port}: {reason}",
                       f"open TCP {port} from this machine to {host} (firewall, proxy, "
                       "listener address)")
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return Verdict("PASS", "tcp", f"{host}:{port} connected in "
                   f"{(time.monotonic() - started) * 1000:.0f} ms")


async def _tls(host: str, port: int, ctx: ssl.SSLContext, timeout: float, ca: str) -> Verdict:
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname=host), timeout
        )
    except ssl.SSLCertVerificationError as exc:
        return Verdict("FAIL", "tls", f"{host}:{port}: certificate not trusted: "
                       f"{exc.verify_message}",
                       "set [kafka] ca_file to the CA that signed the broker certificates, and "
                       "use the name the certificate carries" + (f" (now {ca})" if ca else ""))
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        return Verdict("FAIL", "tls", f"{host}:{port}: no TLS 1.2+ handshake: {exc!r}",
                       "the listener must speak TLS 1.2 or newer (security_protocol SSL or "
                       "SASL_SSL on that port)")
    sslobj = writer.get_extra_info("ssl_object")
    version = sslobj.version() if sslobj else "?"
    cert = sslobj.getpeercert() if sslobj else None
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    subject = ""
    days = None
    if cert:
        subject = ", ".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)
        not_after = cert.get("notAfter")
        if isinstance(not_after, str):
            days = int((ssl.cert_time_to_seconds(not_after) - time.time()) // 86400)
    detail = f"{host}:{port} {version}, certificate {subject or '?'} valid"
    if days is not None and days < CERT_WARN_DAYS:
        return Verdict("WARN", "tls", f"{detail}, expires in {days} days",
                       "renew the broker certificate")
    return Verdict("PASS", "tls", detail + (f" for {days} more days" if days is not None else ""))


async def _write_permission(conn: Any, topic: str, *, must: bool, config: AgentConfig) -> Verdict:
    request = ProduceRequest(required_acks=1, timeout=5000, topics=[(topic, [(0, b"")])],
                             transactional_id=None)
    try:
        response = await conn.send(request)
        code = int(response.topics[0][1][0][1])
    except Exception as exc:
        return Verdict("FAIL", "permission", f"{topic}: no answer to the write test: {exc!r}",
                       "run check again; the brokers may be overloaded")
    user = repr(config.kafka.username) if config.kafka.username else "this client"
    if code == UNKNOWN_TOPIC_OR_PARTITION:
        return Verdict("FAIL" if must else "WARN", "permission", f"{topic} does not exist",
                       "create the topics with `arcbeat topics` (or check [kafka] topic_prefix)")
    allowed = code != TOPIC_AUTHORIZATION_FAILED
    if must:
        if allowed:
            return Verdict("PASS", "permission", f"{user!s} may write {topic}")
        return Verdict("FAIL", "permission", f"{user!s} may not write {topic}",
                       f"grant WRITE on topic {topic} to User:{config.kafka.username} "
                       "(`arcbeat topics --acls` grants the agents theirs)")
    if not allowed:
        return Verdict("PASS", "permission", f"{user!s} may not write {topic} (as it should)")
    secured = config.kafka.security_protocol == "SASL_SSL"
    return Verdict("FAIL" if secured else "WARN", "permission",
                   f"{user!s} may write {topic}: any agent could forge status records",
                   "give agents WRITE on the heartbeats topic only (Kafka ACLs need SASL: "
                   "security_protocol SASL_SSL)")
