# Thin front door: the build is CMake's, the stack is deploy/stack.sh's.
# `make run` and `make test` work on a fresh Debian 12 machine as root.

BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)

.PHONY: all deps test-deps build run up down status test test-faults test-unit fuzz \
        migrate-up migrate-down format format-check clean

all: build

# What building and running the service needs (compiler, libraries,
# Redis, PostgreSQL, a JRE and the Kafka jars); test-deps adds what the
# test suites and the benchmarks use (deploy/install-deps.sh says which).
deps:
	@deploy/install-deps.sh run

test-deps:
	@deploy/install-deps.sh test

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The service and its whole stack in the foreground; Ctrl-C stops it all.
run: build
	@deploy/run.sh

# The same stack in the background (idempotent), and its teardown.
up: build
	@deploy/stack.sh up

down:
	@deploy/stack.sh down

status:
	@deploy/stack.sh status

# Every suite: unit tests and the integration, concurrency and crash tests
# against a private stack, all under AddressSanitizer + UBSan.
test: test-deps
	@tests/run.sh

# The fault-injection suite alone (tests/faults), on its own private stack:
# real processes killed, frozen and overloaded under load, then I1-I6.
test-faults: test-deps
	@tests/faults/run.sh

test-unit: test-deps build
	cd $(BUILD) && ctest --output-on-failure

# Every libFuzzer target (tests/fuzz) for FUZZ_SECONDS each, clang + ASan +
# UBSan in build-fuzz; findings go to build-fuzz/fuzz/, never to the
# committed corpus. `make test` runs the same for 15 s each.
FUZZ_SECONDS ?= 300
fuzz: test-deps
	@tests/fuzz/run.sh $(FUZZ_SECONDS)

migrate-up: build
	$(BUILD)/bin/counterctl migrate up

migrate-down: build
	$(BUILD)/bin/counterctl migrate down

format:
	git ls-files '*.c' '*.h' | xargs clang-format -i

format-check:
	git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz

# Benchmarks (not part of `make test`): counter-api beside webdis and a bare
# evhttp server, persister drain rate, end-to-end lag at a fixed open-loop
# rate, peak RSS; see docs/performance.md. bench-profile: counter-api's
# instructions per request under callgrind (BENCH_PROFILE=1 adds it to bench).
.PHONY: bench bench-profile
bench: test-deps build
	@BUILD=$(BUILD) bench/run.sh

bench-profile: test-deps build
	@BUILD=$(BUILD) bench/profile.sh
