"""Push the arcbeat datasources and dashboards to a running Grafana (grafana-client).

Idempotent: datasources are looked up by their fixed uid and updated, or created; the
folder is created once; dashboards are saved with ``overwrite: true``. Failures become a
:class:`GrafanaPushError` whose message says what failed, where, and how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException, GrafanaTimeoutError

from arcbeat.dashboards.common import INFLUXDB_UID, PROMETHEUS_UID

T = TypeVar("T")


class GrafanaPushError(RuntimeError):
    """Grafana could not be reached, refused the token, or rejected a payload."""


@dataclass
class PushResult:
    folder: Literal["created", "exists", "none"] = "none"
    datasources: list[tuple[str, Literal["created", "updated"]]] = field(default_factory=list)
    dashboards: list[tuple[str, str]] = field(default_factory=list)  # (uid, url in Grafana)


def datasource_payloads(
    *,
    prometheus_url: str,
    influx_url: str,
    influx_db: str = "arcbeat",
    influx_token: str = "",
    influx_username: str = "",
    influx_password: str = "",
) -> list[dict[str, Any]]:
    """Grafana datasource definitions, the same as the provisioning file's.

    InfluxDB is queried with InfluxQL: with 2.x the database needs a DBRP mapping to the
    bucket and the token goes in an ``Authorization: Token ...`` header; with 1.x a
    username/password (if auth is on).
    """
    influx_json: dict[str, Any] = {
        "version": "InfluxQL",
        "dbName": influx_db,
        "httpMode": "POST",
        "timeInterval": "10s",
    }
    influx_secure: dict[str, str] = {}
    if influx_token:
        influx_json["httpHeaderName1"] = "Authorization"
        influx_secure["httpHeaderValue1"] = f"Token {influx_token}"
    influx: dict[str, Any] = {
        "uid": INFLUXDB_UID,
        "name": "arcbeat InfluxDB",
        "type": "influxdb",
        "access": "proxy",
        "url": influx_url,
        "database": influx_db,  # older Grafana reads this, newer jsonData.dbName
        "jsonData": influx_json,
        "secureJsonData": influx_secure,
    }
    if influx_username:
        influx["user"] = influx_username
        influx_secure["password"] = influx_password
    prometheus: dict[str, Any] = {
        "uid": PROMETHEUS_UID,
        "name": "arcbeat Prometheus",
        "type": "prometheus",
        "access": "proxy",
        "url": prometheus_url,
        "isDefault": True,
        "jsonData": {"httpMethod": "POST", "timeInterval": "15s"},
    }
    return [prometheus, influx]


class _Session:
    """grafana-client calls with arcbeat's error messages."""

    def __init__(self, api: GrafanaApi, url: str, timeout: float) -> None:
        self.api = api
        self.url = url
        self.timeout = timeout

    def call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except niquests.exceptions.ConnectionError as exc:
            raise GrafanaPushError(
                f"cannot reach Grafana at {self.url} while {what}: {_root_cause(exc)}. "
                "Is Grafana running, and is --url (or GRAFANA_URL) right?"
            ) from exc
        except GrafanaTimeoutError as exc:
            raise GrafanaPushError(
                f"Grafana at {self.url} did not answer within {self.timeout:g}s while {what}; "
                "raise --timeout or check the server"
            ) from exc
        except GrafanaClientError as exc:
            if exc.status_code == 401:
                raise GrafanaPushError(
                    f"Grafana at {self.url} refused the token (HTTP 401 Unauthorized) while "
                    f"{what}: {_message(exc)}. Create a service account token in Grafana "
                    "(Administration > Users and access > Service accounts, role Admin) and "
                    "pass it with --token or GRAFANA_TOKEN."
                ) from exc
            if exc.status_code == 403:
                raise GrafanaPushError(
                    f"Grafana at {self.url} accepted the token but denied {what} "
                    f"(HTTP 403 Forbidden): {_message(exc)}. Give the service account the "
                    "Admin role (datasources need it), or use --no-datasources."
                ) from exc
            raise
        except niquests.exceptions.RequestException as exc:
            raise GrafanaPushError(
                f"request to Grafana at {self.url} failed while {what}: {exc}"
            ) from exc
        except GrafanaException as exc:
            raise GrafanaPushError(
                f"Grafana at {self.url} failed while {what}: {_message(exc)}"
            ) from exc

    def exists(self, what: str, fn: Callable[[], object]) -> bool:
        """True if ``fn`` finds the object, False on 404."""
        try:
            self.call(what, fn)
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return False
            raise self._rejected(what, exc) from exc
        return True

    def write(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return self.call(what, fn)
        except GrafanaClientError as exc:
            raise self._rejected(what, exc) from exc

    def _rejected(self, what: str, exc: GrafanaClientError) -> GrafanaPushError:
        return GrafanaPushError(
            f"Grafana at {self.url} rejected {what} (HTTP {exc.status_code}): {_message(exc)}"
        )


def _message(exc: GrafanaException) -> str:
    response = exc.response
    if isinstance(response, Mapping) and response.get("message"):
        return str(response["message"])
    return str(exc.message or response or "no details")


def _root_cause(exc: BaseException) -> str:
    # urllib3 nests the OS error a few levels deep; the innermost says "Connection refused".
    seen: BaseException | None = exc
    text = str(exc)
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        reason = getattr(seen, "reason", None)
        nxt = seen.__cause__ or seen.__context__
        if nxt is None and isinstance(reason, BaseException):
            nxt = reason
        seen = nxt
    if "Connection refused" in text:
        return "connection refused"
    return text


def push(
    url: str,
    token: str,
    dashboards: Mapping[str, Mapping[str, Any]],
    *,
    datasources: Sequence[Mapping[str, Any]] | None = None,
    folder_uid: str | None = "arcbeat",
    folder_title: str | None = None,
    timeout: float = 10.0,
    progress: Callable[[str], None] | None = None,
) -> PushResult:
    """Create or update ``datasources`` (by uid), the folder, and ``dashboards`` (by uid)."""
    if not url.startswith(("http://", "https://")):
        raise GrafanaPushError(f"Grafana URL must start with http:// or https://, got {url!r}")
    say = progress or (lambda _line: None)
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout)
    session = _Session(api, url, timeout)
    result = PushResult()

    for ds in datasources or ():
        uid = str(ds["uid"])
        payload = dict(ds)
        if session.exists(
            f"looking up datasource {uid}", partial(api.datasource.get_datasource_by_uid, uid)
        ):
            session.write(
                f"updating datasource {uid}",
                partial(api.datasource.update_datasource_by_uid, uid, payload),
            )
            result.datasources.append((uid, "updated"))
        else:
            session.write(
                f"creating datasource {uid}", partial(api.datasource.create_datasource, payload)
            )
            result.datasources.append((uid, "created"))
        say(f"datasource {uid}: {result.datasources[-1][1]}")

    if folder_uid:
        fuid = folder_uid
        if session.exists(f"looking up folder {fuid}", lambda: api.folder.get_folder(fuid)):
            result.folder = "exists"
        else:
            session.write(
                f"creating folder {fuid}",
                lambda: api.folder.create_folder(folder_title or fuid, uid=fuid),
            )
            result.folder = "created"

    for uid, dashboard in dashboards.items():
        body: dict[str, Any] = {
            "dashboard": {**dashboard, "id": None},  # saved by uid, whatever its local id
            "overwrite": True,
            "message": "arcbeat dashboards push",
        }
        if folder_uid:
            body["folderUid"] = folder_uid
        answer = session.write(
            f"saving dashboard {uid}", partial(api.dashboard.update_dashboard, body)
        )
        where = str(answer.get("url", "")) if isinstance(answer, Mapping) else ""
        result.dashboards.append((uid, where))
        say(f"dashboard {uid}: saved {where}".rstrip())
    return result
