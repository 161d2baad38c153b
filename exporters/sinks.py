"""Where history points go: a narrow sink interface and its two InfluxDB backends.

``V1Sink`` speaks InfluxDB 1.x ``POST /write?db=`` (also accepted by 2.x with a DBRP mapping
and by 3.x). ``V2Sink`` speaks ``POST /api/v2/write`` through influxdb-client's async API
(InfluxDB 1.8+, 2.x, 3.x; on 1.8 the bucket is ``database/retention-policy`` and the token
``username:password``).

Failures raise :class:`SinkError`. ``retryable=False`` means InfluxDB refused the *data*
(HTTP 400 bad line / field type conflict, 413 too large): sending the same lines again will
fail again, so the caller should split the batch to find the bad line. Everything else
(server down, timeout, 5xx, auth, missing database or endpoint) is ``retryable=True``: the
same lines will succeed once the operator or the server fixes it, so the caller keeps them
and retries. Credentials never appear in messages or logs.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

import aiohttp

if TYPE_CHECKING:
    from arcbeat.exporters.influx_settings import InfluxSettings

log = logging.getLogger(__name__)

__all__ = ["InfluxSink", "SinkError", "V1Sink", "V2Sink", "make_sink"]

# HTTP statuses that mean "this data is bad", not "try again later".
_DATA_REJECTED = frozenset({400, 413, 422})


class SinkError(Exception):
    """A write failed. ``retryable`` says whether the same lines may succeed later."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class InfluxSink(Protocol):
    async def write(self, lines: Sequence[str]) -> None: ...

    async def close(self) -> None: ...


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _basic_auth(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def _short(text: str, limit: int = 300) -> str:
    text = text.strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


class V1Sink:
    """``POST {url}/write?db=<db>&precision=ns`` (InfluxDB 1.x API)."""

    def __init__(
        self,
        url: str,
        db: str,
        *,
        username: str = "",
        password: str = "",
        retention_policy: str = "",
        timeout: float = 10.0,
        create_database: bool = True,
    ) -> None:
        self._base = url.rstrip("/")
        self._db = db
        # Basic auth header, not u=/p= query parameters: URLs end up in logs and errors.
        self._headers = {"Authorization": _basic_auth(username, password)} if username else {}
        params = {"db": db, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy
        self.write_url = f"{self._base}/write?{urlencode(params)}"  # no credentials in it
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._create_database = create_database
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    async def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        body = "\n".join(lines).encode("utf-8")
        status, text = await self._post(self.write_url, body)
        if status == 404 and "database not found" in text and self._create_database:
            # A fresh InfluxDB (or a new test database): create it, then write once more.
            await self._create()
            status, text = await self._post(self.write_url, body)
        if status == 204:
            return
        raise SinkError(
            f"InfluxDB write to {self.write_url} failed: HTTP {status}: {_short(text)}",
            retryable=status not in _DATA_REJECTED,
            status=status,
        )

    async def _post(self, url: str, body: bytes) -> tuple[int, str]:
        try:
            async with self._http().post(
                url, data=body, headers={"Content-Type": "text/plain; charset=utf-8"}
            ) as resp:
                return resp.status, await resp.text(errors="replace")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise SinkError(
                f"InfluxDB write to {url} failed: {type(exc).__name__}: {exc or 'timeout'}",
                retryable=True,
            ) from exc

    async def _create(self) -> None:
        url = f"{self._base}/query"
        query = f"CREATE DATABASE {quote_ident(self._db)}"
        try:
            async with self._http().post(url, data={"q": query}) as resp:
                text = await resp.text(errors="replace")
                if resp.status != 200 or '"error"' in text:
                    raise SinkError(
                        f"InfluxDB database {self._db!r} does not exist and creating it at "
                        f"{url} failed: HTTP {resp.status}: {_short(text)}; create it or fix "
                        "ARCBEAT_INFLUX_DB",
                        retryable=True,
                        status=resp.status,
                    )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise SinkError(
                f"creating InfluxDB database at {url} failed: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc
        log.info("created InfluxDB database %r", self._db)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class V2Sink:
    """``POST {url}/api/v2/write`` through influxdb-client's ``InfluxDBClientAsync``."""

    def __init__(
        self,
        url: str,
        bucket: str,
        org: str,
        *,
        token: str = "",
        timeout: float = 10.0,
    ) -> None:
        self._url = url.rstrip("/")
        self._bucket = bucket
        self._org = org
        self._token = token
        self._timeout_ms = int(timeout * 1000)
        query = urlencode({"org": org, "bucket": bucket, "precision": "ns"})
        self.write_url = f"{self._url}/api/v2/write?{query}"
        self._client: Any = None  # InfluxDBClientAsync; it must be created inside a running loop

    def _api(self) -> Any:
        if self._client is None:
            from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

            self._client = InfluxDBClientAsync(
                url=self._url, token=self._token, org=self._org, timeout=self._timeout_ms
            )
        return self._client.write_api()

    async def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            await self._api().write(
                bucket=self._bucket,
                org=self._org,
                record=list(lines),
                write_precision=WritePrecision.NS,
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else ""
            reason = _short(body or str(exc.reason or ""))
            hint = (
                " (this server has no /api/v2/write: InfluxDB 1.8+, 2.x or 3.x is needed; "
                "use influx_api=v1 for InfluxDB 1.x before 1.8)"
                if status == 404 and "bucket" not in body.lower()
                else ""
            )
            raise SinkError(
                f"InfluxDB write to {self.write_url} failed: HTTP {status} {exc.reason}: "
                f"{reason}{hint}",
                retryable=status not in _DATA_REJECTED,
                status=status,
            ) from exc
        except (InfluxDBError, TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise SinkError(
                f"InfluxDB write to {self.write_url} failed: {type(exc).__name__}: "
                f"{exc or 'timeout'}",
                retryable=True,
            ) from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def make_sink(influx: InfluxSettings) -> InfluxSink:
    """The backend ``influx.api`` names."""
    if influx.api == "v2":
        token = influx.token
        if not token and influx.username:
            # InfluxDB 1.8's /api/v2/write takes "username:password" as the token.
            token = f"{influx.username}:{influx.password}"
        return V2Sink(influx.url, influx.db, influx.org, token=token)
    return V1Sink(
        influx.url,
        influx.db,
        username=influx.username,
        password=influx.password,
    )
