#!/usr/bin/env bash
# Every suite, as `make test` and CI run it:
#   1. unit tests (cmocka, under ctest) of an AddressSanitizer+UBSan build;
#   2. integration, concurrency and crash tests (pytest) against a private
#      stack (Redis, PostgreSQL, Kafka on their own ports in a temporary
#      directory) running the sanitizer build of the services;
#   3. a ThreadSanitizer build of the services (librdkafka's threads call
#      back into our code) under a short concurrent load;
#   4. the services' logs must hold no sanitizer report.
# Ends with one line "N passed, M failed"; exits non-zero on any failure.
# A missing service is a failure, never a skip.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
JOBS="$(nproc)"
PYTEST_ARGS=${PYTEST_ARGS:-}

passed=0
failed=0
failures=()
note_result() { # name rc [junit.xml]: count the file's cases, else one
    local p=1 f=0
    if [[ -n ${3:-} && -s $3 ]]; then
        read -r p f < <(python3 - "$3" <<'PY'
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
p = f = 0
for c in cases:
    if any(ch.tag in ("failure", "error", "skipped") for ch in c):
        f += 1
    else:
        p += 1
print(p, f)
PY
        )
        # a suite that failed without a failing case (crash, collection
        # error) still counts as a failure
        [[ $2 -ne 0 && $f -eq 0 ]] && f=1
    elif [[ $2 -ne 0 ]]; then
        p=0 f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [[ $2 -eq 0 ]]; then
        echo "== PASS: $1 ($p)"
    else
        failures+=("$1")
        echo "== FAIL: $1 ($f failed)"
    fi
}

"$ROOT/deploy/install-deps.sh" || { echo "== FAIL: install-deps"; echo "0 passed, 1 failed"; exit 1; }

echo "== building (address,undefined sanitizers) in build-asan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCOUNTER_SANITIZE=address >/dev/null &&
    cmake --build build-asan -j "$JOBS" >build-asan/build.log 2>&1
rc=$?
if [[ $rc -ne 0 ]]; then
    tail -50 build-asan/build.log
    echo "== FAIL: build"
    echo "0 passed, 1 failed"
    exit 1
fi

# Sanitizer settings for every process started from here on.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:suppressions=$ROOT/tests/tsan.supp"

echo "== layout (clang-format, .clang-format)"
git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror
note_result "clang-format" $?

echo "== unit tests"
rm -f build-asan/ctest.xml
(cd build-asan && ctest --output-on-failure -j "$JOBS" --output-junit ctest.xml)
note_result "unit tests" $? build-asan/ctest.xml

echo "== fuzz (short): each libFuzzer target ${FUZZ_SECONDS:-15} s, build-fuzz"
tests/fuzz/run.sh "${FUZZ_SECONDS:-15}"
note_result "fuzz (short)" $?

# ---- the private stack ----
STACK_DIR="$(mktemp -d /tmp/counter-test.XXXXXX)"
export STACK_DIR
export REDIS_PORT=${TEST_REDIS_PORT:-26380} PG_PORT=${TEST_PG_PORT:-25433}
export KAFKA_PORT=${TEST_KAFKA_PORT:-29092} KAFKA_CONTROLLER_PORT=${TEST_KAFKA_CONTROLLER_PORT:-29093}
export API_PORT=${TEST_API_PORT:-28080} KAFKA_TOPIC=counter-events KAFKA_PARTITIONS=4
export BIN_DIR="$ROOT/build-asan/bin"
export COUNTER_CONFIG="$ROOT/tests/config.test.yaml"
export LOADGEN="$ROOT/build-asan/bin/loadgen"
LOG_KEEP="$ROOT/build-asan/test-logs"

cleanup() {
    "$ROOT/deploy/stack.sh" down >/dev/null 2>&1
    rm -rf "$LOG_KEEP"
    mkdir -p "$LOG_KEEP"
    cp -r "$STACK_DIR/log/." "$LOG_KEEP/" 2>/dev/null
    rm -rf "$STACK_DIR"
}
trap cleanup EXIT

