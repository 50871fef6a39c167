/*
 * write_path.c - increment, decrement and set.
 *
 * validate -> one Lua call on Redis (redis/write.lua: epoch, dedup,
 * escrowed bounds, add, stamp, expiry, and the write's pending entry)
 * -> publish the event to Kafka -> answer when both confirmed -> finish
 * the pending entry (redis/finish.lua).
 *
 * A write is one write_op, freed in exactly one place (write_release) once
 * nothing can call back into it. It is answered exactly once (to its HTTP
 * request, or into its batch: batch.c), and then only finished
 * (op->open = 0): a write whose answer went out early
 * (a deadline passed) still runs to completion, so that it is applied
 * wholly or not at all:
 * - Redis answers after its deadline: the write is published anyway;
 * - Kafka says "not persisted": the Redis change is undone, and only once
 *   the undo is confirmed is the answer "nothing was applied"
 *   (kafka_unavailable); an undo that fails leaves it "indeterminate";
 * - Kafka says "possibly persisted" (timed out in flight), the Redis
 *   connection dropped before the answer, a cluster write reached too few
 *   replicas, or the process dies: the pending entry stays in Redis, and
 *   the applier's resolver (applier/resolver.c) finds it once no verdict
 *   can still come, looks for its event in the log, and publishes it if
 *   absent: whole either way.
 * Until its entry is finished or undone a write is pending: bounds, the
 * int64 range and dedup are judged as if pending writes may still fail
 * (escrow), so an undo never crosses a bound or un-counts a user someone
 * else was told about.
 *
 * Redis unusable (down, hung, or restarted empty and not rebuilt yet):
 * the event goes into Kafka only, without the "origin" header and so to
 * the input topic (kafka.input_topic), so that the applier applies it in
 * log order once Redis is back; the answer is
 * 202 {"applied": false}. A set needs the current value: it is refused.
 *
 * Idempotency-Key: the key is the event id, and the same Lua call that
 * applies the write leaves a record under the counter's guard key (see
 * redis/apply.h): pending until the event is in the log, then done. A
 * retry finds it and
 * - replays the first answer (done), with Idempotent-Replayed: true;
 * - answers 409 request_in_progress while the first attempt may still
 *   settle (its lease, longer than any Kafka verdict, has not run out);
 * - after the lease, takes the write over: it publishes the event again
 *   (the persister counts a keyed event once per key and generation),
 *   marks it done and replays. So a client retrying after any crash gets
 *   one effect (G3).
 * A different request under the same key is refused (422). A key names
 * one write for idempotency_ttl_s after its first use (its generation);
 * used again later it is a new write, everywhere.
 */
#include "api/handlers.h"
#include "api/body.h"
#include "api/read_floor.h"
#include "api/reply.h"
#include "api/metrics.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "ingest/event.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { FUTURE_TOLERANCE_MS = 5 * 60 * 1000 };

typedef struct write_op {
    api_app *app;
    api_write_target to; /* where its answer goes */
    int open;            /* 0 once answered */
    const ctr_counter_def *def;
    char name[CTR_NAME_MAX + 1];
    char event_id[CTR_EVENT_ID_MAX + 1];
    char period[11];       /* local date of a daily window, or "" */
    char key_suffix[24];   /* ":d:<date>" or "" */
    char dedup_suffix[24]; /* ":u:<date>" / ":h:<date>" or "" */
    ctr_apply_spec spec;
    ctr_apply_result res;
    int64_t requested; /* the delta asked for (or the target of a set) */
    int64_t ts_ms;
    char *user_id;
    char *metadata;
    char *payload;
    size_t payload_len;
    struct event *kafka_deadline; /* answer by then even if Kafka has not */
    int64_t published_us;         /* when the event was queued */
    int via_log;                  /* Redis unusable: the applier applies it */
    char today[11];               /* the counter's local date now */
    int keyed;                    /* event_id is the client's key */
    int replay;                   /* answering a retry from its record */
    char fingerprint[17];
    char token[17];
    char idem_head[64];
    char *claimed; /* a takeover's new record */
} write_op;

/* How long a retry waits (409) for the first attempt before taking it
 * over: past its answer deadline, when a live first attempt is waiting
 * for a broker that is away. Taking over is safe whenever it happens: the
 * first attempt undoes only while the record still names its token, and
 * PostgreSQL counts a keyed event once. */
