#!/usr/bin/env bash
# A few tests on a private stack, for working on one thing:
#   tests/dev.sh tests/integration/test_api.py -k value
# builds the AddressSanitizer+UBSan tree (DEV_BUILD, default build-asan),
# starts a private stack in a temporary directory on ports DEV_PORT_BASE+n
# (default 30000: Redis +0, PostgreSQL +1, Kafka +2/+3, api +4), runs
# pytest with the arguments given, stops and deletes the stack.
# Two checkouts on one machine run side by side with different bases.
# Not what CI runs: that is tests/run.sh (`make test`).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
BUILD="${DEV_BUILD:-build-asan}"
BASE="${DEV_PORT_BASE:-30000}"

"$ROOT/deploy/install-deps.sh" test || exit 1
# shellcheck source=SCRIPTDIR/lib.sh
source "$ROOT/tests/lib.sh"
build_asan "$BUILD"

private_stack "$(mktemp -d /tmp/counter-dev.XXXXXX)" "$ROOT/$BUILD/bin" \
    "$ROOT/$BUILD/dev-stack-logs" "$BASE" "$((BASE + 1))" "$((BASE + 2))" \
    "$((BASE + 3))" "$((BASE + 4))"
export FAULTS_LOG_DIR="${FAULTS_LOG_DIR:-$ROOT/$BUILD/dev-faults-logs}"
stack_up || exit 1

python3 -m pytest -p no:cacheprovider -v "$@"
rc=$?
[[ $rc -ne 0 ]] && echo "service logs kept in $STACK_LOG_KEEP"
exit $rc
