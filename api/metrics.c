/*
 * metrics.c - see metrics.h. A request is found again at its reply by its
 * pointer, in a fixed open-addressing table: no allocation per request,
 * and no reliance on evhttp's completion callback, which a client that
 * hung up never triggers. Every family is rendered by one call below, so
 * each is declared (# HELP, # TYPE) once, before its samples.
 */
#include "api/metrics.h"

#include "common/timeutil.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Room for several times server.max_inflight (default 10000); a full
 * probe run only stops timing new requests. */
enum { SLOTS = 1 << 16 };

typedef struct pending {
    const struct evhttp_request *req; /* NULL: free */
    int64_t t0_us;
    int ep;
} pending;

static pending table[SLOTS];

static const char *const route_names[API_EP_COUNT] = {
    [API_EP_NONE] = "unrouted",
    [API_EP_COUNTER_GET] = "counter_get",
    [API_EP_COUNTER_INCR] = "counter_increment",
    [API_EP_COUNTER_DECR] = "counter_decrement",
    [API_EP_COUNTER_SET] = "counter_set",
    [API_EP_HISTORY] = "counter_history",
    [API_EP_COUNTERS_GET] = "counters_get",
    [API_EP_DEFINITIONS] = "definitions",
    [API_EP_HEALTH] = "healthz",
    [API_EP_METRICS] = "metrics",
    [API_EP_READY] = "readyz",
    [API_EP_NAMES] = "counter_names",
    [API_EP_DASHBOARD] = "dashboard",
    [API_EP_UI_ASSET] = "dashboard_asset",
};

static const int statuses[] = {200, 202, 400, 401, 403, 404, 405,
                               409, 413, 422, 429, 500, 503};
enum { N_STATUS = sizeof(statuses) / sizeof(statuses[0]) };

/* The codes of the api's error answers (README.md's table, docs/http.md),
 * each counted from 0 so that a rate is there before the first one. */
static const char *const error_codes[] = {
    "bad_request",
    "body_too_large",
    "expectation_failed",
    "forbidden",
    "headers_too_large",
    "http_version_not_supported",
    "idempotency_key_reused",
    "in_future",
    "indeterminate",
    "internal",
    "invalid_field",
    "invalid_header",
    "invalid_json",
    "invalid_name",
    "invalid_operation",
    "invalid_query",
    "kafka_unavailable",
    "length_required",
    "method_not_allowed",
    "not_found",
    "not_implemented",
    "overloaded",
    "redis_error",
    "redis_unavailable",
    "request_in_progress",
    "shutting_down",
    "too_late",
    "unauthorized",
    "unavailable",
    "unknown_field",
    "uri_too_long",
    "value_out_of_range",
};
enum { N_CODES = sizeof(error_codes) / sizeof(error_codes[0]) };

static uint64_t requests[API_EP_COUNT][N_STATUS + 1]; /* last: other */
static uint64_t errors[N_CODES + 1];                  /* last: other */
static ctr_histogram latency[API_EP_COUNT];
static ctr_histogram redis_rtt, kafka_rtt;
static uint64_t redis_failed, kafka_failed;
static int initialised;

static void init(void)
{
    for (int i = 0; i < API_EP_COUNT; i++)
        ctr_hist_init(&latency[i], ctr_latency_bounds);
    ctr_hist_init(&redis_rtt, ctr_latency_bounds);
    ctr_hist_init(&kafka_rtt, ctr_latency_bounds);
    initialised = 1;
}

static size_t slot_of(const struct evhttp_request *req)
{
    uintptr_t h = (uintptr_t)req;
    h ^= h >> 17;
    h *= 0x9e3779b97f4a7c15ULL;
    return (size_t)(h >> 20) & (SLOTS - 1);
}

void api_metrics_begin(struct evhttp_request *req, enum api_endpoint ep)
{
    if (!initialised)
        init();
    size_t i = slot_of(req);
    for (int probe = 0; probe < 64; probe++, i = (i + 1) & (SLOTS - 1))
        if (table[i].req == NULL) {
            table[i].req = req;
            table[i].t0_us = ctr_time_mono_us();
            table[i].ep = ep;
            return;
        }
}

