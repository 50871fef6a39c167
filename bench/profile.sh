#!/usr/bin/env bash
# `make bench-profile` (or `BENCH_PROFILE=1 make bench`): where counter-api
# spends its instructions, per request. A second counter-api runs under
# `valgrind --tool=callgrind` on a port of its own beside the stack's; after
# a warm-up, tests/tools/loadgen sends N GETs of one counter, N batch GETs
# of ten, then N increments of the first. Instrumentation is on during each
# phase only (`callgrind_control --instr=on|off`; switching it off closes every open
# call frame, so the dump after it has exact self costs) and each phase is
# dumped to a file of its own. Prints the instructions (Ir) per request of
# each phase and its top functions by inclusive and by self cost, per
# request; writes the same as JSON. Not part of `make test`.
#
# Ir counts instructions, not time: waits (Redis, Kafka acks) cost nothing
# here, which is the point; wrk's figures in bench/run.sh hold the time.
# callgrind sums all threads, so librdkafka's background threads (their
# idle polling too) are in each phase's total; an idle phase of
# BENCH_PROFILE_IDLE_S seconds without requests measures that floor, and
# each phase reports its share (idle instructions/s x the phase's length). Inclusive costs start at
# the callbacks the event loop runs: main() and the loop itself were
# entered before instrumentation began and are not listed.
#
# Settings (environment; defaults in brackets):
#   BUILD [build]                   release build dir (bin/ holds the services)
#   BENCH_PROFILE_REQUESTS [20000]  requests per phase
#   BENCH_PROFILE_CONNECTIONS [4]   loadgen connections (closed loop)
#   BENCH_PROFILE_TOP [20]          functions listed per table
#   BENCH_PROFILE_PORT [38290]      the profiled counter-api's port
#   BENCH_PROFILE_IDLE_S [5]        length of the idle phase
#   BENCH_PROFILE_STACK_DIR         use this running stack (bench/run.sh sets
#                                   it); else a private stack is started on
#   BENCH_PROFILE_REDIS_PORT [36580] BENCH_PROFILE_PG_PORT [35633]
#   BENCH_PROFILE_KAFKA_PORT [39292] BENCH_PROFILE_KAFKA_CONTROLLER_PORT [39293]
#   BENCH_PROFILE_API_PORT [38280]  and destroyed on exit
#   BENCH_PROFILE_JSON              where the JSON goes (default
#                                   bench/results/<UTC timestamp>-profile.json)
#   BENCH_PROFILE_KEEP              a directory to keep the callgrind files
#                                   in (callgrind.{idle,get,batch_get,increment}.out, for
#                                   callgrind_annotate or kcachegrind)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-build}"
BIN_DIR="$ROOT/$BUILD/bin"
REQUESTS="${BENCH_PROFILE_REQUESTS:-20000}"
CONNS="${BENCH_PROFILE_CONNECTIONS:-4}"
TOP="${BENCH_PROFILE_TOP:-20}"
PROFILE_PORT="${BENCH_PROFILE_PORT:-38290}"
IDLE_S="${BENCH_PROFILE_IDLE_S:-5}"
H=127.0.0.1
COUNTER=bench_profile

say() { printf 'bench-profile: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if ! command -v valgrind >/dev/null; then
    say "installing valgrind (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null
fi
for tool in valgrind callgrind_control callgrind_annotate python3 curl; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install valgrind)"
done
for b in counter-api loadgen; do
    [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b is missing: run make build"
done
((REQUESTS >= CONNS)) || die "BENCH_PROFILE_REQUESTS must be at least BENCH_PROFILE_CONNECTIONS"
PER_CONN=$((REQUESTS / CONNS))
REQUESTS=$((PER_CONN * CONNS))

WORK="$(mktemp -d /tmp/counter-bench-profile.XXXXXX)"
OWN_STACK=""
VG_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $VG_PID ]]; then
        kill "$VG_PID" 2>/dev/null || true
        wait "$VG_PID" 2>/dev/null || true
    fi
    if [[ -n $OWN_STACK ]]; then
        say "tearing the stack down"
        STACK_DIR="$OWN_STACK" "$ROOT/deploy/stack.sh" destroy >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n ${BENCH_PROFILE_STACK_DIR:-} ]]; then
    STACK_DIR="$BENCH_PROFILE_STACK_DIR"
