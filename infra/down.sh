#!/usr/bin/env bash
# Stop floe's Docker stack, including the Trino and Spark overlays if they
# were started.
#
#   infra/down.sh              # keep the data: MinIO objects, catalog DB
#   infra/down.sh --volumes    # also delete them (a clean slate)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() { sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }
die() { printf 'down.sh: %s\n' "$*" >&2; exit 2; }

args=(down --remove-orphans)
while [ $# -gt 0 ]; do
  case "$1" in
    -v | --volumes) args+=(--volumes) ;;
    -h | --help) usage; exit 0 ;;
    *) usage; die "unknown argument: $1" ;;
  esac
  shift
done

command -v docker >/dev/null 2>&1 || die "docker not found"

# All files, always: `down` then removes whichever overlay services run.
docker compose \
  -f "$HERE/docker-compose.yml" \
  -f "$HERE/compose.trino.yml" \
  -f "$HERE/compose.spark.yml" \
  "${args[@]}"
