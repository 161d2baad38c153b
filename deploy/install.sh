#!/usr/bin/env bash
# Installs everything arcbeat needs on a Debian machine with Python 3.11 and Java 17, as root:
# Prometheus + promtool, Alertmanager + amtool, InfluxDB 1.x, kcat and Maven from Debian, podman
# and mmdebstrap for the container tests (images are built locally from Debian packages),
# kustomize (built once with Go from the Go module proxy) for the Kubernetes manifests, and
# arcbeat itself (editable, with the test tools and podman-compose) and the machine agent
# (deploy/agent, its own distribution `arcbeat-agent`, editable) from PyPI. Kafka's jars are resolved by
# `arcbeat stack up` from Maven Central into state/jars (once). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for bin in prometheus promtool prometheus-alertmanager amtool influxd influx kcat mvn java \
  podman mmdebstrap runc systemd-analyze; do
  command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "install: missing ${need[*]}: installing Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq prometheus prometheus-alertmanager influxdb influxdb-client kcat \
    maven openjdk-17-jre-headless >/dev/null
  apt-get install -y -qq --no-install-recommends podman runc crun netavark aardvark-dns \
    containernetworking-plugins iptables uidmap conmon catatonit mmdebstrap systemd >/dev/null
fi
# kustomize renders deploy/kubernetes/ in the suite (kubernetes-validate, a Python test tool,
# checks the result offline)
KUSTOMIZE_VERSION=v5.5.0
if ! command -v kustomize >/dev/null 2>&1; then
  go=$(command -v go || echo /usr/local/go/bin/go)
  [ -x "$go" ] || { echo "install: kustomize needs Go (go install) and there is none" >&2; exit 1; }
  echo "install: building kustomize $KUSTOMIZE_VERSION with Go into /usr/local/bin (once)" >&2
  GOBIN=/usr/local/bin "$go" install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi
python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
python3 -m pip install -q --disable-pip-version-check -e ./deploy/agent
echo "install: done ($(arcbeat --help >/dev/null && arcbeat-agent --help >/dev/null \
  && echo 'arcbeat and arcbeat-agent commands ready'))" >&2