static int64_t idem_lease_ms(const ctr_config *cfg)
{
    return 2 * (int64_t)cfg->kafka_delivery_timeout_ms +
           cfg->redis_write_timeout_ms + 2000;
}

static void write_release(write_op *op)
{
    api_batch *batch = op->to.batch;
    if (op->kafka_deadline)
        event_free(op->kafka_deadline);
    op->app->inflight--;
    free(op->user_id);
    free(op->metadata);
    free(op->payload);
    free(op->claimed);
    free(op);
    if (batch)
        api_batch_release(batch);
}

/* Sends an answer to where it goes; body is a JSON object and its
 * newline. */
static void target_send(const api_write_target *to, int status,
                        struct evbuffer *body, int replayed)
{
    if (to->batch) {
        api_batch_answer(to->batch, to->item, status, body, replayed);
        return;
    }
    if (replayed)
        evhttp_add_header(evhttp_request_get_output_headers(to->req),
                          "Idempotent-Replayed", "true");
    api_reply_json(to->req, status, body);
}

static void target_error(const api_write_target *to, int status,
                         const char *code, const char *field,
                         const char *message)
{
    if (to->batch == NULL) {
        api_reply_error(to->req, status, code, field, message);
        return;
    }
    struct evbuffer *body = evbuffer_new();
    if (body)
        api_json_error_body(body, code, field, message);
    api_batch_answer(to->batch, to->item, status, body, 0);
    if (body)
        evbuffer_free(body);
}

/* A refusal before anything was touched. */
static void refuse(api_app *app, const api_write_target *to, int status,
                   const char *code, const char *field, const char *message)
{
    app->metrics.rejected_4xx++;
    target_error(to, status, code, field, message);
}

/* Whether the write can still be answered: not once answered, nor while
 * the HTTP layer is being freed at shutdown. */
static int answerable(write_op *op)
{
    if (op->app->closing)
        op->open = 0;
    return op->open;
}

static void write_answer_error(write_op *op, int status, const char *code,
                               const char *message)
{
    if (answerable(op))
        target_error(&op->to, status, code, NULL, message);
    op->open = 0;
    if (status == 503 && strcmp(code, "indeterminate") == 0)
        op->app->metrics.writes_indeterminate++;
    else if (status == 503)
        op->app->metrics.writes_unavailable++;
}

/* The value ended elsewhere than asked: a bound clamped it. */
static int write_was_clamped(const write_op *op)
{
    int64_t applied;
    if (op->def->kind != CTR_KIND_GAUGE)
        return 0;
    if (op->spec.is_set)
        return op->res.value != op->requested;
    return __builtin_sub_overflow(op->res.value, op->res.prev, &applied) ||
           applied != op->requested;
}

/* What the write changed; 0 if that does not fit (cannot happen: the
 * script refuses such sets). */
static int64_t write_applied_delta(const write_op *op)
{
    int64_t applied;
    if (__builtin_sub_overflow(op->res.value, op->res.prev, &applied)) {
        ctr_error("write %s to %s: applied difference overflows", op->event_id,
                  op->name);
        return 0;
    }
    return applied;
}

/* 1 when the answer replays a first attempt's (counted). */
static int mark_replayed(write_op *op)
{
    if (op->replay)
        op->app->metrics.writes_replayed++;
    return op->replay;
}

static void write_answer_accepted(write_op *op)
{
    struct evbuffer *body;
    if (!answerable(op))
        return;
    body = evbuffer_new();
    evbuffer_add_printf(body, "{\"success\":true,\"applied\":false,"
                              "\"event_id\":");
    api_json_append_string(body, op->event_id);
    evbuffer_add_printf(body, "}\n");
    target_send(&op->to, 202, body, 0);
    evbuffer_free(body);
    op->open = 0;
}

/* A counter that only grows answers what reads show once this write is
 * confirmed (pending writes of others excluded: they may yet fail); a
 * gauge, its value. A replay answers the first attempt's (its record). */
static int monotonic(const ctr_counter_def *def)
{
    return def->kind == CTR_KIND_COUNTER || def->kind == CTR_KIND_UNIQUE;
}

static int64_t answered_value(const write_op *op)
{
    return monotonic(op->def) ? op->res.seen : op->res.value;
}

/* A client saw this value: a read that falls back to PostgreSQL must not
 * show it less (I6), as for values a read served. Only the live window of
 * a counter that only grows within it. */
