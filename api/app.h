/*
 * app.h - the api process's shared state: the stores, the producer, and
 * the count of writes in flight (shutdown waits for it to reach zero).
 * Owned by main(); everything here runs on the one loop thread.
 */
#ifndef COUNTER_API_APP_H
#define COUNTER_API_APP_H

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
    ctr_producer *producer;
    long inflight; /* requests not yet answered, plus writes still settling */
    int stopping;
} api_app;

/* The evhttp callback for every request. */
void api_handle_request(struct evhttp_request *req, void *arg);

/* The producer's delivery callback; arg is the write it belongs to. */
void api_on_delivery(enum ctr_delivery result, void *arg);

#endif
