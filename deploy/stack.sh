#!/usr/bin/env bash
# The local counter stack: Redis, PostgreSQL and a single-node Kafka (KRaft)
# on 127.0.0.1, plus the counter processes once they are built. No Docker,
# no system services: each process runs detached in a session of its own,
# from files under $STACK_DIR, on its own ports, so it never collides with
# the Debian-packaged services or with another stack on other ports.
#
# Usage: deploy/stack.sh COMMAND
#   up                 start whatever is not running (idempotent), wait until
#                      each part answers, create the topic, run the
#                      migrations and the partition maintenance (if
#                      counterctl is built), write stack.env
#   down               stop everything, apps first; quiet if already down
#   status             one line per process: running (pid) or stopped
#   env                print $STACK_DIR/stack.env
#   start NAME         start one process (and wait until it answers)
#   stop NAME          stop one process gracefully
#   kill NAME          SIGKILL one process and its children, as in a crash
#   restart NAME       stop, then start
#   destroy            down, then delete all data, logs and settings of this
#                      STACK_DIR (not the Kafka jars in KAFKA_HOME)
#   kafka-tool CLASS|topics|groups|offsets [ARGS...]
#                      run a Kafka command-line tool against the broker
#   NAME: redis postgres kafka counter-api counter-persister counter-applier
#
# Settings (environment; defaults in brackets). What `up` used is saved in
# $STACK_DIR/stack.env and reused by later commands on the same STACK_DIR
# unless set again explicitly.
#   STACK_DIR [<repo>/var]   data, logs (log/NAME.log), pid files (run/)
#   REDIS_PORT [6380]  PG_PORT [5433]  KAFKA_PORT [9092]
#   KAFKA_CONTROLLER_PORT [9093]  API_PORT [8080]
#   KAFKA_TOPIC [counter-events]  KAFKA_INPUT_TOPIC [counter-ingest]
#   KAFKA_PARTITIONS [4]
#   BIN_DIR [<repo>/build/bin]   counter-api, counter-persister,
#                                counter-applier, counterctl
#   KAFKA_HOME [<repo>/var/opt/kafka]  broker jars (deploy/install-deps.sh)
#   KAFKA_READY_TIMEOUT [90]  API_READY_TIMEOUT [30]  seconds
#   PG_BIN [newest /usr/lib/postgresql/*/bin]  JAVA_HOME [java on PATH]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