static void note_floor(const write_op *op)
{
    if (op->app->floor == NULL || op->replay || /* a replay's value is old */
        !monotonic(op->def) ||
        (op->spec.period[0] && strcmp(op->spec.period, op->today) != 0))
        return;
    /* a decrease is a correction: the floor follows it down */
    if (op->res.value < op->res.prev)
        api_floor_set(op->app->floor, op->name, op->spec.period, op->res.value,
                      op->ts_ms);
    else
        api_floor_note(op->app->floor, op->name, op->spec.period, op->res.value,
                       op->ts_ms);
}

static void write_answer_ok(write_op *op)
{
    struct evbuffer *body;
    if (!answerable(op))
        return;
    int replayed = mark_replayed(op);
    body = evbuffer_new();
    API_JSON_LIT(body, "{\"success\":true,\"current_value\":");
    api_json_append_i64(body, answered_value(op));
    API_JSON_LIT(body, ",\"event_id\":");
    api_json_append_string(body, op->event_id);
    if (op->spec.period[0]) {
        API_JSON_LIT(body, ",\"period\":\"");
        evbuffer_add(body, op->spec.period, strlen(op->spec.period));
        API_JSON_LIT(body, "\"");
    }
    if (op->res.outcome == CTR_APPLY_DUPLICATE)
        API_JSON_LIT(body, ",\"counted\":false");
    if (op->def->kind == CTR_KIND_UNIQUE && op->def->dedup == CTR_DEDUP_HLL)
        API_JSON_LIT(body, ",\"approximate\":true");
    if (write_was_clamped(op))
        API_JSON_LIT(body, ",\"clamped\":true");
    API_JSON_LIT(body, "}\n");
    if (op->to.batch && monotonic(op->def)) {
        api_batch_value v = {.value = op->res.value, .seen = op->res.seen};
        snprintf(v.key, sizeof(v.key), "%s:%s", op->name, op->spec.period);
        int64_t gained;
        if (op->res.outcome == CTR_APPLY_APPLIED &&
            !__builtin_sub_overflow(op->res.value, op->res.prev, &gained) &&
            gained > 0)
            v.gained = gained;
        api_batch_note(op->to.batch, op->to.item, &v);
    }
    target_send(&op->to, 200, body, replayed);
    note_floor(op);
    evbuffer_free(body);
    op->open = 0;
}

static const char indeterminate_kafka[] =
    "the event log did not confirm the write in time; it may or may not be "
    "recorded";

/*
 * The undo's verdict (redis/undo.lua). Undone (1), or no entry to undo
 * (0: Redis restored without the write, or a duplicate that changed
 * nothing): nothing was applied anywhere, and the answer may say so. Any
 * other: the entry is another's now (a retry took the key over, or a
 * resolver the entry) or the undo did not run; the write may yet become
 * whole, so it is indeterminate.
 */
static void undo_done(enum api_redis_status st, int result, void *arg)
{
    write_op *op = arg;
    if (st == API_REDIS_OK && (result == 1 || result == 0)) {
        if (result == 1)
            op->app->metrics.writes_undone++;
        write_answer_error(op, 503, "kafka_unavailable",
                           "the event log did not accept the write; nothing "
                           "was applied");
    } else {
        ctr_warn("could not undo write %s to counter %s (redis status %d, "
                 "answer %d); its pending entry is left to the resolver",
                 op->event_id, op->name, (int)st, result);
        write_answer_error(op, 503, "indeterminate", indeterminate_kafka);
    }
    write_release(op);
}

/* Takes the Redis change back after Kafka refused the event. */
static void write_undo(write_op *op)
{
    api_app *app = op->app;
    if (api_redis_undo(app->redis, op->name, &op->spec,
                       app->cfg->redis_write_timeout_ms, undo_done, op) != 0)
        undo_done(API_REDIS_UNAVAILABLE, 0x7fff, op);
}

/*
 * The client is answered at kafka.delivery_timeout_ms; librdkafka keeps
 * trying for kafka.message_timeout_ms, and its verdict still settles the
 * write (kept, or undone) when it arrives.
 */
static void write_kafka_deadline(evutil_socket_t fd, short what, void *arg)
{
    write_op *op = arg;
    (void)fd;
    (void)what;
    write_answer_error(op, 503, "indeterminate", indeterminate_kafka);
}

/* The event is in the log: the pending entry goes, its escrow is
 * released and a keyed write's record becomes "done". If this does not
 * reach Redis the entry stays, and the resolver finds the event and
 * finishes it. */
