/*
 * metrics.h - the api's metrics, every family declared in one place
 * (metrics.c) and rendered in one style:
 *   - counters the handlers bump in the app's api_metrics (writes by
 *     outcome, reads by source, refusals);
 *   - per request and per round trip, process-wide: requests by route
 *     and status and their latency, from the moment a request is routed
 *     to its one reply (api_reply_json calls api_metrics_end); error
 *     answers by code (api_reply_error calls api_metrics_error); Redis and
 *     Kafka round trips. The reply path has no handle to the app, so
 *     these live here rather than in api_metrics;
 *   - gauges read from the app when /metrics is asked (api_metrics_gauges).
 * Loop thread only, like everything in the api.
 */
#ifndef COUNTER_API_METRICS_H
#define COUNTER_API_METRICS_H

#include "api/redis_store.h"
#include "api/router.h"
#include "common/metrics.h"

#include <event2/http.h>
#include <stdint.h>

/* Counters of the app (api_app.metrics), bumped where the work is done. */
typedef struct api_metrics {
    uint64_t writes_applied;       /* 2xx writes that changed a value */
    uint64_t writes_duplicate;     /* unique counters: user already counted */
    uint64_t writes_bound_refused; /* 409: would cross a gauge bound */
    uint64_t writes_clamped;       /* applied, but clamped to a bound */
    uint64_t writes_unavailable;   /* 503 nothing applied */
    uint64_t writes_indeterminate; /* 503 indeterminate */
    uint64_t writes_undone;        /* Redis changes taken back */
    uint64_t writes_via_log;       /* 202: into Kafka only, for the applier */
    uint64_t writes_replayed;      /* Idempotency-Key retries answered */
    uint64_t writes_late;          /* applied to a closed day (corrections) */
    uint64_t writes_too_late;      /* 422: older than lateness_s */
    uint64_t reads_redis;
    uint64_t reads_postgres; /* fallback reads */
    uint64_t reads_failed;
    uint64_t rejected_4xx;
    uint64_t unauthorized; /* 401: no or unknown token */
    uint64_t forbidden;    /* 403: a read token on a write */
    uint64_t overloaded;   /* 503: server.max_inflight reached */
} api_metrics;

/* What /metrics reads from the app at the time it is asked. */
typedef struct api_metrics_gauges {
    long inflight;    /* requests not yet answered, writes settling */
    long connections; /* open client connections */
    int redis_up;     /* api_redis_ready */
    int kafka_up;     /* the producer has a broker connection */
    int kafka_queue;  /* events waiting for a delivery report */
    api_redis_cluster_stats cluster;
} api_metrics_gauges;

/* The request was routed to endpoint ep (API_EP_NONE: refused by the
 * router). */
void api_metrics_begin(struct evhttp_request *req, enum api_endpoint ep);

/* The request is being answered with status. Requests never begun (the
 * ones evhttp refuses itself) are not counted. */
void api_metrics_end(struct evhttp_request *req, int status);

/* An error answer with this code (the body's error.code) is being sent.
 * Codes not in metrics.c's table count as "other". */
void api_metrics_error(const char *code);

/* Round trips: a Redis command's reply (or its timeout), a Kafka
 * delivery report. */
void api_metrics_redis(double seconds, int failed);
void api_metrics_kafka(double seconds, int failed);

/* Every family of the api, in Prometheus text (version 0.0.4), into b. */
void api_metrics_render(const api_metrics *m, const api_metrics_gauges *g,
                        ctr_strbuf *b);

#endif
