#!/usr/bin/env bash
# The local counter stack: Redis, PostgreSQL (optionally with a streaming
# standby) and Kafka (KRaft, one node or a cluster of several) on
# 127.0.0.1, plus the counter processes once they are built. No Docker,
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
#   kafka-tool CLASS|topics|groups|offsets|quorum [ARGS...]
#                      run a Kafka command-line tool against the broker(s)
#   promote-standby    (PG_STANDBY=1) promote the standby to primary, as a
#                      failover tool would: the old primary is stopped if it
#                      still runs, and is rebuilt as the new primary's
#                      standby (pg_basebackup) when next started; the
#                      settings list the new primary first
#   pg-sync on|off     (PG_STANDBY=1) synchronous replication to the standby
#                      (synchronous_standby_names on the primary) or not
#   NAME: redis postgres kafka counter-api counter-persister counter-applier;
#         with KAFKA_NODES=N, kafka-1 ... kafka-N (kafka: all of them);
#         with PG_STANDBY=1, postgres-standby. The two PostgreSQL nodes keep
#         their names when a promotion swaps their roles (status says which
#         is the primary).
#
# Settings (environment; defaults in brackets). What `up` used is saved in
# $STACK_DIR/stack.env and reused by later commands on the same STACK_DIR
# unless set again explicitly.
#   STACK_DIR [<repo>/var]   data, logs (log/NAME.log), pid files (run/)
#   REDIS_PORT [6380]  PG_PORT [5433]  KAFKA_PORT [9092]
#   KAFKA_CONTROLLER_PORT [9093]  API_PORT [8080]
#   KAFKA_TOPIC [counter-events]  KAFKA_INPUT_TOPIC [counter-ingest]
#   KAFKA_PARTITIONS [4]
#   KAFKA_NODES [1]    KRaft nodes, each broker and controller (all voters);
#                      node i listens on KAFKA_PORT + 10(i-1) and
#                      KAFKA_CONTROLLER_PORT + 10(i-1). With 3 or more,
#                      every topic (internal ones too) gets 3 replicas and
#                      min.insync.replicas 2. A STACK_DIR keeps the node
#                      count its Kafka data was made with.
#   KAFKA_HEAP [-Xms256m -Xmx512m; with several nodes -Xms128m -Xmx384m each]
#   PG_STANDBY [0]     1: a hot standby of the primary by streaming
#                      replication, on PG_STANDBY_PORT [PG_PORT + 10]; the
#                      services get both as postgres.hosts
#   PG_SYNC [0]        1: the primary waits for the standby to have each
#                      commit (synchronous_commit=on, one named standby)
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
KAFKA_NODES="${KAFKA_NODES:-${SAVED_KAFKA_NODES:-1}}"
PG_STANDBY="${PG_STANDBY:-${SAVED_PG_STANDBY:-0}}"
PG_STANDBY_PORT="${PG_STANDBY_PORT:-${SAVED_PG_STANDBY_PORT:-$((PG_PORT + 10))}}"
PG_SYNC="${PG_SYNC:-${SAVED_PG_SYNC:-0}}"
[[ $KAFKA_NODES =~ ^[1-9]$ ]] ||
    { echo "stack: KAFKA_NODES must be 1 to 9, not '$KAFKA_NODES'" >&2; exit 2; }
[[ $PG_STANDBY == [01] && $PG_SYNC == [01] ]] ||
    { echo "stack: PG_STANDBY and PG_SYNC are 0 or 1" >&2; exit 2; }
if ((KAFKA_NODES == 1)); then
    KAFKA_HEAP="${KAFKA_HEAP:--Xms256m -Xmx512m}"
else
    KAFKA_HEAP="${KAFKA_HEAP:--Xms128m -Xmx384m}"
fi
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

# Kafka's nodes: "kafka" alone, or kafka-1 ... kafka-N. With 3 or more,
# every topic has 3 replicas and takes a write once 2 have it.
KAFKA_NAMES=()
KAFKA_BOOTSTRAP=""
if ((KAFKA_NODES == 1)); then
    KAFKA_NAMES=(kafka)
else
    for ((i = 1; i <= KAFKA_NODES; i++)); do KAFKA_NAMES+=("kafka-$i"); done
