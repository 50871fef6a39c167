/*
 * batch.c - POST /api/v1/counters/batch: up to API_WRITE_BATCH_MAX writes
 * in one request, each with the guarantees of a single write
 * (write_path.c), answered together and in order.
 *
 * The body is a JSON array of writes {"name", "op": "increment" |
 * "decrement" | "set", "value", "timestamp", "user_id", "metadata"}. A
 * body that is not such an array, or holds none or too many, is refused
 * whole (4xx, nothing applied). Within it each item is judged alone: an
 * item that is malformed or refused gets its own 4xx result, and the
 * others go on. A batch is not a transaction: items to different
 * counters live on different shards and partitions.
 *
 * Every item is started in one loop turn, so their Redis calls leave in
 * one write per connection (one round trip per shard) and their events
 * reach librdkafka together, which sends them as one produce request per
 * partition.
 *
 * The answer, once every item has one: 200 {"success": every item 2xx,
 * "results": [{"status": <its HTTP status>, <what the single endpoint
 * answers>}, ...]}. An item whose write cannot be settled in time answers
 * 503 indeterminate, as a single write does, and is settled later.
 *
 * Idempotency-Key K: item i is the keyed write "K#i", and every item's
 * fingerprint is the whole body's. A retry of the batch replays the items
 * that are done, takes over those whose first attempt was lost, and a
 * different body under K has each item refused (422).
 */
#include "api/handlers.h"
#include "api/body.h"
#include "api/reply.h"
#include "common/jsonparse.h"
#include "common/log.h"
#include "ingest/event.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct batch_item {
    int status; /* 0 until answered */
    char *json; /* its answer object; NULL: out of memory */
    size_t len;
    int noted; /* a counter that only grows: v holds its numbers */
    api_batch_value v;
    size_t num_at, num_end; /* where json holds current_value */
} batch_item;

struct api_batch {
    api_app *app;
    struct evhttp_request *req;
    unsigned n;
    unsigned answered;
    unsigned alive;    /* items whose write may still call back */
    unsigned replayed; /* items answered from a first attempt's record */
    int starting;      /* items are being started: answer nothing yet */
    int replied;
    batch_item items[];
};

static void batch_free(api_batch *b)
{
    for (unsigned i = 0; i < b->n; i++)
        free(b->items[i].json);
    free(b);
}

/* Item i first, then by counter and window, then in order. */
static const api_batch *sorting;
static int by_key(const void *x, const void *y)
{
    const batch_item *a = &sorting->items[*(const unsigned *)x];
    const batch_item *b = &sorting->items[*(const unsigned *)y];
    int c = strcmp(a->v.key, b->v.key);
    if (c)
        return c;
    return *(const unsigned *)x < *(const unsigned *)y ? -1 : 1;
}

/*
 * The answers of items to a counter that only grows, as if the batch's
 * items had been applied one after another: each item's value counts what
 * the batch's earlier items to the same counter and window added, when
 * they were confirmed (200). Those were pending when it ran: every item's
 * Redis call left in the loop turn that started the batch, on the
 * counter's one connection, before any item could be finished. Never
 * more than the value Redis held after it (that counts every write then
 * pending), so an earlier item already finished is not counted twice.
 */
static void batch_sequential_values(api_batch *b)
{
    unsigned *order = malloc(b->n * sizeof(*order));
    unsigned m = 0;
    if (order == NULL)
        return; /* each keeps its own answer: lower, never wrong */
    for (unsigned i = 0; i < b->n; i++)
        if (b->items[i].noted && b->items[i].status == 200)
            order[m++] = i;
    sorting = b;
    qsort(order, m, sizeof(*order), by_key);
    int64_t gained = 0;
    for (unsigned k = 0; k < m; k++) {
        batch_item *it = &b->items[order[k]];
        if (k == 0 || strcmp(it->v.key, b->items[order[k - 1]].v.key) != 0)
            gained = 0;
        int64_t v;
        if (__builtin_add_overflow(it->v.seen, gained, &v) || v > it->v.value)
            v = it->v.value;
        if (v > it->v.seen)
            it->v.seen = v;
        if (__builtin_add_overflow(gained, it->v.gained, &gained))
            gained = INT64_MAX;
    }
    free(order);
}

