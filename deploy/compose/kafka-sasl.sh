#!/bin/bash
# Entrypoint of the kafka service in deploy/compose/sasl_ssl.yml: format the storage with
# the SCRAM users on the first start, then run the broker with the server.properties that
# `python -m arcbeat.deploy.compose_secrets` wrote (the same SASL_SSL block as the local
# stack). Needs CLUSTER_ID; KAFKA_HOME defaults to the apache/kafka image's /opt/kafka.
set -euo pipefail
KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
SECRETS=${ARCBEAT_KAFKA_SECRETS:-/secrets}
CONFIG=$SECRETS/server.properties
for f in "$CONFIG" "$SECRETS/scram.args"; do
  if [ ! -r "$f" ]; then
    echo "kafka-sasl: $f is missing or unreadable; run the kafka-secrets service first" >&2
    exit 2
  fi
done
: "${CLUSTER_ID:?kafka-sasl: set CLUSTER_ID (22 characters, base64url)}"
DATA=$(sed -n 's/^log\.dirs=//p' "$CONFIG" | tail -n 1)
if [ ! -f "$DATA/meta.properties" ]; then
  args=()
  while IFS= read -r line; do
    [ -n "$line" ] && args+=(--add-scram "$line")
  done < "$SECRETS/scram.args"
  # the salted values only: no password on this command line
  echo "kafka-sasl: formatting $DATA with $(( ${#args[@]} / 2 )) SCRAM users (salted, not shown)"
  "$KAFKA_HOME/bin/kafka-storage.sh" format --standalone -t "$CLUSTER_ID" -c "$CONFIG" \
    "${args[@]}" > /dev/null
fi
exec "$KAFKA_HOME/bin/kafka-server-start.sh" "$CONFIG"