static void write_finish(write_op *op)
{
    if (api_redis_finish(op->app->redis, op->name, &op->spec,
                         op->app->cfg->redis_write_timeout_ms) != 0)
        ctr_warn("write %s to counter %s: could not finish its pending "
                 "entry; the resolver will",
                 op->event_id, op->name);
}

/*
 * Kafka did not take the event (definite) or did not say (unknown). Only
 * a write whose Redis change is ours to take back can answer "nothing was
 * applied" and undo it; a takeover's Redis change is the first attempt's,
 * and a write through the log changed nothing in Redis. An unknown
 * verdict leaves the pending entry to the resolver.
 */
static void write_kafka_failed(write_op *op, int definite)
{
    if (op->via_log && definite) {
        write_answer_error(op, 503, "kafka_unavailable",
                           "the event log did not accept the write; nothing "
                           "was applied");
        write_release(op);
        return;
    }
    if (!definite || op->replay || op->via_log) {
        if (!definite && !op->via_log)
            ctr_warn("write %s to counter %s timed out in flight to kafka; "
                     "its pending entry is left to the resolver",
                     op->event_id, op->name);
        write_answer_error(op, 503, "indeterminate", indeterminate_kafka);
        write_release(op);
        return;
    }
    write_undo(op);
}

void api_on_delivery(enum ctr_delivery result, void *arg)
{
    write_op *op = arg;

    api_metrics_kafka((double)(ctr_time_mono_us() - op->published_us) / 1e6,
                      result != CTR_DELIVERED);

    switch (result) {
    case CTR_DELIVERED:
        if (op->via_log) {
            op->app->metrics.writes_via_log++;
            write_answer_accepted(op);
            write_release(op);
            return;
        }
        write_finish(op);
        if (op->replay)
            ; /* counted by mark_replayed */
        else if (op->res.outcome == CTR_APPLY_DUPLICATE)
            op->app->metrics.writes_duplicate++;
        else
            op->app->metrics.writes_applied++;
        write_answer_ok(op);
        write_release(op);
        return;
    case CTR_DELIVERY_FAILED: write_kafka_failed(op, 1); return;
    case CTR_DELIVERY_UNKNOWN: write_kafka_failed(op, 0); return;
    }
}

/*
 * Encodes the event of a write and publishes it: with "origin: api" when
 * Redis has decided it (and "dedup: id" when keyed), bare when it went
 * around Redis for the applier to apply.
 */
static void write_publish(write_op *op)
{
    ctr_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.v = CTR_EVENT_VERSION;
    memcpy(ev.id, op->event_id, sizeof(ev.id));
    memcpy(ev.counter, op->name, sizeof(ev.counter));
    /* Unique counters log the attempt (PostgreSQL dedups by itself);
     * others log what was applied, which a clamp or a set decides, or
     * what was asked when the applier is to decide. */
    ev.delta = op->def->kind == CTR_KIND_UNIQUE ? 1
               : op->via_log                    ? op->requested
                                                : write_applied_delta(op);
    ev.user_id = op->user_id;
    ev.ts_ms = op->ts_ms;
    ev.metadata = op->metadata;
    op->payload = ctr_event_encode(&ev, &op->payload_len);

    int ms = op->app->cfg->kafka_delivery_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    op->kafka_deadline = evtimer_new(op->app->base, write_kafka_deadline, op);
    if (op->kafka_deadline)
        evtimer_add(op->kafka_deadline, &tv);
    op->published_us = ctr_time_mono_us();
    ctr_event_headers h = {
        .origin = op->via_log ? NULL : "api",
        /* keyed: its generation names it with the key, for the persister
         * and, through the log, for the applier's guard */
        .dedup_gen = op->keyed ? op->spec.gen_ms : 0,
        .epoch = op->via_log ? NULL : op->res.epoch,
    };
    if (op->payload == NULL ||
        ctr_producer_send(op->app->producer, op->name, strlen(op->name),
                          op->payload, op->payload_len, &h, op) != 0) {
        /* nothing reached the broker: definite */
        write_kafka_failed(op, 1);
    }
}

