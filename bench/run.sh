#!/usr/bin/env bash
# `make bench`: counter-api side by side with webdis (same Redis), a bare
# evhttp "hello" server and the durable floor (bench/floor.c: the least a
# durable increment can be, on the same Redis and broker), all on
# 127.0.0.1, with wrk (closed loop), each row with the CPU the whole stack
# spent per request (from /proc); the
# persister's drain rate from a 1M-event backlog; the end-to-end lag from a
# write's 2xx to its PostgreSQL commit at a fixed open-loop rate
# (bench/openloop.c); the peak RSS of every process; with BENCH_PROFILE=1
# also counter-api's instructions per request under callgrind
# (bench/profile.sh). Prints one table and writes the same figures as JSON
# to bench/results/<UTC timestamp>.json. Not part of `make test`.
#
# Settings (environment; defaults in brackets):
#   BUILD [build]            release build dir (bin/ holds the services)
#   BENCH_DURATION [10s]     wrk -d per measured run (a 2 s warm-up precedes)
#   BENCH_CONNECTIONS [50]   wrk -c (one wrk thread, -t1)
#   BENCH_HIGH_CONNECTIONS [400] wrk -c of the writes' second set of rows
#   BENCH_STRESS [1]         1: also the seed's stress run, wrk -t12 -c400
#                            -d BENCH_STRESS_DURATION [30s] on increment,
#                            and the same on the floor
#   BENCH_DRAIN [1], BENCH_LAG [1], BENCH_READS [1]: 0 leaves out the
#                            persister drain, the lag, the read rows
#   BENCH_VARIANT_BIN, BENCH_VARIANT_CONFIG: another counter-api binary
#                            and/or config file, run beside the stack's on
#                            BENCH_VARIANT_PORT [36187] with the stack's
#                            settings; its increment rows (variant_*) run
#                            right after the api's, for A/B in one run
#   BENCH_FLOOR_KAFKA        extra librdkafka settings of the floor, as
#                            "-X key=value ..." (its defaults are the api's)
#   BENCH_BACKLOG [1000000]  events in the persister drain backlog
#   BENCH_DRAIN_TIMEOUT [240] seconds before the drain measurement gives up
#   BENCH_LAG_RATE [20000]   open-loop increments per second for the lag
#   BENCH_LAG_DURATION [10]  seconds of that timetable
#   BENCH_LAG_CONNECTIONS [1024] keep-alive connections of the generator
#   BENCH_LAG_POLL_MS [5]    how often PostgreSQL is read for the lag
#   BENCH_PROFILE [0]        1: run bench/profile.sh on the stack at the end
#                            (BENCH_PROFILE_* settings pass through to it)
#   BENCH_APPLIER [1]        1: counter-applier's rows after the persister's
#                            drain (bench/applier.sh: BENCH_APPLIER_* pass
#                            through; a second applier's metrics on API + 9)
#   BENCH_CLUSTER [1]        1: also a Redis Cluster (deploy/redis-cluster.sh,
#                            3 masters + 3 replicas) with a second counter-api
#                            in cluster mode: increment, get and batch get
#                            against it, as ratios to the one-Redis api
#   BENCH_RF3 [1]            1: also three Kafka nodes (deploy/stack.sh with
#                            KAFKA_NODES=3, topics with 3 replicas and
#                            min.insync.replicas 2) and a counter-api writing
#                            to them, on the same Redis: the durable
#                            increment with a replicated log (acks=all
#                            waits for 2 replicas), as a ratio to the
#                            one-broker api. About a minute more; 0 skips it
# Ports, so that two benches can run at once (the defaults are this list;
# counter-api's port + 1 and + 2 are the persister's and the applier's
# metrics, so the others must keep clear of them):
#   BENCH_REDIS_PORT [36480] BENCH_PG_PORT [35533] BENCH_KAFKA_PORT [39192]
#   BENCH_KAFKA_CONTROLLER_PORT [39193] BENCH_API_PORT [38180]
#   BENCH_WEBDIS_PORT [37379] BENCH_HELLO_PORT [38183] BENCH_FLOOR_PORT [38184]
#   BENCH_PROFILE_PORT [38190] BENCH_CLUSTER_API_PORT [38186]
#   BENCH_CLUSTER_BASE_PORT [21700] (nodes on BASE..BASE+5, buses +1000)
#   BENCH_RF3_API_PORT [38187] BENCH_RF3_KAFKA_PORT [39292] (nodes on
#   PORT/PORT+1, +10/+11, +20/+21)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-build}"
BIN_DIR="$ROOT/$BUILD/bin"
DURATION="${BENCH_DURATION:-10s}"
CONNS="${BENCH_CONNECTIONS:-50}"
BACKLOG="${BENCH_BACKLOG:-1000000}"
DRAIN_TIMEOUT="${BENCH_DRAIN_TIMEOUT:-240}"
LAG_RATE="${BENCH_LAG_RATE:-20000}"
LAG_DURATION="${BENCH_LAG_DURATION:-10}"
LAG_CONNS="${BENCH_LAG_CONNECTIONS:-1024}"
LAG_POLL_MS="${BENCH_LAG_POLL_MS:-5}"
PROFILE="${BENCH_PROFILE:-0}"
CLUSTER="${BENCH_CLUSTER:-1}"
APPLIER="${BENCH_APPLIER:-1}"
CLUSTER_API_PORT="${BENCH_CLUSTER_API_PORT:-38186}"
CLUSTER_BASE="${BENCH_CLUSTER_BASE_PORT:-21700}"
RF3="${BENCH_RF3:-1}"
RF3_API_PORT="${BENCH_RF3_API_PORT:-38187}"
RF3_KAFKA_PORT="${BENCH_RF3_KAFKA_PORT:-39292}"
HIGH_CONNS="${BENCH_HIGH_CONNECTIONS:-400}"
STRESS="${BENCH_STRESS:-1}"
STRESS_DURATION="${BENCH_STRESS_DURATION:-30s}"
DRAIN="${BENCH_DRAIN:-1}"
LAG="${BENCH_LAG:-1}"
READS="${BENCH_READS:-1}"
VARIANT_BIN="${BENCH_VARIANT_BIN:-}"
VARIANT_CONFIG="${BENCH_VARIANT_CONFIG:-}"
VARIANT_PORT="${BENCH_VARIANT_PORT:-36187}"
read -r -a FLOOR_KAFKA <<<"${BENCH_FLOOR_KAFKA:-}"

