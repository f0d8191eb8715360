#!/usr/bin/env bash
# A local single-node Apache Kafka for tests: the broker's jars from Maven Central (no
# container image, no distribution tarball), one KRaft node that is broker and controller,
# listening on 127.0.0.1 only.
#
# usage: infra/local/kafka.sh install CACHE_DIR
#            fetches (once) org.apache.kafka:kafka_2.13 and its runtime dependencies into
#            CACHE_DIR/kafka-VERSION/lib; prints that folder last
#        infra/local/kafka.sh start WORK_DIR PORT
#            formats WORK_DIR/data (a new cluster id), starts the broker on 127.0.0.1:PORT
#            (its controller on PORT+1) and waits until it answers; prints 127.0.0.1:PORT last
#        infra/local/kafka.sh stop WORK_DIR
#
# Idempotent: install checks a stamp file and takes about a second the second time; start
# on a running WORK_DIR prints its address again; stop on a stopped one does nothing.
#
# env: KAFKA_VERSION (default 4.1.0), FLOE_KAFKA_HOME (a lib folder to use instead of the
#      cache), KAFKA_JAVA_HOME (default JAVA_HOME or the java on PATH; Kafka 4 needs 17+),
#      KAFKA_HEAP (default 512m), KAFKA_START_TIMEOUT (seconds, default 60).
set -euo pipefail

version=${KAFKA_VERSION:-4.1.0}
log4j_version=2.24.3

usage() {
    echo "usage: $0 install CACHE_DIR | start WORK_DIR PORT | stop WORK_DIR" >&2
    exit 2
}

die() {
    echo "kafka.sh: $*" >&2
    exit 1
}

java_bin() {
    if [[ -n "${KAFKA_JAVA_HOME:-}" ]]; then
        echo "$KAFKA_JAVA_HOME/bin/java"
    elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
        echo "$JAVA_HOME/bin/java"
    else
        command -v java || die "no java on PATH: install openjdk-17-jre-headless"
    fi
}

cmd_install() {
    local cache=$1
    local home="$cache/kafka-$version"
    local stamp="$home/.installed"
    if [[ -f $stamp ]]; then
        echo "$home/lib"
        return 0
    fi
    command -v mvn >/dev/null || die "mvn is missing: apt-get install maven"
    rm -rf "$home"
    mkdir -p "$home"
    # A throwaway pom whose one dependency is the broker: copy-dependencies then brings
    # exactly its runtime closure (clients, raft, metadata, storage, coordinators, Scala,
    # Jackson, ...). log4j-slf4j-impl routes the broker's slf4j logging to log4j2.
    cat >"$home/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
  <groupId>floe.test</groupId><artifactId>kafka-local</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>$version</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>$log4j_version</version></dependency>
  </dependencies>
</project>
EOF
    echo "kafka.sh: fetching kafka_2.13 $version and its dependencies from Maven Central" >&2
    (cd "$home" && mvn -q -B -Dmaven.repo.local="$home/m2" \
        org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$home/lib" >"$home/mvn.log" 2>&1) ||
        { tail -n 30 "$home/mvn.log" >&2; die "mvn could not fetch kafka_2.13 $version"; }
    rm -rf "$home/m2"
    [[ -f "$home/lib/kafka_2.13-$version.jar" ]] || die "kafka_2.13-$version.jar missing after mvn"
    touch "$stamp"
    echo "$home/lib"
}

free_or_die() {
    local port=$1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port on 127.0.0.1 is taken"
    fi
}

cmd_start() {
    local work=$1 port=$2
    local lib=${FLOE_KAFKA_HOME:-${FLOE_CACHE_DIR:-$HOME/.cache/floe}/kafka-$version/lib}
    [[ -d $lib ]] || die "no Kafka jars in $lib: run '$0 install CACHE_DIR' first"
    mkdir -p "$work"
    work=$(cd "$work" && pwd)
    if [[ -f "$work/pid" ]] && kill -0 "$(cat "$work/pid")" 2>/dev/null; then
        cat "$work/address"
        return 0
    fi
    local controller=$((port + 1))
    free_or_die "$port"
    free_or_die "$controller"
    cat >"$work/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$work/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
    cat >"$work/log4j2.properties" <<EOF
status = warn
appender.f.type = File
appender.f.name = f
appender.f.fileName = $work/server.log
appender.f.layout.type = PatternLayout
appender.f.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.f.ref = f
EOF
    local java
    java=$(java_bin)
    # A reused work folder keeps the last broker's log, whose "started" line
    # would report this one ready before it listens.
    rm -rf "$work/data" "$work/server.log"
    # A random id is URL-safe base64, so it starts with '-' one time in 64: passed as
    # --cluster-id=ID, never as a separate argument the parser would take for an option.
    local cluster
    cluster=$(python3 -c 'import base64,uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
    "$java" -cp "$lib/*" -Dlog4j2.configurationFile="$work/log4j2.properties" \
        kafka.tools.StorageTool format --cluster-id="$cluster" -c "$work/server.properties" \
        >"$work/format.log" 2>&1 || { cat "$work/format.log" >&2; die "formatting the storage failed"; }
    nohup "$java" "-Xmx${KAFKA_HEAP:-512m}" -cp "$lib/*" \
        -Dlog4j2.configurationFile="$work/log4j2.properties" \
        kafka.Kafka "$work/server.properties" >"$work/stdout.log" 2>&1 &
    echo $! >"$work/pid"
    local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-60}))
    until grep -q 'Kafka Server started' "$work/server.log" 2>/dev/null; do
        if ! kill -0 "$(cat "$work/pid")" 2>/dev/null; then
            tail -n 30 "$work/stdout.log" "$work/server.log" >&2 || true
            die "the broker exited while starting"
        fi
        if ((SECONDS > deadline)); then
            tail -n 30 "$work/server.log" >&2 || true
            cmd_stop "$work"
            die "the broker did not start within ${KAFKA_START_TIMEOUT:-60}s"
        fi
        sleep 0.5
    done
    echo "127.0.0.1:$port" >"$work/address"
    echo "127.0.0.1:$port"
}

cmd_stop() {
    local work=$1
    [[ -f "$work/pid" ]] || return 0
    local pid
    pid=$(cat "$work/pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$work/pid" "$work/address"
}

case "${1:-}" in
install) [[ $# -eq 2 ]] || usage; cmd_install "$2" ;;
start) [[ $# -eq 3 ]] || usage; cmd_start "$2" "$3" ;;
stop) [[ $# -eq 2 ]] || usage; cmd_stop "$2" ;;
*) usage ;;
esac
