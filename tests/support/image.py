"""The arcbeat image for the container tests, and containers run from it on the host network.

The Dockerfile is built with podman on the local Debian base (tests/support/podman.py), in the
docker format (the OCI format drops HEALTHCHECK). podman's layer cache keeps it between runs:
the first build installs the dependencies from PyPI (about 30 s here), a later one with
unchanged dependencies takes a few seconds. When the tag moves to a new build, the image it
named before is removed, so repeated runs do not pile up images.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tests.support.paths import REPO
from tests.support.podman import base_image, podman
from tests.support.progress import sayer

IMAGE = "localhost/arcbeat:test"
say = sayer("image")


def _ca_bundle() -> str | None:
    """The CA bundle pip trusts on this host (behind a TLS-intercepting proxy, the build's pip
    needs it too: the Dockerfile takes it as the build secret ``pip-ca``)."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("REQUESTS_CA_BUNDLE"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def image_id(image: str) -> str | None:
    proc = podman("image", "inspect", "--format", "{{.Id}}", image, check=False)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


@functools.cache
def arcbeat_image() -> str:
    """``podman build`` of the Dockerfile as :data:`IMAGE` on the local base (cached layers),
    once per test session."""
    base = base_image()
    before = image_id(IMAGE)
    args = ["build", "--format", "docker", "-t", IMAGE, "--build-arg", f"BASE={base}"]
    ca = _ca_bundle()
    if ca is not None:
        args += ["--secret", f"id=pip-ca,src={ca}"]
    t0 = time.monotonic()
    podman(*args, "-f", str(REPO / "Dockerfile"), str(REPO), timeout=1200)
    after = image_id(IMAGE)
    say(f"built {IMAGE} in {time.monotonic() - t0:.1f}s ({image_size(IMAGE) / 1e6:.0f} MB)")
    if before is not None and before != after:
        podman("rmi", before, check=False)  # still used by a container: kept, no harm
    return IMAGE


def image_size(image: str) -> int:
    """The image's size in bytes, base layers included (what `podman images` shows)."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def inspect(image: str) -> dict[str, object]:
    [doc] = json.loads(podman("image", "inspect", image).stdout)
    return dict(doc)


class Containers:
    """Containers started from the image on the host network, removed by :meth:`close`."""

    def __init__(self, image: str, env: Mapping[str, str]) -> None:
        self.image = image
        self.env = dict(env)
        self.names: list[str] = []

    def _env_args(self, extra: Mapping[str, str] | None) -> list[str]:
        return [a for k, v in {**self.env, **(extra or {})}.items() for a in ("-e", f"{k}={v}")]

    def start(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        options: Sequence[str] = (),
    ) -> str:
        """``podman run -d [options]`` of ``command``; no health-check timer (podman would need
        systemd for one): tests run the image's check with :meth:`healthcheck`."""
        self.names.append(name)
        podman(
            "run", "-d", "--name", name, "--network=host", "--health-interval=disable",
            *options, *self._env_args(env), self.image, *command,
        )  # fmt: skip
        say(f"started {name}: {' '.join(command)}")
        return name

    def run(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        """``podman run --rm`` of a one-shot command; its output (fails the test on exit != 0)."""
        proc = podman(
            "run", "--rm", "--network=host", "--health-interval=disable",
            *self._env_args(env), self.image, *command,
        )  # fmt: skip
        return proc.stdout + proc.stderr

    def running(self, name: str) -> bool:
        proc = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
        return proc.stdout.strip() == "true"

    def healthcheck(self, name: str) -> tuple[int, str]:
        """The image's HEALTHCHECK run now in ``name``: (exit code, what podman says)."""
        proc = podman("healthcheck", "run", name, check=False)
        return proc.returncode, (proc.stdout + proc.stderr).strip()

    def logs(self, lines: int = 40) -> str:
        out = []
        for name in self.names:
            proc = podman("logs", "--tail", str(lines), name, check=False)
            out.append(f"--- {name} (last {lines} lines) ---\n{proc.stdout}{proc.stderr}")
        return "\n".join(out)

    def close(self) -> None:
        for name in reversed(self.names):
            podman("rm", "-f", "-t", "10", name, check=False)


@contextlib.contextmanager
def containers(image: str, env: Mapping[str, str]) -> Iterator[Containers]:
    running = Containers(image, env)
    try:
        yield running
    finally:
        running.close()
