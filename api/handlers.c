/*
 * handlers.c - the endpoints: routing, the write path (Redis, then Kafka,
 * then the answer) and the read path (Redis, else PostgreSQL).
 *
 * A write is one write_op, freed in exactly one place (write_release) once
 * nothing can call back into it any more. The HTTP request inside it is
 * answered exactly once and then forgotten (op->req = NULL): a write whose
 * answer went out early (a Redis timeout) still runs to completion so that
 * it is applied wholly or not at all.
 */
#include "api/app.h"
#include "api/body.h"
#include "api/reply.h"
#include "api/router.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "ingest/event.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- write */

typedef struct write_op {
    api_app *app;
    struct evhttp_request *req; /* NULL once answered */
    char name[CTR_NAME_MAX + 1];
    char event_id[CTR_EVENT_ID_MAX + 1];
    int64_t delta;
    int64_t value;
    char *payload;
    size_t payload_len;
    struct event *kafka_deadline; /* answer by then even if Kafka has not */
} write_op;

static void write_release(write_op *op)
{
    if (op->kafka_deadline)
        event_free(op->kafka_deadline);
    op->app->inflight--;
    free(op->payload);
    free(op);
}

static void write_answer_error(write_op *op, int status, const char *code,
                               const char *message)
{
    if (op->req)
        api_reply_error(op->req, status, code, NULL, message);
    op->req = NULL;
}

static void undo_done(enum api_redis_status st, int64_t value, void *arg)
{
    write_op *op = arg;
    (void)value;
    if (st != API_REDIS_OK)
        ctr_error("could not undo write %s to counter %s (delta %" PRId64
                  "): redis status %d; redis may be ahead of the log",
                  op->event_id, op->name, op->delta, (int)st);
    write_release(op);
}

/* Takes the Redis change back after Kafka refused the event. */
static void write_undo(write_op *op)
{
    api_app *app = op->app;
    if (api_redis_incr(app->redis, op->name, -op->delta, 0,
                       app->cfg->redis_write_timeout_ms, undo_done, NULL,
                       op) != 0) {
        ctr_error("could not undo write %s to counter %s (delta %" PRId64
                  "): redis unavailable; redis may be ahead of the log",
                  op->event_id, op->name, op->delta);
        write_release(op);
    }
}

/*
 * librdkafka checks message timeouts about once a second, so its own
 * verdict can come up to a second after kafka.delivery_timeout_ms. The
 * client is answered at the deadline; the verdict still settles the write
 * (kept, or undone) when it arrives.
 */
static void write_kafka_deadline(evutil_socket_t fd, short what, void *arg)
{
    write_op *op = arg;
    (void)fd;
    (void)what;
    write_answer_error(op, 503, "indeterminate",
                       "the event log did not confirm the write in time; "
                       "it may or may not be recorded");
}

void api_on_delivery(enum ctr_delivery result, void *arg)
{
    write_op *op = arg;

    if (result == CTR_DELIVERED) {
        if (op->req) {
            struct evbuffer *body = evbuffer_new();
            evbuffer_add_printf(body,
                                "{\"success\":true,\"current_value\":%" PRId64
                                ",\"event_id\":\"%s\"}\n",
                                op->value, op->event_id);
            api_reply_json(op->req, 200, body);
            evbuffer_free(body);
            op->req = NULL;
        }
        write_release(op);
        return;
    }
    if (result == CTR_DELIVERY_FAILED)
        write_answer_error(op, 503, "kafka_unavailable",
                           "the event log did not accept the write in time; "
                           "nothing was applied");
    else
        write_answer_error(op, 503, "indeterminate",
                           "the event log did not confirm the write in time; "
                           "it may or may not have been recorded");
    write_undo(op);
}

/* Publishes the event of a write that Redis has applied. */
static void write_publish(write_op *op)
{
    int ms = op->app->cfg->kafka_delivery_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    op->kafka_deadline = evtimer_new(op->app->base, write_kafka_deadline, op);
    if (op->kafka_deadline)
        evtimer_add(op->kafka_deadline, &tv);
    if (ctr_producer_send(op->app->producer, op->name, strlen(op->name),
                          op->payload, op->payload_len, true, op) != 0) {
        write_answer_error(op, 503, "kafka_unavailable",
                           "the event log is not accepting writes; nothing "
                           "was applied");
        write_undo(op);
    }
}

/* A Redis answer that came after the client was told "indeterminate". */
static void write_applied_late(enum api_redis_status st, int64_t value,
                               void *arg)
{
    write_op *op = arg;
    if (st == API_REDIS_OK) {
        /* Redis has it: publish too, so the write is whole, not half. */
        op->value = value;
        write_publish(op);
        return;
    }
    write_release(op);
}

