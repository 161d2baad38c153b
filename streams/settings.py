"""Typed, frozen settings: ``ARCBEAT_*`` env over an optional ``arcbeat.toml`` over defaults.

:class:`Settings` is the loaded configuration, made of one section per concern
(:class:`KafkaSettings`, :class:`TimingSettings`, ...), so that a module can take just the
section it uses. The sections the stream processor does not use live with their users, in
subclasses of :class:`Settings` (:mod:`arcbeat.exporters.settings`,
:mod:`arcbeat.deploy.settings`: the root the ``arcbeat`` command loads). Users name every
setting by its flat name (``kafka_bootstrap``, ``ARCBEAT_KAFKA_BOOTSTRAP``, the arcbeat.toml
key ``kafka_bootstrap``); :meth:`Settings.settings` maps each flat name to its section and
field (``kafka.bootstrap``), :data:`SETTINGS` for the stream processor's.

A bad value fails at start with a :class:`SettingsError` naming the setting, where it came from
and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args, get_origin, get_type_hints

from arcbeat.streams.sections import (
    DEFAULT_REGIONS,
    KAFKA_SASL_MECHANISMS,
    KAFKA_SECURITY_PROTOCOLS,
    MAX_REPLICATION,
    IdentitySettings,
    InputSettings,
    KafkaSettings,
    TimingSettings,
    WorkerSettings,
)
from arcbeat.streams.setting_values import (
    DURATION_MARK,
    LOADED_SECRET_MARK,
    SECRET_MARK,
    SettingsError,
    env_name,
    parse_bool,
    parse_duration,
    parse_list,
    read_secret,
    worker_ordinal,
)
from arcbeat.streams.topics import Topics

# the settings' API: what the rest of arcbeat imports from here
__all__ = [
    "DEFAULT_REGIONS",
    "KAFKA_SASL_MECHANISMS",
    "KAFKA_SECURITY_PROTOCOLS",
    "MAX_REPLICATION",
    "SETTINGS",
    "IdentitySettings",
    "InputSettings",
    "KafkaSettings",
    "Setting",
    "Settings",
    "SettingsError",
    "TimingSettings",
    "WorkerSettings",
    "env_name",
    "parse_duration",
    "read_secret",
    "setting",
    "worker_ordinal",
]

# ---- the loaded configuration ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of the stream processor, by section. Durations are seconds (floats).

    The sections of the other parts live with their users, in subclasses that add fields:
    :class:`arcbeat.exporters.settings.Settings` (InfluxDB, capacity planning) and
    :class:`arcbeat.deploy.settings.Settings` (the local stack), the root the ``arcbeat``
    command loads. Each class knows its sections and their settings from its fields
    (:meth:`sections`, :meth:`settings`), so a section is declared once, where it is used.
    """

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    timing: TimingSettings = field(default_factory=TimingSettings)
    input: InputSettings = field(default_factory=InputSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)

    @property
    def topics(self) -> Topics:
        return self.kafka.topics

    @classmethod
    def sections(cls) -> Mapping[str, type[Any]]:
        """The sections of this class, by field name, in their order."""
        found = _SECTIONS.get(cls)
        if found is None:
            hints = get_type_hints(cls)
            found = _SECTIONS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
        return found

    @classmethod
    def settings(cls) -> Mapping[str, Setting]:
        """Every setting of this class by its flat name, from the sections' fields."""
        found = _DECLARED.get(cls)
        if found is None:
            found = _DECLARED[cls] = _declared(cls.sections())
        return found

    @classmethod
    def setting(cls, name: str, where: str = "") -> Setting:
        """The setting named ``name``; a :class:`SettingsError` listing the known ones if
        none."""
        known = cls.settings()
        try:
            return known[name]
        except KeyError:
            prefix = f"{where}: " if where else ""
            raise SettingsError(
                f"{prefix}unknown setting {name!r}; known settings: {', '.join(sorted(known))}"
            ) from None

    def value(self, name: str) -> Any:
        """The setting ``name`` by its flat name (``kafka_bootstrap`` -> ``kafka.bootstrap``)."""
        s = self.setting(name)
        return getattr(getattr(self, s.section), s.field)

    def replace(self, **changes: Any) -> Self:
        """A copy with some settings changed, validated like a fresh load.

        Keys are flat setting names (``partitions=1``, ``kafka_bootstrap=...``) or whole
        sections (``kafka=KafkaSettings(...)``).
        """
        sections: dict[str, Any] = {}
        by_section: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if key in self.sections():
                sections[key] = value
            else:
                s = self.setting(key, f"argument {key}")
                by_section.setdefault(s.section, {})[s.field] = value
        for section, values in by_section.items():
            base = sections.get(section, getattr(self, section))
            sections[section] = dataclasses.replace(base, **values)
        new = dataclasses.replace(self, **sections)
        new.validate()
        return new

    def validate(self) -> None:
        """Each section checks its own settings."""
        for name in self.sections():
            getattr(self, name).validate()

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        toml_path: str | Path | None = None,
        **overrides: Any,
    ) -> Self:
        """Defaults, then ``arcbeat.toml`` (``ARCBEAT_CONFIG`` or ./arcbeat.toml), then env."""
        env = os.environ if env is None else env
        known = cls.settings()
        values: dict[str, Any] = {}
        path = Path(toml_path or env.get("ARCBEAT_CONFIG", "arcbeat.toml"))
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
            section = data.get("arcbeat", data)
            for key, raw in section.items():
                values[key] = (raw, f"{path} [{key}]")
        for name, s in known.items():
            if s.env in env:
                values[name] = (env[s.env], f"environment {s.env}")
        for key, raw in overrides.items():
            values[key] = (raw, f"argument {key}")
        parsed: dict[str, Any] = {}
        for key, (raw, where) in values.items():
            parsed[key] = cls.setting(key, where).convert(raw, where)
        # secrets kept in files (Docker/Kubernetes secrets) and declared LoadedSecret are read
        # once, here; a Secret is read by its client when it connects
        for name, s in known.items():
            if s.secret != LOADED_SECRET_MARK:
                continue
            if not parsed.get(name) and parsed.get(f"{name}_file"):
                parsed[name] = read_secret("", parsed[f"{name}_file"], name)
        by_section: dict[str, dict[str, Any]] = {}
        for key, value in parsed.items():
            s = known[key]
            by_section.setdefault(s.section, {})[s.field] = value
        settings = cls(
            **{name: kind(**by_section.get(name, {})) for name, kind in cls.sections().items()}
        )
        settings.validate()
        return settings