fi
for ((i = 1; i <= KAFKA_NODES; i++)); do
    KAFKA_BOOTSTRAP+="${KAFKA_BOOTSTRAP:+,}127.0.0.1:$((KAFKA_PORT + 10 * (i - 1)))"
done
KAFKA_RF=$((KAFKA_NODES < 3 ? KAFKA_NODES : 3))
KAFKA_MIN_ISR=$((KAFKA_RF < 3 ? 1 : 2))

PG_NAMES=(postgres)
((PG_STANDBY == 0)) || PG_NAMES+=(postgres-standby)
SERVICES=(redis "${PG_NAMES[@]}" "${KAFKA_NAMES[@]}")
APPS=(counter-api counter-persister counter-applier)

# The counter processes' configuration (common/config.h: COUNTER_<KEY>),
# in APP_ENV (set_app_env, once the PostgreSQL primary is known).
# The caller's environment is inherited too, so any other COUNTER_* setting
# (COUNTER_CONFIG, COUNTER_LOG_LEVEL, ...) passes through.
# The repo's config.yaml is the base (the processes run in $STACK_DIR, where
# no config.yaml is); the stack's ports override it.
set_app_env() {
    local primary other hosts=""
    primary="$(pg_primary)"
    other="$(pg_other "$primary")"
    if ((PG_STANDBY)); then
        # libpq tries them in order and keeps the one that takes writes
        hosts="127.0.0.1:$(pg_node_port "$primary"),127.0.0.1:$(pg_node_port "$other")"
    fi
    APP_ENV=(
        "COUNTER_CONFIG=${COUNTER_CONFIG:-$ROOT/config.yaml}"
        COUNTER_SERVER_BIND=127.0.0.1
        "COUNTER_SERVER_PORT=$API_PORT"
        "COUNTER_REDIS_ADDR=127.0.0.1:$REDIS_PORT"
        COUNTER_POSTGRES_HOST=127.0.0.1
        "COUNTER_POSTGRES_PORT=$(pg_node_port "$primary")"
        "COUNTER_POSTGRES_HOSTS=$hosts"
        COUNTER_POSTGRES_USER=counter
        COUNTER_POSTGRES_PASSWORD=counter
        COUNTER_POSTGRES_DBNAME=counter
        "COUNTER_KAFKA_BROKERS=$KAFKA_BOOTSTRAP"
        "COUNTER_KAFKA_TOPIC=$KAFKA_TOPIC"
        "COUNTER_KAFKA_INPUT_TOPIC=$KAFKA_INPUT_TOPIC"
        "COUNTER_KAFKA_PARTITIONS=$KAFKA_PARTITIONS"
        "COUNTER_KAFKA_REPLICATION_FACTOR=$KAFKA_RF"
        "COUNTER_KAFKA_MIN_INSYNC_REPLICAS=$KAFKA_MIN_ISR"
        # beside the api's port, so that stacks on other ports never collide
        "COUNTER_PERSISTER_METRICS_PORT=$((API_PORT + 1))"
        "COUNTER_APPLIER_METRICS_PORT=$((API_PORT + 2))"
    )
    if ((PG_STANDBY)); then
        PG_DSN="postgresql://counter:counter@${hosts}/counter?target_session_attrs=read-write"
    else
        PG_DSN="postgresql://counter:counter@127.0.0.1:$(pg_node_port "$primary")/counter"
    fi
}

say() { printf 'stack: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# ----------------------------------------------------------- processes ---

pidfile() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }

# A string the process's command line must contain: a pid file that
# survived a reboot may name some unrelated process by now.
cmd_marker() {
    case $1 in
    redis) echo redis-server ;;
    postgres | postgres-standby) echo postgres ;;
    kafka) echo kafka.Kafka ;;
    kafka-*) echo "$KAFKA_DIR/${1#kafka-}/server.properties" ;;
    *) echo "$1" ;;
    esac
}

