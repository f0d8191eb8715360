#!/usr/bin/env bash
# A local Spark for tests: pyspark from PyPI in its own virtual environment, and the
# packages infra/spark/spark-defaults.conf names (`spark.jars.packages`: Iceberg's Spark
# runtime and AWS bundle, Delta, hadoop-aws) with their runtime dependencies from Maven
# Central, as local jars. The versions are the conf file's, so the file users run is the one
# tested. No container, no Spark distribution: pyspark ships Spark's jars.
#
# usage: infra/local/spark.sh install CACHE_DIR
#            creates (once) CACHE_DIR/venv-spark with pyspark and fetches (once) the jars into
#            CACHE_DIR/spark-jars/<hash of the package list>; prints, last on stdout,
#              FLOE_SPARK_PYTHON=<the venv's python>
#              FLOE_SPARK_JARS=<the jars, comma-separated, for spark.jars>
#
# Idempotent: a second run checks the installed pyspark version and a stamp file beside the
# jars and takes about a second. Progress and errors go to stderr.
#
# env: PYSPARK_VERSION (default 3.5.9), PYTHON (creates the venv; default python3).
set -euo pipefail

pyspark_version=${PYSPARK_VERSION:-3.5.9}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
conf="$here/../spark/spark-defaults.conf"

usage() {
    echo "usage: $0 install CACHE_DIR" >&2
    exit 2
}

die() {
    echo "spark.sh: $*" >&2
    exit 1
}

say() { echo "spark.sh: $*" >&2; }

ensure_tools() {
    local missing=()
    command -v mvn >/dev/null || missing+=(maven)
    command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]} and not root: install them first"
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# pyspark into VENV unless that exact version is there already.
install_pyspark() {
    local venv=$1
    if [[ ! -x "$venv/bin/python" ]]; then
        say "creating $venv"
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    if "$venv/bin/python" -c 'import sys; from importlib.metadata import version
sys.exit(version("pyspark") != sys.argv[1])' "$pyspark_version" 2>/dev/null; then
        return 0
    fi
    say "pip install pyspark==$pyspark_version"
    local log
    log=$(mktemp)
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "pyspark==$pyspark_version" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "pip install pyspark==$pyspark_version failed"
    fi
    rm -f "$log"
}

# The comma-separated coordinates of spark.jars.packages in the conf file.
conf_packages() {
    local key value
    while read -r key value; do
        [[ "$key" == spark.jars.packages ]] && { echo "$value"; return 0; }
    done <"$conf"
    die "no spark.jars.packages line in $conf"
}

# The Hadoop version pyspark ships (its hadoop-client-api jar): hadoop-aws must match it.
pyspark_hadoop() {
    local venv=$1 jar
    jar=$(compgen -G "$venv/lib/python3*/site-packages/pyspark/jars/hadoop-client-api-*.jar" | head -n 1) ||
        die "no hadoop-client-api jar in $venv's pyspark"
    jar=${jar##*/hadoop-client-api-}
    echo "${jar%.jar}"
}

# A throwaway Maven project whose dependencies are the packages; copy-dependencies puts them
# and their runtime dependencies into DIR, as Spark's --packages (Ivy) would, minus what
# Spark itself ships (Scala, Spark, ANTLR, logging).
fetch_jars() {
    local packages=$1 dir=$2 tmp=$3
    local deps="" coords group artifact version
    IFS=, read -r -a coords <<<"$packages"
    for c in "${coords[@]}"; do
        IFS=: read -r group artifact version <<<"$c"
        [[ -n "$group" && -n "$artifact" && -n "$version" ]] || die "bad package '$c' in $conf"
        deps+="<dependency><groupId>$group</groupId><artifactId>$artifact</artifactId><version>$version</version></dependency>"
    done
    cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>floe.local</groupId><artifactId>spark-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>$deps</dependencies>
</project>
EOF
    mvn -q -B -f "$tmp/pom.xml" -Dmaven.repo.local="$tmp/m2" \
        org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$dir" \
        -DexcludeGroupIds=org.scala-lang,org.scala-lang.modules,org.apache.spark,org.antlr,org.slf4j,org.apache.logging.log4j \
        >"$tmp/mvn.log" 2>&1 ||
        { tail -n 30 "$tmp/mvn.log" >&2; die "mvn could not fetch $packages"; }
}

cmd_install() {
    local cache=$1
    mkdir -p "$cache"
    cache=$(cd "$cache" && pwd)
    local venv="$cache/venv-spark"
    install_pyspark "$venv"

    local packages hadoop
    packages=$(conf_packages)
    hadoop=$(pyspark_hadoop "$venv")
    [[ ",$packages," == *",org.apache.hadoop:hadoop-aws:$hadoop,"* ]] ||
        die "pyspark $pyspark_version ships Hadoop $hadoop, but $conf does not name org.apache.hadoop:hadoop-aws:$hadoop"

    local dir
    dir="$cache/spark-jars/$(printf '%s' "$packages" | sha256sum | cut -c1-12)"
    if [[ ! -f "$dir/.floe-installed" ]]; then
        ensure_tools
        mkdir -p "$cache/spark-jars"
        local tmp
        tmp=$(mktemp -d "$cache/spark-jars/.install.XXXXXX")
        # shellcheck disable=SC2064 # expand now: tmp is local
        trap "rm -rf '$tmp'" EXIT
        say "fetching $packages from Maven Central"
        mkdir -p "$tmp/jars"
        fetch_jars "$packages" "$tmp/jars" "$tmp"
        printf '%s\n' "$packages" >"$tmp/jars/.floe-installed"
        rm -rf "$dir"
        mv "$tmp/jars" "$dir"
    fi
    local jars
    jars=$(find "$dir" -maxdepth 1 -name '*.jar' | sort | paste -sd, -)
    [[ -n "$jars" ]] || die "no jars in $dir"
    echo "FLOE_SPARK_PYTHON=$venv/bin/python"
    echo "FLOE_SPARK_JARS=$jars"
}

[[ $# -ge 1 ]] || usage
case "$1" in
    install)
        [[ $# -eq 2 ]] || usage
        cmd_install "$2"
        ;;
    *) usage ;;
esac
