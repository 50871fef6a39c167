#!/usr/bin/env bash
# Foreground mode for `make run` (which builds first): installs what is
# missing, brings the stack up, shows how to reach it, and waits. Ctrl-C
# (SIGINT) or SIGTERM brings the whole stack down again and exits 0.
# Settings: the environment variables of deploy/stack.sh.
set -euo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

"$DEPLOY/install-deps.sh"

sleeper=""
shutdown() {
    trap - INT TERM
    [[ -z $sleeper ]] || kill "$sleeper" 2>/dev/null || true
    echo
    echo "run: stopping the stack"
    "$DEPLOY/stack.sh" down
    exit 0
}
# Set before `up`: a Ctrl-C while it starts things still stops them all.
# The services run in sessions of their own, so only this trap stops them.
trap shutdown INT TERM

if ! "$DEPLOY/stack.sh" up; then
    echo "run: stack.sh up failed; stopping what started (logs stay in the stack's log/)" >&2
    trap - INT TERM
    "$DEPLOY/stack.sh" down || true
    exit 1
fi

# The settings `up` used, as written by it.
env_file="$("$DEPLOY/stack.sh" env)"
api_url="$(sed -n 's/^API_URL=//p' <<<"$env_file")"
cat <<EOF

The counter stack is up.
  API:       $api_url
  try:       curl -s -X POST -d '{"value": 1}' $api_url/api/v1/counter/games_played/increment
             curl -s $api_url/api/v1/counter/games_played
  status:    $DEPLOY/stack.sh status
  settings:
    ${env_file//$'\n'/$'\n'    }

Press Ctrl-C to stop everything.
EOF

# wait (not a foreground sleep) returns as soon as a trapped signal comes.
while true; do
    sleep 86400 &
    sleeper=$!
    wait "$sleeper" || true
done
