/*
 * handlers.h - the endpoint handlers, split by path: write_path.c (Redis,
 * then Kafka, then the answer) and read_path.c (Redis, else PostgreSQL;
 * history; definitions). handlers.c routes to them. Loop thread only. Each
 * handler answers the request exactly once, now or later.
 */
#ifndef COUNTER_API_HANDLERS_H
#define COUNTER_API_HANDLERS_H

#include "api/app.h"
#include "api/router.h"

enum api_write_kind { API_WRITE_INCR, API_WRITE_DECR, API_WRITE_SET };

void api_handle_write(api_app *app, struct evhttp_request *req,
                      const api_route *route, enum api_write_kind kind);

/* GET one counter (batch 0) or GET /counters?names= (batch 1). */
void api_handle_read(api_app *app, struct evhttp_request *req,
                     const api_route *route, int batch);

void api_handle_history(api_app *app, struct evhttp_request *req,
                        const api_route *route);

void api_handle_definitions(api_app *app, struct evhttp_request *req);

/* GET /readyz (ready.c). */
void api_handle_ready(api_app *app, struct evhttp_request *req);

/* The Redis key of counter name's live value at now_ms (its current
 * daily window, for daily counters); the local date goes to period (""
 * when the counter has no windows). */
void api_live_key(const ctr_counter_def *def, const char *name, int64_t now_ms,
                  char *key, size_t keylen, char period[11]);

#endif
