/*
 * ready.c - GET /readyz: whether this instance can serve, for a load
 * balancer or an orchestrator. Ready means writes can be accepted (a
 * Kafka broker is up: every write needs the log) and reads answered
 * (Redis ready, or PostgreSQL answering a trivial query in time). The body
 * says the state of each part; 503 when not ready, so a probe needs only
 * the status. No secrets, no addresses.
 *
 * /readyz needs no token and is spared by server.max_inflight, so it must
 * cost nothing however often it is asked: PostgreSQL's answer is kept and
 * reused for READY_PROBE_EVERY_MS, and while it is being asked again every
 * caller waits for that one SELECT 1. At most one probe a second reaches
 * the fallback reader, whose queue the fallback reads need while Redis is
 * down. Redis and Kafka are read from memory at each answer. Process-wide
 * state, loop thread only (like metrics.c).
 */
#include "api/handlers.h"
#include "api/reply.h"
#include "common/timeutil.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

enum { READY_PROBE_EVERY_MS = 1000 };

typedef struct ready_waiter {
    struct evhttp_request *req;
    struct ready_waiter *next;
} ready_waiter;

static struct {
    int64_t probed_ms; /* monotonic time of the last answer; 0: none yet */
    int pg_ok;
    int probing;
    ready_waiter *first, *last; /* callers waiting for the probe */
} ready;

static void ready_answer(api_app *app, struct evhttp_request *req)
{
    int redis_ok = api_redis_ready(app->redis);
    int kafka_ok = !ctr_producer_brokers_down(app->producer);
    int ok = kafka_ok && (redis_ok || ready.pg_ok) && !app->stopping;

    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(
        b,
        "{\"ready\":%s,\"stopping\":%s,\"redis\":{\"ok\":%s,\"state\":\"%s\"},"
        "\"postgres\":{\"ok\":%s},\"kafka\":{\"ok\":%s}}\n",
        ok ? "true" : "false", app->stopping ? "true" : "false",
        redis_ok ? "true" : "false", api_redis_state(app->redis),
        ready.pg_ok ? "true" : "false", kafka_ok ? "true" : "false");
    api_reply_json(req, ok ? 200 : 503, b);
    evbuffer_free(b);
}

static void ready_pg_done(const PGresult *res, void *arg)
{
    api_app *app = arg;
    ready.pg_ok = res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK;
    ready.probed_ms = ctr_time_mono_ms();
    ready.probing = 0;
    while (ready.first) {
        ready_waiter *w = ready.first;
        ready.first = w->next;
        ready_answer(app, w->req);
        app->inflight--;
        free(w);
    }
    ready.last = NULL;
}

void api_handle_ready(api_app *app, struct evhttp_request *req)
{
    if (ready.probed_ms != 0 &&
        ctr_time_mono_ms() - ready.probed_ms < READY_PROBE_EVERY_MS) {
        ready_answer(app, req);
        return;
    }
    ready_waiter *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        api_reply_error(req, 500, "internal", NULL, "out of memory");
        return;
    }
    w->req = req;
    if (ready.last)
        ready.last->next = w;
    else
        ready.first = w;
    ready.last = w;
    app->inflight++;
    if (ready.probing)
        return;
    ready.probing = 1;
    if (api_pg_query(app->pg, "SELECT 1", 0, NULL, ready_pg_done, app) != 0)
        ready_pg_done(NULL, app);
}
