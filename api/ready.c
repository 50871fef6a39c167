/*
 * ready.c - GET /readyz: whether this instance can serve, for a load
 * balancer or an orchestrator. Ready means writes can be accepted (a
 * Kafka broker is up: every write needs the log) and reads answered
 * (Redis ready, or PostgreSQL answering a trivial query in time). The body
 * says the state of each part; 503 when not ready, so a probe needs only
 * the status. No secrets, no addresses.
 */
#include "api/handlers.h"
#include "api/reply.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

typedef struct ready_op {
    api_app *app;
    struct evhttp_request *req;
} ready_op;

static void ready_pg_done(const PGresult *res, void *arg)
{
    ready_op *op = arg;
    api_app *app = op->app;
    int pg_ok = res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK;
    int redis_ok = api_redis_ready(app->redis);
    int kafka_ok = !ctr_producer_brokers_down(app->producer);
    int ready = kafka_ok && (redis_ok || pg_ok) && !app->stopping;

    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(
        b,
        "{\"ready\":%s,\"stopping\":%s,\"redis\":{\"ok\":%s,\"state\":\"%s\"},"
        "\"postgres\":{\"ok\":%s},\"kafka\":{\"ok\":%s}}\n",
        ready ? "true" : "false", app->stopping ? "true" : "false",
        redis_ok ? "true" : "false", api_redis_state(app->redis),
        pg_ok ? "true" : "false", kafka_ok ? "true" : "false");
    api_reply_json(op->req, ready ? 200 : 503, b);
    evbuffer_free(b);
    app->inflight--;
    free(op);
}

void api_handle_ready(api_app *app, struct evhttp_request *req)
{
    ready_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        api_reply_error(req, 500, "internal", NULL, "out of memory");
        return;
    }
    op->app = app;
    op->req = req;
    app->inflight++;
    if (api_pg_query(app->pg, "SELECT 1", 0, NULL, ready_pg_done, op) != 0)
        ready_pg_done(NULL, op);
}
