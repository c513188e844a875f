#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, combined broker + controller) for
# development, tests and CI. Runs the broker straight from Maven Central jars:
# no Docker, no tarball download.
#
# Usage: deploy/kafka/kafka.sh fetch|start|stop|status
#
# Environment (all optional):
#   KAFKA_PORT             client port (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default KAFKA_PORT+1)
#   KAFKA_DATA_DIR         config, data, log and pid file (default <repo>/var/kafka)
#   KAFKA_HEAP             JVM heap, -Xms and -Xmx (default 512m)
#   KAFKA_FRESH=1          start: stop any broker on the data dir and wipe it first
#   KAFKA_START_TIMEOUT    start: seconds to wait for readiness (default 90)
#   CAJ_CACHE_DIR          where jars are cached (default ${XDG_CACHE_HOME:-~/.cache}/caj-tracker)
#
# Only "start" writes to stdout on success, and only the bootstrap address, so
# callers can do BOOTSTRAP=$(deploy/kafka/kafka.sh start). Progress goes to stderr.
set -euo pipefail

KAFKA_VERSION=4.1.1
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/../.." && pwd)

# Jars live outside the repo: 43 MB that must not be committed, shared by
# every checkout and data dir on the machine.
CACHE_DIR=${CAJ_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/caj-tracker}
KAFKA_HOME=$CACHE_DIR/kafka-$KAFKA_VERSION
LIBS_DIR=$KAFKA_HOME/libs
# Written only after a complete copy, holding the pom's hash: a missing or
# stale marker means an interrupted download or a changed dependency list.
FETCH_MARKER=$KAFKA_HOME/.fetched

PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}
# Absolute (without resolving symlinks): it goes into server.properties and
# is how is_our_broker recognises the broker's command line.
DATA_DIR=$(realpath -ms "${KAFKA_DATA_DIR:-$REPO_DIR/var/kafka}")
HEAP=${KAFKA_HEAP:-512m}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
BOOTSTRAP=127.0.0.1:$PORT

JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

