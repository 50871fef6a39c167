/*
 * app.h - the api process's shared state: the stores, the producer, the
 * metrics (api/metrics.h), and the count of requests in flight (shutdown waits
 * for it to reach zero). Owned by main(); everything here runs on the one loop
 * thread.
 */
#ifndef COUNTER_API_APP_H
#define COUNTER_API_APP_H

#include "api/auth.h"
#include "api/framing.h"
#include "api/listener.h"
#include "api/read_floor.h"
#include "api/metrics.h"
#include "api/pg_reader.h"
#include "api/redis_store.h"
#include "common/config.h"
#include "ingest/producer.h"

#include <event2/event.h>
#include <event2/http.h>
#include <stdint.h>

typedef struct api_app {
    const ctr_config *cfg;
    struct event_base *base;
    api_redis *redis;
    api_pg *pg;
    api_floor *floor; /* NULL if it could not be had: no floor */
    ctr_producer *producer;
    api_auth *auth;             /* no tokens: every request passes */
    api_listener *listener;     /* counts open connections */
    api_framing_limits framing; /* what framing.c lets through */
    api_metrics metrics;
    long inflight; /* requests not yet answered, plus writes still settling */
    int stopping;
    /* the HTTP layer is being freed: its requests are gone, and a write
     * settling now (a delivery report at the final flush) answers no one */
    int closing;
} api_app;

/* The evhttp callback for every request. */
void api_handle_request(struct evhttp_request *req, void *arg);

/* framing.c's preflight (arg: the app), before a body is read: 413 for
 * one past its endpoint's limit (a batch's is larger); 401 or 403 when the
 * Authorization does not allow the endpoint (auth on); API_REFUSE_NONE
 * otherwise. */
enum api_framing_refusal
api_preflight(void *arg, enum api_framing_method method, const char *path,
              const char *authorization, int authorizations,
              uint64_t content_length);

/* The producer's delivery callback; arg is the write it belongs to. */
void api_on_delivery(enum ctr_delivery result, void *arg);

#endif