else
    STACK_DIR="$(mktemp -d /tmp/counter-bench-profile-stack.XXXXXX)"
    OWN_STACK="$STACK_DIR"
    say "starting a stack in $STACK_DIR"
    STACK_DIR="$STACK_DIR" REDIS_PORT="${BENCH_PROFILE_REDIS_PORT:-36580}" \
        PG_PORT="${BENCH_PROFILE_PG_PORT:-35633}" \
        KAFKA_PORT="${BENCH_PROFILE_KAFKA_PORT:-39292}" \
        KAFKA_CONTROLLER_PORT="${BENCH_PROFILE_KAFKA_CONTROLLER_PORT:-39293}" \
        API_PORT="${BENCH_PROFILE_API_PORT:-38280}" BIN_DIR="$BIN_DIR" \
        COUNTER_CONFIG="$ROOT/tests/config.test.yaml" \
        "$ROOT/deploy/stack.sh" up >"$WORK/stack-up.log" 2>&1 ||
        { cat "$WORK/stack-up.log" >&2; die "stack up failed"; }
fi
[[ -f $STACK_DIR/counter.env ]] || die "$STACK_DIR/counter.env is missing: is the stack up?"

# The stack's settings for counter-api, on a port of its own. Under
# callgrind it runs some 50x slower, so the timeouts that would turn a slow
# Redis or Kafka answer into a PostgreSQL read or a 503 are raised: the
# phases then run the same code a fast api runs.
say "starting counter-api under callgrind on $H:$PROFILE_PORT"
(
    # shellcheck source=/dev/null
    source "$STACK_DIR/counter.env"
    export COUNTER_SERVER_PORT="$PROFILE_PORT" COUNTER_REDIS_TIMEOUT_MS=5000 \
        COUNTER_REDIS_WRITE_TIMEOUT_MS=10000 COUNTER_KAFKA_DELIVERY_TIMEOUT_MS=20000
    cd "$WORK"
    exec valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$WORK/callgrind.out" \
        "$BIN_DIR/counter-api"
) >"$WORK/api.log" 2>&1 &
VG_PID=$!

for ((i = 0; i < 600; i++)); do
    curl -fsS -o /dev/null "http://$H:$PROFILE_PORT/healthz" 2>/dev/null && break
    kill -0 "$VG_PID" 2>/dev/null || { cat "$WORK/api.log" >&2; die "counter-api under valgrind exited"; }
    sleep 0.2
done
curl -fsS -o /dev/null "http://$H:$PROFILE_PORT/healthz" ||
    { tail -20 "$WORK/api.log" >&2; die "counter-api under valgrind never answered"; }

URL_GET="http://$H:$PROFILE_PORT/api/v1/counter/$COUNTER"
URL_INC="$URL_GET/increment"
# the batch: ten counters, as make bench's batch get
names=""
for i in $(seq 0 9); do names+="${names:+,}${COUNTER}_b$i"; done
URL_BATCH="http://$H:$PROFILE_PORT/api/v1/counters?names=$names"
# load NAME URL PER_CONN [BODY]: loadgen's one-line JSON into $WORK/NAME.json
load() {
    local args=(--url "$2" --connections "$CONNS" --requests-per-conn "$3" --timeout-s 3600)
    [[ -z ${4:-} ]] || args+=(--body "$4")
    "$BIN_DIR/loadgen" "${args[@]}" >"$WORK/$1.json" ||
        die "loadgen failed in phase $1: $(cat "$WORK/$1.json")"
}
cg() { callgrind_control "$@" "$VG_PID" >/dev/null 2>&1; }
# dump N TRIGGER: instrumentation off, then callgrind writes callgrind.out.N
dump() {
    cg --instr=off
    cg --dump="$2"
    for ((i = 0; i < 300; i++)); do
        [[ -s $WORK/callgrind.out.$1 ]] && return 0
        sleep 0.1
    done
    die "callgrind wrote no callgrind.out.$1"
}

# Warm-up: connections, Lua script loading, the counter's first write.
say "warm-up"
load warmup_inc "$URL_INC" 50 '{}'
load warmup_get "$URL_GET" 50
for i in $(seq 0 9); do
    curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -d '{}' \
        "http://$H:$PROFILE_PORT/api/v1/counter/${COUNTER}_b$i/increment" ||
        die "warm-up write of ${COUNTER}_b$i failed"
done
load warmup_batch "$URL_BATCH" 50
t=$(date +%s)
say "idle for ${IDLE_S}s"
cg --instr=on
t_idle=$(date +%s.%N)
sleep "$IDLE_S"
dump 1 idle
echo "{\"elapsed_s\": $(echo "$(date +%s.%N) - $t_idle" | bc)}" >"$WORK/idle.json"
say "$REQUESTS GET requests ($CONNS connections)"
cg --instr=on
load get "$URL_GET" "$PER_CONN"
dump 2 get
say "$REQUESTS batch GETs of 10 names ($CONNS connections)"
cg --instr=on
load batch_get "$URL_BATCH" "$PER_CONN"
dump 3 batch_get
say "$REQUESTS increments ($CONNS connections)"
cg --instr=on
load increment "$URL_INC" "$PER_CONN" '{}'
dump 4 increment
say "phases took $(($(date +%s) - t)) s under callgrind"