# The recorded pid of NAME, whether or not it is alive.
recorded_pid() {
    local f pid=""
    if [[ $1 == postgres || $1 == postgres-standby ]]; then
        # PostgreSQL's own lock file is the truth about its postmaster.
        f="$(pg_node_data "$1")/postmaster.pid"
        [[ -r $f ]] || f="$(pidfile "$1")"
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

# Where the clusters live: PG_BASE holds each node's data (data for the
# node postgres, data-standby for postgres-standby), its log and the
# socket folder both use. Normally $STACK_DIR/postgres; if the postgres
# user could not reach $STACK_DIR (e.g. under /root), pg_prepare_home put
# it under /var/tmp and left a symlink at $STACK_DIR/postgres/data.
pg_layout() {
    local link="$STACK_DIR/postgres/data"
    if [[ -L $link ]]; then
        PG_BASE="$(dirname "$(readlink "$link")")"
    else
        PG_BASE="$STACK_DIR/postgres"
    fi
    PG_SOCK="$PG_BASE/sock"
}

pg_node_data() {
    pg_layout
    if [[ $1 == postgres ]]; then echo "$PG_BASE/data"; else echo "$PG_BASE/data-standby"; fi
}
pg_node_port() { if [[ $1 == postgres ]]; then echo "$PG_PORT"; else echo "$PG_STANDBY_PORT"; fi; }
pg_node_log() { pg_layout && echo "$PG_BASE/$1.log"; }
pg_other() { if [[ $1 == postgres ]]; then echo postgres-standby; else echo postgres; fi; }
# A node's application_name on its primary (synchronous_standby_names).
pg_node_app() { echo "${1//-/_}"; }

# The primary: postgres, until promote-standby made it the other node.
pg_primary() {
    local p=postgres
    if [[ -r $STACK_DIR/postgres/primary ]]; then read -r p <"$STACK_DIR/postgres/primary" || true; fi
    if [[ $p == postgres-standby ]]; then echo postgres-standby; else echo postgres; fi
}

pg_is_standby_data() { [[ -f "$(pg_node_data "$1")/standby.signal" ]]; }

pg_role() {
    if [[ $1 == "$(pg_primary)" ]]; then echo primary; else echo standby; fi
}

pg_prepare_home() {
    local home="$STACK_DIR/postgres"
    [[ -x $PG_BIN/postgres ]] || die "postgres: no server binaries (PG_BIN=$PG_BIN); run deploy/install-deps.sh"
    if [[ ! -e $home/data && ! -L $home/data ]]; then
        mkdir -p "$home"
        if ((EUID == 0)) && ! runuser -u postgres -- test -x "$STACK_DIR"; then
            # postgres cannot traverse some ancestor of STACK_DIR: keep the
            # clusters where it can, one folder per STACK_DIR.
            local hash base
            hash="$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)"
            base="/var/tmp/counter-pg-$hash"
            mkdir -p "$base"
            [[ "$(stat -c %U "$base")" == root || "$(stat -c %U "$base")" == postgres ]] ||
                die "postgres: $base belongs to $(stat -c %U "$base"); remove it"
            chown postgres:postgres "$base"
            chmod 700 "$base"
            ln -sfn "$base/data" "$home/data"
            say "postgres: the postgres user cannot reach $STACK_DIR; clusters in $base"
        elif ((EUID == 0)); then
            chown postgres:postgres "$home"
            chmod 700 "$home"
        fi
    fi
    pg_layout
    as_pg mkdir -p "$PG_SOCK"
    as_pg chmod 700 "$PG_SOCK"
    # pg_ctl writes the logs as the postgres user; log/NODE.log point at them.
    ln -sfn "$PG_BASE/postgres.log" "$LOG_DIR/postgres.log"
    ((PG_STANDBY == 0)) || ln -sfn "$PG_BASE/postgres-standby.log" "$LOG_DIR/postgres-standby.log"
}

# The first primary's cluster, made once.
pg_initdb() {
    local data user
    data="$(pg_node_data "$1")"
    user="$(pg_os_user)"
    [[ ! -f $data/PG_VERSION ]] || return 0
    [[ $1 == postgres ]] || die "$1: the primary has no data in $data"
    say "postgres: initdb in $data (as $user)"
    local pwfile="$PG_BASE/superuser.password"
    head -c 24 /dev/urandom | base64 | as_pg tee "$pwfile" >/dev/null
    as_pg chmod 600 "$pwfile"
    # Passwords (scram) over TCP; the unix socket (a private folder) takes
    # the OS user, for this script's admin work and the standby's
    # replication connection.
    as_pg "$PG_BIN/initdb" -D "$data" -U "$user" --pwfile="$pwfile" \
        --auth-host=scram-sha-256 --auth-local=peer \
        -E UTF8 --locale=C.UTF-8 >>"$LOG_DIR/postgres-initdb.log" 2>&1 ||
        fail_with_log postgres-initdb "initdb failed"
    printf "\ninclude_if_exists = 'counter-stack.conf'\n" |
        as_pg tee -a "$data/postgresql.conf" >/dev/null
}

# A standby's data: a base backup of the running primary, unless the node
# already is its standby. A former primary (its data has no standby.signal
# since a promotion) may hold commits the new primary never had: it is
# rebuilt, never resumed.
pg_make_standby() {
    local node=$1 data primary
    data="$(pg_node_data "$node")"
    primary="$(pg_primary)"
    ! pg_is_standby_data "$node" || return 0
    live_pid "$primary" >/dev/null ||
        die "$node: to become a standby it needs its primary, $primary, running"
    if [[ -e $data ]]; then
        say "$node: its data is not a standby's (a former primary); rebuilding it from $primary"
        as_pg rm -rf "$data"
    fi
    say "$node: pg_basebackup from $primary (port $(pg_node_port "$primary"))"
    as_pg "$PG_BIN/pg_basebackup" -h "$PG_SOCK" -p "$(pg_node_port "$primary")" \
        -U "$(pg_os_user)" -D "$data" -X stream -c fast -w \
        >>"$LOG_DIR/$node-basebackup.log" 2>&1 ||
        fail_with_log "$node-basebackup" "pg_basebackup failed"
    as_pg touch "$data/standby.signal"
}

# Rewritten on every start (and on promotion, pg-sync), so changed ports
# and roles take effect. Included last by postgresql.conf, so these win
# (postgresql.auto.conf aside, which the stack leaves empty).
pg_write_conf() {
    local node=$1 primary other sync="" conninfo=""
    primary="$(pg_primary)"
    other="$(pg_other "$node")"
    pg_layout
    if [[ $node == "$primary" ]]; then
        # The standby a commit waits for, once there is one to wait for.
        if ((PG_STANDBY && PG_SYNC)) && pg_is_standby_data "$other"; then
            sync="$(pg_node_app "$other")"
        fi
    else
        conninfo="host=$PG_SOCK port=$(pg_node_port "$primary") user=$(pg_os_user) application_name=$(pg_node_app "$node")"
    fi
    as_pg tee "$(pg_node_data "$node")/counter-stack.conf" >/dev/null <<EOF
# Generated by deploy/stack.sh; edits are lost.
listen_addresses = '127.0.0.1'
port = $(pg_node_port "$node")
unix_socket_directories = '$PG_SOCK'
fsync = on
synchronous_commit = on
# Replication: WAL kept for a standby that was away for a while; where a
# standby streams from (read only with standby.signal); the standby a
# commit waits for ('' = none: asynchronous).
wal_keep_size = '256MB'
primary_conninfo = '$conninfo'
synchronous_standby_names = '$sync'
EOF
}

# psql as the cluster's superuser, over the private unix socket, on the
# primary.
pg_admin() {
    as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" \
        -p "$(pg_node_port "$(pg_primary)")" -U "$(pg_os_user)" -d postgres "$@"
}

pg_counter_login() { # PORT
    PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -tA \
        "postgresql://counter:counter@127.0.0.1:$1/counter" \
        -c 'SELECT 1' 2>/dev/null | grep -qx 1
}

pg_takes_writes() { # PORT
    PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -tA \
        "postgresql://counter:counter@127.0.0.1:$1/counter" \
        -c 'SELECT pg_is_in_recovery()' 2>/dev/null | grep -qx f
}

pg_isready_tcp() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -t 5; }

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
pg_clear_stale_lock() { # NODE
    local f pid="" i
    f="$(pg_node_data "$1")/postmaster.pid"
    [[ -f $f ]] || return 0
    read -r pid <"$f" || true
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    for ((i = 0; i < 50; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then return 0; fi
        if ! is_zombie "$pid"; then break; fi
        sleep 0.1
    done
    say "$1: pid $pid in postmaster.pid is not a running server; removing stale lock files"
    as_pg rm -f "$f" "$PG_SOCK/.s.PGSQL.$(pg_node_port "$1").lock"
}

# The primary's synchronous_standby_names follows whether its standby
# exists (pg_write_conf): re-read after a standby was made or promoted.
pg_reload_primary() {
    local primary
    primary="$(pg_primary)"
    live_pid "$primary" >/dev/null || return 0
    pg_write_conf "$primary"
    as_pg "$PG_BIN/pg_ctl" reload -D "$(pg_node_data "$primary")" -s >/dev/null ||
        die "$primary: pg_ctl reload failed"
}

start_postgres() { # NODE
    local node=$1 pid port data
    mkdir -p "$LOG_DIR"
    port="$(pg_node_port "$node")"
    if pid="$(live_pid "$node")"; then
        say "$node: running (pid $pid, $(pg_role "$node"))"
    else
        ensure_port_free "$node" "$port"
        pg_prepare_home
        data="$(pg_node_data "$node")"
        if [[ $node == "$(pg_primary)" ]]; then
            pg_initdb "$node"
        else
            pg_make_standby "$node"
        fi
        pg_write_conf "$node"
        pg_clear_stale_lock "$node"
        printf '=== %s stack.sh: starting %s\n' "$(date -Is)" "$node" |
            as_pg tee -a "$(pg_node_log "$node")" >/dev/null
        # pg_ctl detaches the postmaster into its own session and waits
        # until it accepts connections (crash recovery included; a
        # standby, once it is consistent).
        if ! as_pg "$PG_BIN/pg_ctl" start -D "$data" -l "$(pg_node_log "$node")" \
            -w -t 120 -s >/dev/null; then
            fail_with_log "$node" "pg_ctl start failed"
        fi
        pid="$(recorded_pid "$node")"
        printf '%s\n' "$pid" >"$(pidfile "$node")"
        say "$node: started (pid $pid, $(pg_role "$node")), port $port, data $data"
    fi
    wait_ready "$node" 60 pg_isready_tcp "$port"
    if [[ $node == "$(pg_primary)" ]]; then
        pg_ensure_app_db
        wait_ready "$node" 10 pg_counter_login "$port"
    else
        pg_reload_primary
    fi
}

stop_postgres() { # NODE
    if live_pid "$1" >/dev/null; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$(pg_node_data "$1")" -m fast -w -t 60 -s ||
            die "$1: pg_ctl stop failed"
        say "$1: stopped"
    fi
    rm -f "$(pidfile "$1")"
}

# What a failover tool does once the primary is gone: the standby becomes
# the primary (it replays what it received, then takes writes on a new
# timeline), and the settings list it first. Whatever the old primary
# committed that the standby had not received is not on the new primary;
# the persister's offsets travel in the same transactions, so it finds
# where the new primary stands and reads those events again.
cmd_promote_standby() {
    ((PG_STANDBY)) || die "promote-standby: this stack has no standby (PG_STANDBY=1 at up)"
    lock
    local primary standby t0=$SECONDS
    primary="$(pg_primary)"
    standby="$(pg_other "$primary")"
    if ! live_pid "$standby" >/dev/null || ! pg_is_standby_data "$standby"; then
        die "promote-standby: $standby is not running as a standby"
    fi
    if live_pid "$primary" >/dev/null; then
        # Two primaries would both take writes (split brain).
        say "$primary: still running; stopped first, so that one primary is left"
        stop_postgres "$primary"
    fi
    as_pg "$PG_BIN/pg_ctl" promote -D "$(pg_node_data "$standby")" -w -t 60 -s ||
        fail_with_log "$standby" "pg_ctl promote failed"
    printf '%s\n' "$standby" >"$STACK_DIR/postgres/primary"
    # no standby to wait for until the old primary is rebuilt as one
    pg_reload_primary
    wait_ready "$standby" 30 pg_takes_writes "$(pg_node_port "$standby")"
    set_app_env
    write_env_files
    say "$standby: promoted in $((SECONDS - t0))s; primary on port $(pg_node_port "$standby");" \
        "$primary becomes its standby (rebuilt) on: deploy/stack.sh start $primary"
}

# Synchronous replication on or off: the primary's
# synchronous_standby_names names the standby, or nothing.
cmd_pg_sync() {
    ((PG_STANDBY)) || die "pg-sync: this stack has no standby (PG_STANDBY=1 at up)"
    case ${1:-} in
    on) PG_SYNC=1 ;;
    off) PG_SYNC=0 ;;
    *) die "usage: stack.sh pg-sync on|off" ;;
    esac
    lock
    pg_reload_primary
    write_env_files
    say "postgres: synchronous replication $1"
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

