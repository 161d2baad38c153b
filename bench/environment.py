"""What the figures were measured on: the machine, its load, and the versions in use."""

from __future__ import annotations

import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from arcbeat.deploy.settings import Settings


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mem_total_mib() -> int:
    m = re.search(r"^MemTotal:\s+(\d+) kB", _read("/proc/meminfo"), re.M)
    return int(m.group(1)) // 1024 if m else 0


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_pressure() -> dict[str, float]:
    """Share of time runnable tasks waited for a CPU (/proc/pressure/cpu, "some" line), over
    the last 10 s, 60 s and 300 s: how much other processes competed for the cores."""
    for line in _read("/proc/pressure/cpu").splitlines():
        if line.startswith("some "):
            values = dict(kv.split("=", 1) for kv in line.split()[1:])
            return {k: round(float(values[k]) / 100, 3) for k in ("avg10", "avg60", "avg300")}
    return {}


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count() or 0,
        "memoryMiB": mem_total_mib(),
        "cpuModel": cpu_model(),
        "kernel": platform.release(),
        "loadAverage": load_average(),
        "cpuPressure": cpu_pressure(),
    }


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def kafka_version(settings: Settings) -> str:
    """From the broker jar the local stack runs (``kafka_<scala>-<version>.jar``)."""
    for folder in (Path(settings.stack.state_dir) / "jars", Path("/tmp/kjars")):
        for jar in sorted(folder.glob("kafka_*.jar")):
            m = re.fullmatch(r"kafka_[\d.]+-(.+)\.jar", jar.name)
            if m:
                return m.group(1)
    return "unknown (no kafka_*.jar under state/jars)"


def versions(settings: Settings) -> dict[str, str]:
    return {
        "python": sys.version.split()[0],
        "faust-streaming": _version("faust-streaming"),
        "aiokafka": _version("aiokafka"),
        "orjson": _version("orjson"),
        "kafka": kafka_version(settings),
        "arcbeat": _version("arcbeat"),
    }
