#!/usr/bin/env bash
# A local single-node Trino for tests: the server and its Iceberg plugin from Maven
# Central (no container image), listening on 127.0.0.1 only. (Maven Central serves no
# io.trino:trino-delta-lake ZIP of the same version, so there is no Delta catalog yet.)
#
# usage: infra/local/trino.sh install CACHE_DIR
#            downloads (once) and unpacks Trino into CACHE_DIR/trino-VERSION; prints that path
#        infra/local/trino.sh start WORK_DIR PORT CATALOG_URI [KEY=VALUE...] \
#                                   [--catalog NAME CATALOG_URI [KEY=VALUE...]]...
#            writes WORK_DIR/etc (catalogs from infra/trino/catalog/*.properties), starts Trino
#            and waits until it has started; prints http://127.0.0.1:PORT last
#        infra/local/trino.sh stop WORK_DIR
#
# The first CATALOG_URI is the catalog `iceberg`; each --catalog adds another Iceberg
# catalog NAME, made from the same iceberg.properties. KEY=VALUE pairs fill in the test
# endpoints of the catalog before them:
#   warehouse=NAME             the REST catalog's warehouse (default floe)
#   s3_endpoint=URL            an S3 server (path-style); without it the warehouse is a local
#   s3_region=REGION           folder, read through Trino's local file system
#   s3_access_key=KEY, s3_secret_key=SECRET   (given to Trino as AWS_ACCESS_KEY_ID/..._SECRET_...)
#   local_root=DIR             the local folder the warehouse lives under (default /)
#
# env: TRINO_VERSION (default 476, the newest trino-server-core Maven Central serves),
#      FLOE_TRINO_HOME (the Trino `start` runs; default FLOE_CACHE_DIR/trino-VERSION),
#      TRINO_JAVA_HOME (default: temurin 25 when present, else JAVA_HOME; 47x needs Java 24+),
#      TRINO_HEAP (default 2G).
set -euo pipefail

version=${TRINO_VERSION:-476}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
catalog_dir="$here/../trino/catalog"

usage() {
    echo "usage: $0 install CACHE_DIR | start WORK_DIR PORT CATALOG_URI [KEY=VALUE...] | stop WORK_DIR" >&2
    exit 2
}

die() {
    echo "trino.sh: $*" >&2
    exit 1
}

# Trino 47x and later are compiled for Java 24+; the machine's default is 17.
java_home() {
    if [[ -n "${TRINO_JAVA_HOME:-}" ]]; then
        echo "$TRINO_JAVA_HOME"
    elif [[ -x /usr/lib/jvm/temurin-25-jdk-amd64/bin/java ]]; then
        echo /usr/lib/jvm/temurin-25-jdk-amd64
    elif [[ -n "${JAVA_HOME:-}" ]]; then
        echo "$JAVA_HOME"
    else
        dirname "$(dirname "$(readlink -f "$(command -v java)")")"
    fi
}

# One artifact from Maven Central into DIR. The local repository is DIR/m2, thrown away
# with it: the unpacked server is the cache, not a second copy of the archives in ~/.m2.
fetch() {
    local coords=$1 dir=$2
    mvn -q -B -Dmaven.repo.local="$dir/m2" \
        org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
        -Dartifact="$coords" -DoutputDirectory="$dir" >"$dir/mvn.log" 2>&1 ||
        { tail -n 30 "$dir/mvn.log" >&2; die "mvn could not fetch $coords"; }
}

ensure_tools() {
    local missing=()
    command -v mvn >/dev/null || missing+=(maven)
    command -v unzip >/dev/null || missing+=(unzip)
    command -v curl >/dev/null || missing+=(curl)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]} and not root: install them first"
    echo "trino.sh: installing ${missing[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