static void batch_reply(api_batch *b)
{
    static const char oom[] = "{\"success\":false,\"error\":{\"code\":"
                              "\"internal\",\"message\":\"out of memory\"}}";
    struct evbuffer *out = evbuffer_new();
    int all_ok = 1;
    if (out == NULL) {
        api_reply_error(b->req, 500, "internal", NULL, "out of memory");
        return;
    }
    for (unsigned i = 0; i < b->n; i++)
        all_ok &= b->items[i].status >= 200 && b->items[i].status < 300;
    batch_sequential_values(b);
    API_JSON_LIT(out, "{\"success\":");
    if (all_ok)
        API_JSON_LIT(out, "true");
    else
        API_JSON_LIT(out, "false");
    API_JSON_LIT(out, ",\"results\":[");
    for (unsigned i = 0; i < b->n; i++) {
        const batch_item *it = &b->items[i];
        const char *json = it->json ? it->json : oom;
        size_t len = it->json ? it->len : sizeof(oom) - 1;
        if (i)
            API_JSON_LIT(out, ",");
        API_JSON_LIT(out, "{\"status\":");
        api_json_append_i64(out, it->status);
        /* the object's members after the status: drop its '{' */
        if (len > 2)
            API_JSON_LIT(out, ",");
        if (it->json && it->num_end) {
            evbuffer_add(out, json + 1, it->num_at - 1);
            api_json_append_i64(out, it->v.seen);
            evbuffer_add(out, json + it->num_end, len - it->num_end);
        } else {
            evbuffer_add(out, json + 1, len - 1);
        }
    }
    API_JSON_LIT(out, "]}\n");
    if (b->replayed == b->n)
        evhttp_add_header(evhttp_request_get_output_headers(b->req),
                          "Idempotent-Replayed", "true");
    api_reply_json(b->req, 200, out);
    evbuffer_free(out);
}

/* Answers once every item has; frees once no item's write can call back
 * (at shutdown the HTTP layer is gone: nothing to answer). */
static void batch_settle(api_batch *b)
{
    if (b->starting)
        return;
    if (!b->replied && !b->app->closing && b->answered == b->n) {
        b->replied = 1;
        batch_reply(b);
    }
    if (b->alive == 0 && (b->replied || b->app->closing))
        batch_free(b);
}

void api_batch_answer(api_batch *b, unsigned item, int status,
                      struct evbuffer *body, int replayed)
{
    batch_item *it;
    if (item >= b->n || b->items[item].status != 0) {
        ctr_error("batch item %u answered twice", item);
        return;
    }
    it = &b->items[item];
    it->status = status;
    size_t len = body ? evbuffer_get_length(body) : 0;
    it->json = len ? malloc(len) : NULL;
    if (it->json && evbuffer_copyout(body, it->json, len) == (ev_ssize_t)len &&
        it->json[0] == '{') {
        while (len > 0 && it->json[len - 1] == '\n')
            len--;
        it->len = len;
    } else {
        free(it->json);
        it->json = NULL;
    }
    if (it->json && it->noted) {
        /* as write_path.c's write_answer_ok begins it */
        static const char head[] = "{\"success\":true,\"current_value\":";
        if (it->len > sizeof(head) &&
            memcmp(it->json, head, sizeof(head) - 1) == 0) {
            it->num_at = sizeof(head) - 1;
            it->num_end = it->num_at;
            while (it->num_end < it->len &&
                   strchr("-0123456789", it->json[it->num_end]))
                it->num_end++;
        }
    }
    b->answered++;
    b->replayed += replayed != 0;
    batch_settle(b);
}

