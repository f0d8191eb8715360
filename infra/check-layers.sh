#!/usr/bin/env bash
# The layers of src/ (README "Architecture") import only downwards:
#   commands (cli, *_cmd, connect, catalog_serve)
#   verbs    (ingest | transform | maintain)   never each other
#   places   (which pipeline tables are Delta, resolved by the commands)
#   table    (the table layer)                 never a verb or a command
#   base     (pipeline, rest, store, secret, duration, event_time, error, sigv4)
# Prints every import that goes the wrong way; exits 1 when there is one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bad=0
check() { # check LABEL PATHS... -- FORBIDDEN_MODULES...
    local label=$1; shift
    local paths=()
    while [[ $1 != -- ]]; do paths+=("$1"); shift; done
    shift
    for m in "$@"; do
        local hits
        hits=$(grep -rnE "crate::${m}(::|\b)" "${paths[@]}" --include='*.rs' | grep -vE '^[^:]+:[0-9]+:\s*//' || true)
        if [[ -n $hits ]]; then
            echo "layering: $label must not import crate::$m:"
            echo "$hits" | sed 's/^/  /'
            bad=1
        fi
    done
}

commands=(cli ingest_cmd transform_cmd maintain_cmd table_cmd connect catalog_serve)
base=(src/pipeline.rs src/pipeline src/rest.rs src/trino.rs src/store.rs src/secret.rs src/duration.rs src/event_time.rs src/error.rs src/sigv4.rs)

check "the table layer" src/table -- ingest transform maintain places "${commands[@]}"
check "ingest" src/ingest -- transform maintain "${commands[@]}"
check "transform" src/transform -- ingest maintain "${commands[@]}"
check "maintain" src/maintain -- ingest transform places "${commands[@]}"
check "places" src/places.rs -- ingest transform maintain "${commands[@]}"
check "the base modules" "${base[@]}" -- table places ingest transform maintain "${commands[@]}"
# unsafe code is denied everywhere (Cargo.toml); one function of the
# binary may set the allocator's parameters, and nothing else may allow it.
allowed=$(grep -rn 'allow(unsafe_code)' src catalog --include='*.rs' | grep -v '^src/main.rs:' || true)
if [[ -n $allowed || $(grep -c 'allow(unsafe_code)' src/main.rs) -gt 1 ]]; then
    echo "unsafe: only keep_freed_memory in src/main.rs may allow unsafe_code:"
    echo "$allowed" | sed 's/^/  /'
    bad=1
fi
# Format forks stay in the table layer (and the command layer, which
# prints a table's format): no verb names Delta.
check "the verbs" src/ingest src/maintain -- 'table::delta'
if [[ $bad -eq 0 ]]; then
    echo "layering: ok"
fi
exit $bad
