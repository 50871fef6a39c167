#!/usr/bin/env bash
# The replicated suite alone (`make test-replicated`; tests/run.sh runs it
# after its other suites): builds the AddressSanitizer+UBSan tree, starts a
# private stack of three Kafka nodes and a PostgreSQL primary with a
# streaming standby (KAFKA_NODES=3 PG_STANDBY=1) in a temporary directory,
# runs pytest tests/replicated against it (the scenarios share the stack and
# leave it whole), stops it, and fails on a sanitizer report in its logs.
# Ends with "N passed, M failed"; exits non-zero on any failure.
#
# Settings (environment):
#   REPL_BUILD [build-asan]      the build tree (configured with ASan)
#   REPL_STACK_DIR [a new /tmp/counter-repl.XXXXXX]  the stack's folder
#                                (destroyed at the end)
#   REPL_PORT_BASE [27400]       Redis +0, PostgreSQL +1 (standby +11),
#                                Kafka nodes +2/+3, +12/+13, +22/+23, api +4
#                                (+5, +6 the persister's and applier's
#                                metrics, +7 the tests' second api)
#   REPL_MESSAGE_TIMEOUT_MS [45000]  kafka.message_timeout_ms of the stack:
#                                longer than the scenarios' outages (a node
#                                restarts in 13-30 s here), as the default
#                                300 s is in production (see below); short
#                                enough that the resolver (after 57 s) acts
#                                before the checker's 60 s without progress
#   REPL_PYTEST_ARGS             more pytest arguments (-k test_f_ ...)
#   REPL_LOG_DIR [$REPL_BUILD/replicated-logs]  request logs of each test
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
BUILD="${REPL_BUILD:-build-asan}"
BASE="${REPL_PORT_BASE:-27400}"

"$ROOT/deploy/install-deps.sh" test >/dev/null || { echo "== FAIL: install-deps"; echo "0 passed, 1 failed"; exit 1; }
# shellcheck source=SCRIPTDIR/../lib.sh
source "$ROOT/tests/lib.sh"
build_asan "$BUILD"

private_stack "${REPL_STACK_DIR:-$(mktemp -d /tmp/counter-repl.XXXXXX)}" "$ROOT/$BUILD/bin" \
    "$ROOT/$BUILD/replicated-stack-logs" "$BASE" "$((BASE + 1))" "$((BASE + 2))" \
    "$((BASE + 3))" "$((BASE + 4))"
# (set, not inherited: tests/run.sh has another stack's settings exported)
export KAFKA_NODES=3 PG_STANDBY=1 PG_STANDBY_PORT=$((BASE + 11)) PG_SYNC=0
unset KAFKA_HEAP
# tests/config.test.yaml gives up on an event after 20 s so that the
# single-node suites see the resolver at work. Here two nodes stay down for
# about 20 s, and an event given up while its partition's replicas are out
# of sync is what docs/scaling.md ("Outages longer than
# kafka.message_timeout_ms") describes: such outages are kept out of these
# scenarios. The resolver then waits message_timeout + 12 s at least.
export COUNTER_KAFKA_MESSAGE_TIMEOUT_MS="${REPL_MESSAGE_TIMEOUT_MS:-45000}"
export FAULTS_LOG_DIR="${REPL_LOG_DIR:-$ROOT/$BUILD/replicated-logs}"
t0=$SECONDS
stack_up || { echo "0 passed, 1 failed"; exit 1; }
echo "== stack up in $((SECONDS - t0))s"

echo "== replicated tests (3 Kafka nodes, PostgreSQL primary and standby)"
rm -rf "$FAULTS_LOG_DIR"
# shellcheck disable=SC2086
pytest_suite "$ROOT/$BUILD/replicated.xml" tests/replicated ${REPL_PYTEST_ARGS:-}

# Leaks are reported when a process exits: stop them, then look.
"$ROOT/deploy/stack.sh" down >/dev/null 2>&1
if grep -lE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$STACK_DIR"/log/*.log; then
    grep -hE -A40 "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$STACK_DIR"/log/*.log | head -120
    failed=$((failed + 1))
    rc=1
fi
echo "== replicated suite took $((SECONDS - t0))s"
[[ $failed -ne 0 ]] && echo "service logs kept in $STACK_LOG_KEEP; request logs in $FAULTS_LOG_DIR"
echo "$passed passed, $failed failed"
[[ $rc -eq 0 ]]