# Node i of the cluster: its index, folder and ports. One node keeps the
# layout of before (kafka/server.properties, kafka/data).
kafka_index() { if [[ $1 == kafka ]]; then echo 1; else echo "${1#kafka-}"; fi; }
kafka_node_dir() { if ((KAFKA_NODES == 1)); then echo "$KAFKA_DIR"; else echo "$KAFKA_DIR/$1"; fi; }
kafka_node_port() { echo $((KAFKA_PORT + 10 * ($1 - 1))); }
kafka_node_cport() { echo $((KAFKA_CONTROLLER_PORT + 10 * ($1 - 1))); }

# A STACK_DIR's Kafka was formatted for a number of nodes (its voters);
# another number would be a new cluster beside the old data.
kafka_check_shape() {
    local made
    if [[ -r $KAFKA_DIR/nodes ]]; then
        read -r made <"$KAFKA_DIR/nodes" || true
    elif [[ -f $KAFKA_DIR/data/meta.properties ]]; then
        made=1
    else
        return 0
    fi
    [[ $made == "$KAFKA_NODES" ]] ||
        die "kafka: $KAFKA_DIR holds a cluster of $made node(s), KAFKA_NODES is $KAFKA_NODES; use another STACK_DIR (or destroy this one)"
}

write_kafka_config() { # INDEX
    local i=$1 dir voters="" j
    dir="$(kafka_node_dir "$i")"
    for ((j = 1; j <= KAFKA_NODES; j++)); do
        voters+="${voters:+,}$j@127.0.0.1:$(kafka_node_cport "$j")"
    done
    # Broker and controller in one process (KRaft, static quorum: every
    # node a voter). 127.0.0.1 rather than localhost: librdkafka would
    # try ::1.
    cat >"$dir/server.properties" <<EOF
# Generated by deploy/stack.sh on every start; edits are lost.
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(kafka_node_port "$i"),CONTROLLER://127.0.0.1:$(kafka_node_cport "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(kafka_node_port "$i")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data

# Topics are created by counterctl create-topic, never by a typo.
auto.create.topics.enable=false
num.partitions=$KAFKA_PARTITIONS

# $KAFKA_RF replica(s) of everything, internal topics included; a write
# (acks=all) is taken once $KAFKA_MIN_ISR have it, and refused while fewer
# are in sync. No unclean leader election (Kafka's default): a replica
# that missed writes never becomes leader.
default.replication.factor=$KAFKA_RF
min.insync.replicas=$KAFKA_MIN_ISR
offsets.topic.replication.factor=$KAFKA_RF
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=$KAFKA_RF
transaction.state.log.min.isr=$KAFKA_MIN_ISR
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=$KAFKA_RF
share.coordinator.state.topic.min.isr=$KAFKA_MIN_ISR

# Consumer groups start at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0

# Small machine: few threads, a 16 MB cleaner buffer (default 128 MB)
# so that a small heap is plenty.
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
background.threads=4
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
EOF
}

