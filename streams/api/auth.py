"""Bearer tokens and roles for the worker HTTP API.

Roles: ``read`` (every GET of the API) and ``maintenance`` (implies read; may create and
delete maintenance windows, which silence paging). Tokens live in the file named by
``api_tokens_file``, one ``<role> <name> <token>`` a line (``#`` comments, blank lines); the
file is re-read when it changes, so tokens rotate without a restart. With no tokens file the
API is open, which a worker accepts only on a loopback ``web_host`` (or with ``api_insecure``).

A route declares its role with :func:`require`; the middleware of :func:`install` answers 401
(no, malformed or unknown token) or 403 (the token lacks the role) before the handler runs. A
route that declares nothing needs ``read`` for GET/HEAD and ``maintenance`` for anything
else; the probes (``/healthz``, ``/readyz``, ``/metrics``) are open unless
``api_protect_probes``. Tokens are never logged: only the principal's name is.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import hdrs
from aiohttp import web as aioweb

from arcbeat.streams.settings import SettingsError, WorkerSettings

READ = "read"
MAINTENANCE = "maintenance"
#: each role and the roles it grants
ROLES: Mapping[str, frozenset[str]] = {
    READ: frozenset({READ}),
    MAINTENANCE: frozenset({READ, MAINTENANCE}),
}
MIN_TOKEN_LENGTH = 32
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
RECHECK_SECONDS = 1.0  # how often the tokens file's mtime is looked at, at most

log = logging.getLogger("arcbeat.auth")
audit_log = logging.getLogger("arcbeat.audit")

_ROLE_ATTR = "__arcbeat_role__"
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # what a Bearer header can carry (RFC 6750)
_NAME = re.compile(r"[A-Za-z0-9._@-]+")
_HOW = "generate one with `openssl rand -hex 32`"
_SAFE_METHODS = frozenset({"GET", "HEAD"})

Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Awaitable[aioweb.StreamResponse]])


class TokenFileError(SettingsError):
    """The tokens file cannot be used; the message names the file and line (never a token)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: the name from the tokens file and the roles its token grants."""

    name: str
    roles: frozenset[str]

    def has(self, role: str) -> bool:
        return role in self.roles


ANONYMOUS = Principal("anonymous", frozenset(ROLES))  # authentication off: every role
NOBODY = Principal("nobody", frozenset())  # an open route called with authentication on

PRINCIPAL: Any = (
    aioweb.RequestKey("arcbeat.principal", Principal)
    if hasattr(aioweb, "RequestKey")
    else "arcbeat.principal"
)


def _digest(token: str) -> bytes:
    # compared as fixed-size digests: the comparison reveals neither content nor length
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Tokens (kept as digests only) and whom each names."""

    def __init__(self, entries: Iterable[tuple[Principal, str]]) -> None:
        self._entries = tuple((p, _digest(t)) for p, t in entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str) -> Principal | None:
        """The principal of ``token``, comparing it with every entry in constant time."""
        presented = _digest(token)
        found: Principal | None = None
        for principal, expected in self._entries:  # no early exit: every entry is compared
            if hmac.compare_digest(expected, presented) and found is None:
                found = principal
        return found