void api_batch_note(api_batch *b, unsigned item, const api_batch_value *v)
{
    if (item < b->n) {
        b->items[item].noted = 1;
        b->items[item].v = *v;
    }
}

void api_batch_release(api_batch *b)
{
    b->alive--;
    batch_settle(b);
}

/* An item refused before it became a write. */
static void item_refuse(api_batch *b, unsigned i, int status, const char *code,
                        const char *field, const char *message)
{
    struct evbuffer *body = evbuffer_new();
    if (status < 500)
        b->app->metrics.rejected_4xx++;
    if (body)
        api_json_error_body(body, code, field, message);
    api_batch_answer(b, i, status, body, 0);
    if (body)
        evbuffer_free(body);
}

static int item_kind(struct json_object *item, enum api_write_kind *kind)
{
    struct json_object *op;
    if (!json_object_object_get_ex(item, "op", &op) ||
        !json_object_is_type(op, json_type_string))
        return -1;
    const char *s = json_object_get_string(op);
    size_t len = (size_t)json_object_get_string_len(op);
    if (strlen(s) != len)
        return -1;
    if (strcmp(s, "increment") == 0)
        *kind = API_WRITE_INCR;
    else if (strcmp(s, "decrement") == 0)
        *kind = API_WRITE_DECR;
    else if (strcmp(s, "set") == 0)
        *kind = API_WRITE_SET;
    else
        return -1;
    return 0;
}

static const char *item_name(struct json_object *item)
{
    struct json_object *name;
    if (!json_object_object_get_ex(item, "name", &name) ||
        !json_object_is_type(name, json_type_string))
        return NULL;
    const char *s = json_object_get_string(name);
    size_t len = (size_t)json_object_get_string_len(name);
    return ctr_name_valid(s, len) && strlen(s) == len ? s : NULL;
}

/* Item i: its own checks, then a write of its own. */
static void item_start(api_batch *b, unsigned i, struct json_object *item,
                       const char *key, const char *data, size_t len)
{
    static const char *const skip[] = {"name", "op", NULL};
    enum api_write_kind kind;
    api_write_body body;
    api_body_error err;

    if (!json_object_is_type(item, json_type_object)) {
        item_refuse(b, i, 400, "invalid_json", NULL,
                    "a write must be a JSON object");
        return;
    }
    const char *name = item_name(item);
    if (name == NULL) {
        item_refuse(b, i, 400, "invalid_name", "name",
                    "name: is required: 1-128 characters of [A-Za-z0-9_.-]");
        return;
    }
    if (item_kind(item, &kind) != 0) {
        item_refuse(b, i, 400, "invalid_field", "op",
                    "op: is required: \"increment\", \"decrement\" or "
                    "\"set\"");
        return;
    }
    if (api_body_from_object(
            item, kind == API_WRITE_SET ? API_BODY_SET : API_BODY_DELTA, skip,
            &body, &err) != 0) {
        int internal = strcmp(err.code, "internal") == 0;
        item_refuse(b, i, internal ? 500 : 400, err.code, err.field,
                    err.message);
        return;
    }
    char item_key[CTR_EVENT_ID_MAX + 1];
    char fingerprint[17] = "";
    if (key) {
        snprintf(item_key, sizeof(item_key), "%s#%u", key, i);
        api_write_fingerprint(fingerprint, kind, name, data, len);
    }
    api_write_target to = {.batch = b, .item = i};
    b->alive++; /* before: the write may be done within the call */
    int took = api_write_start(b->app, &to, name, kind, &body,
                               key ? item_key : NULL, fingerprint);
    api_write_body_clear(&body);
    if (!took)
        b->alive--;
}

/* The whole request refused: nothing was applied. */
static void batch_refuse(api_app *app, struct evhttp_request *req, int status,
                         const char *code, const char *field,
                         const char *message)
{
    if (status < 500)
        app->metrics.rejected_4xx++;
    api_reply_error(req, status, code, field, message);
}