# The node answers a metadata request and lists itself: it has caught up
# with the cluster's metadata and registered. Short reconnect backoff:
# notice the port opening within the window.
kafka_ready() { # INDEX
    timeout 15 kcat -b "127.0.0.1:$(kafka_node_port "$1")" -L -m 5 \
        -X reconnect.backoff.max.ms=250 2>/dev/null | grep -q "^  broker $1 at "
}

# start_kafka NAME...: every node named that is not running, all started
# before any is waited for (a node of several waits for a quorum of
# voters before it opens its port).
start_kafka() {
    local name i pid dir heap
    ls "$KAFKA_HOME"/.installed-* >/dev/null 2>&1 ||
        die "kafka: no broker jars in $KAFKA_HOME/libs; run deploy/install-deps.sh"
    kafka_check_shape
    read -r -a heap <<<"$KAFKA_HEAP"
    for name in "$@"; do
        if pid="$(live_pid "$name")"; then
            say "$name: running (pid $pid)"
            continue
        fi
        i="$(kafka_index "$name")"
        dir="$(kafka_node_dir "$i")"
        ensure_port_free "$name" "$(kafka_node_port "$i")"
        ensure_port_free "$name-controller" "$(kafka_node_cport "$i")"
        mkdir -p "$dir/data"
        write_kafka_config "$i"
        if [[ ! -f $dir/data/meta.properties ]]; then
            # Once per STACK_DIR: a cluster id; once per node, the format.
            [[ -s $KAFKA_DIR/cluster-id ]] ||
                kafka_java kafka.tools.StorageTool random-uuid >"$KAFKA_DIR/cluster-id"
            printf '%s\n' "$KAFKA_NODES" >"$KAFKA_DIR/nodes"
            say "$name: formatting storage, cluster id $(cat "$KAFKA_DIR/cluster-id")"
            kafka_java kafka.tools.StorageTool format \
                -t "$(cat "$KAFKA_DIR/cluster-id")" -c "$dir/server.properties" \
                >>"$LOG_DIR/$name.log" 2>&1 || fail_with_log "$name" "storage format failed"
        fi
        kafka_jvm_opts
        spawn "$name" "$(java_bin)" "${heap[@]}" -XX:+UseG1GC \
            -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
            -XX:+ExitOnOutOfMemoryError "${KAFKA_JVM_OPTS[@]}" \
            kafka.Kafka "$dir/server.properties"
        say "$name: started (pid $(recorded_pid "$name")), port $(kafka_node_port "$i")"
    done
    for name in "$@"; do
        wait_ready "$name" "$KAFKA_READY_TIMEOUT" kafka_ready "$(kafka_index "$name")"
    done
}