static void write_bound_refused(write_op *op)
{
    const ctr_counter_def *def = op->def;
    int64_t attempted;
    char msg[320];

    op->app->metrics.writes_bound_refused++;
    if (!answerable(op))
        return;
    int replayed = mark_replayed(op);
    if (op->spec.is_set)
        attempted = op->requested;
    else if (__builtin_add_overflow(op->res.value, op->requested, &attempted))
        attempted = op->requested < 0 ? INT64_MIN : INT64_MAX;
    int below = def->has_min && attempted < def->min;
    snprintf(msg, sizeof(msg),
             "value: the write would take %s %s its %s of %" PRId64
             "; nothing was applied",
             op->name, below ? "below" : "above", below ? "minimum" : "maximum",
             below ? def->min : def->max);
    struct evbuffer *body = evbuffer_new();
    evbuffer_add_printf(body, "{\"success\":false,\"error\":{\"code\":"
                              "\"out_of_bounds\",\"field\":\"value\","
                              "\"message\":");
    api_json_append_string(body, msg);
    evbuffer_add_printf(body, "},\"current_value\":%" PRId64 "}\n",
                        op->res.value);
    target_send(&op->to, 409, body, replayed);
    evbuffer_free(body);
    op->open = 0;
}

/* A Redis answer that came after the client was told "indeterminate". */
static void write_applied_late(enum api_redis_status st,
                               const ctr_apply_result *res, void *arg)
{
    write_op *op = arg;
    if (st == API_REDIS_OK && (res->outcome == CTR_APPLY_APPLIED ||
                               res->outcome == CTR_APPLY_DUPLICATE)) {
        /* Redis has it: publish too, so the write is whole, not half. */
        op->res = *res;
        write_publish(op);
        return;
    }
    write_release(op);
}

static void write_in_progress(write_op *op)
{
    if (!answerable(op))
        return;
    if (op->to.req)
        evhttp_add_header(evhttp_request_get_output_headers(op->to.req),
                          "Retry-After", "1");
    target_error(&op->to, 409, "request_in_progress", "Idempotency-Key",
                 "Idempotency-Key: the first request with this key is "
                 "still being settled; retry shortly");
    op->open = 0;
}

static void claim_done(enum api_redis_status st, int changed, void *arg)
{
    write_op *op = arg;
    if (st == API_REDIS_OK && changed) {
        ctr_info("write %s to counter %s: taking over its pending first "
                 "attempt; publishing it again",
                 op->event_id, op->name);
        write_publish(op);
        return;
    }
    if (st == API_REDIS_OK)
        write_in_progress(op); /* another retry got there first */
    else
        write_answer_error(op, 503, "indeterminate",
                           "redis did not answer; the first request with "
                           "this key may or may not be applied");
    write_release(op);
}

/* The spec of the first attempt a record describes: planned at its event
 * time, with its generation; the retry's token and pending id stay. */
static void replan_as_first(write_op *op, const ctr_idem_record *rec)
{
    ctr_apply_spec keep = op->spec;
    ctr_apply_plan(&op->spec, op->def, rec->ts_ms, ctr_time_now_ms(),
                   op->app->cfg->lateness_s, op->user_id, keep.is_set,
                   keep.arg);
    op->spec.pending_id = keep.pending_id;
    op->spec.created_ms = keep.created_ms;
    op->spec.guard_id = keep.guard_id;
    op->spec.guard_ttl_s = keep.guard_ttl_s;
    op->spec.idem_head = keep.idem_head;
    op->spec.idem_token = keep.idem_token;
    op->spec.gen_ms = rec->gen_ms;
    op->ts_ms = rec->ts_ms;
}

/*
 * The key has a record (see the top of this file). res->record is what
 * the guard held; res->prev is the counter's value now.
 */