cmd_install() {
    local cache=$1
    local home="$cache/trino-$version"
    if [[ -x "$home/bin/launcher" && -f "$home/.floe-installed" ]]; then
        echo "$home"
        return 0
    fi
    ensure_tools
    mkdir -p "$cache"
    local tmp
    tmp=$(mktemp -d "$cache/.trino-install.XXXXXX")
    # shellcheck disable=SC2064 # expand now: tmp is local
    trap "rm -rf '$tmp'" EXIT
    echo "trino.sh: fetching Trino $version from Maven Central" >&2
    fetch "io.trino:trino-server-core:$version:tar.gz" "$tmp"
    fetch "io.trino:trino-iceberg:$version:zip" "$tmp"

    mkdir -p "$tmp/unpacked"
    tar -xzf "$tmp/trino-server-core-$version.tar.gz" -C "$tmp/unpacked"
    local server="$tmp/unpacked/trino-server-core-$version"
    [[ -x "$server/bin/launcher" ]] || die "no bin/launcher in trino-server-core-$version.tar.gz"
    # The ZIP holds one folder, trino-iceberg-VERSION/, of jars: the plugin's folder.
    unzip -q "$tmp/trino-iceberg-$version.zip" -d "$tmp/plugin"
    rm -rf "${server:?}/plugin/iceberg"
    mv "$tmp/plugin/trino-iceberg-$version" "$server/plugin/iceberg"
    touch "$server/.floe-installed"
    rm -rf "$home"
    mv "$server" "$home"
    echo "$home"
}

# A catalog file with its test endpoints filled in: the lines of the file users run, with
# the compose endpoints replaced and, for a local-folder warehouse, the S3 lines swapped for
# Trino's local file system.
fill_catalog() {
    local src=$1 dest=$2
    local -n cfg=$3
    local line key
    {
        while IFS= read -r line || [[ -n "$line" ]]; do
            key=${line%%=*}
            case "$key" in
                iceberg.rest-catalog.uri) line="$key=${cfg[uri]}" ;;
                iceberg.rest-catalog.warehouse) line="$key=${cfg[warehouse]}" ;;
                fs.native-s3.enabled | s3.*)
                    if [[ -z "${cfg[s3_endpoint]}" ]]; then
                        [[ "$key" == fs.native-s3.enabled ]] || continue
                        line="fs.native-local.enabled=true"$'\n'"local.location=${cfg[local_root]}"
                    else
                        case "$key" in
                            s3.endpoint) line="$key=${cfg[s3_endpoint]}" ;;
                            s3.region) line="$key=${cfg[s3_region]}" ;;
                        esac
                    fi
                    ;;
            esac
            printf '%s\n' "$line"
        done <"$src"
    } >"$dest"
}

# bin/launcher with this work dir's etc/, pid file and logs, under Java 24+.
launcher() {
    local home=$1 work=$2 command=$3
    local jh
    jh=$(java_home)
    "$home/bin/launcher" "$command" --jvm-dir="$jh" --etc-dir="$work/etc" --data-dir="$work/data" \
        --pid-file="$work/launcher.pid" --launcher-log-file="$work/launcher.log" \
        --server-log-file="$work/server.log"
}

trino_home() {
    echo "${FLOE_TRINO_HOME:-${FLOE_CACHE_DIR:-$HOME/.cache/floe}/trino-$version}"
}