REDIS_PORT="${BENCH_REDIS_PORT:-36480}"
PG_PORT="${BENCH_PG_PORT:-35533}"
KAFKA_PORT="${BENCH_KAFKA_PORT:-39192}"
KAFKA_CONTROLLER_PORT="${BENCH_KAFKA_CONTROLLER_PORT:-39193}"
API_PORT="${BENCH_API_PORT:-38180}"
WEBDIS_PORT="${BENCH_WEBDIS_PORT:-37379}"
# Not 38181: that is API_PORT + 1, the persister's metrics port.
HELLO_PORT="${BENCH_HELLO_PORT:-38183}"
FLOOR_PORT="${BENCH_FLOOR_PORT:-38184}"
PROFILE_PORT="${BENCH_PROFILE_PORT:-38190}"
H=127.0.0.1

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

ports=("$REDIS_PORT" "$PG_PORT" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$API_PORT"
    "$((API_PORT + 1))" "$((API_PORT + 2))" "$((API_PORT + 9))" "$WEBDIS_PORT" "$HELLO_PORT" "$PROFILE_PORT" "$CLUSTER_API_PORT"
    "$RF3_API_PORT" "$FLOOR_PORT")
[[ $RF3 != 1 ]] || for i in 0 1 10 11 20 21; do ports+=("$((RF3_KAFKA_PORT + i))"); done
[[ -z $VARIANT_BIN && -z $VARIANT_CONFIG ]] || ports+=("$VARIANT_PORT")
dup=$(printf '%s\n' "${ports[@]}" | sort | uniq -d)
[[ -z $dup ]] || die "port $dup is given twice (API port + 1 and + 2 are taken too)"

# `make bench` ran deploy/install-deps.sh; the bench's own extras:
extras=()
command -v webdis >/dev/null || extras+=(webdis)
command -v jq >/dev/null || extras+=(jq)
command -v valgrind >/dev/null || extras+=(valgrind) # BENCH_PROFILE=1
if ((${#extras[@]})); then
    say "installing ${extras[*]} (Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${extras[@]}" >/dev/null
fi
for tool in wrk kcat psql redis-cli jq cc pkg-config webdis; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install $tool)"
done
[[ -x $BIN_DIR/counter-api ]] || die "$BIN_DIR/counter-api is missing: run make build"
# 1000 connections for the RSS probe: wrk and counter-api inherit this.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

# ------------------------------------------------------------- the stack ---

STACK_DIR="$(mktemp -d /tmp/counter-bench-stack.XXXXXX)"
WORK="$(mktemp -d /tmp/counter-bench-work.XXXXXX)"
export STACK_DIR REDIS_PORT PG_PORT KAFKA_PORT KAFKA_CONTROLLER_PORT API_PORT BIN_DIR \
    COUNTER_CONFIG="$ROOT/tests/config.test.yaml"
TOPIC=counter-events
PARTITIONS=4
WEBDIS_PID=""
HELLO_PID=""
FLOOR_PID=""
VARIANT_PID=""
CLUSTER_API_PID=""
RF3_API_PID=""
# as_stack LOG VAR=VALUE... PROGRAM [ARGS]: PROGRAM with the stack's
# counter.env and these settings, output to $WORK/LOG. It execs: run it in
# ( ) to wait for it, or with & (then $! is the program's pid).
as_stack() {
    local log=$1
    shift
    set -a
    # shellcheck source=/dev/null
    source "$STACK_DIR/counter.env"
    set +a
    exec env "$@" >"$WORK/$log" 2>&1
}
# The three-node Kafka of BENCH_RF3, a stack.sh of its own (Kafka only).
rf3_stack() {
    STACK_DIR="$WORK/rf3" KAFKA_NODES=3 KAFKA_PORT="$RF3_KAFKA_PORT" \
        KAFKA_CONTROLLER_PORT="$((RF3_KAFKA_PORT + 1))" API_PORT="$RF3_API_PORT" \
        "$ROOT/deploy/stack.sh" "$@"
}
FLOOR_TOPIC=counter-floor

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -z $WEBDIS_PID ]] || kill "$WEBDIS_PID" 2>/dev/null || true
    [[ -z $HELLO_PID ]] || kill "$HELLO_PID" 2>/dev/null || true
    [[ -z $FLOOR_PID ]] || kill "$FLOOR_PID" 2>/dev/null || true
    [[ -z $VARIANT_PID ]] || kill "$VARIANT_PID" 2>/dev/null || true
    [[ -z $CLUSTER_API_PID ]] || kill "$CLUSTER_API_PID" 2>/dev/null || true
    [[ -z $RF3_API_PID ]] || kill "$RF3_API_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    [[ $RF3 != 1 ]] || rf3_stack destroy >/dev/null 2>&1 || true
    [[ $CLUSTER != 1 ]] || CLUSTER_DIR="$WORK/cluster" "$ROOT/deploy/redis-cluster.sh" destroy >/dev/null 2>&1 || true
    say "tearing the stack down"
    "$ROOT/deploy/stack.sh" destroy >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting the stack in $STACK_DIR"
"$ROOT/deploy/stack.sh" up >"$WORK/stack-up.log" 2>&1 ||
    { cat "$WORK/stack-up.log" >&2; die "stack up failed"; }

export PGPASSWORD=counter
pg() { psql -h "$H" -p "$PG_PORT" -U counter -d counter -Atqc "$1"; }
rc() { redis-cli -h "$H" -p "$REDIS_PORT" "$@"; }

# --------------------------------------------------------- webdis, hello ---

cat >"$WORK/webdis.json" <<EOF
{
  "redis_host": "$H", "redis_port": $REDIS_PORT, "redis_auth": null,
  "http_host": "$H", "http_port": $WEBDIS_PORT, "threads": 2,
  "daemonize": false, "database": 0,
  "verbosity": 1, "logfile": "$WORK/webdis.log"
}
EOF
webdis "$WORK/webdis.json" >>"$WORK/webdis.log" 2>&1 &
WEBDIS_PID=$!

mkdir -p "$ROOT/$BUILD/bench"
# shellcheck disable=SC2046
cc -O2 -Wall -o "$ROOT/$BUILD/bench/hello" "$ROOT/bench/hello.c" \
    $(pkg-config --cflags --libs libevent)
"$ROOT/$BUILD/bench/hello" "$HELLO_PORT" &
HELLO_PID=$!
# shellcheck disable=SC2046
cc -O2 -Wall -pthread -o "$ROOT/$BUILD/bench/openloop" "$ROOT/bench/openloop.c" \
    $(pkg-config --cflags --libs libevent libpq)