static void write_key_seen(write_op *op, const ctr_apply_result *res)
{
    ctr_idem_record rec;
    op->replay = 1;
    if (ctr_idem_record_parse(res->record, &rec) != 0) {
        /* the applier applied an event with this id (a write accepted
         * while Redis was away): it counted; its answer was not kept */
        op->res.value = op->res.prev = res->prev;
        op->res.seen = res->seen;
        if (res->record[0] == 'r') {
            op->res.value = res->prev;
            write_bound_refused(op);
        } else {
            write_answer_ok(op);
        }
        write_release(op);
        return;
    }
    if (strcmp(rec.fingerprint, op->fingerprint) != 0) {
        if (answerable(op))
            refuse(op->app, &op->to, 422, "idempotency_key_reused",
                   "Idempotency-Key",
                   "Idempotency-Key: was used for a different request");
        op->open = 0;
        write_release(op);
        return;
    }
    /* the first attempt's write, not this request's: its window, its
     * period in the answer, its pending entry */
    replan_as_first(op, &rec);
    op->res.outcome = (enum ctr_apply_outcome)rec.outcome;
    op->res.value = rec.value;
    op->res.seen = rec.seen;
    if (__builtin_sub_overflow(rec.value, rec.applied, &op->res.prev))
        op->res.prev = rec.value;
    if (rec.state == 'D') {
        write_answer_ok(op);
        write_release(op);
        return;
    }
    int64_t now = ctr_time_now_ms();
    if (rec.lease_ms > now) {
        write_in_progress(op);
        write_release(op);
        return;
    }
    /* The first attempt is gone (crashed, or its event's fate unknown):
     * its Redis change stands; make sure its event is in the log. */
    snprintf(op->token, sizeof(op->token), "%016" PRIx64, ctr_random_u64());
    op->ts_ms = rec.ts_ms;
    op->claimed = malloc(strlen(res->record) + 64);
    if (op->claimed == NULL) {
        write_answer_error(op, 503, "indeterminate", "out of memory");
        write_release(op);
        return;
    }
    const char *tail = strchr(strchr(res->record + 3, '|') + 1, '|');
    sprintf(op->claimed, "AP|%" PRId64 "|%s%s",
            now + idem_lease_ms(op->app->cfg), op->token, tail);
    if (api_redis_idem_claim(
            op->app->redis, op->name, op->event_id, res->record, op->claimed,
            op->app->cfg->redis_write_timeout_ms, claim_done, op) != 0) {
        write_answer_error(op, 503, "indeterminate",
                           "redis is not reachable; the first request with "
                           "this key may or may not be applied");
        write_release(op);
    }
}

/* Redis cannot take the write now (down, or in a cluster the counter's
 * slot is failing over or moving) and nothing was applied: through the
 * log, for the applier. */
static void write_via_log(write_op *op)
{
    if (op->spec.is_set) {
        write_answer_error(op, 503, "redis_unavailable",
                           "redis is not reachable and a set needs the "
                           "current value; nothing was applied");
        write_release(op);
        return;
    }
    op->via_log = 1;
    write_publish(op);
}

static void write_applied(enum api_redis_status st, const ctr_apply_result *res,
                          void *arg)
{
    write_op *op = arg;

    switch (st) {
    case API_REDIS_OK:
        op->res = *res;
        if (res->outcome == CTR_APPLY_KEY_SEEN) {
            write_key_seen(op, res);
            return;
        }
        if (res->outcome == CTR_APPLY_BOUND_REFUSED) {
            write_bound_refused(op);
            break;
        }
        if (res->outcome == CTR_APPLY_NO_EPOCH) {
            write_via_log(op); /* nothing applied: the data set is gone */
            return;
        }
        if (write_was_clamped(op))
            op->app->metrics.writes_clamped++;
        if (op->spec.period[0] && strcmp(op->spec.period, op->today) != 0)
            op->app->metrics.writes_late++; /* corrects a closed day */
        write_publish(op);
        return;
    case API_REDIS_OVERFLOW:
        if (answerable(op))
            target_error(&op->to, 422, "value_out_of_range", "value",
                         "the counter would leave the 64-bit signed "
                         "range; nothing was applied");
        op->open = 0;
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
    case API_REDIS_UNAVAILABLE: write_via_log(op); return;
    case API_REDIS_WAIT_SHORT:
        /* applied on the master only: not published, so that a failover
         * that loses it loses its entry too; if it survives, the
         * resolver publishes it */
        write_answer_error(op, 503, "indeterminate",
                           "redis did not replicate the write in time; it "
                           "may or may not be applied");
        break;
    case API_REDIS_DISCONNECTED:
        write_answer_error(op, 503, "indeterminate",
                           "lost the connection to redis; the write may or "
                           "may not be applied");
        break;
    }
    write_release(op);
}

/* Checks what the counter's kind allows; 0 or -1 (answered). */
static int check_kind(api_app *app, const api_write_target *to,
                      const ctr_counter_def *def, const char *name,
                      enum api_write_kind kind, const api_write_body *body)
{
    char msg[200];
    if (kind == API_WRITE_SET && def->kind != CTR_KIND_GAUGE) {
        snprintf(msg, sizeof(msg),
                 "set applies to gauges only; %s is of kind %s", name,
                 ctr_kind_name(def->kind));
        refuse(app, to, 400, "invalid_operation", NULL, msg);
        return -1;
    }
    if (def->kind != CTR_KIND_UNIQUE)
        return 0;
    if (kind == API_WRITE_DECR) {
        snprintf(msg, sizeof(msg),
                 "%s counts distinct users and cannot be decremented", name);
        refuse(app, to, 400, "invalid_operation", NULL, msg);
        return -1;
    }
    if (body->user_id == NULL) {
        refuse(app, to, 400, "invalid_field", "user_id",
               "user_id: is required for unique counters");
        return -1;
    }
    if (body->has_value && body->value != 1) {
        refuse(app, to, 400, "invalid_field", "value",
               "value: must be 1 (or absent) for unique counters");
        return -1;
    }
    return 0;
}