# Several nodes stop together: one by one, the last ones would wait for a
# quorum that has already gone. Even so the last voter standing may wait
# for its peers in its own shutdown: killed after 15 s (its data is in the
# page cache; the next start recovers its logs).
stop_kafka() {
    local name pid pids=() grace=30
    (($# == 1)) || grace=15
    for name in "$@"; do
        if pid="$(live_pid "$name")"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$name:$pid")
        fi
        rm -f "$(pidfile "$name")"
    done
    local deadline=$((SECONDS + grace))
    for name in "${pids[@]}"; do
        if ! wait_gone "${name#*:}" $((deadline > SECONDS ? deadline - SECONDS : 1)); then
            say "${name%%:*}: still running ${grace}s after SIGTERM; SIGKILL"
            kill -KILL "${name#*:}" 2>/dev/null || true
            wait_gone "${name#*:}" 10 || true
        fi
        say "${name%%:*}: stopped"
    done
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
# (redis/apply.h); "restoring:..." while a restore runs.
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
        PG_STANDBY "$PG_STANDBY" \
        PG_STANDBY_PORT "$PG_STANDBY_PORT" \
        PG_SYNC "$PG_SYNC" \
        PG_PRIMARY "$(pg_primary)" \
        PG_DSN "$PG_DSN" \
        KAFKA_BOOTSTRAP "$KAFKA_BOOTSTRAP" \
        KAFKA_PORT "$KAFKA_PORT" \
        KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT" \
        KAFKA_NODES "$KAFKA_NODES" \
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

# NAMES: the processes NAME stands for, itself or, with several Kafka
# nodes, "kafka" for all of them.
set_names() {
    local n
    NAMES=()
    if [[ $1 == kafka && $KAFKA_NODES -gt 1 ]]; then
        NAMES=("${KAFKA_NAMES[@]}")
        return 0
    fi
    for n in "${SERVICES[@]}" "${APPS[@]}"; do
        [[ $n != "$1" ]] || NAMES=("$1")
    done
    ((${#NAMES[@]})) || die "unknown process '$1' (${SERVICES[*]} ${APPS[*]})"
}

start_one() {
    case $1 in
    redis) start_redis ;;
    postgres | postgres-standby) start_postgres "$1" ;;
    kafka | kafka-*) start_kafka "$1" ;;
    *)
        [[ -x $BIN_DIR/$1 ]] || die "$1: $BIN_DIR/$1 is not built"
        start_app "$1"
        ;;
    esac
}

stop_one() {
    case $1 in
    postgres | postgres-standby) stop_postgres "$1" ;;
    kafka | kafka-*) stop_kafka "$1" ;;
    redis) stop_signal redis 30 ;; # SIGTERM: Redis fsyncs its AOF first
    *) stop_signal "$1" 10 ;;
    esac
}

