"""Which operating systems count as supported in the capacity report."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class OsRule:
    """One supported operating system: ``names`` are lower-case prefixes of ``osName``;
    ``versions`` are accepted ``osVersion`` values (``7`` accepts ``7`` and ``7.9``)."""

    label: str
    names: tuple[str, ...]
    versions: tuple[str, ...]

    def matches(self, os_name: str, os_version: str) -> bool:
        name = os_name.strip().lower()
        if not any(name.startswith(n) for n in self.names):
            return False
        version = os_version.strip().lower()
        return any(
            version == v or version.startswith(v + ".") or version.startswith(v + " ")
            for v in self.versions
        )


# The supported operating systems (the capacity report counts the others). Windows is matched
# by _windows_supported (2012 R2 and higher); the rest by OsRule. Pass another tuple to
# build_report to change what counts as supported.
SUPPORTED_OPERATING_SYSTEMS: Final[tuple[OsRule, ...]] = (
    OsRule("Ubuntu 16.04, 18.04", ("ubuntu",), ("16.04", "18.04")),
    OsRule("CentOS 7", ("centos",), ("7",)),
    OsRule("SLES 15", ("sles", "suse linux enterprise server"), ("15",)),
    OsRule("RHEL 7", ("rhel", "red hat enterprise linux"), ("7",)),
    OsRule("Amazon Linux 7", ("amazon linux",), ("7",)),
)
WINDOWS_MINIMUM: Final = "Windows Server 2012 R2"

_WINDOWS_YEAR = re.compile(r"windows server (\d{4})( r2)?")
_WINDOWS_KERNEL = re.compile(r"^(\d+)\.(\d+)")


def _windows_supported(os_name: str, os_version: str) -> bool | None:
    """True/False for Windows, None when the machine is not Windows."""
    name = os_name.strip().lower()
    if not name.startswith("windows"):
        return None
    m = _WINDOWS_YEAR.search(name)
    if m:
        year = int(m.group(1))
        return year > 2012 or (year == 2012 and m.group(2) is not None)
    if not name.startswith("windows server"):
        return False  # client Windows (10, 11) is not a supported Arc server OS here
    k = _WINDOWS_KERNEL.match(os_version.strip())
    # 6.3 is the 2012 R2 kernel; 10.0 covers 2016 and later.
    return k is not None and (int(k.group(1)), int(k.group(2))) >= (6, 3)


def os_supported(
    os_name: str, os_version: str, rules: Sequence[OsRule] = SUPPORTED_OPERATING_SYSTEMS
) -> bool | None:
    """True/False, or None when the machine did not report its OS (cannot tell)."""
    if not os_name.strip():
        return None
    windows = _windows_supported(os_name, os_version)
    if windows is not None:
        return windows
    return any(rule.matches(os_name, os_version) for rule in rules)
