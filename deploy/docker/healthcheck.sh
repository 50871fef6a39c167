#!/bin/bash
# counter-healthcheck [HOST [PORT]]: exit 0 if counter-api answers
# GET /healthz with 200, else 1. For Docker's HEALTHCHECK and compose's
# healthcheck: the runtime image has neither curl nor wget, and bash's
# /dev/tcp needs nothing more. HOST defaults to 127.0.0.1, PORT to
# $COUNTER_SERVER_PORT or 8080. Says why on stdout when it fails (docker
# inspect shows it).
# /healthz answers 200 whenever the api's event loop runs (its body says
# whether Redis and Kafka are reachable): this is a liveness check.
set -u
host="${1:-127.0.0.1}"
port="${2:-${COUNTER_SERVER_PORT:-8080}}"
{ exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null ||
    { echo "nothing listens on $host:$port"; exit 1; }
printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3 || exit 1
IFS= read -r -t 5 status <&3 || { echo "no answer from $host:$port"; exit 1; }
status="${status%$'\r'}"
[[ $status =~ ^HTTP/1\.[01]\ 200\  ]] || { echo "$status"; exit 1; }