wait_http() {
    local i
    for ((i = 0; i < 100; i++)); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "no answer from $1"
}
wait_http "http://$H:$WEBDIS_PORT/PING"
wait_http "http://$H:$HELLO_PORT/"
# Someone else answering on the port would pass for hello.
kill -0 "$HELLO_PID" 2>/dev/null || die "hello exited (port $HELLO_PORT taken?)"
kill -0 "$WEBDIS_PID" 2>/dev/null || die "webdis exited (port $WEBDIS_PORT taken?)"
wait_http "http://$H:$API_PORT/api/v1/counter/bench_incr"

# The durable floor: its own topic (as many partitions, nothing consumes
# it), the stack's Redis and broker.
# shellcheck disable=SC2046
cc -O2 -Wall -o "$ROOT/$BUILD/bench/floor" "$ROOT/bench/floor.c" \
    $(pkg-config --cflags --libs libevent hiredis rdkafka)
(set -a && source "$STACK_DIR/counter.env" && COUNTER_KAFKA_TOPIC=$FLOOR_TOPIC &&
    exec "$BIN_DIR/counterctl" create-topic) >"$WORK/floor-topic.log" 2>&1 ||
    { cat "$WORK/floor-topic.log" >&2; die "could not create topic $FLOOR_TOPIC"; }
"$ROOT/$BUILD/bench/floor" "$FLOOR_PORT" "$H:$REDIS_PORT" "$H:$KAFKA_PORT" "$FLOOR_TOPIC" \
    "${FLOOR_KAFKA[@]}" >"$WORK/floor.log" 2>&1 &
FLOOR_PID=$!
for ((i = 0; i < 100; i++)); do
    curl -fsS -o /dev/null -X POST "http://$H:$FLOOR_PORT/counter/bench_incr/increment" 2>/dev/null && break
    sleep 0.1
done
kill -0 "$FLOOR_PID" 2>/dev/null || { cat "$WORK/floor.log" >&2; die "floor exited"; }
curl -fsS -o /dev/null -X POST "http://$H:$FLOOR_PORT/counter/bench_incr/increment" ||
    die "floor does not answer 200"

# A second counter-api for A/B rows: another binary or config, the stack's
# settings otherwise.
if [[ -n $VARIANT_BIN || -n $VARIANT_CONFIG ]]; then
    (set -a && source "$STACK_DIR/counter.env" &&
        COUNTER_CONFIG="${VARIANT_CONFIG:-$COUNTER_CONFIG}" && COUNTER_SERVER_PORT=$VARIANT_PORT &&
        exec "${VARIANT_BIN:-$BIN_DIR/counter-api}") >"$WORK/variant-api.log" 2>&1 &
    VARIANT_PID=$!
    for ((i = 0; i < 100; i++)); do
        curl -fsS "http://$H:$VARIANT_PORT/readyz" 2>/dev/null | grep -q '"state":"ready"' && break
        sleep 0.1
    done
    curl -fsS "http://$H:$VARIANT_PORT/readyz" | grep -q '"state":"ready"' ||
        { cat "$WORK/variant-api.log" >&2; die "the variant counter-api is not ready"; }
fi

# --------------------------------------------------- persister drain rate ---
# First, on a quiet stack: stop the persister, write BACKLOG events with
# header origin=api (as counter-api writes them; the applier skips them)
# for 100 counters, then start the persister and time it to the topic end.

sum_offsets() {
    pg "SELECT coalesce(sum(next_offset),0) FROM consumer_offsets
        WHERE group_id='counter-persister' AND topic='$TOPIC'"
}
topic_end() {
    local args=() p
    for ((p = 0; p < PARTITIONS; p++)); do args+=(-t "$TOPIC:$p:-1"); done
    kcat -b "$H:$KAFKA_PORT" -Q "${args[@]}" |
        awk '/offset/ {s += $NF} END {print s + 0}'
}

drain_rate=0 drain_rate_wall=0 drain_events=0 drain_wall=0 drained=false produce_s=0
if [[ $DRAIN == 1 ]]; then
say "persister drain: writing a backlog of $BACKLOG events"
"$ROOT/deploy/stack.sh" stop counter-persister >/dev/null 2>&1
now_ms=$(($(date +%s) * 1000))
awk -v n="$BACKLOG" -v ts="$now_ms" 'BEGIN {
    for (i = 0; i < n; i++) {
        c = "bench_drain_" (i % 100)
        printf "%s\t{\"v\":1,\"id\":\"bench-drain-%d\",\"counter\":\"%s\",\"delta\":1,\"ts\":%d}\n", c, i, c, ts
    }
}' >"$WORK/backlog.tsv"
produce_start=$(date +%s.%N)
kcat -P -b "$H:$KAFKA_PORT" -t "$TOPIC" -K $'\t' -H origin=api \
    -X partitioner=murmur2_random -X linger.ms=20 -X batch.num.messages=10000 \
    -X queue.buffering.max.messages=1000000 <"$WORK/backlog.tsv"
produce_s=$(echo "$(date +%s.%N) - $produce_start" | bc)
end_off=$(topic_end)
start_off=$(sum_offsets)
say "backlog written in ${produce_s}s; persister at $start_off of $end_off"

t0=$(date +%s.%N)
"$ROOT/deploy/stack.sh" start counter-persister >/dev/null 2>&1
first_t="" first_off=""
drained=false
while :; do
    now=$(date +%s.%N)
    off=$(sum_offsets)
    if [[ -z $first_t && $off -gt $start_off ]]; then first_t=$now first_off=$off; fi
    if ((off >= end_off)); then drained=true; break; fi
    if (($(echo "$now - $t0 > $DRAIN_TIMEOUT" | bc))); then break; fi
    sleep 0.2
done
t_end=$(date +%s.%N)
drain_events=$((off - start_off))
drain_wall=$(echo "$t_end - $t0" | bc)
drain_rate_wall=$(echo "$drain_events / $drain_wall" | bc)
if [[ -n $first_t ]] && ((off > first_off)) && (($(echo "$t_end > $first_t" | bc))); then
    # From the first committed batch: leaves out the group join.
    drain_rate=$(echo "($off - $first_off) / ($t_end - $first_t)" | bc)
else
    drain_rate=$drain_rate_wall
fi
say "persister drained $drain_events events in ${drain_wall}s (drained=$drained):" \
    "$drain_rate events/s after the first batch, $drain_rate_wall incl. start"
fi

# ------------------------------------------------------------- applier ---
# counter-applier on the same stack, right after the persister's drain:
# backlogs of external events in the input topic, memory, lag
# (bench/applier.sh says how).

