#!/usr/bin/env bash
# Builds the local Debian base image with Python 3.11 (bookworm's python3) from Debian packages
# with mmdebstrap, for hosts that cannot pull images from a registry. The arcbeat image
# (Dockerfile, --build-arg BASE=...) and the agent's systemd test image start from it.
#   usage: build-base.sh [IMAGE]   (default localhost/arcbeat-python-base:bookworm)
# Needs root, mmdebstrap and podman; CONTAINERS_CONF should point at deploy/podman/containers.conf
# on sandboxed hosts. Takes about a minute; skip it when the image exists.
set -euo pipefail
image="${1:-localhost/arcbeat-python-base:bookworm}"
mirror="${ARCBEAT_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "build-base: mmdebstrap bookworm from $mirror (minbase + python3) ..." >&2
mmdebstrap --quiet --variant=minbase \
  --include=ca-certificates,python3,python3-venv,python3-pip \
  --aptopt='APT::Install-Recommends "false"' \
  bookworm "$work/rootfs.tar" "$mirror"
echo "build-base: importing as $image" >&2
podman import --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$image" >/dev/null
echo "build-base: done: $image" >&2
