"""Detached service processes: start, recognise after a restart of arcbeat, stop for good.

Each service runs in its own session (so its process group id is its pid and a group kill
reaches anything it forked) with stdout/stderr appended to a log file. A pid file alone is not
trusted: the pid may have been reused, so a process counts as ours only if its command line
contains the service's *marker* (a path inside this stack's state folder).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_PROC = Path("/proc")
# Popen objects of processes started by this interpreter: kept so they can be reaped (no
# zombies while we poll) and so their exit code can be reported.
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    argv: Sequence[str], log_path: Path, *, cwd: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start ``argv`` detached (new session), output appended to ``log_path``; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(
            f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc.pid


def exit_code(pid: int) -> int | None:
    """Exit code of a process this interpreter started, once it has exited."""
    proc = _children.get(pid)
    return None if proc is None else proc.poll()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group id) from /proc/<pid>/stat, or None if there is no such pid."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest[0], int(rest[2])


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None:
        proc.poll()
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie does not count; our own zombies are reaped)."""
    _reap(pid)
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    """The command line of ``pid`` with arguments joined by NUL ('' if unreadable)."""
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def is_ours(pid: int, marker: str) -> bool:
    return alive(pid) and marker in cmdline(pid)


def find(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    found = []
    me = os.getpid()
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            pid = int(entry.name)
            if marker in cmdline(pid) and alive(pid):
                found.append(pid)
    return sorted(found)


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    members = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            st = _stat(pid)
            if st is not None and st[1] == pgid:
                _reap(pid)
                if alive(pid):
                    members.append(pid)
    return members


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def _signal(pid: int, sig: signal.Signals) -> None:
    # Our services lead their own group; signal the whole group so helpers they fork go too
    # (even after the leader itself is gone). The kernel never gives a live non-leader's pid
    # to a group, so killpg(pid) reaches only the group that pid started.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _remaining(pids: Sequence[int]) -> list[int]:
    left = set()
    for pid in pids:
        if alive(pid):
            left.add(pid)
        left.update(group_members(pid))
    return sorted(left)


def terminate(pids: Sequence[int], timeout: float) -> list[int]:
    """SIGTERM each pid's group, wait up to ``timeout`` s, then SIGKILL what is left.

    Returns the pids that had to be killed. Raises ``TimeoutError`` if anything survives
    SIGKILL (a process stuck in the kernel), naming the pids.
    """
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _remaining(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = _remaining(pids)
    for pid in killed:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while _remaining(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    stuck = _remaining(pids)
    if stuck:
        raise TimeoutError(f"processes {stuck} survived SIGKILL")
    for pid in pids:
        _children.pop(pid, None)
    return killed
