#!/usr/bin/env bash
# Create (if missing) a Python virtual environment for floe's Python tests and install
# tests/python/requirements.txt (or REQUIREMENTS: bench/bench-env.sh passes the
# benchmarks') into it. Idempotent: a stamp file in the venv holds the sha256 of the
# requirements it was installed from; when it matches, nothing is done.
#
# usage: infra/local/python-env.sh VENV_DIR [REQUIREMENTS]
# env:   PYTHON  interpreter used to create a new venv (default: python3)
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 VENV_DIR [REQUIREMENTS]" >&2
    exit 2
fi

venv=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
requirements=${2:-$here/../../tests/python/requirements.txt}
stamp="$venv/.floe-requirements.sha256"
python=${PYTHON:-python3}

want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$requirements" >"$log" 2>&1; then
    cat "$log" >&2
    echo "python-env: pip install failed for $requirements" >&2
    exit 1
fi
echo "$want" >"$stamp"