if [[ $APPLIER == 1 ]]; then
    say "applier: drain, memory and lag rows (bench/applier.sh)"
    BUILD="$BUILD" STACK_DIR="$STACK_DIR" BENCH_APPLIER_PERSISTER_REF=0 \
        "$ROOT/bench/applier.sh" >"$WORK/applier.json" ||
        die "bench/applier.sh failed"
else
    echo null >"$WORK/applier.json"
fi

# ------------------------------------------------------ end-to-end lag ---
# After the drain, on a persister with nothing left to do: bench/openloop
# sends LAG_RATE increments of bench_lag per second on a fixed timetable
# for LAG_DURATION s (open loop: a request waits in the generator when
# every connection is busy, and its latency counts from when it was due)
# and reads counter_totals every LAG_POLL_MS ms from a thread of its own.
# The i-th 2xx's lag is the first poll showing baseline + i minus the time
# of that 2xx (see bench/openloop.c).

echo null >"$WORK/lag.json"
LAG_LINE1="end-to-end lag: not measured (BENCH_LAG=0)" LAG_LINE2="" LAG_LINE3=""
if [[ $LAG == 1 ]]; then
say "lag: open loop, $LAG_RATE increments/s for ${LAG_DURATION}s on $LAG_CONNS connections"
lag_rc=0
"$ROOT/$BUILD/bench/openloop" --url "http://$H:$API_PORT/api/v1/counter/bench_lag/increment" \
    --body '{}' --rate "$LAG_RATE" --duration "$LAG_DURATION" --connections "$LAG_CONNS" \
    --pg "host=$H port=$PG_PORT user=counter dbname=counter" \
    --counter bench_lag --poll-ms "$LAG_POLL_MS" >"$WORK/lag.json" || lag_rc=$?
((lag_rc <= 1)) || die "openloop failed (exit $lag_rc)"
jq -e .lag "$WORK/lag.json" >/dev/null || die "openloop printed no lag: $(cat "$WORK/lag.json")"
lagv() { jq -r "$1" "$WORK/lag.json"; }
LAG_LINE1=$(printf 'end-to-end lag, 2xx -> PostgreSQL commit: p50 %s ms, p99 %s ms, p99.9 %s ms, max %s ms over %s of %s 2xx (%s not seen in PostgreSQL; poll every %s ms, worst gap %s ms)' \
    "$(lagv .lag.p50_ms)" "$(lagv .lag.p99_ms)" "$(lagv .lag.p999_ms)" "$(lagv .lag.max_ms)" \
    "$(lagv .lag.measured)" "$(lagv .lag.acked)" "$(lagv .lag.not_seen)" "$LAG_POLL_MS" \
    "$(lagv .lag.poll_gap_max_ms)")
LAG_LINE2=$(printf '  open loop %s/s for %ss, %s connections: sent %s of %s, %s late (> %s ms after due), %s not sent; sent at %s/s; answers %s, no answer %s' \
    "$LAG_RATE" "$LAG_DURATION" "$LAG_CONNS" "$(lagv .sent)" "$(lagv .scheduled)" \
    "$(lagv .late)" "$(lagv .late_ms)" "$(lagv .not_sent)" "$(lagv .sent_per_s)" \
    "$(lagv '.status | to_entries | map("\(.key)=\(.value)") | join(" ")')" "$(lagv .errors)")
LAG_LINE3=$(printf '  HTTP latency from due time p50 %s ms, p99 %s ms, max %s ms; from send p50 %s ms, p99 %s ms' \
    "$(lagv .p50_ms)" "$(lagv .p99_ms)" "$(lagv .max_ms)" "$(lagv .service_p50_ms)" "$(lagv .service_p99_ms)")
say "$LAG_LINE1"
say "$LAG_LINE2"
say "$LAG_LINE3"
fi

# ------------------------------------------------------------------- wrk ---

cat >"$WORK/done.lua" <<'EOF'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("BENCH %d %d %d %d %d %d\n",
        summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
        e.status + e.connect + e.read + e.write + e.timeout))
end
EOF
cat >"$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = "{}"
EOF
cat "$WORK/done.lua" >>"$WORK/post.lua"
cat >"$WORK/unique.lua" <<'EOF'
local n = 0
local hdr = {["Content-Type"] = "application/json"}
request = function()
    n = n + 1
    return wrk.format("POST", nil, hdr, string.format('{"user_id":"u%d"}', n))
end
EOF
cat "$WORK/done.lua" >>"$WORK/unique.lua"
cat >"$WORK/sadd.lua" <<'EOF'
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", string.format("/SADD/bench_set/u%d", n))
end
EOF
cat "$WORK/done.lua" >>"$WORK/sadd.lua"

# Ten counters for the batch get, and the same ten plain keys for MGET.
names="" mget=""
for i in $(seq 0 9); do
    curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' \
        "http://$H:$API_PORT/api/v1/counter/bench_b$i/increment"
    rc SET "bench_b$i" 1 >/dev/null
    names+="${names:+,}bench_b$i"
    mget+="/bench_b$i"
done
curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' \
    "http://$H:$API_PORT/api/v1/counter/bench_incr/increment"
rc SET bench_incr 0 >/dev/null
curl -fsS "http://$H:$API_PORT/api/v1/counters?names=$names" >"$WORK/batch.sample"
grep -q '"bench_b9"' "$WORK/batch.sample" || die "batch get answered: $(head -c 300 "$WORK/batch.sample")"

# Batch writes: one body of N increments, to N counters.
batch_body() {
    local n=$1 i out=""
    for ((i = 0; i < n; i++)); do
        out+="${out:+,}{\"name\":\"bench_w$i\",\"op\":\"increment\",\"value\":1}"
    done
    printf '[%s]' "$out"
}
for n in 10 100; do
    {
        printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        printf 'wrk.body = [=[%s]=]\n' "$(batch_body "$n")"
        cat "$WORK/done.lua"
    } >"$WORK/batch$n.lua"
    curl -fsS -X POST -H 'Content-Type: application/json' --data-binary "$(batch_body "$n")" \
        "http://$H:$API_PORT/api/v1/counters/batch" >"$WORK/batch$n.sample"
    grep -q '"success":true' "$WORK/batch$n.sample" ||
        die "batch write answered: $(head -c 300 "$WORK/batch$n.sample")"
done

