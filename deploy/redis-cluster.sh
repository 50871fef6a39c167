#!/usr/bin/env bash
# A local Redis Cluster on 127.0.0.1 for development and the tests
# (tests/integration/test_cluster.py): CLUSTER_MASTERS masters with
# CLUSTER_REPLICAS replicas each, every node a redis-server of its own
# (daemonized, pid file) under $CLUSTER_DIR/<port>/. No Docker.
#
# Usage: deploy/redis-cluster.sh COMMAND
#   up          start every node that is not running, create the cluster
#               the first time (redis-cli --cluster create), wait until every
#               node says cluster_state:ok and every replica is in sync with
#               its master, write $CLUSTER_DIR/cluster.env
#               (COUNTER_REDIS_CLUSTER_NODES=...). On a running cluster it
#               changes nothing; a node that was stopped or killed comes
#               back and rejoins (a failed-over master as a replica).
#   down        stop every node (SHUTDOWN SAVE: an RDB per node, so that a
#               later `up` comes back with the data); quiet if already down
#   status      one line per node: port, running (pid) or stopped, role,
#               slots; then the cluster_state a running node reports
#   kill PORT   SIGKILL one node, as in a crash (try a failover by hand)
#   destroy     down, then delete $CLUSTER_DIR
#
# Settings (environment; defaults in brackets). `up` saves them in
# $CLUSTER_DIR/cluster.conf; later commands on the same CLUSTER_DIR reuse
# them unless set again.
#   CLUSTER_DIR [<repo>/var/redis-cluster]
#   CLUSTER_MASTERS [3]  CLUSTER_REPLICAS [1]
#   CLUSTER_BASE_PORT [21000]  nodes listen on BASE .. BASE+N-1
#   CLUSTER_BUS_OFFSET [1000]  cluster bus port = node port + offset. Redis's
#       own default (+10000) would put the bus of ports above 22767 among
#       the kernel's ephemeral ports (32768-60999), where an outgoing
#       connection can hold the port when the node starts; `up` refuses
#       any port in that range.
#   CLUSTER_NODE_TIMEOUT_MS [1000]  cluster-node-timeout: a master that
#       stops answering is failed over after 2-3 times this
#   CLUSTER_READY_TIMEOUT [60]  seconds `up` waits for cluster_state:ok
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_DIR="$(realpath -m "${CLUSTER_DIR:-$ROOT/var/redis-cluster}")"
[[ $CLUSTER_DIR != *[[:space:]\'\"\\]* ]] ||
    { echo "redis-cluster: CLUSTER_DIR must not contain spaces or quotes" >&2; exit 2; }

if [[ -f $CLUSTER_DIR/cluster.conf ]]; then
    # shellcheck source=/dev/null
    source <(sed -n 's/^\(CLUSTER_[A-Z_]*\)=\([0-9]*\)$/SAVED_\1=\2/p' "$CLUSTER_DIR/cluster.conf")
fi
MASTERS="${CLUSTER_MASTERS:-${SAVED_CLUSTER_MASTERS:-3}}"
REPLICAS="${CLUSTER_REPLICAS:-${SAVED_CLUSTER_REPLICAS:-1}}"
BASE_PORT="${CLUSTER_BASE_PORT:-${SAVED_CLUSTER_BASE_PORT:-21000}}"
BUS_OFFSET="${CLUSTER_BUS_OFFSET:-${SAVED_CLUSTER_BUS_OFFSET:-1000}}"
NODE_TIMEOUT_MS="${CLUSTER_NODE_TIMEOUT_MS:-${SAVED_CLUSTER_NODE_TIMEOUT_MS:-1000}}"
READY_TIMEOUT="${CLUSTER_READY_TIMEOUT:-60}"

say() { printf 'redis-cluster: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

for v in MASTERS REPLICAS BASE_PORT BUS_OFFSET NODE_TIMEOUT_MS READY_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, not '${!v}'"
done
((MASTERS >= 3)) || die "Redis Cluster needs at least 3 masters (CLUSTER_MASTERS=$MASTERS)"
NODES=$((MASTERS * (1 + REPLICAS)))

cli() { # PORT ARGS...: one command to a node, bounded
    local port=$1
    shift
    timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
}

node_ports() { # the ports of the configuration
    local i
    for ((i = 0; i < NODES; i++)); do echo $((BASE_PORT + i)); done
}

known_ports() { # every node directory under CLUSTER_DIR (for down/status)
    local d
    for d in "$CLUSTER_DIR"/*/; do
        d="${d%/}"
        d="${d##*/}"
        [[ $d =~ ^[0-9]+$ ]] && echo "$d"
    done | sort -n
}

# Prints the pid of the node on PORT if it runs; fails otherwise. The pid
# file may have survived a reboot and name another process by now.
node_pid() {
    local f="$CLUSTER_DIR/$1/redis.pid" pid cmdline
    [[ -r $f ]] || return 1
    read -r pid <"$f" 2>/dev/null || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ $cmdline == *redis-server*":$1"* ]] || return 1
    echo "$pid"
}

port_free() { # PORT: nothing listens on it (outgoing sockets take their
    # ports from the ephemeral range, which check_ports keeps us out of)
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

check_ports() {
    local lo hi port
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
    for port in $(node_ports); do
        for p in "$port" $((port + BUS_OFFSET)); do
            ((p < 65536)) || die "port $p is out of range"
            if ((p >= lo && p <= hi)); then
                die "port $p lies in the ephemeral range $lo-$hi; choose a lower" \
                    "CLUSTER_BASE_PORT (and CLUSTER_BUS_OFFSET)"
            fi
        done
    done
}

start_node() {
    local port=$1 dir="$CLUSTER_DIR/$1" pid
    if pid="$(node_pid "$port")"; then
        return 0
    fi
    for p in "$port" $((port + BUS_OFFSET)); do
        port_free "$p" || die "port $p on 127.0.0.1 is in use by another process"
    done
    mkdir -p "$dir"
    # Rewritten on every start so that changed settings take effect;
    # nodes.conf (the node's identity and view of the cluster) is kept.
    cat >"$dir/redis.conf" <<EOF
# Generated by deploy/redis-cluster.sh on every start; edits are lost.
bind 127.0.0.1
port $port
protected-mode yes
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
cluster-enabled yes
cluster-config-file nodes.conf
cluster-port $((port + BUS_OFFSET))
cluster-node-timeout $NODE_TIMEOUT_MS
# No AOF and no snapshots while running: a crashed master's data lives on
# in its replica (the service WAITs for one); down saves an RDB on purpose.
appendonly no
save ""
# A replica syncs at once (Redis 7 waits 5 s for more replicas first); a
# master killed before its replica synced cannot be failed over.
repl-diskless-sync-delay 0
EOF
    rm -f "$dir/redis.pid"
    redis-server "$dir/redis.conf" || die "node $port did not start; see $dir/redis.log"
}

wait_for() { # SECONDS WHAT COMMAND...: polls until COMMAND succeeds
    local secs=$1 deadline # WHAT names the wait for a reader of the call
    shift 2
    deadline=$((SECONDS + secs))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

pings() { [[ "$(cli "$1" PING)" == PONG ]]; }

info_field() { # PORT FIELD: a field of CLUSTER INFO
    cli "$1" CLUSTER INFO | tr -d '\r' | sed -n "s/^$2://p"
}

repl_field() { # PORT FIELD: a field of INFO replication
    cli "$1" INFO replication | tr -d '\r' | sed -n "s/^$2://p"
}

all_ok() {
    local port
    for port in $(node_ports); do
        [[ "$(info_field "$port" cluster_state)" == ok ]] || return 1
        # every node knows every other one (a fresh node that met nobody
        # yet says ok too once it learns the slots)
        [[ "$(info_field "$port" cluster_known_nodes)" == "$NODES" ]] || return 1
        # a replica has its master's data: only then can it take over
        if [[ "$(repl_field "$port" role)" == slave ]]; then
            [[ "$(repl_field "$port" master_link_status)" == up ]] || return 1
        fi
    done
}

write_env() {
    local nodes="" port
    for port in $(node_ports); do nodes+="${nodes:+,}127.0.0.1:$port"; done
    cat >"$CLUSTER_DIR/cluster.env.tmp" <<EOF
# Written by deploy/redis-cluster.sh up: the seed nodes of the local Redis
# Cluster for counter-api, counter-applier and counterctl rebuild-redis.
COUNTER_REDIS_CLUSTER_NODES=$nodes
EOF
    mv "$CLUSTER_DIR/cluster.env.tmp" "$CLUSTER_DIR/cluster.env"
}

cmd_up() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        die "redis-server and redis-cli are needed (deploy/install-deps.sh)"
    fi
    check_ports
    # Nodes made with another layout would be left running beside new ones.
    if [[ -n "$(known_ports)" ]]; then
        for v in MASTERS REPLICAS BASE_PORT BUS_OFFSET; do
            local saved="SAVED_CLUSTER_$v"
            [[ -z ${!saved:-} || ${!saved} == "${!v}" ]] ||
                die "$CLUSTER_DIR holds a cluster made with CLUSTER_$v=${!saved}, not ${!v};" \
                    "run destroy first (or use another CLUSTER_DIR)"
        done
    fi
    mkdir -p "$CLUSTER_DIR"
    cat >"$CLUSTER_DIR/cluster.conf" <<EOF
CLUSTER_MASTERS=$MASTERS
CLUSTER_REPLICAS=$REPLICAS
CLUSTER_BASE_PORT=$BASE_PORT
CLUSTER_BUS_OFFSET=$BUS_OFFSET
CLUSTER_NODE_TIMEOUT_MS=$NODE_TIMEOUT_MS
EOF
    local port addrs=() assigned=0 n
    for port in $(node_ports); do start_node "$port"; done
    for port in $(node_ports); do
        wait_for 30 "node $port" pings "$port" ||
            die "node $port does not answer; see $CLUSTER_DIR/$port/redis.log"
        addrs+=("127.0.0.1:$port")
        n="$(info_field "$port" cluster_slots_assigned)"
        ((n > assigned)) && assigned=$n
    done
    # A node that knows of assigned slots belongs to a created cluster:
    # the nodes rejoin by themselves from their nodes.conf.
    if ((assigned == 0)); then
        say "creating the cluster: $MASTERS masters, $REPLICAS replica(s) each"
        timeout 120 redis-cli --cluster create "${addrs[@]}" \
            --cluster-replicas "$REPLICAS" --cluster-yes >"$CLUSTER_DIR/create.log" 2>&1 ||
            { cat "$CLUSTER_DIR/create.log" >&2; die "redis-cli --cluster create failed"; }
    fi
    wait_for "$READY_TIMEOUT" "cluster_state:ok" all_ok || {
        cmd_status >&2 || true
        die "cluster not ok on every node after ${READY_TIMEOUT}s (deploy/redis-cluster.sh destroy starts afresh)"
    }
    write_env
    say "up: $NODES nodes on 127.0.0.1:$BASE_PORT-$((BASE_PORT + NODES - 1)); env in $CLUSTER_DIR/cluster.env"
}

node_gone() { ! kill -0 "$1" 2>/dev/null; }

cmd_down() {
    local port pid pids=() ports=()
    [[ -d $CLUSTER_DIR ]] || return 0
    # All nodes at once: stopped one by one, each master's replica would
    # take over while the others still run. NOW: no waiting for replicas
    # that are stopping too.
    for port in $(known_ports); do
        pid="$(node_pid "$port")" || continue
        pids+=("$pid")
        ports+=("$port")
        cli "$port" SHUTDOWN SAVE NOW >/dev/null &
    done
    wait
    local i
    for i in "${!pids[@]}"; do
        pid=${pids[i]}
        if ! wait_for 20 "node ${ports[i]} stopped" node_gone "$pid"; then
            say "node ${ports[i]} (pid $pid) did not stop; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_for 10 "node killed" node_gone "$pid" ||
                die "node ${ports[i]} (pid $pid) survives SIGKILL"
        fi
    done
}

cmd_status() {
    local port pid role slots state="" any=0
    for port in $(known_ports); do
        if pid="$(node_pid "$port")"; then
            any=1
            role="$(cli "$port" ROLE | head -n 1)"
            slots="$(cli "$port" CLUSTER NODES |
                awk '$3 ~ /myself/ { n = 0; for (i = 9; i <= NF; i++) { if ($i ~ /^\[/) continue;
                    split($i, r, "-"); n += (r[2] == "" ? 1 : r[2] - r[1] + 1) } print n }')"
            printf '%-6s running (pid %s) %-7s slots %s\n' "$port" "$pid" "${role:-?}" "${slots:-0}"
            [[ -n $state ]] || state="$(info_field "$port" cluster_state)"
        else
            printf '%-6s stopped\n' "$port"
        fi
    done
    ((any)) && echo "cluster_state: ${state:-unknown}"
    return 0
}

cmd_kill() {
    local port=${1:-} pid
    [[ $port =~ ^[0-9]+$ ]] || die "usage: redis-cluster.sh kill PORT"
    pid="$(node_pid "$port")" || die "node $port is not running"
    kill -KILL "$pid"
    wait_for 10 "node $port killed" node_gone "$pid" || die "node $port (pid $pid) survives SIGKILL"
    say "node $port (pid $pid) killed"
}

cmd_destroy() {
    cmd_down
    rm -rf "${CLUSTER_DIR:?}"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
kill) cmd_kill "${2:-}" ;;
destroy) cmd_destroy ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
