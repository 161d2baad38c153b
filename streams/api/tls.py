"""TLS of the worker HTTP API.

The listener serves https when ``api_tls_cert`` and ``api_tls_key`` are set (faust's aiohttp
driver hands ``web_ssl_context`` to its TCP site); a worker then advertises an https URL, and
the calls one worker makes to another verify the peer against ``api_tls_ca`` (else the
system's CAs). Both sides refuse anything below TLS 1.2.
"""

from __future__ import annotations

import ssl

from arcbeat.streams.settings import SettingsError, WorkerSettings


def api_scheme(worker: WorkerSettings) -> str:
    return "https" if worker.api_tls_cert else "http"


def server_context(worker: WorkerSettings) -> ssl.SSLContext | None:
    """The listener's context, or None for plain http."""
    if not worker.api_tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(worker.api_tls_cert, worker.api_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            "settings api_tls_cert/api_tls_key (ARCBEAT_API_TLS_CERT/ARCBEAT_API_TLS_KEY): "
            f"cannot load the certificate {worker.api_tls_cert} with the key "
            f"{worker.api_tls_key}: {exc}; point them at a readable PEM certificate (chain) "
            "and its private key"
        ) from None
    return ctx


def client_context(worker: WorkerSettings) -> ssl.SSLContext:
    """The context worker-to-worker calls verify https peers with (host name included)."""
    try:
        ctx = ssl.create_default_context(cafile=worker.api_tls_ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(
            f"setting api_tls_ca (ARCBEAT_API_TLS_CA): cannot load {worker.api_tls_ca}: "
            f"{exc}; point it at a readable PEM CA bundle, or leave it empty for the system's CAs"
        ) from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
