# shellcheck shell=bash
# Shared by tests/run.sh (every suite) and tests/faults/run.sh (the fault
# suite alone): the sanitizer build, a private stack, JUnit counting.
# Sourced with ROOT set and the working directory at ROOT.

# Sanitizer settings for every process started from here on.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:suppressions=$ROOT/tests/tsan.supp"

# junit_counts FILE: prints "passed failed" for the cases of a JUnit XML
# file (a skipped case counts as failed: nothing may be skipped); "0 0"
# when the file is missing or unreadable.
junit_counts() {
    python3 - "$1" <<'PY'
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
}

# build_asan DIR: configures and builds the AddressSanitizer+UBSan tree in
# DIR; on failure prints the end of its log and "0 passed, 1 failed", and
# exits 1.
build_asan() {
    echo "== building (address,undefined sanitizers) in $1"
    mkdir -p "$1"
    if ! { cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=Debug -DCOUNTER_SANITIZE=address >/dev/null &&
        cmake --build "$1" -j "$(nproc)" >"$1/build.log" 2>&1; }; then
        tail -50 "$1/build.log"
        echo "== FAIL: build"
        echo "0 passed, 1 failed"
        exit 1
    fi
}

# private_stack DIR BIN_DIR LOG_KEEP REDIS PG KAFKA KAFKA_CONTROLLER API:
# the settings of a stack of deploy/stack.sh in DIR on these ports, running
# the services of BIN_DIR with tests/config.test.yaml. At exit the stack is
# stopped, its logs copied to LOG_KEEP, and everything it made (DIR, and a
# PostgreSQL cluster it had to put under /var/tmp) deleted.
private_stack() {
    export STACK_DIR="$1" BIN_DIR="$2"
    STACK_LOG_KEEP="$3"
    export REDIS_PORT="$4" PG_PORT="$5" KAFKA_PORT="$6" KAFKA_CONTROLLER_PORT="$7"
    export API_PORT="$8" KAFKA_TOPIC=counter-events KAFKA_PARTITIONS=4
    export KAFKA_INPUT_TOPIC=counter-ingest
    export COUNTER_CONFIG="$ROOT/tests/config.test.yaml"
    export LOADGEN="$BIN_DIR/loadgen"
    trap private_stack_cleanup EXIT
}

private_stack_cleanup() {
    "$ROOT/deploy/stack.sh" down >/dev/null 2>&1
    rm -rf "$STACK_LOG_KEEP"
    mkdir -p "$STACK_LOG_KEEP"
    cp -r "$STACK_DIR/log/." "$STACK_LOG_KEEP/" 2>/dev/null
    "$ROOT/deploy/stack.sh" destroy >/dev/null 2>&1
    rm -rf "$STACK_DIR"
}

# stack_up: starts the private stack and loads its settings (stack.env,
# counter.env) into the environment; on failure prints the end of each
# log and returns 1.
stack_up() {
    echo "== starting the test stack in $STACK_DIR"
    if ! "$ROOT/deploy/stack.sh" up; then
        for f in "$STACK_DIR"/log/*.log; do
            echo "--- $f"
            tail -30 "$f"
        done
        return 1
    fi
    set -a
    # shellcheck source=/dev/null
    source "$STACK_DIR/stack.env"
    # shellcheck source=/dev/null
    source "$STACK_DIR/counter.env"
    set +a
}

# pytest_suite XML ARGS...: pytest (verbose, every outcome and duration
# listed) with a JUnit file XML; sets rc, passed and failed (a run that
# failed without a failing case, a crash or a collection error, counts one).
pytest_suite() {
    local xml=$1
    shift
    rm -f "$xml"
    python3 -m pytest -p no:cacheprovider -v -rA --durations=0 --junitxml="$xml" "$@"
    rc=$?
    read -r passed failed < <(junit_counts "$xml")
    if [[ $rc -ne 0 && $failed -eq 0 ]]; then failed=1; fi
}
