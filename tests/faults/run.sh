#!/usr/bin/env bash
# The fault-injection suite alone (`make test-faults`): builds the
# AddressSanitizer+UBSan tree, starts a private stack in a temporary
# directory on its own ports, runs pytest tests/faults against it, stops it.
# Ends with "N passed, M failed"; exits non-zero on any failure.
#
# Settings (environment):
#   FAULTS_BUILD [build-asan]     the build tree (configured with ASan)
#   FAULTS_STACK_DIR [a new /tmp/counter-faults.XXXXXX]  the stack's folder
#                                 (destroyed at the end)
#   FAULTS_REDIS_PORT [26480] FAULTS_PG_PORT [25533] FAULTS_KAFKA_PORT [29292]
#   FAULTS_KAFKA_CONTROLLER_PORT [29293] FAULTS_API_PORT [28180]
#   FAULTS_PYTEST_ARGS            more pytest arguments (-k test_b_ ...)
#   FAULTS_LOG_DIR [$FAULTS_BUILD/faults-logs]  request logs of each test
# tests/run.sh runs the same tests on its own stack after the integration
# tests.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
BUILD="${FAULTS_BUILD:-build-asan}"

"$ROOT/deploy/install-deps.sh" || { echo "== FAIL: install-deps"; echo "0 passed, 1 failed"; exit 1; }

echo "== building (address,undefined sanitizers) in $BUILD"
mkdir -p "$BUILD"
if ! { cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DCOUNTER_SANITIZE=address >/dev/null &&
    cmake --build "$BUILD" -j "$(nproc)" >"$BUILD/build.log" 2>&1; }; then
    tail -50 "$BUILD/build.log"
    echo "== FAIL: build"
    echo "0 passed, 1 failed"
    exit 1
fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"

STACK_DIR="${FAULTS_STACK_DIR:-$(mktemp -d /tmp/counter-faults.XXXXXX)}"
export STACK_DIR
export REDIS_PORT=${FAULTS_REDIS_PORT:-26480} PG_PORT=${FAULTS_PG_PORT:-25533}
export KAFKA_PORT=${FAULTS_KAFKA_PORT:-29292} KAFKA_CONTROLLER_PORT=${FAULTS_KAFKA_CONTROLLER_PORT:-29293}
export API_PORT=${FAULTS_API_PORT:-28180} KAFKA_TOPIC=counter-events KAFKA_PARTITIONS=4
export BIN_DIR="$ROOT/$BUILD/bin"
export COUNTER_CONFIG="$ROOT/tests/config.test.yaml"
export LOADGEN="$BIN_DIR/loadgen"
export FAULTS_LOG_DIR="${FAULTS_LOG_DIR:-$ROOT/$BUILD/faults-logs}"
LOG_KEEP="$ROOT/$BUILD/faults-stack-logs"

cleanup() {
    "$ROOT/deploy/stack.sh" down >/dev/null 2>&1
    rm -rf "$LOG_KEEP"
    mkdir -p "$LOG_KEEP"
    cp -r "$STACK_DIR/log/." "$LOG_KEEP/" 2>/dev/null
    "$ROOT/deploy/stack.sh" destroy >/dev/null 2>&1
    rm -rf "$STACK_DIR"
}
trap cleanup EXIT

echo "== starting the fault-test stack in $STACK_DIR"
if ! "$ROOT/deploy/stack.sh" up; then
    for f in "$STACK_DIR"/log/*.log; do echo "--- $f"; tail -30 "$f"; done
    echo "0 passed, 1 failed"
    exit 1
fi
set -a
# shellcheck source=/dev/null
source "$STACK_DIR/stack.env"
# shellcheck source=/dev/null
source "$STACK_DIR/counter.env"
set +a

echo "== fault-injection tests"
rm -rf "$FAULTS_LOG_DIR"
xml="$ROOT/$BUILD/faults.xml"
rm -f "$xml"
# shellcheck disable=SC2086
python3 -m pytest -p no:cacheprovider -v -rA --durations=0 --junitxml="$xml" \
    tests/faults ${FAULTS_PYTEST_ARGS:-}
rc=$?
read -r passed failed < <(python3 - "$xml" <<'PY'
import sys, xml.etree.ElementTree as ET
p = f = 0
try:
    for c in ET.parse(sys.argv[1]).getroot().iter("testcase"):
        if any(ch.tag in ("failure", "error", "skipped") for ch in c):
            f += 1
        else:
            p += 1
except (OSError, ET.ParseError):
    pass
print(p, f)
PY
)
[[ $rc -ne 0 && $failed -eq 0 ]] && failed=1
[[ $failed -ne 0 ]] && echo "service logs kept in $LOG_KEEP; request logs in $FAULTS_LOG_DIR"
echo "$passed passed, $failed failed"
[[ $rc -eq 0 ]]