STACK_DIR="$(realpath -m "${STACK_DIR:-$ROOT/var}")"
# Paths go unquoted into redis.conf, postgresql.conf and server.properties.
[[ $STACK_DIR != *[[:space:]\'\"\\]* ]] ||
    { echo "stack: STACK_DIR must not contain spaces or quotes" >&2; exit 2; }

# Settings saved by an earlier `up` on this STACK_DIR come next after the
# environment, so `stop kafka; start kafka` keep the ports `up` was given.
if [[ -f $STACK_DIR/stack.env ]]; then
    # shellcheck source=/dev/null
    source <(sed -n 's/^\([A-Z][A-Z0-9_]*\)=/SAVED_\1=/p' "$STACK_DIR/stack.env")
fi
REDIS_PORT="${REDIS_PORT:-${SAVED_REDIS_PORT:-6380}}"
PG_PORT="${PG_PORT:-${SAVED_PG_PORT:-5433}}"
KAFKA_PORT="${KAFKA_PORT:-${SAVED_KAFKA_PORT:-9092}}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-${SAVED_KAFKA_CONTROLLER_PORT:-9093}}"
API_PORT="${API_PORT:-${SAVED_API_PORT:-8080}}"
KAFKA_TOPIC="${KAFKA_TOPIC:-${SAVED_KAFKA_TOPIC:-counter-events}}"
KAFKA_INPUT_TOPIC="${KAFKA_INPUT_TOPIC:-${SAVED_KAFKA_INPUT_TOPIC:-counter-ingest}}"
KAFKA_PARTITIONS="${KAFKA_PARTITIONS:-${SAVED_KAFKA_PARTITIONS:-4}}"
BIN_DIR="${BIN_DIR:-${SAVED_BIN_DIR:-$ROOT/build/bin}}"
KAFKA_HOME="${KAFKA_HOME:-${SAVED_KAFKA_HOME:-$ROOT/var/opt/kafka}}"
KAFKA_READY_TIMEOUT="${KAFKA_READY_TIMEOUT:-90}"
API_READY_TIMEOUT="${API_READY_TIMEOUT:-30}"
if [[ -z ${PG_BIN:-} ]]; then
    PG_BIN="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin \
        2>/dev/null | sort -V | tail -n 1)"
fi

RUN_DIR="$STACK_DIR/run"
LOG_DIR="$STACK_DIR/log"
KAFKA_DIR="$STACK_DIR/kafka"
REDIS_DIR="$STACK_DIR/redis"

SERVICES=(redis postgres kafka)
APPS=(counter-api counter-persister counter-applier)

# The counter processes' configuration (common/config.h: COUNTER_<KEY>).
# The caller's environment is inherited too, so any other COUNTER_* setting
# (COUNTER_CONFIG, COUNTER_LOG_LEVEL, ...) passes through.
# The repo's config.yaml is the base (the processes run in $STACK_DIR, where
# no config.yaml is); the stack's ports override it.
APP_ENV=(
    "COUNTER_CONFIG=${COUNTER_CONFIG:-$ROOT/config.yaml}"
    COUNTER_SERVER_BIND=127.0.0.1
    "COUNTER_SERVER_PORT=$API_PORT"
    "COUNTER_REDIS_ADDR=127.0.0.1:$REDIS_PORT"
    COUNTER_POSTGRES_HOST=127.0.0.1
    "COUNTER_POSTGRES_PORT=$PG_PORT"
    COUNTER_POSTGRES_USER=counter
    COUNTER_POSTGRES_PASSWORD=counter
    COUNTER_POSTGRES_DBNAME=counter
    "COUNTER_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
    "COUNTER_KAFKA_TOPIC=$KAFKA_TOPIC"
    "COUNTER_KAFKA_INPUT_TOPIC=$KAFKA_INPUT_TOPIC"
    "COUNTER_KAFKA_PARTITIONS=$KAFKA_PARTITIONS"
    # beside the api's port, so that stacks on other ports never collide
    "COUNTER_PERSISTER_METRICS_PORT=$((API_PORT + 1))"
    "COUNTER_APPLIER_METRICS_PORT=$((API_PORT + 2))"
)

say() { printf 'stack: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# ----------------------------------------------------------- processes ---

pidfile() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }

# A string the process's command line must contain: a pid file that
# survived a reboot may name some unrelated process by now.
cmd_marker() {
    case $1 in
    redis) echo redis-server ;;
    postgres) echo postgres ;;
    kafka) echo kafka.Kafka ;;
    *) echo "$1" ;;
    esac
}

# The recorded pid of NAME, whether or not it is alive.
recorded_pid() {
    local f pid=""
    if [[ $1 == postgres ]]; then
        # PostgreSQL's own lock file is the truth about its postmaster.
        pg_layout
        f="$PG_DATA/postmaster.pid"
        [[ -r $f ]] || f="$(pidfile postgres)"
    else
        f="$(pidfile "$1")"
    fi
    if [[ -r $f ]]; then read -r pid <"$f" 2>/dev/null || true; fi
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$pid"
}

# Prints the pid of NAME if it is running; fails otherwise. A zombie has an
# empty command line and so counts as stopped.
live_pid() {
    local pid cmdline
    pid="$(recorded_pid "$1")" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ $cmdline == *"$(cmd_marker "$1")"* ]] || return 1
    printf '%s\n' "$pid"
}

