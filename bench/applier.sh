#!/usr/bin/env bash
# counter-applier's rows of `make bench` (issue 20), on a running stack of
# deploy/stack.sh (STACK_DIR; bench/run.sh calls it after the persister's
# drain): for each row, a backlog of external events is written into the
# input topic with the applier stopped, then the applier (one, or two in
# its group) is started and timed from its first applied event to its
# last (its metrics, counter_applier_events_total, read every 100 ms).
# Every row checks exactly once: Redis's values against the values the
# events make (computed here, bounds and users included), and PostgreSQL's
# totals against the same once the persister caught up. The first row
# also measures memory: Redis used_memory and the size of every
# PostgreSQL dedup table before and after its events, and again once the
# id window (BENCH_APPLIER_WINDOW_S, the applier's dedup_window_s here)
# has passed. Then the lag: bench/extlag.c produces at a fixed rate into
# the input topic and reads the counters through GET.
# Prints one JSON object on stdout; progress on stderr.
#
# Settings: BENCH_APPLIER_EVENTS [1000000] per row, BENCH_APPLIER_WINDOW_S
# [30], BENCH_APPLIER_TIMEOUT [300] s per row, BENCH_APPLIER_ROWS [all:
# plain_100 plain_10000 unique_100 gauge_100 two_appliers_100],
# BENCH_APPLIER_LAG_RATE [20000] events/s for BENCH_APPLIER_LAG_DURATION
# [10] s, BENCH_APPLIER_METRICS_PORT2 [API port + 9] the second applier's,
# BENCH_APPLIER_PERSISTER_REF [1]: first the persister's drain of as many
# api events, the reference of the same run (bench/run.sh has its own).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${STACK_DIR:?the stack to run on (deploy/stack.sh)}"
BUILD="${BUILD:-build}"
N="${BENCH_APPLIER_EVENTS:-1000000}"
WINDOW="${BENCH_APPLIER_WINDOW_S:-30}"
TIMEOUT="${BENCH_APPLIER_TIMEOUT:-300}"
ROWS="${BENCH_APPLIER_ROWS:-plain_100 plain_10000 unique_100 gauge_100 two_appliers_100}"
LAG_RATE="${BENCH_APPLIER_LAG_RATE:-20000}"
LAG_DURATION="${BENCH_APPLIER_LAG_DURATION:-10}"