/* Removes slot i, moving later entries of its probe run back so that
 * lookups never stop at a hole. */
static void remove_at(size_t i)
{
    size_t j = i;
    table[i].req = NULL;
    for (;;) {
        j = (j + 1) & (SLOTS - 1);
        if (table[j].req == NULL)
            return;
        size_t home = slot_of(table[j].req);
        /* j's entry may fill the hole at i if its home is not in (i, j] */
        if ((i <= j) ? (home <= i || home > j) : (home <= i && home > j)) {
            table[i] = table[j];
            table[j].req = NULL;
            i = j;
        }
    }
}

void api_metrics_end(struct evhttp_request *req, int status)
{
    size_t i = slot_of(req);
    for (int probe = 0; probe < 64; probe++, i = (i + 1) & (SLOTS - 1)) {
        if (table[i].req == NULL)
            return;
        if (table[i].req != req)
            continue;
        int ep = table[i].ep, s = 0;
        while (s < N_STATUS && statuses[s] != status)
            s++;
        requests[ep][s]++;
        ctr_hist_observe(&latency[ep],
                         (double)(ctr_time_mono_us() - table[i].t0_us) / 1e6);
        remove_at(i);
        return;
    }
}

void api_metrics_error(const char *code)
{
    size_t i = 0;
    while (i < N_CODES && strcmp(error_codes[i], code) != 0)
        i++;
    errors[i]++;
}

void api_metrics_redis(double seconds, int failed)
{
    if (!initialised)
        init();
    ctr_hist_observe(&redis_rtt, seconds);
    redis_failed += failed != 0;
}

void api_metrics_kafka(double seconds, int failed)
{
    if (!initialised)
        init();
    ctr_hist_observe(&kafka_rtt, seconds);
    kafka_failed += failed != 0;
}

/* A family whose one sample has no labels. */
static void render_one(ctr_strbuf *b, const char *name, const char *type,
                       const char *help, unsigned long long v)
{
    ctr_metric_help(b, name, type, help);
    ctr_strbuf_printf(b, "%s %llu\n", name, v);
}

typedef struct labelled {
    const char *label;
    uint64_t v;
} labelled;

/* A family of samples that differ in one label. */
static void render_by(ctr_strbuf *b, const char *name, const char *type,
                      const char *help, const char *label, const labelled *s,
                      size_t n)
{
    ctr_metric_help(b, name, type, help);
    for (size_t i = 0; i < n; i++)
        ctr_strbuf_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, s[i].label,
                          (unsigned long long)s[i].v);
}

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static void render_requests(ctr_strbuf *b)
{
    char labels[64], status[8];
    ctr_metric_help(b, "counter_api_http_requests_total", "counter",
                    "HTTP requests answered, by route and status.");
    for (int ep = 0; ep < API_EP_COUNT; ep++)
        for (int s = 0; s <= N_STATUS; s++) {
            if (requests[ep][s] == 0)
                continue;
            if (s < N_STATUS)
                snprintf(status, sizeof(status), "%d", statuses[s]);
            else
                snprintf(status, sizeof(status), "other");
            ctr_strbuf_printf(b,
                              "counter_api_http_requests_total{route=\"%s\","
                              "status=\"%s\"} %llu\n",
                              route_names[ep], status,
                              (unsigned long long)requests[ep][s]);
        }
    ctr_metric_help(b, "counter_api_http_request_duration_seconds", "histogram",
                    "From routing to the reply, by route (writes: Redis and "
                    "Kafka confirmed).");
    for (int ep = 0; ep < API_EP_COUNT; ep++) {
        if (latency[ep].n == 0)
            continue;
        snprintf(labels, sizeof(labels), "route=\"%s\"", route_names[ep]);
        ctr_hist_render(b, "counter_api_http_request_duration_seconds", labels,
                        &latency[ep]);
    }
    ctr_metric_help(b, "counter_api_errors_total", "counter",
                    "Error answers by their code (the body's error.code; a "
                    "409 out_of_bounds is counted as a write outcome).");
    for (size_t i = 0; i <= N_CODES; i++)
        ctr_strbuf_printf(b, "counter_api_errors_total{code=\"%s\"} %llu\n",
                          i < N_CODES ? error_codes[i] : "other",
                          (unsigned long long)errors[i]);
}