# Starts "$@" as NAME: own session (so a Ctrl-C in the caller's terminal
# does not reach it), stdin from /dev/null, output appended to log/NAME.log,
# cwd $STACK_DIR. The child writes its own pid before exec, which stays
# right even when setsid has to fork. fd 9 (our lock) is not inherited.
spawn() {
    local name=$1 pf log
    shift
    pf="$(pidfile "$name")"
    log="$LOG_DIR/$name.log"
    rm -f "$pf"
    printf '=== %s stack.sh: starting %s\n' "$(date -Is)" "$*" >>"$log"
    # shellcheck disable=SC2016 # $$, $0 and $@ are the child shell's
    (cd "$STACK_DIR" && exec setsid sh -c 'echo $$ >"$0"; exec "$@"' "$pf" "$@" \
        </dev/null >>"$log" 2>&1 9>&-) &
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $pf ]] && return 0
        sleep 0.05
    done
    die "$name: did not record its pid in $pf"
}

fail_with_log() {
    say "$1: $2; last 30 lines of $LOG_DIR/$1.log:"
    tail -n 30 "$LOG_DIR/$1.log" >&2 || true
    exit 1
}

# wait_ready NAME TIMEOUT CHECK...: runs CHECK until it succeeds; fails
# early with the log if NAME exits, or at the deadline.
wait_ready() {
    local name=$1 timeout=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        live_pid "$name" >/dev/null || fail_with_log "$name" "exited while starting"
        ((SECONDS < deadline)) || fail_with_log "$name" "not ready after ${timeout}s"
        sleep 0.2
    done
}

# A process that has exited but not yet been reaped. Here PID 1 reaps
# orphans only every couple of seconds, so a dead daemon lingers so.
is_zombie() { [[ "$(ps -o stat= -p "$1" 2>/dev/null)" == Z* ]]; }

