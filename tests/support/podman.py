"""podman for the container tests: the sandbox-safe settings and the local Debian base image.

No image can be pulled here, so the base image is built from Debian packages once
(deploy/podman/build-base.sh, about 30 s) and kept in podman's storage between runs. A missing
podman or a failed build fails the test (never a skip): CI installs podman with deploy/install.sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import pytest

from tests.support.paths import REPO

CONTAINERS_CONF = REPO / "deploy" / "podman" / "containers.conf"
BASE_IMAGE = "localhost/arcbeat-python-base:bookworm"


def podman_env() -> dict[str, str]:
    """The environment for podman commands: CONTAINERS_CONF set to the repository's file."""
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(
    *args: str, check: bool = True, timeout: float = 600, capture: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``podman args``; on failure (with ``check``) fail the test with its output."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (bash deploy/install.sh installs it)", pytrace=False)
    proc = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        text=True,
        capture_output=capture,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return proc


def image_exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


def base_image() -> str:
    """The local Debian bookworm + python3 image, built once if podman does not have it."""
    if not image_exists(BASE_IMAGE):
        proc = subprocess.run(
            ["bash", str(REPO / "deploy" / "podman" / "build-base.sh"), BASE_IMAGE],
            env=podman_env(),
            text=True,
            capture_output=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"building the base image failed ({proc.returncode}):\n{proc.stderr[-4000:]}",
                pytrace=False,
            )
    return BASE_IMAGE


def build(tag: str, context: str, containerfile: str, build_args: Sequence[str] = ()) -> None:
    """``podman build`` of ``containerfile`` in ``context`` as ``tag`` (layers cached)."""
    args = ["build", "-t", tag, "-f", containerfile]
    for arg in build_args:
        args += ["--build-arg", arg]
    podman(*args, context, timeout=1200)