static void write_applied(enum api_redis_status st, int64_t value, void *arg)
{
    write_op *op = arg;

    switch (st) {
    case API_REDIS_OK:
        op->value = value;
        write_publish(op);
        return;
    case API_REDIS_OVERFLOW:
        write_answer_error(op, 422, "value_out_of_range",
                           "the counter would leave the 64-bit signed range; "
                           "nothing was applied");
        break;
    case API_REDIS_ERROR:
        write_answer_error(op, 503, "redis_error",
                           "redis refused the write; nothing was applied");
        break;
    case API_REDIS_TIMEOUT:
        /* Keep op: write_applied_late finishes it when Redis answers. */
        write_answer_error(op, 503, "indeterminate",
                           "redis did not answer in time; the write may or "
                           "may not be applied");
        return;
    case API_REDIS_DISCONNECTED:
        write_answer_error(op, 503, "indeterminate",
                           "lost the connection to redis; the write may or "
                           "may not be applied");
        break;
    }
    write_release(op);
}

static void handle_write(api_app *app, struct evhttp_request *req,
                         const api_route *route, int sign)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    api_write_body body;
    api_body_error err;
    ctr_event ev;
    write_op *op = NULL;

    if (len > (size_t)app->cfg->server_max_body_bytes) {
        char msg[96];
        snprintf(msg, sizeof(msg), "request body is larger than %d bytes",
                 app->cfg->server_max_body_bytes);
        api_reply_error(req, 413, "body_too_large", NULL, msg);
        return;
    }
    const char *data = len ? (const char *)evbuffer_pullup(in, -1) : "";
    if (api_body_parse_write(data, len, &body, &err) != 0) {
        if (strcmp(err.code, "internal") == 0)
            api_reply_error(req, 500, err.code, NULL, err.message);
        else
            api_reply_error(req, 400, err.code, err.field, err.message);
        return;
    }

    memset(&ev, 0, sizeof(ev));
    ev.v = CTR_EVENT_VERSION;
    ctr_event_new_id(ev.id);
    memcpy(ev.counter, route->name, sizeof(ev.counter));
    ev.delta = sign * body.value;
    ev.user_id = body.user_id;
    ev.metadata = body.metadata;
    ev.ts_ms = ctr_time_now_ms();

    op = calloc(1, sizeof(*op));
    if (op == NULL)
        goto oom;
    op->payload = ctr_event_encode(&ev, &op->payload_len);
    if (op->payload == NULL)
        goto oom;
    op->app = app;
    op->req = req;
    op->delta = ev.delta;
    memcpy(op->name, ev.counter, sizeof(op->name));
    memcpy(op->event_id, ev.id, sizeof(op->event_id));
    app->inflight++;
    if (api_redis_incr(app->redis, op->name, op->delta, ev.ts_ms,
                       app->cfg->redis_write_timeout_ms, write_applied,
                       write_applied_late, op) != 0) {
        api_reply_error(req, 503, "redis_unavailable", NULL,
                        "redis is not reachable; nothing was applied");
        op->req = NULL;
        write_release(op);
    }
    api_write_body_clear(&body);
    return;
oom:
    if (op)
        free(op->payload);
    free(op);
    api_write_body_clear(&body);
    api_reply_error(req, 500, "internal", NULL, "out of memory");
}

/* ----------------------------------------------------------------- read */

typedef struct read_op {
    api_app *app;
    struct evhttp_request *req;
    int batch; /* answer {"counters":[...]} rather than one object */
    api_name_list names;
    const char *ptrs[API_BATCH_MAX];
} read_op;

static void read_release(read_op *op)
{
    op->app->inflight--;
    free(op);
}

static void append_counter(struct evbuffer *b, const char *name, int64_t value,
                           int64_t updated_ms, const char *source, int stale,
                           int64_t as_of_ms)
{
    char ts[40];
    evbuffer_add_printf(
        b, "{\"name\":\"%s\",\"value\":%" PRId64 ",\"last_updated\":", name,
        value);
    if (updated_ms > 0 &&
        ctr_time_format_rfc3339(updated_ms, ts, sizeof(ts)) > 0)
        evbuffer_add_printf(b, "\"%s\"", ts);
    else
        evbuffer_add_printf(b, "null");
    evbuffer_add_printf(b, ",\"source\":\"%s\",\"stale\":%s", source,
                        stale ? "true" : "false");
    if (stale) {
        evbuffer_add_printf(b, ",\"as_of\":");
        if (as_of_ms > 0 &&
            ctr_time_format_rfc3339(as_of_ms, ts, sizeof(ts)) > 0)
            evbuffer_add_printf(b, "\"%s\"", ts);
        else
            evbuffer_add_printf(b, "null");
    }
    evbuffer_add(b, "}", 1);
}

static void read_answer(read_op *op, const int64_t *values,
                        const int64_t *updated, const char *source, int stale,
                        int64_t as_of_ms)
{
    struct evbuffer *b = evbuffer_new();
    if (op->batch)
        evbuffer_add_printf(b, "{\"counters\":[");
    for (size_t i = 0; i < op->names.n; i++) {
        if (i)
            evbuffer_add(b, ",", 1);
        append_counter(b, op->names.names[i], values[i], updated[i], source,
                       stale, as_of_ms);
    }
    if (op->batch)
        evbuffer_add_printf(b, "]}");
    evbuffer_add(b, "\n", 1);
    api_reply_json(op->req, 200, b);
    evbuffer_free(b);
}