wait_gone() { # PID SECONDS
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null && ! is_zombie "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# stop_signal NAME SECONDS: SIGTERM, then SIGKILL after SECONDS.
stop_signal() {
    local pid
    if pid="$(live_pid "$1")"; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" "$2"; then
            say "$1: still running ${2}s after SIGTERM; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" 10 || true
        fi
        say "$1: stopped"
    fi
    rm -f "$(pidfile "$1")"
}

# SIGKILL, without warning, to NAME and its direct children, as in a
# crash. PostgreSQL's backends each run in their own session, and a
# restart fails while any of them still holds the shared memory.
kill_hard() {
    local pid children p
    if pid="$(live_pid "$1")"; then
        children="$(ps -o pid= --ppid "$pid" || true)"
        kill -KILL "$pid" 2>/dev/null || true
        for p in $children; do kill -KILL "$p" 2>/dev/null || true; done
        wait_gone "$pid" 10 || die "$1: pid $pid survived SIGKILL"
        for p in $children; do wait_gone "$p" 10 || true; done
        say "$1: killed (pid $pid)"
    elif pid="$(recorded_pid "$1")" && kill -0 "$pid" 2>/dev/null &&
        [[ ! -s /proc/$pid/cmdline ]]; then
        # Killed by someone else and still exiting: its memory is being
        # torn down (an ASan build's takes a while) and /proc no longer
        # shows its command line. Gone only when it is gone.
        wait_gone "$pid" 10 || die "$1: pid $pid still exiting after 10 s"
        say "$1: was exiting (pid $pid)"
    else
        say "$1: not running"
    fi
    rm -f "$(pidfile "$1")"
}

# A connection succeeds: someone else (another stack, a system service)
# holds the port, and our process would fail or, worse, a readiness check
# would talk to the wrong server. A process of ours just killed may hold
# its listening socket a moment longer (its leader is a zombie while its
# other threads still exit), so a busy port is asked again for 5 s.
ensure_port_free() { # NAME PORT
    local i
    for ((i = 0; i < 50; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null || return 0
        sleep 0.1
    done
    die "$1: port $2 on 127.0.0.1 is already in use by another process"
}

# ---------------------------------------------------------------- redis ---

redis_ping() {
    [[ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

start_redis() {
    local pid
    if pid="$(live_pid redis)"; then
        say "redis: running (pid $pid)"
    else
        ensure_port_free redis "$REDIS_PORT"
        mkdir -p "$REDIS_DIR"
        # Rewritten on every start so a changed REDIS_PORT takes effect.
        # AOF fsync'd every second: a SIGKILL loses at most ~1 s of writes,
        # which the applier replays from Kafka. No RDB snapshots.
        cat >"$REDIS_DIR/redis.conf" <<EOF
# Generated by deploy/stack.sh on every start; edits are lost.
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize no
supervised no
logfile ""
dir $REDIS_DIR
appendonly yes
appendfsync everysec
save ""
EOF
        spawn redis redis-server "$REDIS_DIR/redis.conf"
        say "redis: started (pid $(recorded_pid redis)), port $REDIS_PORT"
    fi
    wait_ready redis 30 redis_ping
}

# ------------------------------------------------------------- postgres ---

# The server refuses to run as root: as root, it runs as the postgres OS
# user; otherwise as whoever runs this script.
pg_os_user() { if ((EUID == 0)); then echo postgres; else id -un; fi; }

# Runs a command as that user, from / (postgres may not be allowed into
# the caller's cwd), without our lock fd.
as_pg() {
    if ((EUID == 0)); then
        (cd / && exec runuser -u postgres -- "$@" 9>&-)
    else
        (cd / && exec "$@" 9>&-)
    fi
}

# Where the cluster lives. Normally $STACK_DIR/postgres/{data,sock,...};
# if the postgres user could not reach $STACK_DIR (e.g. under /root),
# prepare_pg put it under /var/tmp and left a symlink at .../data.
pg_layout() {
    local link="$STACK_DIR/postgres/data"
    if [[ -L $link ]]; then
        PG_DATA="$(readlink "$link")"
        PG_BASE="$(dirname "$PG_DATA")"
    else
        PG_BASE="$STACK_DIR/postgres"
        PG_DATA="$PG_BASE/data"
    fi
    PG_SOCK="$PG_BASE/sock"
}

prepare_pg() {
    local home="$STACK_DIR/postgres" user
    user="$(pg_os_user)"
    [[ -x $PG_BIN/postgres ]] || die "postgres: no server binaries (PG_BIN=$PG_BIN); run deploy/install-deps.sh"
    if [[ ! -e $home/data && ! -L $home/data ]]; then
        mkdir -p "$home"
        if ((EUID == 0)) && ! runuser -u postgres -- test -x "$STACK_DIR"; then
            # postgres cannot traverse some ancestor of STACK_DIR: keep the
            # cluster where it can, one folder per STACK_DIR.
            local hash base
            hash="$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)"
            base="/var/tmp/counter-pg-$hash"
            mkdir -p "$base"
            [[ "$(stat -c %U "$base")" == root || "$(stat -c %U "$base")" == postgres ]] ||
                die "postgres: $base belongs to $(stat -c %U "$base"); remove it"
            chown postgres:postgres "$base"
            chmod 700 "$base"
            ln -sfn "$base/data" "$home/data"
            say "postgres: the postgres user cannot reach $STACK_DIR; cluster in $base"
        elif ((EUID == 0)); then
            chown postgres:postgres "$home"
            chmod 700 "$home"
        fi
    fi
    pg_layout
    as_pg mkdir -p "$PG_SOCK"
    as_pg chmod 700 "$PG_SOCK"
    # pg_ctl writes the log as $user; log/postgres.log points at it.
    ln -sfn "$PG_BASE/postgres.log" "$LOG_DIR/postgres.log"

    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
        say "postgres: initdb in $PG_DATA (as $user)"
        local pwfile="$PG_BASE/superuser.password"
        head -c 24 /dev/urandom | base64 | as_pg tee "$pwfile" >/dev/null
        as_pg chmod 600 "$pwfile"
        # Passwords (scram) over TCP; the unix socket (a private folder)
        # takes the OS user, for this script's admin work.
        as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U "$user" --pwfile="$pwfile" \
            --auth-host=scram-sha-256 --auth-local=peer \
            -E UTF8 --locale=C.UTF-8 >>"$LOG_DIR/postgres-initdb.log" 2>&1 ||
            fail_with_log postgres-initdb "initdb failed"
        printf "\ninclude_if_exists = 'counter-stack.conf'\n" |
            as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
    fi
    # Rewritten on every start, so changed ports take effect. Included last
    # by postgresql.conf, so these win.
    as_pg tee "$PG_DATA/counter-stack.conf" >/dev/null <<EOF
# Generated by deploy/stack.sh on every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
fsync = on
synchronous_commit = on
EOF
}

# psql as the cluster's superuser, over the private unix socket.
pg_admin() {
    as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" \
        -U "$(pg_os_user)" -d postgres "$@"
}

pg_counter_login() {
    PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -tA \
        "postgresql://counter:counter@127.0.0.1:$PG_PORT/counter" \
        -c 'SELECT 1' 2>/dev/null | grep -qx 1
}

pg_isready_tcp() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 5; }

# The application role and database, created once (checked each time).
pg_ensure_app_db() {
    if [[ "$(pg_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'counter'")" != 1 ]]; then
        pg_admin -c "CREATE ROLE counter LOGIN PASSWORD 'counter'"
        say "postgres: created role counter"
    fi
    if [[ "$(pg_admin -tAc "SELECT 1 FROM pg_database WHERE datname = 'counter'")" != 1 ]]; then
        pg_admin -c "CREATE DATABASE counter OWNER counter"
        say "postgres: created database counter"
    fi
}

# After a crash (kill), postmaster.pid and the socket's lock file name
# the dead postmaster. PostgreSQL recovers from that by itself, unless the
# pid still exists: a zombie not yet reaped by PID 1 (here up to ~2 s), or
# by now some other process. Wait for the reaper, then remove the files.
pg_clear_stale_lock() {
    local f="$PG_DATA/postmaster.pid" pid="" i
    [[ -f $f ]] || return 0
    read -r pid <"$f" || true
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    for ((i = 0; i < 50; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then return 0; fi
        if ! is_zombie "$pid"; then break; fi
        sleep 0.1
    done
    say "postgres: pid $pid in postmaster.pid is not a running server; removing stale lock files"
    as_pg rm -f "$f" "$PG_SOCK/.s.PGSQL.$PG_PORT.lock"
}

start_postgres() {
    local pid
    mkdir -p "$LOG_DIR"
    if pid="$(live_pid postgres)"; then
        say "postgres: running (pid $pid)"
        pg_layout
    else
        ensure_port_free postgres "$PG_PORT"
        prepare_pg
        pg_clear_stale_lock
        printf '=== %s stack.sh: starting postgres\n' "$(date -Is)" |
            as_pg tee -a "$PG_BASE/postgres.log" >/dev/null
        # pg_ctl detaches the postmaster into its own session and waits
        # until it accepts connections (crash recovery included).
        if ! as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_BASE/postgres.log" \
            -w -t 120 -s >/dev/null; then
            fail_with_log postgres "pg_ctl start failed"
        fi
        pid="$(recorded_pid postgres)"
        printf '%s\n' "$pid" >"$(pidfile postgres)"
        say "postgres: started (pid $pid), port $PG_PORT, data $PG_DATA"
    fi
    wait_ready postgres 60 pg_isready_tcp
    pg_ensure_app_db
    wait_ready postgres 10 pg_counter_login
}

stop_postgres() {
    pg_layout
    if live_pid postgres >/dev/null; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 -s ||
            die "postgres: pg_ctl stop failed"
        say "postgres: stopped"
    fi
    rm -f "$(pidfile postgres)"
}

# ---------------------------------------------------------------- kafka ---

java_bin() {
    if [[ -n ${JAVA_HOME:-} ]]; then
        echo "$JAVA_HOME/bin/java"
    else
        command -v java || die "kafka: no java on PATH; run deploy/install-deps.sh"
    fi
}

# JVM options shared by the broker and the tools. tmpdir: zstd/snappy
# unpack native code there, and /tmp may be mounted noexec.
kafka_jvm_opts() {
    mkdir -p "$KAFKA_DIR/tmp"
    KAFKA_JVM_OPTS=(
        -cp "$KAFKA_HOME/libs/*"
        -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties"
        -Djava.io.tmpdir="$KAFKA_DIR/tmp" -Djava.awt.headless=true
    )
}

# A Kafka command-line class; its own logging at WARN on stderr, so that
# stdout carries only the tool's answer.
kafka_java() {
    local java
    java="$(java_bin)"
    kafka_jvm_opts
    "$java" -Xmx256m "${KAFKA_JVM_OPTS[@]}" \
        -Dcounter.kafka.log.level=WARN -Dcounter.kafka.log.target=SYSTEM_ERR "$@"
}

write_kafka_config() {
    # Single node, broker and controller in one process (KRaft, static
    # quorum). 127.0.0.1 rather than localhost: librdkafka would try ::1.
    cat >"$KAFKA_DIR/server.properties" <<EOF
# Generated by deploy/stack.sh on every start; edits are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DIR/data

# Topics are created by counterctl create-topic, never by a typo.
auto.create.topics.enable=false
num.partitions=$KAFKA_PARTITIONS
default.replication.factor=1
min.insync.replicas=1

# One replica of everything, internal topics included.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Consumer groups start at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0

# Small machine: few threads, a 16 MB cleaner buffer (default 128 MB)
# so that a 512 MB heap is plenty.
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
background.threads=4
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
EOF
}

kafka_metadata() {
    # Short reconnect backoff: notice the port opening within the window.
    timeout 15 kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 5 \
        -X reconnect.backoff.max.ms=250 >/dev/null 2>&1
}

start_kafka() {
    local pid
    if pid="$(live_pid kafka)"; then
        say "kafka: running (pid $pid)"
    else
        ls "$KAFKA_HOME"/.installed-* >/dev/null 2>&1 ||
            die "kafka: no broker jars in $KAFKA_HOME/libs; run deploy/install-deps.sh"
        ensure_port_free kafka "$KAFKA_PORT"
        ensure_port_free kafka-controller "$KAFKA_CONTROLLER_PORT"
        mkdir -p "$KAFKA_DIR/data"
        write_kafka_config
        if [[ ! -f $KAFKA_DIR/data/meta.properties ]]; then
            # Once per STACK_DIR: a cluster id, then the storage format.
            [[ -s $KAFKA_DIR/cluster-id ]] ||
                kafka_java kafka.tools.StorageTool random-uuid >"$KAFKA_DIR/cluster-id"
            say "kafka: formatting storage, cluster id $(cat "$KAFKA_DIR/cluster-id")"
            kafka_java kafka.tools.StorageTool format \
                -t "$(cat "$KAFKA_DIR/cluster-id")" -c "$KAFKA_DIR/server.properties" \
                >>"$LOG_DIR/kafka.log" 2>&1 || fail_with_log kafka "storage format failed"
        fi
        kafka_jvm_opts
        spawn kafka "$(java_bin)" -Xms256m -Xmx512m -XX:+UseG1GC \
            -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
            -XX:+ExitOnOutOfMemoryError "${KAFKA_JVM_OPTS[@]}" \
            kafka.Kafka "$KAFKA_DIR/server.properties"
        say "kafka: started (pid $(recorded_pid kafka)), port $KAFKA_PORT"
    fi
    # The broker opens its port only once it can serve.
    wait_ready kafka "$KAFKA_READY_TIMEOUT" kafka_metadata
}

# --------------------------------------------------------- counterctl -----

counterctl_setup() {
    local ctl="$BIN_DIR/counterctl"
    if [[ ! -x $ctl ]]; then
        say "counterctl: $ctl not built yet; topic and migrations skipped"
        return 0
    fi
    (cd "$STACK_DIR" && env "${APP_ENV[@]}" "$ctl" create-topic) ||
        die "counterctl create-topic failed"
    (cd "$STACK_DIR" && env "${APP_ENV[@]}" "$ctl" migrate up) ||
        die "counterctl migrate up failed"
    # The history tables' monthly partitions (ahead; retention.*), as
    # counter-partitions.timer does daily; skipped by a counterctl built
    # before the command existed.
    if "$ctl" partitions --help >/dev/null 2>&1; then
        (cd "$STACK_DIR" && env "${APP_ENV[@]}" "$ctl" partitions) ||
            die "counterctl partitions failed"
    fi
}

# ------------------------------------------------------------------ apps ---

api_answers() {
    local code
    code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' \
        "http://127.0.0.1:$API_PORT/healthz")" || return 1
    [[ $code != 000 ]]
}

# The applier sets the epoch markers once Redis holds a whole data set
# (restored from PostgreSQL and the log when it started empty); until then
# the api keeps off Redis. counter:epoch:3:{3560} is slot 0's marker
# (ingest/apply.h); "restoring:..." while a restore runs.
redis_whole() {
    local epoch
    epoch="$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" GET 'counter:epoch:3:{3560}' 2>/dev/null)"
    [[ -n $epoch && $epoch != restoring:* ]]
}

# start_app NAME: NAME is built (checked by the caller).
start_app() {
    local name=$1 pid
    if pid="$(live_pid "$name")"; then
        say "$name: running (pid $pid)"
    else
        [[ $name != counter-api ]] || ensure_port_free counter-api "$API_PORT"
        spawn "$name" env "${APP_ENV[@]}" "$BIN_DIR/$name"
        say "$name: started (pid $(recorded_pid "$name"))"
    fi
    if [[ $name == counter-api ]]; then
        wait_ready counter-api "$API_READY_TIMEOUT" api_answers
    elif [[ $name == counter-applier ]]; then
        wait_ready counter-applier "$API_READY_TIMEOUT" redis_whole
    fi
}

# ------------------------------------------------------------ env files ---

stack_env() {
    printf '%s=%q\n' \
        STACK_DIR "$STACK_DIR" \
        API_URL "http://127.0.0.1:$API_PORT" \
        API_PORT "$API_PORT" \
        PERSISTER_METRICS_URL "http://127.0.0.1:$((API_PORT + 1))/metrics" \
        APPLIER_METRICS_URL "http://127.0.0.1:$((API_PORT + 2))/metrics" \
        REDIS_HOST 127.0.0.1 \
        REDIS_PORT "$REDIS_PORT" \
        PG_PORT "$PG_PORT" \
        PG_DSN "postgresql://counter:counter@127.0.0.1:$PG_PORT/counter" \
        KAFKA_BOOTSTRAP "127.0.0.1:$KAFKA_PORT" \
        KAFKA_PORT "$KAFKA_PORT" \
        KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT" \
        KAFKA_TOPIC "$KAFKA_TOPIC" \
        KAFKA_INPUT_TOPIC "$KAFKA_INPUT_TOPIC" \
        KAFKA_PARTITIONS "$KAFKA_PARTITIONS" \
        BIN_DIR "$BIN_DIR" \
        KAFKA_HOME "$KAFKA_HOME"
}

write_env_files() {
    local kv tmp
    tmp="$STACK_DIR/.stack.env.tmp"
    stack_env >"$tmp"
    mv "$tmp" "$STACK_DIR/stack.env"
    {
        echo "# Source this to run counter processes against the local stack."
        for kv in "${APP_ENV[@]}"; do
            printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
        done
    } >"$tmp"
    mv "$tmp" "$STACK_DIR/counter.env"
}

# -------------------------------------------------------------- commands ---

lock() {
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    exec 9>"$RUN_DIR/.lock"
    flock -w 300 9 || die "another stack.sh is still busy with $STACK_DIR"
}

valid_name() {
    case $1 in
    redis | postgres | kafka | counter-api | counter-persister | counter-applier) ;;
    *) die "unknown process '$1' (redis postgres kafka counter-api counter-persister counter-applier)" ;;
    esac
}

start_one() {
    case $1 in
    redis) start_redis ;;
    postgres) start_postgres ;;
    kafka) start_kafka ;;
    *)
        [[ -x $BIN_DIR/$1 ]] || die "$1: $BIN_DIR/$1 is not built"
        start_app "$1"
        ;;
    esac
}

stop_one() {
    case $1 in
    postgres) stop_postgres ;;
    kafka) stop_signal kafka 30 ;;
    redis) stop_signal redis 30 ;; # SIGTERM: Redis fsyncs its AOF first
    *) stop_signal "$1" 10 ;;
    esac
}

