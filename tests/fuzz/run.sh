#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan, in build-fuzz) and runs
# each for SECONDS (default 300), one after the other:
#   tests/fuzz/run.sh 15        # what tests/run.sh does
#   make fuzz FUZZ_SECONDS=3600
# The committed corpus (tests/fuzz/corpus/<target>) is only read, as seeds;
# what libFuzzer finds goes to build-fuzz/fuzz/corpus/<target> (kept between
# runs, so long runs build on each other) and crashing inputs to
# build-fuzz/fuzz/artifacts/<target>/. Prints one line per target; exits
# non-zero if any target crashed, leaked, broke a property or made a
# sanitizer report.
#
# Settings (environment): FUZZ_BUILD (default <repo>/build-fuzz),
# FUZZ_TARGETS (default "router query body event").
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_EACH="${1:-300}"
BUILD="${FUZZ_BUILD:-$ROOT/build-fuzz}"
read -ra TARGETS <<<"${FUZZ_TARGETS:-router query body event}"
OUT="$BUILD/fuzz"

if ! [[ $SECONDS_EACH =~ ^[0-9]+$ ]] || ((SECONDS_EACH < 1)); then
    echo "usage: $0 SECONDS" >&2
    exit 2
fi

mkdir -p "$BUILD"
if ! { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=Debug -DCOUNTER_SANITIZE=address -DCOUNTER_FUZZ=ON &&
    cmake --build "$BUILD" -j "$(nproc)" --target "${TARGETS[@]/#/fuzz_}"; } \
    >"$BUILD/fuzz-build.log" 2>&1; then
    tail -40 "$BUILD/fuzz-build.log"
    echo "fuzz: build failed (log: $BUILD/fuzz-build.log)"
    exit 1
fi

# Leaks count as findings; a UBSan report stops the run like a crash (the
# build also passes -fno-sanitize-recover=undefined).
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
unset LSAN_OPTIONS

failed=0
for t in "${TARGETS[@]}"; do
    bin="$BUILD/bin/fuzz_$t"
    log="$OUT/$t.log"
    mkdir -p "$OUT/corpus/$t" "$OUT/artifacts/$t"
    args=(-max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048
          -max_len=8192 -print_final_stats=1
          -artifact_prefix="$OUT/artifacts/$t/")
    [[ -f $ROOT/tests/fuzz/$t.dict ]] && args+=(-dict="$ROOT/tests/fuzz/$t.dict")
    # first directory: where new inputs go; the committed seeds are only read
    "$bin" "${args[@]}" "$OUT/corpus/$t" "$ROOT/tests/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)"
    report="$(grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|property broken' "$log")"
    if [[ $rc -ne 0 || -n $report ]]; then
        failed=1
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
        echo "fuzz_$t: FAIL (exit $rc) ${report:-no report} ${artifact:+input: $artifact} (log: $log)"
        grep -E -A25 'ERROR: |runtime error:|property broken' "$log" | head -40 | sed 's/^/    /'
    else
        echo "fuzz_$t: ok, ${runs:-?} runs in ${SECONDS_EACH}s, ${cov:-no stats}"
    fi
done
exit $failed
