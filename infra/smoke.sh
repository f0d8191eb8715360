#!/usr/bin/env bash
# Smoke-test a running stack (infra/up.sh first): the REST catalog answers
# GET /v1/config, creates a namespace and lists it; if the Trino or Spark
# overlay is running, that engine must see the namespace too. The namespace
# is dropped again at the end.
#
#   infra/smoke.sh
#
# Environment: FLOE_CATALOG_URI (default http://127.0.0.1:$FLOE_CATALOG_PORT,
# port 8181), FLOE_WAREHOUSE (default floe). Needs curl; the engine checks
# need docker. Exits non-zero on the first failed check.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CATALOG=${FLOE_CATALOG_URI:-http://127.0.0.1:${FLOE_CATALOG_PORT:-8181}}
CATALOG=${CATALOG%/}
WAREHOUSE=${FLOE_WAREHOUSE:-floe}
# Lower case on purpose: Trino folds schema names to lower case.
NS="floe_smoke_$(date +%s)_$$"

passed=0
step() { printf '==> %s\n' "$*" >&2; }
ok() { passed=$((passed + 1)); printf '    ok: %s\n' "$*" >&2; }
fail() {
  printf 'smoke: FAIL: %s\n' "$*" >&2
  printf 'smoke: %d passed, 1 failed\n' "$passed" >&2
  exit 1
}

command -v curl >/dev/null 2>&1 || fail "curl not found"

BODY=$(mktemp)
created=0
cleanup() {
  if [ "$created" = 1 ]; then
    # Best effort: leave no smoke namespace behind, even after a failure.
    curl -sS -o /dev/null -X DELETE "$BASE/namespaces/$NS" || true
  fi
  rm -f "$BODY"
}
trap cleanup EXIT

# http METHOD URL [JSON]: the response body lands in $BODY; a non-2xx status
# fails the smoke test and shows the body (the REST error model says why).
http() {
  local method=$1 url=$2 data=${3:-} code
  local args=(-sS -o "$BODY" -w '%{http_code}' -X "$method")
  if [ -n "$data" ]; then
    args+=(-H 'Content-Type: application/json' --data "$data")
  fi
  code=$(curl "${args[@]}" "$url") || fail "$method $url: no response (is the stack up? infra/up.sh)"
  case "$code" in
    2??) ;;
    *) fail "$method $url -> HTTP $code: $(cat "$BODY")" ;;
  esac
}

# --- REST catalog --------------------------------------------------------------
step "GET $CATALOG/v1/config?warehouse=$WAREHOUSE"
http GET "$CATALOG/v1/config?warehouse=$WAREHOUSE"
if ! grep -q '"defaults"' "$BODY" || ! grep -q '"overrides"' "$BODY"; then
  fail "/v1/config lacks 'defaults'/'overrides': $(cat "$BODY")"
fi
# A server may hand out a path prefix for all later routes (/v1/{prefix}/...).
# A flat string value, so sed is enough and no JSON tool is required.
prefix=$(sed -n 's/.*"prefix"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$BODY" | head -n 1)
BASE="$CATALOG/v1${prefix:+/$prefix}"
ok "config served${prefix:+ (prefix $prefix)}"

step "POST $BASE/namespaces ($NS)"
http POST "$BASE/namespaces" \
  "{\"namespace\":[\"$NS\"],\"properties\":{\"created-by\":\"infra/smoke.sh\"}}"
created=1
grep -q "\"$NS\"" "$BODY" || fail "create response does not name $NS: $(cat "$BODY")"
ok "namespace created"

step "GET $BASE/namespaces"
http GET "$BASE/namespaces"
grep -q "\"$NS\"" "$BODY" || fail "$NS missing from the namespace list: $(cat "$BODY")"
ok "namespace listed"

# --- engines, when their overlay is running -------------------------------------
compose() {
  docker compose \
    -f "$HERE/docker-compose.yml" \
    -f "$HERE/compose.trino.yml" \
    -f "$HERE/compose.spark.yml" \
    "$@"
}
running=""
if command -v docker >/dev/null 2>&1; then
  running=$(compose ps --status running --services 2>/dev/null || true)
fi

if printf '%s\n' "$running" | grep -qx trino; then
  step "Trino: SHOW SCHEMAS FROM iceberg"
  out=$(compose exec -T trino trino --output-format TSV \
    --execute 'SHOW SCHEMAS FROM iceberg' 2>&1) || fail "Trino query failed: $out"
  printf '%s\n' "$out" | grep -qx "$NS" || fail "Trino does not list $NS: $out"
  ok "Trino sees the namespace"
else
  step "Trino not running: skipped (infra/up.sh --trino)"
fi

if printf '%s\n' "$running" | grep -qx spark; then
  step "Spark: SHOW NAMESPACES IN floe"
  out=$(compose exec -T spark /opt/spark/bin/spark-sql -S \
    -e 'SHOW NAMESPACES IN floe' 2>/dev/null) || fail "spark-sql failed (compose logs spark)"
  printf '%s\n' "$out" | grep -qx "$NS" || fail "Spark does not list $NS: $out"
  ok "Spark sees the namespace"
else
  step "Spark not running: skipped (infra/up.sh --spark)"
fi

# --- clean up ------------------------------------------------------------------
step "DELETE $BASE/namespaces/$NS"
http DELETE "$BASE/namespaces/$NS"
created=0
ok "namespace dropped"

printf 'smoke: %d passed, 0 failed\n' "$passed" >&2