static void read_from_pg_done(int ok, const api_pg_value *vals, size_t n,
                              int64_t as_of_ms, void *arg)
{
    read_op *op = arg;
    if (!ok) {
        api_reply_error(op->req, 503, "unavailable", NULL,
                        "neither redis nor postgresql could answer in time");
    } else {
        int64_t values[API_BATCH_MAX], updated[API_BATCH_MAX];
        for (size_t i = 0; i < n; i++) {
            values[i] = vals[i].exists ? vals[i].value : 0;
            updated[i] = vals[i].exists ? vals[i].updated_ms : 0;
        }
        read_answer(op, values, updated, "postgres", 1, as_of_ms);
    }
    read_release(op);
}

static void read_from_pg(read_op *op)
{
    if (api_pg_get(op->app->pg, op->ptrs, op->names.n, read_from_pg_done, op) !=
        0) {
        api_reply_error(op->req, 503, "unavailable", NULL,
                        "redis is unavailable and postgresql is busy");
        read_release(op);
    }
}

static void read_from_redis_done(enum api_redis_status st,
                                 const api_redis_value *vals, size_t n,
                                 void *arg)
{
    read_op *op = arg;
    if (st != API_REDIS_OK) {
        read_from_pg(op);
        return;
    }
    int64_t values[API_BATCH_MAX], updated[API_BATCH_MAX];
    for (size_t i = 0; i < n; i++) {
        values[i] = vals[i].exists ? vals[i].value : 0;
        updated[i] = vals[i].exists ? vals[i].updated_ms : 0;
    }
    read_answer(op, values, updated, "redis", 0, 0);
    read_release(op);
}

static void handle_read(api_app *app, struct evhttp_request *req,
                        const api_route *route, int batch)
{
    read_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        api_reply_error(req, 500, "internal", NULL, "out of memory");
        return;
    }
    op->app = app;
    op->req = req;
    op->batch = batch;
    if (batch) {
        struct evkeyvalq query;
        char err[160];
        const char *q =
            evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
        int rc = -1;
        if (q && evhttp_parse_query_str(q, &query) == 0) {
            rc = api_parse_names(evhttp_find_header(&query, "names"),
                                 &op->names, err, sizeof(err));
            evhttp_clear_headers(&query);
        } else {
            snprintf(err, sizeof(err),
                     "names: give 1 to %d comma-separated names",
                     API_BATCH_MAX);
        }
        if (rc != 0) {
            api_reply_error(req, 400, "invalid_query", "names", err);
            free(op);
            return;
        }
    } else {
        op->names.n = 1;
        memcpy(op->names.names[0], route->name, sizeof(route->name));
    }
    for (size_t i = 0; i < op->names.n; i++)
        op->ptrs[i] = op->names.names[i];
    app->inflight++;
    if (api_redis_get(app->redis, op->ptrs, op->names.n,
                      app->cfg->redis_timeout_ms, read_from_redis_done,
                      op) != 0)
        read_from_pg(op);
}

/* -------------------------------------------------------------- routing */

void api_handle_request(struct evhttp_request *req, void *arg)
{
    api_app *app = arg;
    api_route route;
    enum api_method method;

    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: method = API_GET; break;
    case EVHTTP_REQ_HEAD: method = API_HEAD; break;
    case EVHTTP_REQ_POST: method = API_POST; break;
    default: method = API_OTHER; break;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;

    if (api_route_match(method, path, &route) != 0) {
        if (route.status == 405) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                              route.allow);
            api_reply_error(req, 405, "method_not_allowed", NULL,
                            "method not allowed on this path");
        } else if (route.status == 400) {
            api_reply_error(req, 400, "invalid_name", "name",
                            "counter names are 1-128 characters of "
                            "[A-Za-z0-9_.-]");
        } else {
            api_reply_error(req, 404, "not_found", NULL, "no such endpoint");
        }
        return;
    }
    if (app->stopping && route.endpoint != API_EP_HEALTH) {
        api_reply_error(req, 503, "shutting_down", NULL,
                        "the server is shutting down");
        return;
    }
    switch (route.endpoint) {
    case API_EP_COUNTER_INCR: handle_write(app, req, &route, 1); break;
    case API_EP_COUNTER_DECR: handle_write(app, req, &route, -1); break;
    case API_EP_COUNTER_GET: handle_read(app, req, &route, 0); break;
    case API_EP_COUNTERS_GET: handle_read(app, req, &route, 1); break;
    case API_EP_HEALTH: {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "{\"status\":\"%s\",\"redis\":%s}\n",
                            app->stopping ? "stopping" : "ok",
                            api_redis_ready(app->redis) ? "true" : "false");
        api_reply_json(req, 200, b);
        evbuffer_free(b);
        break;
    }
    case API_EP_NONE:
        api_reply_error(req, 404, "not_found", NULL, "no such endpoint");
        break;
    }
}
