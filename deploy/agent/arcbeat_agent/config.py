"""The agent's configuration file (TOML) and its secret files.

Default path: ``/etc/arcbeat/agent.toml`` on Linux, ``%ProgramData%\\arcbeat\\agent.toml`` on
Windows; ``--config`` or ``ARCBEAT_AGENT_CONFIG`` name another. Every key is checked: an
unknown key, a wrong type or a bad value is an error naming the file, the line and the fix.
Secrets (the Kafka password, the identity secret) come only from files, which are refused when
every user of the machine may read them.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from arcbeat_agent.contract import check_location, check_tags, parse_resource_id, resource_id
from arcbeat_agent.errors import ConfigError
from arcbeat_agent.platform_info import default_paths, machine_name

CONFIG_ENV: Final = "ARCBEAT_AGENT_CONFIG"
PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_SSL")
MECHANISMS: Final = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds from ``300``, ``300s``, ``5m``, ``1.5h``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 300, 30s or 5m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"expected a duration such as 300, 30s or 5m, got {value!r}")
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"a duration must be > 0, got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap: str = "localhost:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password_file: str = ""
    ca_file: str = ""
    topic_prefix: str = "arcbeat"
    request_timeout: float = 30.0

    @property
    def brokers(self) -> list[str]:
        return [b.strip() for b in self.bootstrap.split(",") if b.strip()]

    @property
    def heartbeats_topic(self) -> str:
        return f"{self.topic_prefix}.heartbeats"

    @property
    def status_topic(self) -> str:
        return f"{self.topic_prefix}.status"


@dataclass(frozen=True, slots=True)
class MachineConfig:
    resource_id: str = ""
    subscription_id: str = ""
    resource_group: str = ""
    machine_name: str = ""
    location: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def full_resource_id(self) -> str:
        """The configured Resource ID ('' when not enough is configured)."""
        if self.resource_id:
            return self.resource_id
        if self.subscription_id and self.resource_group:
            return resource_id(
                self.subscription_id, self.resource_group, self.machine_name or machine_name()
            )
        return ""


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    interval: float = 300.0
    jitter: float = 0.1  # a fraction of the interval, so a fleet restarted at once spreads out
    backoff_max: float = 60.0  # the longest wait between reconnection attempts


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    principal: str = ""
    secret_file: str = ""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    path: Path | None  # the file in use; None: defaults only (no file at the default path)
    kafka: KafkaConfig = KafkaConfig()
    machine: MachineConfig = MachineConfig()
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    identity: IdentityConfig = IdentityConfig()
    state_dir: Path = field(default_factory=lambda: default_paths().state_dir)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def where(self, section: str, key: str) -> str:
        """``file:line`` of a setting (or the setting's name when it is not in the file)."""
        return _where(self.path, section, key)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_toml_type(value)}")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _string(value)
        if text.upper() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text.upper()

    return parse


def _jitter(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 0.5:
        raise ValueError(f"expected a fraction of the interval from 0 to 0.5, got {value!r}")
    return float(value)


def _resource_id(value: object) -> str:
    text = _string(value)
    parse_resource_id(text)
    return text


def _location(value: object) -> str:
    return check_location(_string(value))


def _tags(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f'expected a table such as {{ env = "prod" }}, got {_toml_type(value)}')
    return check_tags(value)


def _bootstrap(value: object) -> str:
    text = _string(value)
    for broker in (b.strip() for b in text.split(",")):
        host, sep, port = broker.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"expected host:port[,host:port...] such as kafka-1.example.com:9093, "
                f"got {broker!r}"
            )
    return text


# section -> key -> parser; the file's whole vocabulary
SCHEMA: Final[dict[str, dict[str, Callable[[object], Any]]]] = {
    "kafka": {
        "bootstrap": _bootstrap,
        "security_protocol": _one_of(PROTOCOLS),
        "sasl_mechanism": _one_of(MECHANISMS),
        "username": _string,
        "password_file": _string,
        "ca_file": _string,
        "topic_prefix": _string,
        "request_timeout": parse_duration,
    },
    "machine": {
        "resource_id": _resource_id,
        "subscription_id": _string,
        "resource_group": _string,
        "machine_name": _string,
        "location": _location,
        "tags": _tags,
    },
    "heartbeat": {
        "interval": parse_duration,
        "jitter": _jitter,
        "backoff_max": parse_duration,
    },
    "identity": {"principal": _string, "secret_file": _string},
    "agent": {"state_dir": _string},
}


