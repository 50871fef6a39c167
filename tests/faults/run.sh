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

"$ROOT/deploy/install-deps.sh" test || { echo "== FAIL: install-deps"; echo "0 passed, 1 failed"; exit 1; }
# shellcheck source=SCRIPTDIR/../lib.sh
source "$ROOT/tests/lib.sh"
build_asan "$BUILD"

private_stack "${FAULTS_STACK_DIR:-$(mktemp -d /tmp/counter-faults.XXXXXX)}" "$ROOT/$BUILD/bin" \
    "$ROOT/$BUILD/faults-stack-logs" "${FAULTS_REDIS_PORT:-26480}" "${FAULTS_PG_PORT:-25533}" \
    "${FAULTS_KAFKA_PORT:-29292}" "${FAULTS_KAFKA_CONTROLLER_PORT:-29293}" "${FAULTS_API_PORT:-28180}"
export FAULTS_LOG_DIR="${FAULTS_LOG_DIR:-$ROOT/$BUILD/faults-logs}"
stack_up || { echo "0 passed, 1 failed"; exit 1; }

echo "== fault-injection tests"
rm -rf "$FAULTS_LOG_DIR"
xml="$ROOT/$BUILD/faults.xml"
rm -f "$xml"
# shellcheck disable=SC2086
python3 -m pytest -p no:cacheprovider -v -rA --durations=0 --junitxml="$xml" \
    tests/faults ${FAULTS_PYTEST_ARGS:-}
rc=$?
read -r passed failed < <(junit_counts "$xml")
[[ $rc -ne 0 && $failed -eq 0 ]] && failed=1
[[ $failed -ne 0 ]] && echo "service logs kept in $STACK_LOG_KEEP; request logs in $FAULTS_LOG_DIR"
echo "$passed passed, $failed failed"
[[ $rc -eq 0 ]]