# CPU per request, summed over every process of the stack (counter-api,
# Redis, the broker's JVM, the persister, the applier, PostgreSQL and each
# of its backends) and the servers beside it (webdis, hello, floor, the
# variant and cluster apis): utime + stime from /proc/PID/stat, before and
# after each measured run. wrk's own CPU is not counted.
CLK_TCK=$(getconf CLK_TCK)
STACK_PROCS=()
while read -r name state _ pid; do
    [[ $state == running && -n $pid ]] && STACK_PROCS+=("$name:$pid")
done < <("$ROOT/deploy/stack.sh" status)
cpu_snap() { # "pid name ticks" per process
    local e name pid c
    local all=("${STACK_PROCS[@]}")
    for e in "${STACK_PROCS[@]}"; do
        [[ ${e%%:*} == postgres ]] || continue
        for c in $(pgrep -P "${e#*:}"); do all+=("postgres:$c"); done
    done
    all+=("webdis:$WEBDIS_PID" "hello:$HELLO_PID" "floor:$FLOOR_PID")
    [[ -z $VARIANT_PID ]] || all+=("variant:$VARIANT_PID")
    [[ -z $CLUSTER_API_PID ]] || all+=("cluster_api:$CLUSTER_API_PID")
    if [[ -n $RF3_API_PID ]]; then
        all+=("rf3_api:$RF3_API_PID")
        while read -r name state _ pid _; do
            [[ $state != running ]] || all+=("rf3_$name:$pid")
        done < <(rf3_stack status)
    fi
    for e in "${all[@]}"; do
        name=${e%%:*} pid=${e#*:}
        [[ -r /proc/$pid/stat ]] || continue
        # fields after "(comm) ": utime and stime are the 12th and 13th
        sed 's/^.*) //' "/proc/$pid/stat" | awk -v p="$pid" -v n="$name" '{print p, n, $12 + $13}'
    done
}

declare -A RPS P50 P99 P999 ERR RSS CPU CPUBY LOADAVG RCONNS RTHREADS
# [RUN_CONNS=C RUN_THREADS=T RUN_DURATION=D] run KEY SCRIPT URL [WARMUP]:
# a warm-up (2s), then the measured run with the stack's CPU around it.
run() {
    local key=$1 script=$2 url=$3 warmup=${4:-2s} line
    local c=${RUN_CONNS:-$CONNS} t=${RUN_THREADS:-1} d=${RUN_DURATION:-$DURATION}
    wrk -t"$t" -c"$c" -d"$warmup" -s "$script" "$url" >/dev/null 2>&1 || true
    cpu_snap >"$WORK/cpu-before"
    line=$(wrk -t"$t" -c"$c" -d"$d" --latency -s "$script" "$url" |
        tee "$WORK/wrk-$key.txt" | grep '^BENCH ') || die "wrk failed for $key"
    cpu_snap >"$WORK/cpu-after"
    read -r _ reqs dur p50 p99 p999 errs <<<"$line"
    RPS[$key]=$(echo "$reqs * 1000000 / $dur" | bc)
    P50[$key]=$p50 P99[$key]=$p99 P999[$key]=$p999 ERR[$key]=$errs
    RCONNS[$key]=$c RTHREADS[$key]=$t
    LOADAVG[$key]=$(cut -d' ' -f1 /proc/loadavg)
    # ticks -> microseconds per request, in all and by process name
    read -r CPU[$key] CPUBY[$key] < <(awk -v req="$reqs" -v hz="$CLK_TCK" '
        NR == FNR { b[$1] = $3; next }
        { d = $3 - (($1 in b) ? b[$1] : 0); if (d < 0) d = 0; by[$2] += d; t += d }
        END {
            f = 1e6 / hz / (req > 0 ? req : 1)
            printf "%.1f ", t * f
            for (n in by) if (by[n] > 0) printf "%s=%.1f,", n, by[n] * f
            print ""
        }' "$WORK/cpu-before" "$WORK/cpu-after")
    say "$(printf '%-22s c%-4s %8s req/s  p50 %6s us  p99 %6s us  p99.9 %6s us  errors %s  cpu %s us/req (%s)' \
        "$key" "$c" "${RPS[$key]}" "$p50" "$p99" "$p999" "$errs" "${CPU[$key]}" "${CPUBY[$key]%,}")"
}

A="http://$H:$API_PORT/api/v1"
V="http://$H:$VARIANT_PORT/api/v1"
W="http://$H:$WEBDIS_PORT"
F="http://$H:$FLOOR_PORT/counter"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "wrk -t1 -c$CONNS (and -c$HIGH_CONNS) -d$DURATION against each target in turn; load $LOAD_START"
run hello "$WORK/done.lua" "http://$H:$HELLO_PORT/"
# the writes, each beside its floor: same connections, one after the other
for c in "$CONNS" "$HIGH_CONNS"; do
    sfx=""
    [[ $c == "$CONNS" ]] || sfx="_$c"
    RUN_CONNS=$c run "floor_increment$sfx" "$WORK/post.lua" "$F/bench_incr/increment"
    RUN_CONNS=$c run "api_increment$sfx" "$WORK/post.lua" "$A/counter/bench_incr/increment"
    [[ -z $VARIANT_PID ]] ||
        RUN_CONNS=$c run "variant_increment$sfx" "$WORK/post.lua" "$V/counter/bench_incr/increment"
    RUN_CONNS=$c run "webdis_incr$sfx" "$WORK/done.lua" "$W/INCR/bench_incr"
done
run api_batch10 "$WORK/batch10.lua" "$A/counters/batch"
run api_batch100 "$WORK/batch100.lua" "$A/counters/batch"
run api_decrement "$WORK/post.lua" "$A/counter/bench_incr/decrement"
run webdis_decr "$WORK/done.lua" "$W/DECR/bench_incr"
if [[ $READS == 1 ]]; then
    run api_get "$WORK/done.lua" "$A/counter/bench_incr"
    run webdis_get "$WORK/done.lua" "$W/GET/bench_incr"
    run api_batch_get "$WORK/done.lua" "$A/counters?names=$names"
    run webdis_mget "$WORK/done.lua" "$W/MGET$mget"
fi
run api_unique_incr "$WORK/unique.lua" "$A/counter/it_unique_bench/increment"
run webdis_sadd "$WORK/sadd.lua" "$W/"
# The seed's own stress run, and the same on the floor.
if [[ $STRESS == 1 ]]; then
    say "stress: wrk -t12 -c400 -d$STRESS_DURATION on increment, then on the floor"
    RUN_CONNS=400 RUN_THREADS=12 RUN_DURATION=$STRESS_DURATION \
        run api_stress "$WORK/post.lua" "$A/counter/bench_incr/increment"
    [[ -z $VARIANT_PID ]] || RUN_CONNS=400 RUN_THREADS=12 RUN_DURATION=$STRESS_DURATION \
        run variant_stress "$WORK/post.lua" "$V/counter/bench_incr/increment"
    RUN_CONNS=400 RUN_THREADS=12 RUN_DURATION=$STRESS_DURATION \
        run floor_stress "$WORK/post.lua" "$F/bench_incr/increment"
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# The same writes and reads through a second counter-api on a Redis Cluster
# (three masters with a replica each; each write WAITs for its replica).
if [[ $CLUSTER == 1 ]]; then
    say "redis cluster: 3 masters + 3 replicas from port $CLUSTER_BASE"
    export CLUSTER_DIR="$WORK/cluster" CLUSTER_BASE_PORT="$CLUSTER_BASE"
    "$ROOT/deploy/redis-cluster.sh" up >"$WORK/cluster-up.log" 2>&1 ||
        { cat "$WORK/cluster-up.log" >&2; die "redis-cluster.sh up failed"; }
    CNODES=$(sed -n 's/^COUNTER_REDIS_CLUSTER_NODES=//p' "$CLUSTER_DIR/cluster.env")
    [[ -n $CNODES ]] || die "no COUNTER_REDIS_CLUSTER_NODES in $CLUSTER_DIR/cluster.env"
    # the cluster starts empty: restored from PostgreSQL, which sets the epoch
    (as_stack cluster-rebuild.log COUNTER_REDIS_CLUSTER_NODES="$CNODES" \
        "$BIN_DIR/counterctl" rebuild-redis) ||
        { cat "$WORK/cluster-rebuild.log" >&2; die "rebuild-redis on the cluster failed"; }
    as_stack cluster-api.log COUNTER_REDIS_CLUSTER_NODES="$CNODES" \
        COUNTER_SERVER_PORT="$CLUSTER_API_PORT" "$BIN_DIR/counter-api" &
    CLUSTER_API_PID=$!
    C="http://$H:$CLUSTER_API_PORT/api/v1"
    for ((i = 0; i < 100; i++)); do
        curl -fsS "http://$H:$CLUSTER_API_PORT/readyz" 2>/dev/null | grep -q '"state":"ready"' && break
        sleep 0.1
    done
    curl -fsS "http://$H:$CLUSTER_API_PORT/readyz" | grep -q '"state":"ready"' ||
        { cat "$WORK/cluster-api.log" >&2; die "the cluster counter-api is not ready"; }
    curl -fsS "$C/counters?names=$names" | grep -q '"source":"redis"' ||
        die "the cluster counter-api does not read from redis"
    run cluster_increment "$WORK/post.lua" "$C/counter/bench_incr/increment"
    run cluster_get "$WORK/done.lua" "$C/counter/bench_incr"
    run cluster_batch_get "$WORK/done.lua" "$C/counters?names=$names"
    grep '^counter_redis_' <(curl -fsS "http://$H:$CLUSTER_API_PORT/metrics") >"$WORK/cluster-metrics.txt" || true
fi

# The same increment through a second counter-api whose Kafka is three
# nodes with 3 replicas per partition (acks=all: 2 in sync confirm), on the
# same Redis: what the replicated log costs a write.
if [[ $RF3 == 1 ]]; then
    say "kafka: three nodes from port $RF3_KAFKA_PORT, topics with 3 replicas"
    if ! rf3_stack start kafka >"$WORK/rf3-up.log" 2>&1; then
        # the rest of the run is worth keeping: its rows are left out
        grep -h "ERROR\|Exception\|exited" "$WORK/rf3-up.log" "$WORK"/rf3/log/kafka-*.log 2>/dev/null |
            head -20 >&2
        say "three-node kafka did not start: no RF=3 rows in this run"
        rf3_stack destroy >/dev/null 2>&1 || true
        RF3=0
    fi
fi
if [[ $RF3 == 1 ]]; then
    R3B=$(sed -n 's/^KAFKA_BOOTSTRAP=//p' "$WORK/rf3/stack.env" | tr -d '\\')
    [[ -n $R3B ]] || die "no KAFKA_BOOTSTRAP in $WORK/rf3/stack.env"
    (as_stack rf3-topic.log COUNTER_KAFKA_BROKERS="$R3B" COUNTER_KAFKA_REPLICATION_FACTOR=3 \
        COUNTER_KAFKA_MIN_INSYNC_REPLICAS=2 "$BIN_DIR/counterctl" create-topic) ||
        { cat "$WORK/rf3-topic.log" >&2; die "create-topic on the three nodes failed"; }
    as_stack rf3-api.log COUNTER_KAFKA_BROKERS="$R3B" COUNTER_SERVER_PORT="$RF3_API_PORT" \
        "$BIN_DIR/counter-api" &
    RF3_API_PID=$!
    for ((i = 0; i < 100; i++)); do
        curl -fsS "http://$H:$RF3_API_PORT/healthz" 2>/dev/null | grep -q '"kafka":true' && break
        sleep 0.1
    done
    curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' \
        "http://$H:$RF3_API_PORT/api/v1/counter/bench_incr/increment" ||
        { cat "$WORK/rf3-api.log" >&2; die "the counter-api on three nodes does not take writes"; }
    # The one-broker api again, now, beside the other: the two rows see
    # the same machine (the three JVMs running). Then the three nodes,
    # fresh JVMs with a longer warm-up.
    run rf1_increment "$WORK/post.lua" "$A/counter/bench_incr/increment"
    run rf3_increment "$WORK/post.lua" "http://$H:$RF3_API_PORT/api/v1/counter/bench_incr/increment" 15s
    while read -r name state _ pid _; do
        [[ $state != running ]] || RSS[rf3_$name]=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    done < <(rf3_stack status)
    kill "$RF3_API_PID" && wait "$RF3_API_PID" || true
    RF3_API_PID=""
fi

# counter-api's resident memory with 1000 open connections (issue target).
api_pid() { "$ROOT/deploy/stack.sh" status | awk '$1 == "counter-api" {print $4}'; }
APID=$(api_pid)
wrk -t1 -c1000 -d6s -s "$WORK/done.lua" "$A/counter/bench_incr" >"$WORK/wrk-c1000.txt" 2>&1 &
WRK1000=$!
sleep 4
api_rss_1000=$(awk '/^VmRSS/ {print $2}' "/proc/$APID/status")
wait "$WRK1000" || true
say "counter-api VmRSS with 1000 connections: $api_rss_1000 kB"

# ---------------------------------------------------------- peak RSS ---

hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
while read -r name state _ pid _; do
    [[ $state == running ]] || continue
    RSS[$name]=$(hwm "$pid")
    if [[ $name == postgres ]]; then
        # The postmaster alone is small; its backends do the work.
        tot=0
        for c in $(pgrep -P "$pid"); do tot=$((tot + $(hwm "$c"))); done
        RSS[postgres_children_sum]=$tot
    fi
done < <("$ROOT/deploy/stack.sh" status)
RSS[webdis]=$(hwm "$WEBDIS_PID")
RSS[hello]=$(hwm "$HELLO_PID")
[[ -z $CLUSTER_API_PID ]] || RSS[cluster_counter_api]=$(hwm "$CLUSTER_API_PID")

# -------------------------------------------------------------- profile ---

if [[ $PROFILE == 1 ]]; then
    say "profile: counter-api under callgrind (bench/profile.sh)"
    BUILD="$BUILD" BENCH_PROFILE_STACK_DIR="$STACK_DIR" BENCH_PROFILE_PORT="$PROFILE_PORT" \
        BENCH_PROFILE_JSON="$WORK/profile.json" "$ROOT/bench/profile.sh" >"$WORK/profile.txt" ||
        die "bench/profile.sh failed"
else
    echo null >"$WORK/profile.json"
fi

# ------------------------------------------------------------ the table ---

ratio() { # a / b with two decimals, or "-"
    if [[ -n ${2:-} && ${2:-0} != 0 ]]; then echo "scale=2; $1 / $2" | bc | sed 's/^\./0./'; else echo -; fi
}
ms() { echo "scale=2; $1 / 1000" | bc | sed 's/^\./0./'; }
# KEY REF FLOOR: REF the reference of the "vs" column, FLOOR the floor's
# row of the same shape (write rows), "-" for none.
H2="_$HIGH_CONNS"
ROWS=(
    "floor_increment webdis_incr -"
    "api_increment webdis_incr floor_increment"
    "variant_increment api_increment floor_increment"
    "webdis_incr - -"
    "floor_increment$H2 webdis_incr$H2 -"
    "api_increment$H2 webdis_incr$H2 floor_increment$H2"
    "variant_increment$H2 api_increment$H2 floor_increment$H2"
    "webdis_incr$H2 - -"
    "floor_stress - -"
    "api_stress - floor_stress"
    "variant_stress api_stress floor_stress"
    "api_decrement webdis_decr floor_increment"
    "webdis_decr - -"
    "api_get webdis_get -"
    "webdis_get - -"
    "api_batch_get webdis_mget -"
    "webdis_mget - -"
    "api_unique_incr webdis_sadd floor_increment"
    "webdis_sadd - -"
    "hello - -"
)
[[ $CLUSTER != 1 ]] || ROWS+=(
    "cluster_increment api_increment floor_increment"
    "cluster_get api_get -"
    "cluster_batch_get api_batch_get -"
)
[[ $RF3 != 1 ]] || ROWS+=("rf1_increment api_increment floor_increment" "rf3_increment rf1_increment floor_increment")
TABLE="$WORK/table.txt"
{
    printf 'load average (1, 5, 15 min) at the start of the wrk runs: %s; at their end: %s\n' "$LOAD_START" "$LOAD_END"
    printf '%-20s %5s %8s %7s %7s %8s %6s %7s  %-6s %-6s %-6s  %-26s %5s\n' test conns req/s p50_ms p99_ms \
        p99.9_ms errors cpu_us "x_flr" "p99_xf" "cpu_xf" "vs webdis/api" "xhello"
    for row in "${ROWS[@]}"; do
        read -r k ref fl <<<"$row"
        [[ -n ${RPS[$k]:-} ]] || continue
        vw=- xf=- pf=- cf=-
        [[ $ref != - && -n ${RPS[$ref]:-} ]] && vw="$(ratio "${RPS[$k]}" "${RPS[$ref]}") ($ref)"
        if [[ $fl != - && -n ${RPS[$fl]:-} ]]; then
            xf=$(ratio "${RPS[$k]}" "${RPS[$fl]}")
            pf=$(ratio "${P99[$k]}" "${P99[$fl]}")
            cf=$(ratio "${CPU[$k]}" "${CPU[$fl]}")
        fi
        printf '%-20s %5s %8s %7s %7s %8s %6s %7s  %-6s %-6s %-6s  %-26s %5s\n' "$k" "${RCONNS[$k]}" "${RPS[$k]}" \
            "$(ms "${P50[$k]}")" "$(ms "${P99[$k]}")" "$(ms "${P999[$k]}")" \
            "${ERR[$k]}" "${CPU[$k]}" "$xf" "$pf" "$cf" "$vw" "$(ratio "${RPS[$k]}" "${RPS[hello]}")"
    done
    echo "(x_flr, p99_xf, cpu_xf: req/s, p99 and CPU per request as ratios to the floor's row of the same shape;"
    echo " cpu_us: CPU microseconds per request summed over every process of the stack)"
    for n in 10 100; do
        k=api_batch$n
        [[ -n ${RPS[$k]:-} ]] || continue
        ups=$((RPS[$k] * n))
        printf 'batch of %3s increments: %6s req/s = %7s counter updates/s = %sx api_increment req/s; p50 %s ms, p99 %s ms, errors %s; cpu %s us per update (%sx api_increment per request)\n' \
            "$n" "${RPS[$k]}" "$ups" "$(ratio "$ups" "${RPS[api_increment]}")" "$(ms "${P50[$k]}")" \
            "$(ms "${P99[$k]}")" "${ERR[$k]}" "$(echo "scale=1; ${CPU[$k]} / $n" | bc)" \
            "$(ratio "$(echo "scale=3; ${CPU[$k]} / $n" | bc)" "${CPU[api_increment]}")"
    done
    echo "CPU us per request by process:"
    for k in floor_increment api_increment variant_increment "floor_increment$H2" "api_increment$H2" \
        "variant_increment$H2" floor_stress api_stress variant_stress webdis_incr hello; do
        [[ -n ${CPUBY[$k]:-} ]] && printf '  %-20s %s\n' "$k" "$(tr ',' ' ' <<<"${CPUBY[$k]}")"
    done
    echo
    printf 'persister drain: %s events/s (after first batch), %s events/s incl. start; %s events in %ss, drained=%s\n' \
        "$drain_rate" "$drain_rate_wall" "$drain_events" "$drain_wall" "$drained"
    printf '%s\n%s\n%s\n' "$LAG_LINE1" "$LAG_LINE2" "$LAG_LINE3"
    if [[ $APPLIER == 1 ]]; then
        jq -r --argjson pd "$drain_rate" '
          (.rows | to_entries[] | "applier drain \(.key): \(.value.events_per_s) events/s (\(.value.events) events, \(.value.counters) counters, \(.value.appliers) applier(s); \((.value.events_per_s / $pd * 100 | floor) / 100)x the persister; redis exact \(.value.redis_exact), postgresql exact \(.value.postgres_exact))"),
          "two appliers / one: \(.two_appliers_ratio // "-")",
          (.memory | if . then "applier memory, \(.events) events, window \(.dedup_window_s) s: redis +\(.redis_used_memory.bytes_per_event_in_window) bytes/event inside the window, \(.redis_used_memory.after_window_vs_before)x the baseline after it; postgresql dedup tables +\(.postgres_dedup_bytes.bytes_per_event) bytes/event" else empty end),
          "external lag, produce ack -> GET: p50 \(.lag.p50_ms) ms, p99 \(.lag.p99_ms) ms, max \(.lag.max_ms) ms at \(.lag.sent_per_s) events/s (\(.lag.not_seen) not seen)"
        ' "$WORK/applier.json"
    fi
    printf 'counter-api VmRSS with 1000 connections: %s kB\n' "$api_rss_1000"
    printf 'peak RSS (VmHWM, kB):'
    for k in $(printf '%s\n' "${!RSS[@]}" | sort); do printf ' %s=%s' "$k" "${RSS[$k]}"; done
    echo
    if [[ $PROFILE == 1 ]]; then
        echo "counter-api under callgrind, instructions per request (bench/profile.sh):"
        cat "$WORK/profile.txt"
    fi
} >"$TABLE"
echo
cat "$TABLE"

# ------------------------------------------------------------- the JSON ---

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$ROOT/bench/results"
OUT="$ROOT/bench/results/$STAMP.json"
{
    for k in "${!RPS[@]}"; do
        jq -n --arg k "$k" --argjson rps "${RPS[$k]}" --argjson p50 "${P50[$k]}" \
            --argjson p99 "${P99[$k]}" --argjson p999 "${P999[$k]}" --argjson err "${ERR[$k]}" \
            --argjson conns "${RCONNS[$k]}" --argjson threads "${RTHREADS[$k]}" \
            --argjson cpu "${CPU[$k]}" --arg by "${CPUBY[$k]%,}" --arg load "${LOADAVG[$k]}" \
            '{($k): {req_per_s: $rps, p50_us: $p50, p99_us: $p99, p99_9_us: $p999, errors: $err,
               connections: $conns, wrk_threads: $threads, load_avg_1m: ($load | tonumber),
               cpu_us_per_req: $cpu,
               cpu_us_per_req_by_process: ($by | split(",") | map(select(. != "") | split("=")
                 | {(.[0]): (.[1] | tonumber)}) | add)}}'
    done
} | jq -s 'add' >"$WORK/http.json"
{
    for k in "${!RSS[@]}"; do jq -n --arg k "$k" --argjson v "${RSS[$k]:-0}" '{($k): $v}'; done
} | jq -s 'add' >"$WORK/rss.json"
jq -n \
    --arg ts "$STAMP" --arg cpu "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" \
    --argjson nproc "$(nproc)" --arg commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --arg wrk "wrk -t1 -c$CONNS (and -c$HIGH_CONNS) -d$DURATION --latency; stress wrk -t12 -c400 -d$STRESS_DURATION" \
    --arg l0 "$LOAD_START" --arg l1 "$LOAD_END" \
    --slurpfile http "$WORK/http.json" --slurpfile rss "$WORK/rss.json" \
    --slurpfile lag "$WORK/lag.json" --slurpfile prof "$WORK/profile.json" \
    --slurpfile applier "$WORK/applier.json" \
    --arg lagcmd "openloop --rate $LAG_RATE --duration $LAG_DURATION --connections $LAG_CONNS --poll-ms $LAG_POLL_MS" \
    --argjson dr "$drain_rate" --argjson drw "$drain_rate_wall" --argjson de "$drain_events" \
    --arg dwall "$drain_wall" --argjson drained "$drained" --argjson backlog "$BACKLOG" \
    --arg prod "$produce_s" --argjson rss1000 "${api_rss_1000:-0}" \
    '{timestamp: $ts, commit: $commit, machine: {nproc: $nproc, cpu: $cpu}, load: $wrk,
      load_avg: {wrk_start: $l0, wrk_end: $l1},
      http: $http[0],
      ratios: ($http[0] as $h | def r(a; b): if $h[a] and $h[b] then
          {req_per_s: ($h[a].req_per_s / $h[b].req_per_s), p99: ($h[a].p99_us / $h[b].p99_us),
           cpu_us_per_req: ($h[a].cpu_us_per_req / $h[b].cpu_us_per_req)} else null end;
        {api_increment_vs_floor: r("api_increment"; "floor_increment"),
         api_increment_high_vs_floor: r("api_increment'"$H2"'"; "floor_increment'"$H2"'"),
         api_stress_vs_floor: r("api_stress"; "floor_stress"),
         variant_increment_vs_floor: r("variant_increment"; "floor_increment"),
         variant_increment_high_vs_floor: r("variant_increment'"$H2"'"; "floor_increment'"$H2"'"),
         variant_vs_api: r("variant_increment"; "api_increment"),
         variant_high_vs_api: r("variant_increment'"$H2"'"; "api_increment'"$H2"'"),
         batch10_updates_vs_increment: (if $h.api_batch10 and $h.api_increment then
           $h.api_batch10.req_per_s * 10 / $h.api_increment.req_per_s else null end),
         batch100_updates_vs_increment: (if $h.api_batch100 and $h.api_increment then
           $h.api_batch100.req_per_s * 100 / $h.api_increment.req_per_s else null end)}),
      persister_drain: {backlog_events: $backlog, events: $de, drained: $drained,
        events_per_s: $dr, events_per_s_incl_start: $drw, wall_s: ($dwall | tonumber),
        kcat_produce_s: ($prod | tonumber)},
      end_to_end_lag: ($lag[0] + {load: $lagcmd, target_p99_ms: 1000}),
      applier: $applier[0],
      profile: $prof[0],
      counter_api_vmrss_kb_1000_conns: $rss1000,
      peak_rss_kb: $rss[0]}' >"$OUT"
say "results: ${OUT#"$ROOT"/}"