def config_path(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(explicit or env.get(CONFIG_ENV) or default_paths().config)


def load_config(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> (
    AgentConfig
):
    """The configuration: ``explicit`` (or ``ARCBEAT_AGENT_CONFIG``) must exist; the default
    path may be absent (defaults apply)."""
    env = os.environ if environ is None else environ
    path = config_path(explicit, env)
    named = bool(explicit or env.get(CONFIG_ENV))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if named:
            raise ConfigError(
                f"{path}: no such configuration file; create it (`arcbeat-agent service "
                "install` writes a commented skeleton) or drop --config/ARCBEAT_AGENT_CONFIG"
            ) from None
        return AgentConfig(None)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> AgentConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            home = next((s for s, keys in SCHEMA.items() if section in keys), "")
            raise ConfigError(
                f"{_where(path, None, section)}: {section!r} is outside any section; "
                + (f"move it under [{home}]" if home else
                   f"the sections are {', '.join(f'[{s}]' for s in SCHEMA)}")
            )
        if section not in SCHEMA:
            raise ConfigError(
                f"{_where(path, section, None)}: unknown section [{section}]; the sections are "
                f"{', '.join(f'[{s}]' for s in SCHEMA)}"
            )
        for key, raw in table.items():
            parser = SCHEMA[section].get(key)
            if parser is None:
                known = ", ".join(SCHEMA[section])
                raise ConfigError(
                    f"{_where(path, section, key)}: unknown setting {key!r} in [{section}]; "
                    f"the settings of [{section}] are {known}"
                )
            try:
                values.setdefault(section, {})[key] = parser(raw)
            except ValueError as exc:
                where = _where(path, section, key)
                raise ConfigError(f"{where}: [{section}] {key}: {exc}") from None
    state = values.get("agent", {}).get("state_dir")
    config = AgentConfig(
        path,
        KafkaConfig(**values.get("kafka", {})),
        MachineConfig(**values.get("machine", {})),
        HeartbeatConfig(**values.get("heartbeat", {})),
        IdentityConfig(**values.get("identity", {})),
        Path(state) if state else default_paths().state_dir,
    )
    _check_combinations(config)
    return config


def _check_combinations(config: AgentConfig) -> None:
    k = config.kafka
    if k.security_protocol == "SASL_SSL" and not (k.username and k.password_file):
        raise ConfigError(
            f"{config.where('kafka', 'security_protocol')}: SASL_SSL needs [kafka] username "
            "and password_file (a file holding the password, readable by the agent only)"
        )
    if config.identity.principal and not config.identity.secret_file:
        raise ConfigError(
            f"{config.where('identity', 'principal')}: [identity] principal needs "
            "secret_file (the file holding this principal's signing secret)"
        )
    if k.ca_file and k.security_protocol == "PLAINTEXT":
        raise ConfigError(
            f"{config.where('kafka', 'ca_file')}: ca_file is only used with "
            "security_protocol SSL or SASL_SSL; set one of them or drop ca_file"
        )


def read_secret(path_text: str, setting: str, config: AgentConfig | None = None,
                platform_name: str = sys.platform) -> str:
    """The first line of a secret file; refused when missing, empty or readable by others.

    ``setting`` (such as ``[kafka] password_file``) names it in errors; the secret itself is
    never shown.
    """
    where = f"{config.path}: {setting}" if config and config.path else setting
    path = Path(path_text).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"{where} = {path_text}: no such file; write the secret into it and make it "
            f"readable by the agent only (chmod 600 {path_text})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{where} = {path_text}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{where} = {path_text}: not a regular file")
    # Windows has ACLs, not mode bits: the installer restricts ProgramData\arcbeat instead
    if not platform_name.startswith("win") and st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError(
            f"{where} = {path_text}: every user of this machine may read or write it "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path_text}` (or 640 with "
            "the agent's group) and keep the secret"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(
            f"{where} = {path_text}: cannot read: {exc.strerror or exc}; the agent's user "
            "must be able to read it"
        ) from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConfigError(f"{where} = {path_text}: the file is empty; its first line is the secret")
    return secret


def _where(path: Path | None, section: str | None, key: str | None) -> str:
    """``path:line`` of ``key`` in ``[section]`` (or of the section header)."""
    if path is None:
        return f"[{section}] {key}" if section and key else f"[{section or key}]"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return str(path)
    current = ""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        header = re.fullmatch(r"\[\s*([^\]]+?)\s*\]\s*(#.*)?", stripped)
        if header:
            current = header.group(1).strip('"')
            if key is None and current == section:
                return f"{path}:{number}"
            continue
        if key is not None and current == (section or "") and re.match(
            rf'["\']?{re.escape(key)}["\']?\s*=', stripped
        ):
            return f"{path}:{number}"
        if section is None and key is not None and current == "" and stripped.startswith(key):
            return f"{path}:{number}"
    return str(path)


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)
