#!/usr/bin/env bash
# Create (if missing) the benchmarks' own Python virtual environment, with the tools floe
# is compared against (dlt and its SQL and Iceberg extras: bench/requirements-bench.txt),
# kept apart from the test venv of infra/local/python-env.sh. Idempotent: a stamp file in
# the venv holds the sha256 of the requirements it was installed from; when it matches,
# nothing is done. Prints the venv's python last.
#
# usage: bench/bench-env.sh [VENV_DIR]      (default: ~/.cache/floe/venv-bench)
# env:   PYTHON  interpreter used to create a new venv (default: python3)
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
if [[ $# -gt 1 ]]; then
    echo "usage: $0 [VENV_DIR]" >&2
    exit 2
fi

venv=${1:-$HOME/.cache/floe/venv-bench}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/../infra/local/python-env.sh" "$venv" "$here/requirements-bench.txt"
echo "$venv/bin/python"
