#!/usr/bin/env bash
# Start floe's Docker stack and wait until every service is healthy:
# MinIO, the one-shot bucket init, and floe's REST catalog (built from this
# checkout); with --trino and/or --spark also those engines.
#
#   infra/up.sh [--trino] [--spark] [--all] [-- EXTRA_COMPOSE_UP_ARGS...]
#   eval "$(infra/up.sh)"      # also export the endpoints into your shell
#
# Endpoints go to stderr for people; `export` lines go to stdout for eval.
# Stop with infra/down.sh. Needs Docker with Compose v2 (`docker compose`).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }
die() { printf 'up.sh: %s\n' "$*" >&2; exit 2; }

files=(-f "$HERE/docker-compose.yml")
trino=0
spark=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --trino) trino=1 ;;
    --spark) spark=1 ;;
    --all) trino=1; spark=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) usage; die "unknown argument: $1" ;;
  esac
  shift
done
if [ "$trino" = 1 ]; then files+=(-f "$HERE/compose.trino.yml"); fi
if [ "$spark" = 1 ]; then files+=(-f "$HERE/compose.spark.yml"); fi

command -v docker >/dev/null 2>&1 \
  || die "docker not found; without Docker use the scripts in infra/local/ (see infra/README.md)"
docker compose version >/dev/null 2>&1 \
  || die "'docker compose' (Compose v2) not found; the stack relies on 'up --wait'"

# --build: rebuild the catalog image when the checkout changed (the Dockerfile
# caches cargo's registry and target/, so an unchanged tree is quick).
# ${extra[@]+...} keeps `set -u` quiet on an empty array in bash 3.2 (macOS).
docker compose "${files[@]}" up -d --wait --build ${extra[@]+"${extra[@]}"}

catalog_port=${FLOE_CATALOG_PORT:-8181}
minio_port=${MINIO_PORT:-9000}
console_port=${MINIO_CONSOLE_PORT:-9001}
trino_port=${TRINO_PORT:-8080}
user=${MINIO_ROOT_USER:-minioadmin}
password=${MINIO_ROOT_PASSWORD:-minioadmin}

{
  echo
  echo "floe infra is up (project 'floe'):"
  echo "  REST catalog   http://127.0.0.1:$catalog_port   (try: curl http://127.0.0.1:$catalog_port/v1/config)"
  echo "  MinIO S3 API   http://127.0.0.1:$minio_port   bucket 'warehouse', warehouse s3://warehouse/floe"
  echo "  MinIO console  http://127.0.0.1:$console_port"
  echo "  credentials    $user / $password   (DEV-ONLY defaults, not for production)"
  if [ "$trino" = 1 ]; then
    echo "  Trino          http://127.0.0.1:$trino_port   catalog 'iceberg'"
    echo "                 docker compose -f infra/docker-compose.yml -f infra/compose.trino.yml exec trino trino"
  fi
  if [ "$spark" = 1 ]; then
    echo "  Spark          catalog 'floe' (default)"
    echo "                 docker compose -f infra/docker-compose.yml -f infra/compose.spark.yml exec spark /opt/spark/bin/spark-sql"
  fi
  echo "Check it with infra/smoke.sh; stop it with infra/down.sh."
} >&2

# For floe and the integration tests running on the host. Inside the compose
# network the same services are http://catalog:8181 and http://minio:9000.
emit() { printf 'export %s=%q\n' "$1" "$2"; }
emit FLOE_CATALOG_URI "http://127.0.0.1:$catalog_port"
emit FLOE_S3_ENDPOINT "http://127.0.0.1:$minio_port"
emit FLOE_S3_REGION us-east-1
emit FLOE_S3_PATH_STYLE true
emit AWS_ACCESS_KEY_ID "$user"
emit AWS_SECRET_ACCESS_KEY "$password"
emit AWS_REGION us-east-1
