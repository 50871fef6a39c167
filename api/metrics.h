/*
 * metrics.h - the api's request metrics: requests by route and status and
 * latency histograms per route, from the moment a request is routed to
 * its one reply (api_reply_json calls api_metrics_end); plus the Redis and
 * Kafka round trips. Process-wide and on the loop thread only, like
 * everything in the api, so the reply path needs no handle to the app.
 */
#ifndef COUNTER_API_METRICS_H
#define COUNTER_API_METRICS_H

#include "api/router.h"
#include "common/metrics.h"

#include <event2/http.h>

/* The request was routed to endpoint ep (API_EP_NONE: refused by the
 * router). */
void api_metrics_begin(struct evhttp_request *req, enum api_endpoint ep);

/* The request is being answered with status. Requests never begun (the
 * ones evhttp refuses itself) are not counted. */
void api_metrics_end(struct evhttp_request *req, int status);

/* Round trips: a Redis command's reply (or its timeout), a Kafka
 * delivery report. */
void api_metrics_redis(double seconds, int failed);
void api_metrics_kafka(double seconds, int failed);

/* The families above, in Prometheus text. */
void api_metrics_render(ctr_strbuf *b);

#endif