log() { echo "kafka.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

pom_hash() { sha256sum "$SCRIPT_DIR/pom.xml" | cut -d' ' -f1; }

fetched() { [[ -f $FETCH_MARKER && $(cat "$FETCH_MARKER") == "$(pom_hash)" ]]; }

cmd_fetch() {
    if fetched; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn (Maven) is needed to fetch the Kafka jars"
    mkdir -p "$KAFKA_HOME"
    # The lock keeps two concurrent starts (e.g. two test brokers) from
    # copying over each other. Subshell: the lock fd must not leak into the
    # broker process, which would then hold the lock forever.
    (
        flock 9
        fetched && exit 0
        log "fetching Kafka $KAFKA_VERSION jars into $LIBS_DIR"
        rm -rf "$LIBS_DIR" "$LIBS_DIR.tmp" "$FETCH_MARKER"
        # Maven 3.8 defaults to an old dependency plugin, so name a recent one.
        # Its -q mode still prints bare colour resets ("ESC[0m"); drop them.
        # Errors still show, and pipefail keeps mvn's exit status.
        mvn -B -q -f "$SCRIPT_DIR/pom.xml" \
            org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$LIBS_DIR.tmp" 2>&1 |
            sed -e 's/\x1b\[0m//g' -e '/^$/d' >&2
        mv "$LIBS_DIR.tmp" "$LIBS_DIR"
        pom_hash >"$FETCH_MARKER"
    ) 9>"$KAFKA_HOME/.lock"
}

# True if $1 is a live (not zombie) process running our broker for $DATA_DIR.
# The command-line check guards against a stale pid file whose pid was reused.
is_our_broker() {
    local pid=$1 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $DATA_DIR/server.properties"
}

pid_from_file() { cat "$DATA_DIR/kafka.pid" 2>/dev/null || true; }

answers() { python3 "$SCRIPT_DIR/wait_ready.py" "$BOOTSTRAP" --timeout "${1:-0}" 2>/dev/null; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The log is appended to across restarts: show only this start's lines.
fail_with_log() {
    log "error: $1; last lines of $DATA_DIR/kafka.log:"
    tac "$DATA_DIR/kafka.log" 2>/dev/null | sed '/^===== kafka.sh start/q' | tac | tail -n 40 >&2 || true
    exit 1
}

write_config() {
    cat >"$DATA_DIR/server.properties" <<EOF
# Written by deploy/kafka/kafka.sh on every start; edits here are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
# Loopback only: this broker is for local dev and tests. 127.0.0.1 rather than
# localhost avoids IPv6 resolution surprises in clients.
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA_DIR/logs
# One node: every internal topic must get by with one replica.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests should not wait 3 s for the first consumer group rebalance.
group.initial.rebalance.delay.ms=0
# The services create their topics with the admin client; a typo in a topic
# name must fail instead of silently creating a new topic.
auto.create.topics.enable=false
num.partitions=3
EOF
}

cmd_start() {
    cmd_fetch

    if [[ ${KAFKA_FRESH:-0} == 1 ]]; then
        # rm -rf on a path from the environment: refuse unless the dir is
        # missing, empty, or one of ours (a typo must not wipe e.g. $HOME).
        if [[ -d $DATA_DIR && -n $(ls -A "$DATA_DIR") && ! -f $DATA_DIR/server.properties ]]; then
            die "KAFKA_FRESH=1: $DATA_DIR is not empty and has no server.properties; not wiping it"
        fi
        cmd_stop
        log "KAFKA_FRESH=1: wiping $DATA_DIR"
        rm -rf "$DATA_DIR"
    fi
    mkdir -p "$DATA_DIR"

    local pid
    pid=$(pid_from_file)
    if is_our_broker "$pid"; then
        # Re-running start is safe. A broker that is still starting (e.g. a
        # concurrent start) gets the normal wait below instead.
        if answers; then
            log "already running (pid $pid) on $BOOTSTRAP"
            echo "$BOOTSTRAP"
            return 0
        fi
        log "broker pid $pid is up but not ready yet; waiting"
    else
        rm -f "$DATA_DIR/kafka.pid"
        # Otherwise the readiness check could succeed against someone else's
        # broker while ours dies on "address already in use".
        local p
        for p in "$PORT" "$CONTROLLER_PORT"; do
            ! port_in_use "$p" || die "port $p on 127.0.0.1 is already in use (set KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
        done

        write_config
        local tools_cp=(-Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2-tools.properties" -cp "$LIBS_DIR/*")
        if [[ ! -f $DATA_DIR/logs/meta.properties ]]; then
            local cluster_id
            cluster_id=$("$JAVA" "${tools_cp[@]}" kafka.tools.StorageTool random-uuid)
            log "formatting $DATA_DIR/logs (cluster id $cluster_id)"
            # Static voters (controller.quorum.voters), so no --standalone.
            "$JAVA" "${tools_cp[@]}" kafka.tools.StorageTool format -t "$cluster_id" \
                -c "$DATA_DIR/server.properties" >&2
        fi

        echo "===== kafka.sh start $(date -Is) =====" >>"$DATA_DIR/kafka.log"
        log "starting broker on $BOOTSTRAP (controller 127.0.0.1:$CONTROLLER_PORT, data $DATA_DIR)"
        # setsid: own session, so the broker outlives the calling shell and
        # gets no SIGHUP/SIGINT from its terminal. All fds are redirected so a
        # caller capturing our output (e.g. subprocess.run) is not kept waiting.
        # The child writes its own pid before exec, so the pid is right even
        # if setsid has to fork.
        (
            cd "$DATA_DIR"
            exec setsid bash -c 'echo $$ >kafka.pid; exec "$@"' kafka-broker \
                "$JAVA" "-Xms$HEAP" "-Xmx$HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
                -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2.properties" \
                -cp "$LIBS_DIR/*" kafka.Kafka "$DATA_DIR/server.properties"
        ) </dev/null >>"$DATA_DIR/kafka.log" 2>&1 &

        # Wait for the child to record its pid.
        for _ in $(seq 50); do
            pid=$(pid_from_file)
            [[ -n $pid ]] && break
            sleep 0.1
        done
        [[ -n $pid ]] || fail_with_log "broker did not record its pid"
    fi

    local deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        is_our_broker "$pid" || fail_with_log "broker (pid $pid) exited during startup"
        if answers 1; then
            break
        fi
        ((SECONDS < deadline)) || fail_with_log "broker not ready after ${START_TIMEOUT}s (pid $pid still running; stop it with: $0 stop)"
    done
    log "ready (pid $pid)"
    echo "$BOOTSTRAP"
}

cmd_stop() {
    local pid
    pid=$(pid_from_file)
    if ! is_our_broker "$pid"; then
        rm -f "$DATA_DIR/kafka.pid"
        log "not running"
        return 0
    fi
    log "stopping broker (pid $pid)"
    # TERM makes Kafka shut down cleanly (flush logs, leave the quorum), so the
    # next start does not have to recover segments.
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        is_our_broker "$pid" || break
        sleep 0.1
    done
    if is_our_broker "$pid"; then
        # Last resort. The next start then waits ~10 s more: the controller
        # refuses the new registration until the old one's session times out.
        log "broker did not stop within 30 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            is_our_broker "$pid" || break
            sleep 0.1
        done
    fi
    rm -f "$DATA_DIR/kafka.pid"
    log "stopped"
}

cmd_status() {
    if answers; then
        echo "running"
        return 0
    fi
    echo "not running"
    return 1
}

case ${1:-} in
fetch) cmd_fetch ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 fetch|start|stop|status" >&2
    exit 2
    ;;
esac