echo "== starting the test stack in $STACK_DIR"
if ! "$ROOT/deploy/stack.sh" up; then
    note_result "test stack up" 1
    for f in "$STACK_DIR"/log/*.log; do echo "--- $f"; tail -30 "$f"; done
    echo "$passed passed, $failed failed"
    exit 1
fi
set -a
# shellcheck source=/dev/null
source "$STACK_DIR/stack.env"
# shellcheck source=/dev/null
source "$STACK_DIR/counter.env"
set +a

echo "== integration tests"
# shellcheck disable=SC2086
rm -f "$ROOT/build-asan/pytest.xml"
python3 -m pytest -p no:cacheprovider -v --junitxml="$ROOT/build-asan/pytest.xml" \
    tests/integration $PYTEST_ARGS
rc=$?
note_result "integration tests" $rc "$ROOT/build-asan/pytest.xml"

echo "== contract tests (docs/openapi.yaml, schemathesis from install-deps.sh's venv)"
rm -f "$ROOT/build-asan/contract.xml"
"${TEST_VENV:-$ROOT/var/venv}/bin/python" -m pytest -p no:cacheprovider -v \
    --junitxml="$ROOT/build-asan/contract.xml" tests/contract
note_result "contract tests" $? "$ROOT/build-asan/contract.xml"

# ---- fault injection (tests/faults) ----
# Kills, freezes and overloads the stack's processes under load, then checks
# I1-I6; leaves the stack healthy for the steps after it.
echo "== fault-injection tests"
rm -rf "$ROOT/build-asan/faults.xml" "$ROOT/build-asan/faults-logs"
FAULTS_LOG_DIR="$ROOT/build-asan/faults-logs" python3 -m pytest -p no:cacheprovider -v \
    --junitxml="$ROOT/build-asan/faults.xml" tests/faults
note_result "fault tests" $? "$ROOT/build-asan/faults.xml"

# ---- ThreadSanitizer ----
echo "== building (thread sanitizer) in build-tsan"
if cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DCOUNTER_SANITIZE=thread >/dev/null &&
    cmake --build build-tsan -j "$JOBS" --target counter-api counter-persister >build-tsan/build.log 2>&1; then
    "$ROOT/deploy/stack.sh" stop counter-api >/dev/null
    "$ROOT/deploy/stack.sh" stop counter-persister >/dev/null
    BIN_DIR="$ROOT/build-tsan/bin" "$ROOT/deploy/stack.sh" start counter-api &&
        BIN_DIR="$ROOT/build-tsan/bin" "$ROOT/deploy/stack.sh" start counter-persister
    rc=$?
    if [[ $rc -eq 0 ]]; then
        python3 -m pytest -p no:cacheprovider -q tests/tsan/test_tsan_load.py
        rc=$?
    fi
    "$ROOT/deploy/stack.sh" stop counter-api >/dev/null
    "$ROOT/deploy/stack.sh" stop counter-persister >/dev/null
    if grep -l "WARNING: ThreadSanitizer" "$STACK_DIR"/log/counter-*.log; then
        grep -A30 "WARNING: ThreadSanitizer" "$STACK_DIR"/log/counter-*.log | head -80
        rc=1
    fi
    note_result "thread sanitizer load" $rc
else
    tail -50 build-tsan/build.log
    note_result "thread sanitizer build" 1
fi

echo "== sanitizer reports in service logs"
"$ROOT/deploy/stack.sh" down >/dev/null 2>&1
if grep -lE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$STACK_DIR"/log/*.log; then
    grep -hE -A40 "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$STACK_DIR"/log/*.log | head -120
    note_result "no sanitizer reports" 1
else
    note_result "no sanitizer reports" 0
fi

echo
if [[ ${#failures[@]} -gt 0 ]]; then
    echo "failed suites: ${failures[*]}"
    echo "service logs kept in $LOG_KEEP"
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