_SECTIONS: dict[type[Settings], dict[str, type[Any]]] = {}
_DECLARED: dict[type[Settings], dict[str, Setting]] = {}


# ---- flat names -----------------------------------------------------------------------------

Conversion = Literal["str", "int", "float", "bool", "duration", "list"]


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting as users name it: ``ARCBEAT_<NAME>`` and the arcbeat.toml key ``<name>``,
    where it lives in :class:`Settings` (``section.field``) and how its text is converted."""

    name: str
    section: str
    field: str
    conversion: Conversion
    secret: str = ""  # SECRET_MARK, LOADED_SECRET_MARK or ""
    kind: type[Any] = object  # the section's class

    @property
    def env(self) -> str:
        return env_name(self.name)

    @property
    def path(self) -> str:
        """``section.field``: how code reads it from a :class:`Settings`."""
        return f"{self.section}.{self.field}"

    @property
    def default(self) -> Any:
        return getattr(self.kind(), self.field)

    def convert(self, raw: object, where: str) -> Any:
        try:
            match self.conversion:
                case "duration":
                    return parse_duration(raw)
                case "bool":
                    return parse_bool(raw)
                case "int":
                    return int(str(raw).replace("_", ""))
                case "float":
                    return float(str(raw))
                case "list":
                    return parse_list(raw)
                case "str":
                    return str(raw)
        except ValueError as exc:
            raise SettingsError(
                f"setting {self.name} from {where}: bad value {raw!r}: {exc}"
            ) from exc


def _conversion(annotation: Any) -> tuple[Conversion, str]:
    """(how the text of a field with this annotation is converted, its secret mark or "")."""
    if get_origin(annotation) is Annotated:
        base, *marks = get_args(annotation)
        if DURATION_MARK in marks:
            return "duration", ""
        secret = next((m for m in marks if m in (SECRET_MARK, LOADED_SECRET_MARK)), "")
        return _conversion(base)[0], secret
    if annotation is bool:
        return "bool", ""
    if annotation is int:
        return "int", ""
    if annotation is float:
        return "float", ""
    if get_origin(annotation) is tuple:
        return "list", ""
    if annotation is str or get_origin(annotation) is Literal:
        return "str", ""
    raise TypeError(f"a setting cannot be of type {annotation!r}")


def _declared(sections: Mapping[str, type[Any]]) -> dict[str, Setting]:
    """Every setting, from the sections' fields (in their order)."""
    out: dict[str, Setting] = {}
    for section, kind in sections.items():
        hints = get_type_hints(kind, include_extras=True)
        for f in dataclasses.fields(kind):
            name = f.metadata.get("flat", f.name)
            conversion, secret = _conversion(hints[f.name])
            if name in out:
                raise TypeError(
                    f"two settings named {name}: {out[name].path} and {section}.{f.name}"
                )
            out[name] = Setting(name, section, f.name, conversion, secret, kind)
    return out


# the stream processor's own settings (the arcbeat command's are arcbeat.deploy.settings')
SETTINGS: Mapping[str, Setting] = Settings.settings()


def setting(name: str, where: str = "") -> Setting:
    """The stream processor's setting named ``name`` (:meth:`Settings.setting`)."""
    return Settings.setting(name, where)
