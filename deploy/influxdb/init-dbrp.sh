#!/bin/bash
# InfluxDB 2 (docker-compose): runs once, right after the image's first setup, with the
# influx CLI already pointed at the new instance and DOCKER_INFLUXDB_INIT_* (including the
# bucket and org ids) in the environment.
#
# InfluxQL needs a database/retention-policy name: map arcbeat/autogen to the bucket, so
# `/query?db=arcbeat` (Grafana's InfluxQL datasource, the dashboards) and v1 `/write?db=`
# both reach it. A v1 user lets InfluxQL clients authenticate with username/password.
set -euo pipefail

bucket_id="${DOCKER_INFLUXDB_INIT_BUCKET_ID}"
org="${DOCKER_INFLUXDB_INIT_ORG}"
db="${DOCKER_INFLUXDB_INIT_BUCKET}"

influx v1 dbrp create --org "${org}" --bucket-id "${bucket_id}" --db "${db}" --rp autogen --default
influx v1 auth create --org "${org}" \
  --username "${ARCBEAT_INFLUX_USERNAME:-arcbeat}" \
  --password "${ARCBEAT_INFLUX_PASSWORD:-arcbeat-dev-password}" \
  --read-bucket "${bucket_id}" --write-bucket "${bucket_id}"
echo "arcbeat: InfluxQL database ${db} (rp autogen) -> bucket ${bucket_id}"