cmd_up() {
    local t0=$SECONDS app started=() name
    lock
    write_env_files
    start_redis
    # the primary first: a standby is made from it
    start_postgres "$(pg_primary)"
    ((PG_STANDBY == 0)) || start_postgres "$(pg_other "$(pg_primary)")"
    start_kafka "${KAFKA_NAMES[@]}"
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
    for name in "${PG_NAMES[@]}"; do
        say "$name: $(pg_role "$name") on port $(pg_node_port "$name")"
    done
    say "up in $((SECONDS - t0))s; settings in $STACK_DIR/stack.env"
}

cmd_down() {
    local i
    [[ -d $RUN_DIR ]] || return 0
    lock
    for ((i = ${#APPS[@]} - 1; i >= 0; i--)); do
        stop_one "${APPS[i]}"
    done
    stop_kafka "${KAFKA_NAMES[@]}"
    # a standby the settings no longer name still stops
    stop_postgres postgres-standby
    stop_postgres postgres
    stop_one redis
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
    local name pid role
    for name in "${SERVICES[@]}" "${APPS[@]}"; do
        if [[ $name == counter-applier && ! -x $BIN_DIR/$name && ! -e $(pidfile "$name") ]]; then
            continue
        fi
        role=""
        [[ $name != postgres* || $PG_STANDBY == 0 ]] || role=" ($(pg_role "$name"))"
        if pid="$(live_pid "$name")"; then
            printf '%-18s running  pid %s%s\n' "$name" "$pid" "$role"
        else
            printf '%-18s stopped%s\n' "$name" "$role"
        fi
    done
}

cmd_kafka_tool() {
    (($#)) || die "usage: stack.sh kafka-tool CLASS|topics|groups|offsets|quorum [ARGS...]"
    local class=$1 i up=""
    shift
    local extra=()
    case $class in
    topics) class=org.apache.kafka.tools.TopicCommand ;;
    groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
    quorum) class=org.apache.kafka.tools.MetadataQuorumCommand ;;
    esac
    case $class in
    org.apache.kafka.tools.TopicCommand | org.apache.kafka.tools.consumer.group.ConsumerGroupCommand | \
        org.apache.kafka.tools.GetOffsetShell | org.apache.kafka.tools.MetadataQuorumCommand)
        extra=(--bootstrap-server "$KAFKA_BOOTSTRAP")
        # Else the admin client retries for 60 s before it says so.
        for ((i = 1; i <= KAFKA_NODES; i++)); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$(kafka_node_port "$i")") 2>/dev/null; then up=1; fi
        done
        [[ -n $up ]] || die "kafka: nothing listens on $KAFKA_BOOTSTRAP"
        ;;
    esac
    mkdir -p "$KAFKA_DIR"
    kafka_java "$class" "${extra[@]}" "$@"
}

main() {
    local cmd=${1:-} name
    (($#)) && shift
    set_app_env
    case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    destroy) cmd_destroy ;;
    status) cmd_status ;;
    env) if [[ -f $STACK_DIR/stack.env ]]; then cat "$STACK_DIR/stack.env"; else stack_env; fi ;;
    start | stop | kill | restart)
        (($# == 1)) || die "usage: stack.sh $cmd NAME"
        set_names "$1"
        if [[ $cmd != start && ! -d $RUN_DIR ]]; then return 0; fi
        lock
        case $cmd in
        start)
            # Only `up` records settings: a one-off BIN_DIR=... start must
            # not change what later commands use.
            [[ -f $STACK_DIR/stack.env ]] || write_env_files
            if [[ ${NAMES[0]} == kafka-* ]]; then
                start_kafka "${NAMES[@]}"
            else
                start_one "$1"
            fi
            ;;
        stop) if [[ ${NAMES[0]} == kafka-* ]]; then stop_kafka "${NAMES[@]}"; else stop_one "$1"; fi ;;
        kill) for name in "${NAMES[@]}"; do kill_hard "$name"; done ;;
        restart)
            if [[ ${NAMES[0]} == kafka-* ]]; then
                stop_kafka "${NAMES[@]}"
                start_kafka "${NAMES[@]}"
            else
                stop_one "$1"
                start_one "$1"
            fi
            ;;
        esac
        ;;
    kafka-tool) cmd_kafka_tool "$@" ;;
    promote-standby) cmd_promote_standby ;;
    pg-sync) cmd_pg_sync "$@" ;;
    *)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
        [[ $cmd == -h || $cmd == --help || $cmd == help ]] && exit 0
        exit 2
        ;;
    esac
}

main "$@"