/*
 * The size of the event a write logs (and of the record the applier
 * publishes for it), with the widest delta it can carry: the one asked
 * for an increment or decrement (a clamp only narrows it), any int64 for a
 * set (its difference is known once Redis has applied it).
 */
static size_t write_event_bytes(const char *name, const char *key,
                                enum api_write_kind kind,
                                const ctr_counter_def *def,
                                const api_write_body *body, int64_t ts_ms)
{
    ctr_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.v = CTR_EVENT_VERSION;
    /* a generated id is a UUID: as long as this one */
    snprintf(ev.id, sizeof(ev.id), "%s",
             key ? key : "00000000-0000-4000-8000-000000000000");
    snprintf(ev.counter, sizeof(ev.counter), "%s", name);
    ev.delta = kind == API_WRITE_SET          ? INT64_MIN
               : def->kind == CTR_KIND_UNIQUE ? 1
               : kind == API_WRITE_DECR       ? -body->value
                                              : body->value;
    ev.user_id = body->user_id;
    ev.ts_ms = ts_ms;
    ev.metadata = body->metadata;
    return ctr_event_encoded_len(&ev);
}

void api_write_fingerprint(char out[17], enum api_write_kind kind,
                           const char *name, const char *body, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    const unsigned char sep[2] = {(unsigned char)('0' + kind), '\n'};
    const unsigned char *parts[3] = {sep, (const unsigned char *)name,
                                     (const unsigned char *)body};
    size_t lens[3] = {2, strlen(name) + 1, len}; /* name with its NUL */
    for (int p = 0; p < 3; p++)
        for (size_t i = 0; i < lens[p]; i++) {
            h ^= parts[p][i];
            h *= 0x100000001b3ULL;
        }
    snprintf(out, 17, "%016" PRIx64, h);
}

/* The refusals a write gets before anything is touched: its kind, its
 * time, its key, its event's size, a log that is away. 0 when it may go
 * on; -1 when answered. */
static int write_admissible(api_app *app, const api_write_target *to,
                            const char *name, enum api_write_kind kind,
                            const ctr_counter_def *def,
                            const api_write_body *body, int64_t ts, int64_t now,
                            const char *key)
{
    char msg[160];
    if (check_kind(app, to, def, name, kind, body) != 0)
        return -1;
    if (ts < now - (int64_t)app->cfg->lateness_s * 1000) {
        snprintf(msg, sizeof(msg),
                 "timestamp: older than the accepted lateness of %d s",
                 app->cfg->lateness_s);
        app->metrics.writes_too_late++;
        refuse(app, to, 422, "too_late", "timestamp", msg);
        return -1;
    }
    if (ts > now + FUTURE_TOLERANCE_MS) {
        refuse(app, to, 422, "in_future", "timestamp",
               "timestamp: more than 5 minutes in the future");
        return -1;
    }
    if (key && !ctr_event_id_valid(key, strlen(key))) {
        refuse(app, to, 400, "invalid_header", "Idempotency-Key",
               "Idempotency-Key: must be 1 to 128 printable ASCII "
               "characters without spaces");
        return -1;
    }
    /* The log's consumers refuse an event past CTR_EVENT_MAX_BYTES (to
     * the DLQ): such a write must not be acknowledged. */
    size_t event_bytes = write_event_bytes(name, key, kind, def, body, ts);
    if (event_bytes > CTR_EVENT_MAX_BYTES) {
        snprintf(msg, sizeof(msg),
                 "metadata: the event of this write would be %zu bytes, over "
                 "the %d bytes an event may have",
                 event_bytes, CTR_EVENT_MAX_BYTES);
        refuse(app, to, 413, "body_too_large", "metadata", msg);
        return -1;
    }
    if (ctr_producer_brokers_down(app->producer)) {
        app->metrics.writes_unavailable++;
        target_error(to, 503, "kafka_unavailable", NULL,
                     "the event log is unreachable; nothing was applied");
        return -1;
    }
    return 0;
}

