#!/usr/bin/env bash
# floe's main job on the embedded default, as far as it exists today: the
# built-in Iceberg REST catalog on a local-folder warehouse (./warehouse).
# Builds floe, starts `floe catalog serve`, creates a namespace and a
# day-partitioned table through the REST API, commits a change, shows the
# catalog's answers and the metadata files on disk, and stops the server.
# Needs cargo, curl and python3 (for pretty-printing JSON).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
warehouse=${FLOE_WAREHOUSE:-$root/warehouse}

echo "==> building floe (release)"
cargo build --release --locked --bin floe
floe=${CARGO_TARGET_DIR:-$root/target}/release/floe

ready=$(mktemp)
log=$(mktemp)
"$floe" catalog serve --listen 127.0.0.1:0 --warehouse "$warehouse" --ready-file "$ready" 2>"$log" &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$ready" "$log"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
    [[ -s "$ready" ]] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
[[ -s "$ready" ]] || { echo "catalog did not start within 10 s" >&2; cat "$log" >&2; exit 1; }
uri="http://$(cat "$ready")"
echo "==> catalog serving $warehouse at $uri"

pretty() { python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=2)[:2000])'; }
call() {
    local method=$1 path=$2 body=${3:-}
    if [[ -n "$body" ]]; then
        curl -sS -X "$method" "$uri$path" -H 'content-type: application/json' -d "$body"
    else
        curl -sS -X "$method" "$uri$path"
    fi
}

echo "==> GET /v1/config"
call GET /v1/config | pretty
if ! call GET /v1/namespaces/demo >/dev/null 2>&1 || call GET /v1/namespaces/demo | grep -q NoSuchNamespace; then
    echo "==> create namespace demo"
    call POST /v1/namespaces '{"namespace":["demo"],"properties":{"owner":"floe-demo"}}' | pretty
fi
if call GET /v1/namespaces/demo/tables/readings | grep -q NoSuchTable; then
    echo "==> create table demo.readings, partitioned by day(ts_utc)"
    call POST /v1/namespaces/demo/tables '{
      "name": "readings",
      "schema": {"type": "struct", "schema-id": 0, "fields": [
        {"id": 1, "name": "ts_utc", "type": "timestamptz", "required": true},
        {"id": 2, "name": "site_id", "type": "string", "required": true},
        {"id": 3, "name": "value", "type": "double", "required": false}]},
      "partition-spec": {"fields": [{"source-id": 1, "transform": "day", "name": "ts_utc_day"}]}
    }' >/dev/null
fi
echo "==> commit: set a table property"
call POST /v1/namespaces/demo/tables/readings \
    "{\"requirements\":[],\"updates\":[{\"action\":\"set-properties\",\"updates\":{\"demo.last-run\":\"$(date -u +%FT%TZ)\"}}]}" >/dev/null
echo "==> GET /v1/namespaces/demo/tables"
call GET /v1/namespaces/demo/tables | pretty
echo "==> the table as the catalog serves it"
call GET /v1/namespaces/demo/tables/readings | python3 -c '
import json, sys
t = json.load(sys.stdin); m = t["metadata"]
print("metadata-location:", t["metadata-location"])
print("format-version:   ", m["format-version"])
print("partition spec:   ", m["partition-specs"][0]["fields"])
print("properties:       ", m["properties"])
print("metadata versions:", len(m.get("metadata-log", [])) + 1)'
echo "==> files in the warehouse"
find "$warehouse" -type f | sort | sed "s|^$warehouse/||"
echo "==> done: point pyiceberg, Spark or Trino at a running 'floe catalog serve' (see README)"
