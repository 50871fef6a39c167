#!/usr/bin/env bash
# Every suite, as `make test` and CI run it:
#   1. unit tests (cmocka, under ctest) of an AddressSanitizer+UBSan build,
#      and the alert rules' (promtool test rules);
#   2. integration, concurrency and crash tests (pytest) against a private
#      stack (Redis, PostgreSQL, Kafka on their own ports in a temporary
#      directory) running the sanitizer build of the services; then the
#      contract, adversarial and fault tests on the same stack;
#   3. a ThreadSanitizer build of the services (librdkafka's threads call
#      back into our code) under a short concurrent load;
#   4. the services' logs must hold no sanitizer report.
# Ends with one line "N passed, M failed"; exits non-zero on any failure.
# A missing service is a failure, never a skip.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
JOBS="$(nproc)"
PYTEST_ARGS=${PYTEST_ARGS:-}

passed=0
failed=0
failures=()
note_result() { # name rc [junit.xml]: count the file's cases, else one
    local p=1 f=0
    if [[ -n ${3:-} && -s $3 ]]; then
        read -r p f < <(junit_counts "$3")
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

"$ROOT/deploy/install-deps.sh" test || { echo "== FAIL: install-deps"; echo "0 passed, 1 failed"; exit 1; }
# shellcheck source=SCRIPTDIR/lib.sh
source "$ROOT/tests/lib.sh"

build_asan build-asan

echo "== layout (clang-format, .clang-format)"
git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror
note_result "clang-format" $?

echo "== unit tests"
rm -f build-asan/ctest.xml
(cd build-asan && ctest --output-on-failure -j "$JOBS" --output-junit ctest.xml)
note_result "unit tests" $? build-asan/ctest.xml

echo "== alert rules (promtool: deploy/prometheus/, tests/prometheus/rules_test.yml)"
promtool check config deploy/prometheus/prometheus.yml &&
    promtool test rules tests/prometheus/rules_test.yml
note_result "alert rules" $?

echo "== fuzz (short): each libFuzzer target ${FUZZ_SECONDS:-15} s, build-fuzz"
tests/fuzz/run.sh "${FUZZ_SECONDS:-15}"
note_result "fuzz (short)" $?

# ---- the private stack ----
private_stack "$(mktemp -d /tmp/counter-test.XXXXXX)" "$ROOT/build-asan/bin" \
    "$ROOT/build-asan/test-logs" "${TEST_REDIS_PORT:-26380}" "${TEST_PG_PORT:-25433}" \
    "${TEST_KAFKA_PORT:-29092}" "${TEST_KAFKA_CONTROLLER_PORT:-29093}" "${TEST_API_PORT:-28080}"
if ! stack_up; then
    note_result "test stack up" 1
    echo "$passed passed, $failed failed"
    exit 1
fi

echo "== integration tests"
rm -f "$ROOT/build-asan/pytest.xml"
# shellcheck disable=SC2086 # PYTEST_ARGS is a list of arguments
python3 -m pytest -p no:cacheprovider -v --junitxml="$ROOT/build-asan/pytest.xml" \
    tests/integration $PYTEST_ARGS
rc=$?
note_result "integration tests" $rc "$ROOT/build-asan/pytest.xml"

echo "== contract tests (docs/openapi.yaml, schemathesis from install-deps.sh's venv)"
rm -f "$ROOT/build-asan/contract.xml"
"${TEST_VENV:-$ROOT/var/venv}/bin/python" -m pytest -p no:cacheprovider -v \
    --junitxml="$ROOT/build-asan/contract.xml" tests/contract
note_result "contract tests" $? "$ROOT/build-asan/contract.xml"

# Sequences of ordinary requests meant to hurt; the integration tests'
# fixtures (tests/adversarial/conftest.py loads them).
echo "== adversarial tests (tests/adversarial)"
rm -f "$ROOT/build-asan/adversarial.xml"
python3 -m pytest -p no:cacheprovider -v --junitxml="$ROOT/build-asan/adversarial.xml" \
    tests/adversarial
note_result "adversarial tests" $? "$ROOT/build-asan/adversarial.xml"

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
    echo "service logs kept in $STACK_LOG_KEEP"
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