/* The write_op of an admitted write: its event id (the key, or a new
 * one), its idempotency record's head, its plan and its pending entry.
 * Takes the body's strings. NULL when out of memory. */
static write_op *write_op_new(api_app *app, const api_write_target *to,
                              const char *name, enum api_write_kind kind,
                              const ctr_counter_def *def, api_write_body *body,
                              int64_t ts, int64_t now, const char *key,
                              const char *fingerprint)
{
    write_op *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->app = app;
    op->to = *to;
    op->open = 1;
    op->def = def;
    op->ts_ms = ts;
    snprintf(op->name, sizeof(op->name), "%s", name);
    if (key) {
        op->keyed = 1;
        snprintf(op->event_id, sizeof(op->event_id), "%s", key);
        snprintf(op->fingerprint, sizeof(op->fingerprint), "%s", fingerprint);
        snprintf(op->token, sizeof(op->token), "%016" PRIx64, ctr_random_u64());
        snprintf(op->idem_head, sizeof(op->idem_head), "AP|%" PRId64 "|%s|%s",
                 now + idem_lease_ms(app->cfg), op->token, op->fingerprint);
    } else {
        ctr_event_new_id(op->event_id);
    }
    op->user_id = body->user_id;
    op->metadata = body->metadata;
    body->user_id = body->metadata = NULL;

    op->requested = kind == API_WRITE_DECR ? -body->value : body->value;
    if (def->kind == CTR_KIND_UNIQUE)
        op->requested = 1;
    ctr_apply_plan(&op->spec, def, ts, now, app->cfg->lateness_s, op->user_id,
                   kind == API_WRITE_SET, op->requested);
    if (op->spec.period[0])
        ctr_date_format(ctr_tz_local_day(def->tz, now, NULL, NULL), op->today,
                        sizeof(op->today));
    op->spec.pending_id = op->event_id;
    op->spec.created_ms = now;
    if (op->keyed) {
        op->spec.guard_id = op->event_id;
        op->spec.guard_ttl_s = app->cfg->idempotency_ttl_s;
        op->spec.idem_head = op->idem_head;
        op->spec.idem_token = op->token;
        op->spec.gen_ms = now;
    }
    return op;
}

int api_write_start(api_app *app, const api_write_target *to, const char *name,
                    enum api_write_kind kind, api_write_body *body,
                    const char *key, const char *fingerprint)
{
    int64_t now = ctr_time_now_ms();
    const ctr_counter_def *def = ctr_config_counter(app->cfg, name);
    int64_t ts = body->ts_ms ? body->ts_ms : now;
    if (write_admissible(app, to, name, kind, def, body, ts, now, key) != 0)
        return 0;
    write_op *op =
        write_op_new(app, to, name, kind, def, body, ts, now, key, fingerprint);
    if (op == NULL) {
        target_error(to, 500, "internal", NULL, "out of memory");
        return 0;
    }
    app->inflight++;
    if (api_redis_write(app->redis, op->name, &op->spec,
                        app->cfg->redis_write_timeout_ms, write_applied,
                        write_applied_late, op) != 0)
        write_via_log(op);
    return 1;
}

void api_handle_write(api_app *app, struct evhttp_request *req,
                      const api_route *route, enum api_write_kind kind)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    api_write_body body;
    api_body_error err;
    api_write_target to = {.req = req};

    if (len > (size_t)app->cfg->server_max_body_bytes) {
        char msg[96];
        snprintf(msg, sizeof(msg), "request body is larger than %d bytes",
                 app->cfg->server_max_body_bytes);
        refuse(app, &to, 413, "body_too_large", NULL, msg);
        return;
    }
    const char *data = len ? (const char *)evbuffer_pullup(in, -1) : "";
    if (api_body_parse_write(
            data, len, kind == API_WRITE_SET ? API_BODY_SET : API_BODY_DELTA,
            &body, &err) != 0) {
        if (strcmp(err.code, "internal") == 0)
            api_reply_error(req, 500, err.code, NULL, err.message);
        else
            refuse(app, &to, 400, err.code, err.field, err.message);
        return;
    }
    const char *key = evhttp_find_header(evhttp_request_get_input_headers(req),
                                         "Idempotency-Key");
    char fingerprint[17] = "";
    if (key)
        api_write_fingerprint(fingerprint, kind, route->name, data, len);
    (void)api_write_start(app, &to, route->name, kind, &body, key, fingerprint);
    api_write_body_clear(&body);
}