for n in 1 2 3 4; do
    callgrind_annotate --auto=no --threshold=100 --inclusive=yes "$WORK/callgrind.out.$n" >"$WORK/incl.$n.txt"
    callgrind_annotate --auto=no --threshold=100 --inclusive=no "$WORK/callgrind.out.$n" >"$WORK/self.$n.txt"
done

if [[ -n ${BENCH_PROFILE_KEEP:-} ]]; then
    mkdir -p "$BENCH_PROFILE_KEEP"
    cp "$WORK/callgrind.out.1" "$BENCH_PROFILE_KEEP/callgrind.idle.out"
    cp "$WORK/callgrind.out.2" "$BENCH_PROFILE_KEEP/callgrind.get.out"
    cp "$WORK/callgrind.out.3" "$BENCH_PROFILE_KEEP/callgrind.batch_get.out"
    cp "$WORK/callgrind.out.4" "$BENCH_PROFILE_KEEP/callgrind.increment.out"
    cp "$WORK"/incl.?.txt "$WORK"/self.?.txt "$BENCH_PROFILE_KEEP/"
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="${BENCH_PROFILE_JSON:-$ROOT/bench/results/$STAMP-profile.json}"
mkdir -p "$(dirname "$OUT")"
python3 - "$WORK" "$TOP" "$CONNS" "$OUT" <<'EOF'
import json, re, sys

work, top, conns, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def short(name):
    """'./malloc/malloc.c:calloc [/usr/lib/.../libc.so.6]' -> 'calloc (libc.so.6)'"""
    obj = ""
    m = re.match(r"^(.*?)\s+\[(.*)\]$", name)
    if m:
        name, obj = m.group(1), m.group(2).rsplit("/", 1)[-1]
    fn = name.split(":", 1)[1] if ":" in name else name
    return f"{fn} ({obj})" if obj else fn


def parse(path):
    # The same function can be listed twice, under its source file's
    # absolute and relative name (one without the object): keep one.
    total, rows, seen = None, [], set()
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            ir, what = int(m.group(1).replace(",", "")), m.group(2).strip()
            if what == "PROGRAM TOTALS":
                total = ir
            elif total is not None:
                fn = short(what)
                key = (ir, fn.split(" (", 1)[0])
                if key in seen:
                    continue
                seen.add(key)
                rows.append((ir, fn))
    return total, rows


result = {"tool": "valgrind --tool=callgrind (Ir = instructions executed)",
          "loadgen_connections": conns}
idle_s = json.load(open(f"{work}/idle.json"))["elapsed_s"]
idle_total, _ = parse(f"{work}/self.1.txt")
idle_rate = idle_total / idle_s
result["idle"] = {"seconds": round(idle_s, 2), "ir_total": idle_total,
                  "ir_per_s": round(idle_rate)}
lines = [f"idle (no requests, {idle_s:.1f} s): {idle_rate:,.0f} instructions per second", ""]
for n, phase in ((2, "get"), (3, "batch_get"), (4, "increment")):
    lg = json.load(open(f"{work}/{phase}.json"))
    answered = sum(lg["status"].values())
    total, incl = parse(f"{work}/incl.{n}.txt")
    _, self_ = parse(f"{work}/self.{n}.txt")
    per = lambda ir: round(ir / answered, 1) if answered else None
    idle_share = per(idle_rate * lg["elapsed_s"])
    entry = {"requests": lg["sent"], "answered": answered, "status": lg["status"],
             "errors": lg["errors"], "seconds": lg["elapsed_s"], "ir_total": total,
             "ir_per_request": per(total), "idle_ir_per_request": idle_share,
             "top_inclusive": [{"function": f, "ir_per_request": per(ir),
                                "percent": round(100.0 * ir / total, 2)} for ir, f in incl[:top]],
             "top_self": [{"function": f, "ir_per_request": per(ir),
                           "percent": round(100.0 * ir / total, 2)} for ir, f in self_[:top]]}
    result[phase] = entry
    status = " ".join(f"{k}={v}" for k, v in sorted(lg["status"].items()))
    lines.append(f"{phase}: {entry['ir_per_request']:,.0f} instructions per request, "
                 f"of which ~{idle_share:,.0f} the idle floor over its {lg['elapsed_s']:.1f} s "
                 f"({answered} answered: {status}; no answer: {lg['errors']})")
    for title, key in (("inclusive", "top_inclusive"), ("self", "top_self")):
        lines.append(f"  {'Ir/request':>12} {'%':>6}  top {top} by {title} cost")
        for r in entry[key]:
            lines.append(f"  {r['ir_per_request']:>12,.0f} {r['percent']:>6.2f}  {r['function']}")
    lines.append("")
json.dump(result, open(out, "w"), indent=1)
print("\n".join(lines))
EOF
say "profile: ${OUT#"$ROOT"/}"
