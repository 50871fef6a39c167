#!/usr/bin/env bash
# Installs what the stack needs, in two sets:
#   deploy/install-deps.sh [run]   building and running the service
#                                  (`make run`, `make up`, `make build`):
#                                  the compiler, the libraries and their
#                                  headers, Redis, PostgreSQL, kcat, a JRE
#                                  and the Kafka broker's jars (Maven);
#   deploy/install-deps.sh test    that, plus what the test suites and the
#                                  benchmarks use (`make test`, `make
#                                  bench`): cmocka, clang with its sanitizer
#                                  runtimes, clang-format, pytest, Chromium
#                                  and Node.js for the dashboard's browser
#                                  test, Prometheus (promtool), wrk, the
#                                  contract test's Python packages (pinned,
#                                  from PyPI, in a venv) and playwright-core
#                                  (pinned, from npm).
# Debian packages only where missing (apt-get); idempotent: a second run
# checks with dpkg-query and marker files, and neither runs apt-get update
# nor asks PyPI, npm or Maven anything.
#
# Settings (environment):
#   KAFKA_HOME   where the broker's jars go (default <repo>/var/opt/kafka)
#   TEST_VENV    the contract test's venv (default <repo>/var/venv)
#   NODE_TOOLS   the browser test's npm prefix (default <repo>/var/node)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_HOME="${KAFKA_HOME:-$ROOT/var/opt/kafka}"
POM="$ROOT/deploy/kafka/pom.xml"
SET="${1:-run}"
case "$SET" in
run | test) ;;
*)
    echo "usage: deploy/install-deps.sh [run|test]" >&2
    exit 2
    ;;
esac

PACKAGES=(
    build-essential cmake pkg-config
    libevent-dev libhiredis-dev librdkafka-dev libpq-dev libjson-c-dev
    libyaml-dev libjemalloc-dev
    redis-server postgresql kcat curl
    default-jre-headless maven
)
if [[ $SET == test ]]; then
    PACKAGES+=(
        libcmocka-dev wrk
        clang libclang-rt-14-dev clang-format
        python3 python3-pytest python3-venv python3-yaml
        chromium
        prometheus
    )
    # The dashboard's browser test (tests/dashboard) needs Node.js and
    # npm. A machine that has them keeps its own: NodeSource's nodejs
    # package ships npm and conflicts with Debian's npm package.
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        PACKAGES+=(nodejs npm)
    fi
fi

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

# ------------------------------------------------------ contract test venv ---

if [[ $SET == test ]]; then

# Debian's pip refuses to install into the system Python (PEP 668), and the
# integration tests' pytest must stay Debian's: schemathesis and its own
# pytest go into a venv of Debian's python3. Like the jars below, a marker
# names the requirements' hash, and the venv is rebuilt whole when they
# change (a venv cannot be moved into place: its scripts name its path).
TEST_VENV="${TEST_VENV:-$ROOT/var/venv}"
REQS="$ROOT/tests/contract/requirements.txt"
reqs_hash="$(sha256sum "$REQS" | cut -c1-16)"
if [[ -f $TEST_VENV/.installed-$reqs_hash && -x $TEST_VENV/bin/python ]]; then
    log "contract test venv: present in $TEST_VENV"
else
    log "contract test venv: installing tests/contract/requirements.txt into $TEST_VENV"
    rm -rf "$TEST_VENV"
    mkdir -p "$(dirname "$TEST_VENV")"
    if ! /usr/bin/python3 -m venv "$TEST_VENV" ||
        ! "$TEST_VENV/bin/python" -m pip install -q --disable-pip-version-check \
            --no-input --require-virtualenv -r "$REQS"; then
        log "could not install the contract test's packages (is PyPI reachable?)"
        rm -rf "$TEST_VENV"
        exit 1
    fi
    touch "$TEST_VENV/.installed-$reqs_hash"
fi

# ------------------------------------------------- dashboard browser test ---

# tests/dashboard/check.mjs drives Debian's chromium (above) through
# playwright-core, which has no dependencies of its own; it never downloads
# a browser (the machine reaches no browser download site anyway). The
# marker names the pinned version.
PLAYWRIGHT_VERSION=1.65.1
NODE_TOOLS="${NODE_TOOLS:-$ROOT/var/node}"
if [[ -f $NODE_TOOLS/.installed-playwright-core-$PLAYWRIGHT_VERSION &&
    -f $NODE_TOOLS/node_modules/playwright-core/package.json ]]; then
    log "playwright-core: present in $NODE_TOOLS"
else
    log "playwright-core: installing $PLAYWRIGHT_VERSION into $NODE_TOOLS"
    rm -rf "$NODE_TOOLS"
    mkdir -p "$NODE_TOOLS"
    if ! PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$NODE_TOOLS" \
        --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
        "playwright-core@$PLAYWRIGHT_VERSION"; then
        log "npm could not install playwright-core (is the npm registry reachable?)"
        rm -rf "$NODE_TOOLS"
        exit 1
    fi
    touch "$NODE_TOOLS/.installed-playwright-core-$PLAYWRIGHT_VERSION"
fi

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
