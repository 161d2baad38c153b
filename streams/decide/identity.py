"""Identity binding: which agent principal may report for which machines.

Kafka authenticates the producer (SASL) and its ACLs decide which *topics* it may write, but
a consumer never learns which principal produced a record, so the worker cannot tell a
heartbeat of machine A from one forged by machine B's agent. Agents therefore sign each
heartbeat: HMAC-SHA256 over the exact message value with a per-principal secret, sent in
the headers ``arcbeat-principal`` and ``arcbeat-signature`` (lower-case hex). When the
worker has bindings (setting ``identity_bindings``, a TOML or JSON file), it rejects a
heartbeat (DLQ reason ``unauthorized``) whose signature is missing or wrong, or whose
Resource ID is outside what the principal is allowed::

    [principals.agent-1]
    secret_file = "agent-1.secret"   # relative to this file; or: secret = "..."
    allow = [
      "00000000-0000-0000-0000-000000000001",                            # a subscription
      "/subscriptions/00000000-0000-0000-0000-000000000002/resourceGroups/rg-a",  # a prefix
    ]

``allow`` entries are subscription GUIDs, Resource ID prefixes (whole segments,
case-insensitive), or ``*`` for any machine. Everything here is pure: no I/O but
:func:`load_bindings`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from arcbeat.streams.decide.records import Heartbeat, Reject

PRINCIPAL_HEADER: Final = "arcbeat-principal"
SIGNATURE_HEADER: Final = "arcbeat-signature"
_GUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAX_PRINCIPAL: Final = 256

Headers = Sequence[tuple[str, bytes | None]]


class IdentityError(ValueError):
    """The bindings file is unusable; the message says where and how to fix it."""


def sign(payload: bytes, secret: bytes) -> str:
    """The signature of one message value: HMAC-SHA256, lower-case hex."""
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def signature_headers(principal: str, secret: bytes, payload: bytes) -> list[tuple[str, bytes]]:
    """The Kafka headers an agent adds to a signed message."""
    return [
        (PRINCIPAL_HEADER, principal.encode()),
        (SIGNATURE_HEADER, sign(payload, secret).encode()),
    ]


@dataclass(frozen=True, slots=True)
class Binding:
    """One principal: its secret and the machines it may report for."""

    principal: str
    secret: bytes = field(repr=False)
    subscriptions: frozenset[str] = frozenset()  # lower-case GUIDs
    prefixes: tuple[str, ...] = ()  # lower-case Resource ID prefixes without trailing '/'
    any_machine: bool = False

    def allows(self, hb: Heartbeat) -> bool:
        if self.any_machine or hb.subscription_id.lower() in self.subscriptions:
            return True
        key = hb.key
        return any(key == p or key.startswith(p + "/") for p in self.prefixes)


def make_binding(principal: str, secret: bytes, allow: Iterable[str]) -> Binding:
    subs: set[str] = set()
    prefixes: list[str] = []
    any_machine = False
    for entry in allow:
        text = entry.strip().lower()
        if text == "*":
            any_machine = True
        elif _GUID.fullmatch(text):
            subs.add(text)
        elif text.startswith("/subscriptions/"):
            prefixes.append(text.rstrip("/"))
        else:
            raise IdentityError(
                f"principal {principal!r}: allow entry {entry!r} is neither a subscription "
                "GUID, a Resource ID prefix (/subscriptions/...), nor *"
            )
    return Binding(principal, secret, frozenset(subs), tuple(prefixes), any_machine)


def _header(headers: Headers, name: str) -> bytes | None:
    found: bytes | None = None
    for k, v in headers:
        if k == name:
            if found is not None:  # two values: ambiguous, refuse rather than pick one
                return None
            found = v if v is not None else b""
    return found


@dataclass(frozen=True, slots=True)
class IdentityBindings:
    """principal -> :class:`Binding`; :meth:`check` is the worker's per-message test."""

    principals: Mapping[str, Binding]

    def check(self, headers: Headers, raw: bytes, hb: Heartbeat) -> Reject | None:
        """None when ``raw`` is signed by a known principal allowed to report ``hb``."""
        who = _header(headers, PRINCIPAL_HEADER)
        sig = _header(headers, SIGNATURE_HEADER)
        if who is None or sig is None:
            return Reject(
                "unauthorized",
                f"message has no single {PRINCIPAL_HEADER}/{SIGNATURE_HEADER} header pair; "
                "this deployment requires signed heartbeats (agent settings "
                "identity_principal and identity_secret_file)",
            )
        principal = who.decode("utf-8", "replace")[:_MAX_PRINCIPAL]
        binding = self.principals.get(principal)
        if binding is None:
            return Reject(
                "unauthorized",
                f"principal {principal!r} is not in this deployment's identity bindings",
            )
        if not hmac.compare_digest(sig, sign(raw, binding.secret).encode()):
            return Reject(
                "unauthorized",
                f"signature of principal {principal!r} does not match the message; "
                "check the agent's identity secret",
            )
        if not binding.allows(hb):
            return Reject(
                "unauthorized",
                f"principal {principal!r} may not report for {hb.resource_id!r} "
                "(not in its allowed subscriptions or Resource ID prefixes)",
            )
        return None


def parse_bindings(
    data: Mapping[str, Any], where: str, base: Path | None = None
) -> IdentityBindings:
    """Bindings from parsed TOML/JSON; ``base`` resolves relative ``secret_file`` paths."""
    table = data.get("principals", data)
    if not isinstance(table, Mapping) or not table:
        raise IdentityError(f"{where}: expected a [principals.<name>] table with entries")
    out: dict[str, Binding] = {}
    for principal, entry in table.items():
        if not isinstance(entry, Mapping):
            raise IdentityError(f"{where}: principals.{principal} must be a table")
        allow = entry.get("allow")
        if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
            raise IdentityError(f"{where}: principals.{principal}.allow must be a list of strings")
        secret = entry.get("secret")
        secret_file = entry.get("secret_file")
        if isinstance(secret_file, str) and secret_file and not secret:
            path = Path(secret_file).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
            try:
                secret = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise IdentityError(
                    f"{where}: principals.{principal}.secret_file {path}: {exc.strerror or exc}"
                ) from None
        if not isinstance(secret, str) or len(secret) < 16:
            raise IdentityError(
                f"{where}: principals.{principal} needs a secret (or secret_file) of at "
                "least 16 characters"
            )
        try:
            out[str(principal)] = make_binding(str(principal), secret.encode(), allow)
        except IdentityError as exc:
            raise IdentityError(f"{where}: {exc}") from None
    return IdentityBindings(out)


def load_bindings(path: str | Path) -> IdentityBindings:
    """Read a ``.toml`` or ``.json`` bindings file (setting ``identity_bindings``)."""
    p = Path(path).expanduser()
    where = f"identity_bindings file {p}"
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise IdentityError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise IdentityError(f"{where}: not valid {p.suffix or 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise IdentityError(f"{where}: expected an object/table at the top")
    return parse_bindings(data, where, p.parent)