cmd_start() {
    local work=$1 port=$2 uri=$3
    shift 3
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    local home
    home=$(trino_home)
    [[ -x "$home/bin/launcher" ]] || die "no Trino at $home: run '$0 install CACHE_DIR' first"

    mkdir -p "$work"
    work=$(cd "$work" && pwd)
    # Split the arguments into catalogs: the first is `iceberg`, each
    # `--catalog NAME URI` after it another Iceberg catalog.
    local -a names=(iceberg) groups=("uri=$uri")
    while [[ $# -gt 0 ]]; do
        if [[ "$1" == --catalog ]]; then
            [[ $# -ge 3 ]] || die "--catalog needs NAME and CATALOG_URI"
            [[ "$2" =~ ^[a-z][a-z0-9_]*$ ]] || die "bad catalog name '$2'"
            names+=("$2")
            groups+=("uri=$3")
            shift 3
        else
            [[ "$1" == *=* ]] || die "expected KEY=VALUE, got '$1'"
            groups[${#groups[@]}-1]+=$'\n'"$1"
            shift
        fi
    done
    local etc="$work/etc"
    rm -rf "$etc"
    mkdir -p "$etc/catalog" "$work/data"
    cat >"$etc/node.properties" <<EOF
node.environment=floe_test
node.id=floe-test-$port
node.data-dir=$work/data
node.bind-ip=127.0.0.1
node.internal-address=127.0.0.1
EOF
    # A 2-core, 24 GiB machine that also runs the catalog, S3 server and tests.
    cat >"$etc/jvm.config" <<EOF
-server
-Xmx${TRINO_HEAP:-2G}
-XX:InitialRAMPercentage=5
-XX:+ExplicitGCInvokesConcurrent
-XX:+ExitOnOutOfMemoryError
-XX:+HeapDumpOnOutOfMemoryError
-XX:-OmitStackTraceInFastThrow
-XX:ReservedCodeCacheSize=256M
-XX:PerMethodRecompilationCutoff=10000
-XX:PerBytecodeRecompilationCutoff=10000
-Djdk.attach.allowAttachSelf=true
-Djdk.nio.maxCachedBufferSize=2000000
-Dfile.encoding=UTF-8
-XX:+EnableDynamicAgentLoading
EOF
    cat >"$etc/config.properties" <<EOF
coordinator=true
node-scheduler.include-coordinator=true
http-server.http.port=$port
discovery.uri=http://127.0.0.1:$port
query.max-memory=1GB
query.max-memory-per-node=1GB
EOF
    cat >"$etc/log.properties" <<EOF
io.trino=INFO
EOF
    local i s3_access_key="" s3_secret_key=""
    for i in "${!names[@]}"; do
        declare -A opts=(
            [warehouse]=floe [s3_endpoint]="" [s3_region]=us-east-1 [s3_access_key]=""
            [s3_secret_key]="" [local_root]=/
        )
        local kv
        while IFS= read -r kv; do
            opts[${kv%%=*}]=${kv#*=}
        done <<<"${groups[$i]}"
        # One pair of credentials for the process: the files read them from the environment.
        if [[ -n "${opts[s3_access_key]}" ]]; then
            [[ -z "$s3_access_key" || "$s3_access_key" == "${opts[s3_access_key]}" ]] ||
                die "catalogs with different S3 credentials are not supported"
            s3_access_key=${opts[s3_access_key]}
            s3_secret_key=${opts[s3_secret_key]}
        fi
        fill_catalog "$catalog_dir/iceberg.properties" "$etc/catalog/${names[$i]}.properties" opts
        unset opts
    done

    local jh
    jh=$(java_home)
    [[ -x "$jh/bin/java" ]] || die "no java at $jh/bin/java (Trino $version needs Java 24+)"
    # The catalog files read the S3 credentials from the environment
    # (${ENV:AWS_ACCESS_KEY_ID}), as they do in compose.trino.yml.
    AWS_ACCESS_KEY_ID=$s3_access_key AWS_SECRET_ACCESS_KEY=$s3_secret_key \
        launcher "$home" "$work" start >/dev/null ||
        { tail -n 40 "$work/launcher.log" "$work/server.log" >&2 2>/dev/null || true; die "launcher start failed"; }

    # Bounded: a cold start takes 20-60 s on 2 cores.
    local info=""
    for i in $(seq 1 180); do
        info=$(curl -sf --noproxy '*' --max-time 2 "http://127.0.0.1:$port/v1/info" || true)
        if [[ "$info" == *'"starting":false'* ]]; then
            echo "http://127.0.0.1:$port"
            return 0
        fi
        if ! launcher "$home" "$work" status >/dev/null 2>&1; then
            tail -n 60 "$work/server.log" >&2 2>/dev/null || true
            die "Trino exited while starting (log: $work/server.log)"
        fi
        sleep 1
    done
    tail -n 60 "$work/server.log" >&2 2>/dev/null || true
    cmd_stop "$work"
    die "Trino on 127.0.0.1:$port did not start within 180 s"
}

cmd_stop() {
    local work=$1
    [[ -f "$work/launcher.pid" && -d "$work/etc" ]] || return 0
    local home
    home=$(trino_home)
    # stop waits (bounded, by the launcher) for a graceful exit; kill is the fallback.
    launcher "$home" "$work" stop >/dev/null 2>&1 || launcher "$home" "$work" kill >/dev/null 2>&1 || true
}

case "${1:-}" in
    install)
        [[ $# -eq 2 ]] || usage
        cmd_install "$2"
        ;;
    start)
        [[ $# -ge 4 ]] || usage
        shift
        cmd_start "$@"
        ;;
    stop)
        [[ $# -eq 2 ]] || usage
        cmd_stop "$2"
        ;;
    *) usage ;;
esac
