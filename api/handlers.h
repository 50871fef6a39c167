/*
 * handlers.h - the endpoint handlers, split by path: write_path.c (Redis,
 * then Kafka, then the answer) and read_path.c (Redis, else PostgreSQL;
 * history; definitions). handlers.c routes to them. Loop thread only. Each
 * handler answers the request exactly once, now or later.
 */
#ifndef COUNTER_API_HANDLERS_H
#define COUNTER_API_HANDLERS_H

#include "api/app.h"
#include "api/body.h"
#include "api/router.h"

#include <event2/buffer.h>

enum api_write_kind { API_WRITE_INCR, API_WRITE_DECR, API_WRITE_SET };

void api_handle_write(api_app *app, struct evhttp_request *req,
                      const api_route *route, enum api_write_kind kind);

/* 503 overloaded: server.max_inflight writes at work; Retry-After: 1. */
void api_refuse_overloaded(api_app *app, struct evhttp_request *req);

/* POST /api/v1/counters/batch (batch.c): at most this many writes. */
#define API_WRITE_BATCH_MAX 1000
void api_handle_batch_write(api_app *app, struct evhttp_request *req);

typedef struct api_batch api_batch;

/* Where a write's answer goes: its own request, or an item of a batch. */
typedef struct api_write_target {
    struct evhttp_request *req; /* a single write's; NULL for an item */
    api_batch *batch;
    unsigned item;
} api_write_target;

/*
 * One write of counter name (valid): the checks of its kind, time, key
 * and size, then Redis, then Kafka (write_path.c). Answers to exactly
 * once, now or later. Takes body's strings. With a key (the event id),
 * fingerprint is what names the request under it (api_write_fingerprint).
 * Returns 1 when the write began (an item's calls api_batch_release once
 * done, maybe before this returns), 0 when it was refused before.
 */
int api_write_start(api_app *app, const api_write_target *to, const char *name,
                    enum api_write_kind kind, api_write_body *body,
                    const char *key, const char *fingerprint);

/* What makes two requests "the same" under one Idempotency-Key: the
 * operation, the counter and the body's bytes (FNV-1a, 64 bits, as 16
 * hex digits). */
void api_write_fingerprint(char out[17], enum api_write_kind kind,
                           const char *name, const char *body, size_t len);

/* An item's answer (batch.c): its status and its JSON object (NULL: out
 * of memory); replayed when it repeats a first attempt's. */
void api_batch_answer(api_batch *b, unsigned item, int status,
                      struct evbuffer *body, int replayed);

/*
 * What a batch needs of an item that wrote a counter that only grows to
 * answer its items as if applied one after another: the single endpoint
 * answers what reads show once the write is confirmed, without writes
 * still pending, and a batch's earlier items to the same counter were
 * pending when a later one ran (batch.c).
 */
typedef struct api_batch_value {
    char key[CTR_NAME_MAX + 12]; /* the counter and its window */
    int64_t value;               /* after the write, pending ones included */
    int64_t seen;                /* what the single endpoint answers */
    int64_t gained;              /* what the write added (> 0), else 0 */
} api_batch_value;

/* Noted before the item's 200 answer. */
void api_batch_note(api_batch *b, unsigned item, const api_batch_value *v);

/* An item's write is done and forgets the batch. */
void api_batch_release(api_batch *b);

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