set -a
# shellcheck source=/dev/null
source "$STACK_DIR/stack.env"
set +a
H=127.0.0.1
M2_PORT="${BENCH_APPLIER_METRICS_PORT2:-$((API_PORT + 9))}"
export COUNTER_APPLIER_DEDUP_WINDOW_S="$WINDOW"
# the counters the rows use (it_unique_*, it_gauge_*) are declared there
export COUNTER_CONFIG="${COUNTER_CONFIG:-$ROOT/tests/config.test.yaml}"
export PGPASSWORD=counter
WORK="$(mktemp -d /tmp/counter-bench-applier.XXXXXX)"
SECOND_PID=""
cleanup() {
    [[ -z $SECOND_PID ]] || kill "$SECOND_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf 'bench applier: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
pg() { psql -h "$H" -p "$PG_PORT" -U counter -d counter -Atqc "$1"; }
rc() { redis-cli -h "$H" -p "$REDIS_PORT" "$@"; }
used_memory() { rc INFO memory | awk -F: '/^used_memory:/ {print $2 + 0}'; }
dedup_bytes() {
    pg "SELECT pg_total_relation_size('applied_event_ids') +
               pg_total_relation_size('applier_record_offsets')"
}
dedup_tables() {
    pg "SELECT json_object_agg(t, pg_total_relation_size(t::regclass))
        FROM unnest(ARRAY['applied_event_ids', 'applier_record_offsets']) t"
}
# events applied or decided (refused, duplicate, dead-lettered) by the
# appliers running now
processed() {
    local total=0 port v
    for port in "$((API_PORT + 2))" ${SECOND_PID:+"$M2_PORT"}; do
        v=$(curl -fsS "http://$H:$port/metrics" 2>/dev/null |
            awk '/^counter_applier_events_total\{outcome="(applied|duplicate|bound_refused|dead_lettered)"\}/ {s += $2} END {print s + 0}') || v=0
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
now() { date +%s.%N; }

mkdir -p "$ROOT/$BUILD/bench"
# shellcheck disable=SC2046
cc -O2 -Wall -pthread -o "$ROOT/$BUILD/bench/extlag" "$ROOT/bench/extlag.c" \
    $(pkg-config --cflags --libs rdkafka) || die "could not build bench/extlag.c"

# gen KIND PREFIX COUNTERS: the backlog (key TAB event) and the expected
# value of each counter (name value), what the events make in log order
gen() {
    awk -v n="$N" -v kind="$1" -v p="$2" -v c="$3" -v ts="$(($(date +%s) * 1000))" \
        -v expfile="$WORK/expected" 'BEGIN {
        for (i = 0; i < n; i++) {
            k = i % c; name = p k; d = 1; extra = ""
            if (kind == "unique") {
                u = int(i / c) % 5000; extra = ",\"user_id\":\"u" u "\""
                if (!((k, u) in seen)) { seen[k, u] = 1; v[k]++ }
            } else if (kind == "gauge") {
                # it_gauge_*: min 0, max 100, refused past them
                d = (int(i / c) % 3 == 2) ? -1 : 1
                if (v[k] + d >= 0 && v[k] + d <= 100) v[k] += d
            } else {
                v[k] += d
            }
            printf "%s\t{\"v\":1,\"id\":\"%s-%d\",\"counter\":\"%s\",\"delta\":%d,\"ts\":%d%s}\n", name, p, i, name, d, ts, extra
        }
        for (k = 0; k < c; k++) printf "%s%d %d\n", p, k, v[k] > expfile
    }'
}

start_second() {
    (set -a && source "$STACK_DIR/counter.env" && COUNTER_APPLIER_METRICS_PORT=$M2_PORT &&
        exec "$BIN_DIR/counter-applier") >"$WORK/applier2.log" 2>&1 &
    SECOND_PID=$!
}

# check_redis: every counter's value as expected
check_redis() {
    local got
    got=$(awk '{print "{c:" $1 "}"}' "$WORK/expected" | xargs -n 1000 redis-cli -h "$H" -p "$REDIS_PORT" MGET |
        paste -d' ' <(awk '{print $1}' "$WORK/expected") - | sed 's/ $/ 0/')
    diff <(sort "$WORK/expected") <(sort <<<"$got") >"$WORK/redis.diff" && return 0
    say "redis differs from the events (first lines): $(head -5 "$WORK/redis.diff" | tr '\n' ' ')"
    return 1
}

# check_pg PREFIX: PostgreSQL's totals as expected, waiting for the persister
check_pg() {
    local t0 got
    t0=$(now)
    while :; do
        got=$(pg "SELECT name || ' ' || value FROM counter_totals
                  WHERE left(name, length('$1')) = '$1'")
        diff <(sort "$WORK/expected") <(sort <<<"$got") >"$WORK/pg.diff" && { echo "$(echo "$(now) - $t0" | bc)"; return 0; }
        (($(echo "$(now) - $t0 > $TIMEOUT" | bc))) && break
        sleep 0.5
    done
    say "postgresql differs (first lines): $(head -5 "$WORK/pg.diff" | tr '\n' ' ')"
    echo -1
    return 1
}

declare -A RESULT
MEMORY_JSON=null
row() {
    local name=$1 kind prefix counters appliers=1
    case $name in
    plain_100) kind=plain counters=100 ;;
    plain_10000) kind=plain counters=10000 ;;
    unique_100) kind=unique counters=100 ;;
    gauge_100) kind=gauge counters=100 ;;
    two_appliers_100) kind=plain counters=100 appliers=2 ;;
    *) die "unknown row $name" ;;
    esac
    case $kind in
    unique) prefix="it_unique_bap_${RANDOM}_" ;;
    gauge) prefix="it_gauge_bap_${RANDOM}_" ;;
    *) prefix="bench_ap_${name}_${RANDOM}_" ;;
    esac
    say "$name: $N events over $counters counters ($kind), $appliers applier(s)"
    "$ROOT/deploy/stack.sh" stop counter-applier >/dev/null 2>&1
    gen "$kind" "$prefix" "$counters" >"$WORK/backlog.tsv"
    local p0 p1
    p0=$(now)
    kcat -P -b "$KAFKA_BOOTSTRAP" -t "$KAFKA_INPUT_TOPIC" -K $'\t' \
        -X partitioner=murmur2_random -X linger.ms=20 -X batch.num.messages=10000 \
        -X queue.buffering.max.messages=1000000 <"$WORK/backlog.tsv"
    p1=$(now)
    local mem0 pg0 tables0
    mem0=$(used_memory) pg0=$(dedup_bytes) tables0=$(dedup_tables)
    local t0 first="" c=0 t_last
    t0=$(now)
    "$ROOT/deploy/stack.sh" start counter-applier >/dev/null 2>&1
    ((appliers == 1)) || start_second
    while :; do
        c=$(processed)
        if [[ -z $first && $c -gt 0 ]]; then first=$(now) first_c=$c; fi
        ((c >= N)) && break
        (($(echo "$(now) - $t0 > $TIMEOUT" | bc))) && die "$name: only $c of $N events after ${TIMEOUT}s"
        sleep 0.1
    done
    t_last=$(now)
    local rate
    rate=$(echo "($c - $first_c) / ($t_last - $first)" | bc)
    say "$name: $rate events/s (first applied to last; produced in $(echo "$p1 - $p0" | bc)s)"
    local ok_redis=true ok_pg=true pg_s
    check_redis || ok_redis=false
    local mem1
    mem1=$(used_memory)
    pg_s=$(check_pg "$prefix") || ok_pg=false
    local pg1 tables1
    pg1=$(dedup_bytes) tables1=$(dedup_tables)
    say "$name: redis exact=$ok_redis, postgresql exact=$ok_pg (caught up ${pg_s}s after);" \
        "redis +$(((mem1 - mem0) / N)) bytes/event, postgresql dedup +$((pg1 - pg0)) bytes"
    if [[ -n $SECOND_PID ]]; then
        kill "$SECOND_PID" 2>/dev/null || true
        wait "$SECOND_PID" 2>/dev/null || true
        SECOND_PID=""
    fi
    if [[ $name == plain_100 ]]; then
        # the window passes: two slices of it and a minute
        local wait_s=$((2 * WINDOW + 70)) mem2 pg2 tables2 wkeys
        say "waiting ${wait_s}s for the id window ($WINDOW s) to pass"
        sleep "$wait_s"
        mem2=$(used_memory) pg2=$(dedup_bytes) tables2=$(dedup_tables)
        wkeys=$(rc --scan --pattern '{c:*}:w:*' | wc -l)
        say "after the window: redis $mem2 bytes (before the events $mem0), window keys $wkeys"
        MEMORY_JSON=$(jq -n --argjson n "$N" --argjson w "$WINDOW" \
            --argjson m0 "$mem0" --argjson m1 "$mem1" --argjson m2 "$mem2" \
            --argjson p0 "$pg0" --argjson p1 "$pg1" --argjson p2 "$pg2" \
            --argjson t0 "$tables0" --argjson t1 "$tables1" --argjson t2 "$tables2" \
            --argjson wk "$wkeys" \
            '{events: $n, dedup_window_s: $w,
              redis_used_memory: {before: $m0, after_events: $m1, after_window: $m2,
                bytes_per_event_in_window: (($m1 - $m0) / $n),
                after_window_vs_before: ($m2 / $m0), window_keys_after: $wk},
              postgres_dedup_bytes: {before: $p0, after_events: $p1, after_window: $p2,
                bytes_per_event: (($p1 - $p0) / $n),
                tables_before: $t0, tables_after_events: $t1, tables_after_window: $t2}}')
    fi
    RESULT[$name]=$(jq -n --argjson rate "$rate" --argjson c "$counters" --arg kind "$kind" \
        --argjson a "$appliers" --argjson n "$N" --argjson r "$ok_redis" --argjson p "$ok_pg" \
        --argjson pgs "${pg_s:--1}" --argjson mb "$(((mem1 - mem0) / N))" \
        --arg prod "$(echo "$p1 - $p0" | bc)" \
        '{events: $n, counters: $c, kind: $kind, appliers: $a, events_per_s: $rate,
          redis_exact: $r, postgres_exact: $p, postgres_caught_up_s: $pgs,
          redis_bytes_per_event: $mb, kcat_produce_s: ($prod | tonumber)}')
}