def parse_tokens(text: str, source: str) -> TokenTable:
    """Lines ``<role> <name> <token>``; errors name ``source`` and the line, never the token."""
    entries: list[tuple[Principal, str]] = []
    first_line: dict[bytes, int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{n}"
        parts = line.split()
        if len(parts) != 3:
            raise TokenFileError(
                f"{where}: expected `<role> <name> <token>` separated by spaces, "
                f"found {len(parts)} field(s)"
            )
        role, name, token = parts
        if role not in ROLES:
            raise TokenFileError(f"{where}: unknown role {role!r}; use one of {', '.join(ROLES)}")
        if not _NAME.fullmatch(name):
            raise TokenFileError(f"{where}: name {name!r}: use letters, digits and . _ @ - only")
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenFileError(
                f"{where}: the token of {name} has {len(token)} characters, at least "
                f"{MIN_TOKEN_LENGTH} are needed; {_HOW}"
            )
        if not _TOKEN.fullmatch(token):
            raise TokenFileError(
                f"{where}: the token of {name} has characters an Authorization header cannot "
                f"carry (letters, digits and - . _ ~ + / only, = at the end); {_HOW}"
            )
        key = _digest(token)
        if key in first_line:
            raise TokenFileError(
                f"{where}: the token of {name} is also on line {first_line[key]}; "
                "give every name its own token"
            )
        first_line[key] = n
        entries.append((Principal(name, ROLES[role]), token))
    if not entries:
        raise TokenFileError(f"{source}: no tokens; add lines `<role> <name> <token>`")
    return TokenTable(entries)


def read_tokens(path: str | Path) -> TokenTable:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise TokenFileError(
            f"setting api_tokens_file (ARCBEAT_API_TOKENS_FILE): cannot read {path}: {why}; "
            "point it at a readable UTF-8 file of `<role> <name> <token>` lines"
        ) from None
    return parse_tokens(text, str(path))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class TokenFile:
    """The tokens file, re-read when it changes (looked at once a second at most).

    A change that does not parse is logged and the previous tokens stay in force, so a
    mistyped edit cannot lock every caller out; the worker never starts on a bad file.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path).expanduser()
        self._clock = clock
        self._stamp = _stamp(self.path)
        self.table = read_tokens(self.path)
        self._checked = clock()

    def current(self) -> TokenTable:
        now = self._clock()
        if now - self._checked < RECHECK_SECONDS:
            return self.table
        self._checked = now
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return self.table
        self._stamp = stamp
        try:
            self.table = read_tokens(self.path)
        except TokenFileError as exc:
            log.error("api tokens not reloaded, the previous ones stay in force: %s", exc)
        else:
            log.info("api tokens reloaded from %s: %d token(s)", self.path, len(self.table))
        return self.table


class AuthError(Exception):
    """A refused request: 401 (who are you?) or 403 (not allowed), with how to fix it."""

    def __init__(self, status: int, detail: str, *, error: str = "", role: str = "") -> None:
        super().__init__(detail)
        self.status, self.detail, self.error, self.role = status, detail, error, role

    def response(self) -> aioweb.Response:
        challenge = 'Bearer realm="arcbeat"'
        if self.error:
            challenge += f', error="{self.error}"'
        if self.role:
            challenge += f', scope="{self.role}"'
        return aioweb.json_response(
            {"error": self.detail}, status=self.status, headers={"WWW-Authenticate": challenge}
        )


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (AuthError 401 otherwise)."""
    if not header or not header.strip():
        raise AuthError(
            401,
            "authentication required: send the header `Authorization: Bearer <token>` with a "
            "token the operator listed in the worker's api_tokens_file",
        )
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError(
            401,
            "malformed Authorization header: send `Authorization: Bearer <token>` (one token, "
            "no other scheme)",
            error="invalid_request",
        )
    return token


class Authenticator:
    """Decides who calls and whether they may; ``tokens=None`` means authentication is off."""

    def __init__(self, tokens: TokenFile | None, *, protect_probes: bool = False) -> None:
        self.tokens = tokens
        self.protect_probes = protect_probes

    @classmethod
    def from_settings(cls, worker: WorkerSettings) -> Authenticator:
        """From the settings; refuses an open API on a routable address (SettingsError)."""
        if worker.api_tokens_file:
            tokens = TokenFile(worker.api_tokens_file)
            return cls(tokens, protect_probes=worker.api_protect_probes)
        if not is_loopback(worker.web_host):
            if not worker.api_insecure:
                raise SettingsError(
                    f"setting web_host (ARCBEAT_WEB_HOST) is {worker.web_host!r}, which other "
                    "hosts can reach, and api_tokens_file (ARCBEAT_API_TOKENS_FILE) is empty: "
                    "anyone reaching the port could read the fleet and change maintenance "
                    "windows. Set api_tokens_file (README: Securing the API), bind 127.0.0.1, "
                    "or set api_insecure = true (ARCBEAT_API_INSECURE=true) to accept an open API"
                )
            log.warning(
                "the worker API on %s:%s has no authentication (api_insecure): anyone who can "
                "reach it may read the fleet and change maintenance windows",
                worker.web_host,
                worker.web_port,
            )
        return cls(None)

    def check(self, header: str | None, role: str | None, what: str = "this request") -> Principal:
        """The caller named by ``header`` if it holds ``role`` (None: an open route)."""
        if self.tokens is None:
            return ANONYMOUS
        if role is None:
            return NOBODY
        principal = self.tokens.current().lookup(bearer_token(header))
        if principal is None:
            raise AuthError(
                401,
                "unknown or revoked token: use a token the operator listed in the worker's "
                "api_tokens_file",
                error="invalid_token",
            )
        if not principal.has(role):
            held = ", ".join(sorted(principal.roles)) or "none"
            raise AuthError(
                403,
                f"{principal.name} holds role(s) {held}; {what} needs role {role}: ask the "
                f"operator for a {role} token",
                error="insufficient_scope",
                role=role,
            )
        return principal

    def required_role(self, request: aioweb.Request) -> str | None:
        role: str | None = getattr(request.match_info.handler, _ROLE_ATTR, None)
        if role is not None:
            return role
        if request.method in _SAFE_METHODS:
            if request.path in PROBE_PATHS and not self.protect_probes:
                return None
            return READ
        return MAINTENANCE


def require(role: str) -> Callable[[H], H]:
    """Declare the role a handler needs (checked by the middleware of :func:`install`)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")

    def declare(handler: H) -> H:
        setattr(handler, _ROLE_ATTR, role)
        return handler

    return declare


def install(app: aioweb.Application, authenticator: Authenticator) -> None:
    """Put every route of ``app`` behind ``authenticator`` (before the app starts)."""

    @aioweb.middleware
    async def authenticate(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        role = authenticator.required_role(request)
        header = request.headers.get(hdrs.AUTHORIZATION)
        try:
            principal = authenticator.check(header, role, f"{request.method} {request.path}")
        except AuthError as exc:
            log.info("refused %s %r: %s", request.method, request.path, exc.status)
            return exc.response()
        request[PRINCIPAL] = principal
        return await handler(request)

    app.middlewares.append(authenticate)


def principal_of(request: aioweb.Request) -> Principal:
    """The caller, as the middleware established it (RuntimeError when it is not installed)."""
    principal: Principal | None = request.get(PRINCIPAL)
    if principal is None:
        raise RuntimeError("no authentication middleware: call arcbeat.streams.api.auth.install")
    return principal


def forward_headers(request: aioweb.Request) -> dict[str, str]:
    """Headers a routed call carries so the next worker checks the caller's own token."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    return {hdrs.AUTHORIZATION: header} if header else {}


def audit(principal: Principal, action: str, detail: object) -> None:
    """One line on ``arcbeat.audit`` per privileged change: who, what action, on what.

    Logged at WARNING so that a worker's default log level keeps it.
    """
    what = json.dumps(detail, sort_keys=True, default=str, ensure_ascii=False)
    audit_log.warning(
        "audit who=%s action=%s what=%s",
        principal.name,
        action,
        what,
        extra={"principal": principal.name, "action": action, "detail": detail},
    )


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