cmd_up() {
    local t0=$SECONDS app started=()
    lock
    write_env_files
    start_redis
    start_postgres
    start_kafka
    counterctl_setup
    for app in "${APPS[@]}"; do
        if [[ ! -x $BIN_DIR/$app ]]; then
            say "$app: $BIN_DIR/$app not built yet; skipped"
            continue
        fi
        live_pid "$app" >/dev/null || started+=("$app")
        start_app "$app"
    done
    # A process that dies at once (bad config) should fail `up`, not the
    # first test.
    if ((${#started[@]})); then
        sleep 0.5
        for app in "${started[@]}"; do
            live_pid "$app" >/dev/null || fail_with_log "$app" "exited right after starting"
        done
    fi
    say "up in $((SECONDS - t0))s; settings in $STACK_DIR/stack.env"
}

cmd_down() {
    local name i
    [[ -d $RUN_DIR ]] || return 0
    lock
    for ((i = ${#APPS[@]} - 1; i >= 0; i--)); do
        stop_one "${APPS[i]}"
    done
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        name="${SERVICES[i]}"
        stop_one "$name"
    done
}

# Only what this script creates, so that KAFKA_HOME (by default inside
# the default STACK_DIR) and anything else the user keeps there stay.
cmd_destroy() {
    cmd_down
    pg_layout
    if [[ -L $STACK_DIR/postgres/data && $PG_BASE == /var/tmp/counter-pg-* ]]; then
        rm -rf "$PG_BASE"
    fi
    rm -rf "${STACK_DIR:?}"/{run,log,redis,postgres,kafka} \
        "$STACK_DIR"/{stack.env,counter.env,.stack.env.tmp}
    rmdir "$STACK_DIR" 2>/dev/null || true
    say "destroyed the stack in $STACK_DIR"
}

cmd_status() {
    local name pid
    for name in "${SERVICES[@]}" "${APPS[@]}"; do
        if [[ $name == counter-applier && ! -x $BIN_DIR/$name && ! -e $(pidfile "$name") ]]; then
            continue
        fi
        if pid="$(live_pid "$name")"; then
            printf '%-18s running  pid %s\n' "$name" "$pid"
        else
            printf '%-18s stopped\n' "$name"
        fi
    done
}

cmd_kafka_tool() {
    (($#)) || die "usage: stack.sh kafka-tool CLASS|topics|groups|offsets [ARGS...]"
    local class=$1
    shift
    local extra=()
    case $class in
    topics) class=org.apache.kafka.tools.TopicCommand ;;
    groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
    esac
    case $class in
    org.apache.kafka.tools.TopicCommand | org.apache.kafka.tools.consumer.group.ConsumerGroupCommand | org.apache.kafka.tools.GetOffsetShell)
        extra=(--bootstrap-server "127.0.0.1:$KAFKA_PORT")
        # Else the admin client retries for 60 s before it says so.
        (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null ||
            die "kafka: nothing listens on 127.0.0.1:$KAFKA_PORT"
        ;;
    esac
    mkdir -p "$KAFKA_DIR"
    kafka_java "$class" "${extra[@]}" "$@"
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    destroy) cmd_destroy ;;
    status) cmd_status ;;
    env) if [[ -f $STACK_DIR/stack.env ]]; then cat "$STACK_DIR/stack.env"; else stack_env; fi ;;
    start | stop | kill | restart)
        (($# == 1)) || die "usage: stack.sh $cmd NAME"
        valid_name "$1"
        if [[ $cmd != start && ! -d $RUN_DIR ]]; then return 0; fi
        lock
        case $cmd in
        start)
            # Only `up` records settings: a one-off BIN_DIR=... start must
            # not change what later commands use.
            [[ -f $STACK_DIR/stack.env ]] || write_env_files
            start_one "$1"
            ;;
        stop) stop_one "$1" ;;
        kill) kill_hard "$1" ;;
        restart)
            stop_one "$1"
            start_one "$1"
            ;;
        esac
        ;;
    kafka-tool) cmd_kafka_tool "$@" ;;
    *)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
        [[ $cmd == -h || $cmd == --help || $cmd == help ]] && exit 0
        exit 2
        ;;
    esac
}

main "$@"
