# The counter service's image: counter-api, counter-persister,
# counter-applier, counterctl and counter-ingest on Debian 12, as non-root.
# One image, several containers (deploy/docker-compose.yml picks the
# command). Build from the repository root:
#   docker build -t counter:local .
# Run (every COUNTER_* variable of deploy/config.example.yaml applies):
#   docker run --rm -p 8080:8080 -e COUNTER_REDIS_ADDR=redis.example:6379 \
#     -e COUNTER_POSTGRES_HOST=… -e COUNTER_KAFKA_BROKERS=… counter:local
# or the whole stack: docker compose -f deploy/docker-compose.yml up -d

# ---- build: the -dev packages of deploy/install-deps.sh's run set ----
FROM debian:12 AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        build-essential cmake pkg-config \
        libevent-dev libhiredis-dev librdkafka-dev libpq-dev libjson-c-dev \
        libyaml-dev libjemalloc-dev \
    && rm -rf /var/lib/apt/lists/*
# Without cmocka CMakeLists.txt leaves the unit tests out.
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    && cmake --build build -j"$(nproc)" --target \
        counter-api counter-persister counter-applier counterctl counter-ingest

# ---- runtime: the shared libraries those programs link, and tzdata ----
FROM debian:12-slim
# tzdata: every process resolves its time zones (UTC included) from
# /usr/share/zoneinfo (common/tz.c) and stops at start without it.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        libevent-2.1-7 libhiredis0.14 librdkafka1 libpq5 libjson-c5 libyaml-0-2 \
        libjemalloc2 \
        ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin counter
COPY --from=build /src/build/bin/counter-api /src/build/bin/counter-persister \
    /src/build/bin/counter-applier /src/build/bin/counterctl \
    /src/build/bin/counter-ingest /usr/local/bin/
# counterctl migrate reads the numbered migrations from COUNTER_SQL_DIR.
COPY sql /usr/local/share/counter/sql
COPY deploy/config.example.yaml /etc/counter/config.yaml
COPY deploy/docker/healthcheck.sh /usr/local/bin/counter-healthcheck
ENV COUNTER_CONFIG=/etc/counter/config.yaml \
    COUNTER_SQL_DIR=/usr/local/share/counter/sql
USER counter
EXPOSE 8080
# SIGTERM drains (the api: up to 30 s, then a short Kafka flush); give
# containers a stop timeout of 45 s (stop_grace_period in compose,
# docker stop -t 45).
STOPSIGNAL SIGTERM
# No HEALTHCHECK here: the same image runs the persister, the applier and
# one-shot counterctl jobs; compose sets `counter-healthcheck` on the api.
CMD ["counter-api"]