/* The checks of the whole request; 0, or -1 when answered. */
static int batch_admissible(api_app *app, struct evhttp_request *req,
                            size_t len, const char *key)
{
    char msg[160];
    if (len > (size_t)app->cfg->server_max_batch_body_bytes) {
        snprintf(msg, sizeof(msg), "request body is larger than %d bytes",
                 app->cfg->server_max_batch_body_bytes);
        batch_refuse(app, req, 413, "body_too_large", NULL, msg);
        return -1;
    }
    /* item i's key is "<key>#<i>": room for the suffix */
    if (key && (!ctr_event_id_valid(key, strlen(key)) ||
                strlen(key) > CTR_EVENT_ID_MAX - 5)) {
        snprintf(msg, sizeof(msg),
                 "Idempotency-Key: must be 1 to %d printable ASCII "
                 "characters without spaces for a batch",
                 CTR_EVENT_ID_MAX - 5);
        batch_refuse(app, req, 400, "invalid_header", "Idempotency-Key", msg);
        return -1;
    }
    if (ctr_producer_brokers_down(app->producer)) {
        app->metrics.writes_unavailable++;
        api_reply_error(req, 503, "kafka_unavailable", NULL,
                        "the event log is unreachable; nothing was applied");
        return -1;
    }
    return 0;
}

/* The body as an array of 1 to API_WRITE_BATCH_MAX items; NULL when
 * answered. */
static struct json_object *batch_parse(api_app *app, struct evhttp_request *req,
                                       const char *data, size_t len)
{
    ctr_json_error jerr;
    api_body_error err;
    char msg[96];
    struct json_object *root = ctr_json_parse_ex(
        data, len, CTR_JSON_UNIQUE_KEYS | CTR_JSON_EXACT_INTS, &jerr);
    if (root == NULL) {
        (void)api_body_refuse_json(&err, &jerr);
        batch_refuse(app, req, strcmp(err.code, "internal") == 0 ? 500 : 400,
                     err.code, err.field, err.message);
        return NULL;
    }
    size_t n = json_object_is_type(root, json_type_array)
                   ? json_object_array_length(root)
                   : 0;
    if (n == 0 || n > API_WRITE_BATCH_MAX) {
        snprintf(msg, sizeof(msg),
                 "request body must be a JSON array of 1 to %d writes",
                 API_WRITE_BATCH_MAX);
        batch_refuse(app, req, 400, "invalid_json", NULL, msg);
        json_object_put(root);
        return NULL;
    }
    return root;
}

void api_handle_batch_write(api_app *app, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *key = evhttp_find_header(evhttp_request_get_input_headers(req),
                                         "Idempotency-Key");
    if (batch_admissible(app, req, len, key) != 0)
        return;
    const char *data = len ? (const char *)evbuffer_pullup(in, -1) : "";
    struct json_object *root = batch_parse(app, req, data, len);
    if (root == NULL)
        return;
    unsigned n = (unsigned)json_object_array_length(root);
    /* a batch is as many writes in flight as it has items */
    if (app->inflight > 0 &&
        app->inflight + (long)n > app->cfg->server_max_inflight) {
        api_refuse_overloaded(app, req);
        json_object_put(root);
        return;
    }
    api_batch *b = calloc(1, sizeof(*b) + n * sizeof(b->items[0]));
    if (b == NULL) {
        api_reply_error(req, 500, "internal", NULL, "out of memory");
        json_object_put(root);
        return;
    }
    b->app = app;
    b->req = req;
    b->n = n;
    b->starting = 1;
    for (unsigned i = 0; i < n; i++)
        item_start(b, i, json_object_array_get_idx(root, i), key, data, len);
    json_object_put(root);
    b->starting = 0;
    batch_settle(b);
}
