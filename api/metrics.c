/*
 * metrics.c - see metrics.h. A request is found again at its reply by its
 * pointer, in a fixed open-addressing table: no allocation per request,
 * and no reliance on evhttp's completion callback, which a client that
 * hung up never triggers.
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

static uint64_t requests[API_EP_COUNT][N_STATUS + 1]; /* last: other */
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

void api_metrics_render(ctr_strbuf *b)
{
    char labels[64];
    if (!initialised)
        init();
    ctr_metric_help(b, "counter_api_http_requests_total", "counter",
                    "HTTP requests answered, by route and status.");
    for (int ep = 0; ep < API_EP_COUNT; ep++)
        for (int s = 0; s <= N_STATUS; s++) {
            if (requests[ep][s] == 0)
                continue;
            if (s < N_STATUS)
                ctr_strbuf_printf(
                    b,
                    "counter_api_http_requests_total{route=\"%s\","
                    "status=\"%d\"} %llu\n",
                    route_names[ep], statuses[s],
                    (unsigned long long)requests[ep][s]);
            else
                ctr_strbuf_printf(
                    b,
                    "counter_api_http_requests_total{route=\"%s\","
                    "status=\"other\"} %llu\n",
                    route_names[ep], (unsigned long long)requests[ep][s]);
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
    ctr_metric_help(b, "counter_api_redis_seconds", "histogram",
                    "Redis command round trips (a timeout counts its "
                    "deadline).");
    ctr_hist_render(b, "counter_api_redis_seconds", "", &redis_rtt);
    ctr_metric_help(b, "counter_api_redis_errors_total", "counter",
                    "Redis commands that timed out, failed or were cut off.");
    ctr_strbuf_printf(b, "counter_api_redis_errors_total %llu\n",
                      (unsigned long long)redis_failed);
    ctr_metric_help(b, "counter_api_kafka_produce_seconds", "histogram",
                    "From queueing an event to its delivery report.");
    ctr_hist_render(b, "counter_api_kafka_produce_seconds", "", &kafka_rtt);
    ctr_metric_help(b, "counter_api_kafka_errors_total", "counter",
                    "Events Kafka refused or did not confirm.");
    ctr_strbuf_printf(b, "counter_api_kafka_errors_total %llu\n",
                      (unsigned long long)kafka_failed);
}