# The reference of the same run when alone (bench/run.sh has its own):
# the persister's drain of as many api events, timed the same way.
PERSISTER_REF=null
if [[ ${BENCH_APPLIER_PERSISTER_REF:-1} == 1 ]]; then
    say "reference: the persister drains $N api events"
    "$ROOT/deploy/stack.sh" stop counter-persister >/dev/null 2>&1
    awk -v n="$N" -v ts="$(($(date +%s) * 1000))" -v p="bench_ap_ref_${RANDOM}_" 'BEGIN {
        for (i = 0; i < n; i++) { c = p (i % 100)
            printf "%s\t{\"v\":1,\"id\":\"%s-%d\",\"counter\":\"%s\",\"delta\":1,\"ts\":%d}\n", c, p, i, c, ts } }' >"$WORK/ref.tsv"
    kcat -P -b "$KAFKA_BOOTSTRAP" -t "$KAFKA_TOPIC" -K $'\t' -H origin=api \
        -X partitioner=murmur2_random -X linger.ms=20 -X batch.num.messages=10000 \
        -X queue.buffering.max.messages=1000000 <"$WORK/ref.tsv"
    persisted() {
        pg "SELECT coalesce(sum(next_offset),0) FROM consumer_offsets
            WHERE group_id='counter-persister' AND topic='$KAFKA_TOPIC'"
    }
    start_off=$(persisted)
    "$ROOT/deploy/stack.sh" start counter-persister >/dev/null 2>&1
    first="" t0=$(now)
    while :; do
        off=$(persisted)
        if [[ -z $first && $off -gt $start_off ]]; then first=$(now) first_off=$off; fi
        ((off - start_off >= N)) && break
        (($(echo "$(now) - $t0 > $TIMEOUT" | bc))) && die "persister: only $((off - start_off)) of $N"
        sleep 0.2
    done
    PERSISTER_REF=$(echo "($off - $first_off) / ($(now) - $first)" | bc)
    say "reference: persister $PERSISTER_REF events/s"