/* Long on purpose: every family in the order /metrics shows it. */
void api_metrics_render(const api_metrics *m, const api_metrics_gauges *g,
                        ctr_strbuf *b)
{
    if (!initialised)
        init();
    render_requests(b);
    const labelled writes[] = {
        {"applied", m->writes_applied},
        {"duplicate", m->writes_duplicate},
        {"bound_refused", m->writes_bound_refused},
        {"clamped", m->writes_clamped},
        {"unavailable", m->writes_unavailable},
        {"indeterminate", m->writes_indeterminate},
        {"undone", m->writes_undone},
        {"via_log", m->writes_via_log},
        {"replayed", m->writes_replayed},
        {"late", m->writes_late},
        {"too_late", m->writes_too_late},
        {"rejected", m->rejected_4xx},
    };
    render_by(b, "counter_api_writes_total", "counter",
              "Writes by outcome (rejected: any request refused with a 4xx).",
              "outcome", writes, N_OF(writes));
    const labelled reads[] = {
        {"redis", m->reads_redis},
        {"postgres", m->reads_postgres},
        {"failed", m->reads_failed},
    };
    render_by(b, "counter_api_reads_total", "counter",
              "Reads by where they were answered from.", "source", reads,
              N_OF(reads));
    const labelled refused[] = {
        {"unauthorized", m->unauthorized},
        {"forbidden", m->forbidden},
        {"overloaded", m->overloaded},
    };
    render_by(b, "counter_api_refused_total", "counter",
              "Requests refused before any work: no or unknown token, a "
              "read token on a write, server.max_inflight reached.",
              "reason", refused, N_OF(refused));
    render_one(b, "counter_api_inflight", "gauge",
               "Requests not yet answered, plus writes still settling.",
               (unsigned long long)(g->inflight > 0 ? g->inflight : 0));
    render_one(b, "counter_api_connections", "gauge",
               "Client connections open.",
               (unsigned long long)(g->connections > 0 ? g->connections : 0));
    render_one(b, "counter_api_redis_up", "gauge",
               "1 while Redis is connected, whole (its epoch markers there) "
               "and answering in time.",
               g->redis_up != 0);
    render_one(b, "counter_api_kafka_up", "gauge",
               "1 while the producer has a broker connection up.",
               g->kafka_up != 0);
    render_one(b, "counter_api_kafka_queue_events", "gauge",
               "Events waiting for a delivery report.",
               (unsigned long long)(g->kafka_queue > 0 ? g->kafka_queue : 0));
    ctr_metric_help(b, "counter_api_redis_seconds", "histogram",
                    "Redis command round trips (a timeout counts its "
                    "deadline).");
    ctr_hist_render(b, "counter_api_redis_seconds", "", &redis_rtt);
    render_one(b, "counter_api_redis_errors_total", "counter",
               "Redis commands that timed out, failed or were cut off.",
               (unsigned long long)redis_failed);
    ctr_metric_help(b, "counter_api_kafka_produce_seconds", "histogram",
                    "From queueing an event to its delivery report.");
    ctr_hist_render(b, "counter_api_kafka_produce_seconds", "", &kafka_rtt);
    render_one(b, "counter_api_kafka_errors_total", "counter",
               "Events Kafka refused or did not confirm.",
               (unsigned long long)kafka_failed);
    const labelled redirects[] = {
        {"moved", g->cluster.moved},
        {"ask", g->cluster.ask},
    };
    render_by(b, "counter_redis_redirects_total", "counter",
              "Redis Cluster redirections followed.", "kind", redirects,
              N_OF(redirects));
    render_one(b, "counter_redis_slot_refreshes_total", "counter",
               "Slot maps read from the cluster.",
               (unsigned long long)g->cluster.refreshes);
    render_one(b, "counter_redis_unavailable_total", "counter",
               "Commands the cluster did not run (TRYAGAIN, CLUSTERDOWN, ...).",
               (unsigned long long)g->cluster.unavailable);
    render_one(b, "counter_redis_wait_short_total", "counter",
               "Writes answered before redis.wait_replicas replicas had them.",
               (unsigned long long)g->cluster.wait_short);
}
