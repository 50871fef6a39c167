#!/usr/bin/env bash
# Installs what building, testing and running the counter stack needs:
#   1. Debian packages (apt-get), only those not yet installed;
#   2. the Kafka broker's jars from Maven Central into $KAFKA_HOME/libs.
# Idempotent: a second run checks with dpkg-query and a marker file, and
# neither runs apt-get update nor asks Maven anything.
#
# Settings (environment):
#   KAFKA_HOME   where the broker's jars go (default <repo>/var/opt/kafka)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_HOME="${KAFKA_HOME:-$ROOT/var/opt/kafka}"
POM="$ROOT/deploy/kafka/pom.xml"

PACKAGES=(
    build-essential cmake pkg-config
    libevent-dev libhiredis-dev librdkafka-dev libpq-dev libjson-c-dev
    libcmocka-dev libyaml-dev
    redis-server postgresql kcat wrk
    clang libclang-rt-14-dev clang-format
    default-jre-headless maven
    python3 python3-pytest curl
)

log() { printf 'install-deps: %s\n' "$*" >&2; }

# ---------------------------------------------------------------- Debian ---

missing=()
for pkg in "${PACKAGES[@]}"; do
    # "install ok installed" is the only state in which the files are there.
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [[ $status == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    SUDO=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || { log "not root and no sudo"; exit 1; }
        SUDO=(sudo)
    fi

    # Installing redis-server or postgresql would start their system-wide
    # services (ports 6379/5432). The stack never uses them, so forbid
    # service starts for the duration of the install, unless the machine
    # already has its own policy.
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    remove_policy() {
        if ((added_policy)); then "${SUDO[@]}" rm -f "$policy"; fi
    }
    trap remove_policy EXIT

    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # Only the missing ones: apt-get leaves installed packages as they are.
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    remove_policy
    trap - EXIT
else
    log "Debian packages: all present"
fi

# ------------------------------------------------------------- Kafka jars ---

# The marker names the pom's hash: editing the pom (a new version) makes
# the next run copy the jars again.
pom_hash="$(sha256sum "$POM" | cut -c1-16)"
marker="$KAFKA_HOME/.installed-$pom_hash"
if [[ -f $marker ]]; then
    log "Kafka jars: present in $KAFKA_HOME/libs"
    exit 0
fi

log "Kafka jars: copying from Maven Central into $KAFKA_HOME/libs"
mkdir -p "$KAFKA_HOME"
staging="$KAFKA_HOME/libs.new"
rm -rf "$staging"
# -f on the pom: no copy of the pom and no target/ folder are needed.
if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$staging"; then
    log "mvn could not fetch the Kafka jars (is Maven Central reachable?)"
    rm -rf "$staging"
    exit 1
fi
# Swap in whole, so a broken download never leaves a half folder in use.
rm -rf "$KAFKA_HOME/libs" "$KAFKA_HOME"/.installed-*
mv "$staging" "$KAFKA_HOME/libs"
cp "$POM" "$KAFKA_HOME/pom.xml"
touch "$marker"
log "Kafka jars: $(find "$KAFKA_HOME/libs" -name '*.jar' | wc -l) jars installed"