fi

for r in $ROWS; do row "$r"; done

say "lag: $LAG_RATE events/s for ${LAG_DURATION}s into $KAFKA_INPUT_TOPIC, visible through GET"
lag_rc=0
"$ROOT/$BUILD/bench/extlag" --brokers "$KAFKA_BOOTSTRAP" --topic "$KAFKA_INPUT_TOPIC" \
    --api "$H:$API_PORT" --prefix "bench_xl_${RANDOM}_" --rate "$LAG_RATE" \
    --duration "$LAG_DURATION" --counters 100 --poll-ms 2 >"$WORK/lag.json" || lag_rc=$?
((lag_rc <= 1)) || die "extlag failed (exit $lag_rc)"
say "lag: $(jq -c . "$WORK/lag.json")"

{
    for k in "${!RESULT[@]}"; do jq -n --arg k "$k" --argjson v "${RESULT[$k]}" '{($k): $v}'; done
} | jq -s 'add // {}' >"$WORK/rows.json"
jq -n --slurpfile rows "$WORK/rows.json" --argjson mem "$MEMORY_JSON" \
    --slurpfile lag "$WORK/lag.json" --argjson pref "$PERSISTER_REF" \
    '{rows: $rows[0], memory: $mem, lag: ($lag[0] + {target_p99_ms: 1000}),
      persister_events_per_s: $pref,
      two_appliers_ratio: (if $rows[0].two_appliers_100 and $rows[0].plain_100
        then ($rows[0].two_appliers_100.events_per_s / $rows[0].plain_100.events_per_s)
        else null end)}'
