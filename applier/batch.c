/*
 * batch.c - a consumed batch applied to Redis: its events grouped per
 * counter and partition (lanes), consecutive events of one counter one
 * redis/fold.lua call, the calls pipelined with one per counter in flight,
 * each reply acted on (records published, refusals dead-lettered, the api's
 * pending writes confirmed), and the offsets stored once all is done.
 * See main.c for the guarantees.
 */
#include "applier/applier.h"
#include "common/config.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/service.h"
#include "common/timeutil.h"
#include "redis/apply.h"
#include "ingest/consumer.h"
#include "ingest/event.h"
#include "ingest/producer.h"
#include "redis/restore.h"
#include "applier/fold.h"
#include "applier/group_watch.h"
#include "applier/legacy.h"
#include "applier/resolver.h"
#include "applier/tail.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * Runs the write script for spec, retrying with backoff while Redis is
 * unreachable. Returns CTR_APPLY_OK with res, CTR_APPLY_OVERFLOW or
 * CTR_APPLY_ERROR (a reply Redis will give again: the event is refused),
 * or 1 when a stop was requested first.
 */
static int apply_event(applier *a, const char *name, const ctr_apply_spec *s,
                       ctr_apply_result *res, char *err, size_t errlen)
{
    int backoff = 50;
    ctr_apply_argv av;

    for (;;) {
        if (ctr_service_stopping())
            return 1;
        if (applier_redis_ready(a) == 0) {
            if (ctr_apply_write_argv(&av, a->sha, name, s) != 0) {
                snprintf(err, errlen, "key too long");
                return CTR_APPLY_ERROR;
            }
            redisReply *r =
                ctr_rclient_argv(a->redis, av.argv[3], av.argc, av.argv, NULL);
            if (r != NULL) {
                int rc = ctr_apply_parse(r, res, err, errlen);
                int noscript = r->type == REDIS_REPLY_ERROR &&
                               strncmp(r->str, "NOSCRIPT", 8) == 0;
                freeReplyObject(r);
                /* In a cluster the write must reach a replica before its
                 * record goes out: a failover would lose it otherwise. If
                 * the master went away meanwhile the write is sent again;
                 * the event id guard applies it once. */
                int waited = rc != CTR_APPLY_OK
                                 ? 0
                                 : ctr_rclient_wait(a->redis, av.argv[3],
                                                    WAIT_REPLICAS_MS);
                if (waited > 0 && !a->wait_short_logged) {
                    ctr_warn("redis: a write reached fewer replicas than "
                             "redis.wait_replicas within %d ms",
                             WAIT_REPLICAS_MS);
                    a->wait_short_logged = 1;
                }
                int lost =
                    rc == CTR_APPLY_OK && res->outcome == CTR_APPLY_NO_EPOCH;
                if (!noscript && !lost && waited >= 0)
                    return rc;
                if (waited < 0)
                    ctr_warn("redis: %s", ctr_rclient_errstr(a->redis));
                /* the slot lost its data: reconnecting restores it */
                /* still NOSCRIPT after the client loaded the script again:
                 * not the event's fault; reconnect rather than refuse it */
            } else {
                ctr_warn("redis: %s", ctr_rclient_errstr(a->redis));
            }
            applier_redis_drop(a);
        }
        applier_wait_ms(a, backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

/* ---- Kafka ---- */

/*
 * Publishes the record of an applied event: what it changed, counted by
 * the persister once per source offset (msg: the event's message), or,
 * without one, once per (counter, event id[, generation of a key]).
 */
static void publish_record(applier *a, const ctr_event *ev, int64_t delta,
                           int64_t gen, const rd_kafka_message_t *msg)
{
    ctr_event rec = *ev;
    size_t len;
    rec.delta = delta;
    char *payload = ctr_event_encode(&rec, &len);
    ctr_event_headers h = {.origin = "applier", .dedup_gen = gen};
    if (msg) {
        h.source_topic = rd_kafka_topic_name(msg->rkt);
        h.source_partition = msg->partition;
        h.source_offset = msg->offset;
    }
    int backoff = 10;
    while (payload) {
        if (ctr_producer_send(a->producer, ev->counter, strlen(ev->counter),
                              payload, len, &h, a) == 0)
            break;
        /* the queue is full: let deliveries drain */
        ctr_producer_poll(a->producer, backoff);
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
    }
    free(payload);
}

static void dead_letter(applier *a, const rd_kafka_message_t *msg,
                        const char *reason)
{
    a->invalid++;
    ctr_warn("event at partition %d offset %" PRId64
             " sent to the dead-letter topic: %s",
             (int)msg->partition, msg->offset, reason);
    while (ctr_producer_send_dlq(a->producer, msg->key, msg->key_len,
                                 msg->payload, msg->len, reason, msg->partition,
                                 msg->offset, a) != 0)
        ctr_producer_poll(a->producer, 100);
}

/* The generation of a keyed api write sent through the log (its "dedup"
 * header), or 0. */
static int64_t message_gen(const rd_kafka_message_t *msg)
{
    char v[24];
    char *end;
    if (!ctr_message_header(msg, CTR_HEADER_DEDUP, v, sizeof(v)))
        return 0;
    long long g = strtoll(v, &end, 10);
    return *end == '\0' && g > 0 ? (int64_t)g : 0;
}

/*
 * The guard of this event's id holds the api's record of a keyed write:
 * the api applied the same key itself (a first attempt timed out, its
 * retry went through the log). If that attempt is still pending, this
 * event confirms it: its entry is finished (so that its undo, should its
 * own event fail, takes nothing back) and a record of what it applied is
 * published under its generation, which the persister counts once with
 * the api's own event should that arrive too. A done record: counted.
 */
static void confirm_api_write(applier *a, const ctr_event *ev,
                              const ctr_counter_def *def, const char *record)
{
    ctr_idem_record rec;
    ctr_apply_spec spec;
    ctr_apply_argv av;
    if (ctr_idem_record_parse(record, &rec) != 0 || rec.state != 'P')
        return;
    ctr_apply_plan(&spec, def, rec.ts_ms, ctr_time_now_ms(), a->cfg->lateness_s,
                   ev->user_id, 0, rec.applied);
    spec.pending_id = ev->id;
    if (ctr_apply_finish_argv(&av, a->finish_sha, ev->counter, &spec) != 0)
        return;
    redisReply *r =
        ctr_rclient_argv(a->redis, av.argv[3], av.argc, av.argv, NULL);
    int finished = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    if (finished)
        publish_record(a, ev, def->kind == CTR_KIND_UNIQUE ? 1 : rec.applied,
                       rec.gen_ms, NULL);
}

/* ---- a batch ---- */

/* One message of a batch. */
typedef struct item {
    rd_kafka_message_t *msg;
    ctr_event ev;
    const ctr_counter_def *def;
    ctr_apply_spec spec; /* its plan, fence and guard */
    int64_t gen;         /* a keyed api write's generation, else 0 */
    int next;            /* the next item of its lane, -1: none */
} item;

/* The items of one counter on one partition of one topic, in log order:
 * what must reach Redis one call after another. */
typedef struct lane {
    const char *name;
    const char *topic;
    int32_t partition;
    int head; /* the next item to apply, -1: done */
    int tail;
} lane;

/* One script call of a round. */
typedef struct call {
    int lane;
    int n;      /* items from the lane's head */
    int single; /* write.lua for one item; else fold.lua */
    enum { CALL_SENT, CALL_OK, CALL_RETRY, CALL_LOST, CALL_REFUSED } status;
    char **codes; /* fold.lua's, one per item */
    int rc;       /* write.lua's: ctr_apply_parse's status, res, err */
    ctr_apply_result res;
    char err[256];
    ctr_fold_args fold;
    ctr_apply_argv write;
} call;

typedef struct batch {
    item *items;
    int n;
    lane *lanes;
    int nlanes, cap_lanes;
    int *slots; /* hash of (topic, partition, name) -> lane + 1 */
    int nslots;
    call *calls;
    int ncalls;
} batch;

static uint32_t lane_hash(const char *topic, int32_t partition,
                          const char *name)
{
    uint32_t h = 2166136261u ^ (uint32_t)partition;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h ^ (uint32_t)(unsigned char)topic[0] * 31u;
}

/* The lane of item i's counter and partition, made if new. 0 or -1. */
static int lane_add(batch *b, int i)
{
    item *it = &b->items[i];
    const char *topic = rd_kafka_topic_name(it->msg->rkt);
    uint32_t h = lane_hash(topic, it->msg->partition, it->ev.counter);
    int s = (int)(h & (uint32_t)(b->nslots - 1));
    for (; b->slots[s]; s = (s + 1) & (b->nslots - 1)) {
        lane *l = &b->lanes[b->slots[s] - 1];
        if (l->partition == it->msg->partition &&
            strcmp(l->name, it->ev.counter) == 0 &&
            strcmp(l->topic, topic) == 0) {
            b->items[l->tail].next = i;
            l->tail = i;
            if (l->head < 0)
                l->head = i;
            return 0;
        }
    }
    if (b->nlanes == b->cap_lanes)
        return -1; /* cannot happen: a lane per item at most */
    lane *l = &b->lanes[b->nlanes++];
    l->name = it->ev.counter;
    l->topic = topic;
    l->partition = it->msg->partition;
    l->head = l->tail = i;
    b->slots[s] = b->nlanes;
    return 0;
}

/* Items j and k may share one fold.lua call: the same value and dedup
 * keys, neither a keyed api write. */
static int same_run(const item *j, const item *k)
{
    return k->gen == 0 && j->gen == 0 &&
           strcmp(j->spec.key_suffix, k->spec.key_suffix) == 0 &&
           strcmp(j->spec.dedup_suffix, k->spec.dedup_suffix) == 0;
}

/* The calls of a round that went into the pipeline, in its order. */
typedef struct round {
    batch *b;
    const int *sent;
} round;

/* The reply of the round's i-th sent call (r lives only during this
 * call). */
static void on_call_reply(const redisReply *r, size_t i, void *arg)
{
    round *rd = arg;
    call *c = &rd->b->calls[rd->sent[i]];
    if (r == NULL) {
        c->status = CALL_RETRY;
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && (strncmp(r->str, "NOSCRIPT", 8) == 0 ||
                                         strncmp(r->str, "LOADING", 7) == 0 ||
                                         strncmp(r->str, "BUSY", 4) == 0)) {
        c->status = CALL_RETRY; /* not run: not the events' fault */
        return;
    }
    if (c->single) {
        c->rc = ctr_apply_parse(r, &c->res, c->err, sizeof(c->err));
        c->status =
            c->rc == CTR_APPLY_OK && c->res.outcome == CTR_APPLY_NO_EPOCH
                ? CALL_LOST
                : CALL_OK;
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_STRING) {
        if (strcmp(r->element[0]->str, "epoch") == 0) {
            c->status = CALL_LOST;
            return;
        }
        if (strcmp(r->element[0]->str, "ok") == 0 &&
            r->elements == (size_t)c->n + 1) {
            c->codes = calloc((size_t)c->n, sizeof(*c->codes));
            for (int k = 0; c->codes && k < c->n; k++) {
                const redisReply *e = r->element[k + 1];
                if (e->type != REDIS_REPLY_STRING ||
                    (c->codes[k] = strndup(e->str, e->len)) == NULL)
                    break;
            }
            for (int k = 0; c->codes && k < c->n; k++)
                if (c->codes[k] == NULL) {
                    c->status = CALL_RETRY; /* out of memory: again */
                    return;
                }
            c->status = c->codes ? CALL_OK : CALL_RETRY;
            return;
        }
    }
    /* A reply the fold never gives is not this call's (a connection out
     * of step): the call may have run, so it is sent again, where the
     * fence and the outcome log answer for what it did. */
    if (r->type != REDIS_REPLY_ERROR) {
        ctr_warn("redis: a fold call got a reply of type %d that is not "
                 "its own; sending it again",
                 r->type);
        c->status = CALL_RETRY;
        return;
    }
    /* an error the script gives again (a key of the wrong type, a
     * damaged value): each event on its own, as before batches */
    snprintf(c->err, sizeof(c->err), "%s", r->str);
    c->status = CALL_REFUSED;
}

static void call_clear(call *c)
{
    for (int k = 0; c->codes && k < c->n; k++)
        free(c->codes[k]);
    free(c->codes);
    ctr_fold_args_clear(&c->fold);
    memset(c, 0, sizeof(*c));
}

/*
 * What a write.lua call decided for it (rc, res as apply_event returns
 * them): the record, the dead letter or the log line, as the applier has
 * always done for one event. A record goes without a source: the
 * persister counts it once per id, as the guard key remembers it.
 */
static void act_single(applier *a, item *it, int rc,
                       const ctr_apply_result *res, const char *err)
{
    const ctr_event *ev = &it->ev;
    int unique = it->def->kind == CTR_KIND_UNIQUE;
    if (rc == CTR_APPLY_OVERFLOW) {
        dead_letter(a, it->msg,
                    "delta: the counter would leave the int64 range");
        return;
    }
    if (rc != CTR_APPLY_OK) {
        dead_letter(a, it->msg, err);
        return;
    }
    switch (res->outcome) {
    case CTR_APPLY_APPLIED:
    case CTR_APPLY_DUPLICATE:
        if (res->outcome == CTR_APPLY_APPLIED)
            a->applied++;
        else
            a->duplicates++;
        publish_record(a, ev, unique ? 1 : res->value - res->prev, it->gen,
                       NULL);
        break;
    case CTR_APPLY_ALREADY_APPLIED:
        /* applied before a crash: its record may not have gone out */
        if (res->recorded == 'a')
            publish_record(a, ev, unique ? 1 : res->recorded_delta, it->gen,
                           NULL);
        else
            confirm_api_write(a, ev, it->def, res->record);
        break;
    case CTR_APPLY_DUPLICATE_ID:
        a->duplicates++;
        confirm_api_write(a, ev, it->def, res->record);
        break;
    case CTR_APPLY_KEY_SEEN:     /* api writes only */
    case CTR_APPLY_NO_EPOCH:     /* the caller waits for the epoch */
    case CTR_APPLY_OUT_OF_RANGE: /* returned as CTR_APPLY_OVERFLOW */
    case CTR_APPLY_SAME_EPOCH: /* not asked for */ break;
    case CTR_APPLY_BOUND_REFUSED:
        a->refused++;
        ctr_info("event %s on %s refused: it would cross a bound", ev->id,
                 ev->counter);
        break;
    }
}

/* What fold.lua decided for one event (its code: see redis/fold.lua). */
static void act_fold(applier *a, item *it, const char *code)
{
    const ctr_event *ev = &it->ev;
    int unique = it->def->kind == CTR_KIND_UNIQUE;
    int64_t d;
    switch (code[0]) {
    case 'a':
        a->applied++;
        d = strtoll(code + 1, NULL, 10);
        publish_record(a, ev, unique ? 1 : d, 0, it->msg);
        return;
    case 'u':
        a->duplicates++;
        publish_record(a, ev, 1, 0, it->msg);
        return;
    case 'r':
        a->refused++;
        ctr_info("event %s on %s refused: it would cross a bound", ev->id,
                 ev->counter);
        return;
    case 'o':
        dead_letter(a, it->msg,
                    "delta: the counter would leave the int64 range");
        return;
    case 'd': a->duplicates++; return;
    case 'g':
        a->duplicates++;
        confirm_api_write(a, ev, it->def, code + 1);
        return;
    case 'A': break;
    default:
        ctr_warn("event %s on %s: unknown outcome \"%.16s\"", ev->id,
                 ev->counter, code);
        return;
    }
    /* applied before a crash: its record may not have gone out */
    const char *c = code + 1;
    switch (c[0]) {
    case '\0': publish_record(a, ev, unique ? 1 : ev->delta, 0, it->msg); break;
    case 'a':
        publish_record(a, ev, unique ? 1 : strtoll(c + 1, NULL, 10), 0,
                       it->msg);
        break;
    case 'u': publish_record(a, ev, 1, 0, it->msg); break;
    case 'o':
        dead_letter(a, it->msg,
                    "delta: the counter would leave the int64 range");
        break;
    case 'g': confirm_api_write(a, ev, it->def, c + 1); break;
    case 'G': /* only a guard key knows: applied one by one (act_single) */
        if (c[1] == 'a')
            publish_record(a, ev, unique ? 1 : strtoll(c + 2, NULL, 10), 0,
                           NULL);
        else
            confirm_api_write(a, ev, it->def, c + 1);
        break;
    default: /* r, d: nothing was recorded */ break;
    }
}

/* Builds the next call of lane li into c; 0 or -1 (a key too long: the
 * item goes on its own, and write.lua refuses it as before). */
static int call_build(applier *a, batch *b, int li, call *c)
{
    lane *l = &b->lanes[li];
    item *first = &b->items[l->head];
    memset(c, 0, sizeof(*c));
    c->lane = li;
    c->n = 1;
    if (first->gen == 0) {
        const ctr_event *evs[CTR_FOLD_MAX];
        int64_t offs[CTR_FOLD_MAX];
        int n = 0;
        for (int k = l->head;
             k >= 0 && n < CTR_FOLD_MAX && same_run(first, &b->items[k]);
             k = b->items[k].next) {
            evs[n] = &b->items[k].ev;
            offs[n++] = b->items[k].msg->offset;
        }
        /* what the group has committed, as the broker said to the group
         * watch (asynchronously, every second): fold.lua keeps an outcome
         * only while its offset may be read again, and only the broker
         * knows which commits went through. The bare events of
         * kafka.topic keep theirs (a passing phase). */
        int64_t committed =
            applier_topic_index(a, l->topic) == 0
                ? ctr_group_watch_applier_committed(a->groups, l->partition)
                : -1;
        ctr_fold_ctx ctx = {
            .sha = a->fold_sha,
            .now_s = ctr_time_now_ms() / 1000,
            .window_s = a->cfg->applier_dedup_window_s,
            .committed = committed,
            .log_ttl_s = a->cfg->applier_guard_ttl_s,
        };
        if (ctr_fold_args_build(&c->fold, &ctx, first->ev.counter, &first->spec,
                                evs, offs, (size_t)n) == 0) {
            c->n = n;
            return 0;
        }
    }
    c->single = 1;
    return ctr_apply_write_argv(&c->write, a->sha, first->ev.counter,
                                &first->spec);
}

/* Acts on call c's items and moves its lane on. */
static void call_done(applier *a, batch *b, call *c)
{
    lane *l = &b->lanes[c->lane];
    for (int k = 0; k < c->n && !ctr_service_stopping(); k++) {
        item *it = &b->items[l->head];
        if (c->status == CALL_REFUSED) {
            /* each on its own, as before batches (apply_event waits for
             * Redis; a stop leaves the item unapplied) */
            ctr_apply_result res;
            char err[256];
            it->spec.guard_id = it->ev.id;
            if (it->gen == 0)
                it->spec.guard_ttl_s = a->cfg->applier_guard_ttl_s;
            int rc = apply_event(a, it->ev.counter, &it->spec, &res, err,
                                 sizeof(err));
            if (rc == 1)
                return;
            act_single(a, it, rc, &res, err);
        } else if (c->single) {
            act_single(a, it, c->rc, &c->res, c->err);
        } else {
            act_fold(a, it, c->codes[k]);
        }
        l->head = it->next;
    }
}

/*
 * Applies the batch's items: rounds of at most one call per lane,
 * pipelined, until every lane is done. A call Redis did not answer (or
 * that found the data set gone) is sent again in the next round, once
 * Redis is back; its lane's later calls wait for it, so a counter's events
 * reach Redis in log order. 0, or 1 when a stop was requested first.
 */
static int apply_items(applier *a, batch *b)
{
    int backoff = 50;
    for (;;) {
        if (ctr_service_stopping())
            return 1;
        if (applier_redis_ready(a) != 0) {
            applier_wait_ms(a, backoff);
            backoff =
                backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        int64_t t0 = ctr_time_mono_us();
        b->ncalls = 0;
        for (int li = 0; li < b->nlanes; li++) {
            if (b->lanes[li].head < 0)
                continue;
            call *c = &b->calls[b->ncalls++];
            if (call_build(a, b, li, c) != 0) {
                c->status = CALL_REFUSED;
                continue;
            }
            const char **argv = c->single ? c->write.argv : c->fold.argv;
            int argc = c->single ? c->write.argc : c->fold.argc;
            if (ctr_rclient_append(a->redis, argv[3], argc, argv, NULL) != 0)
                c->status = CALL_RETRY;
        }
        if (b->ncalls == 0)
            return 0;
        /* calls refused before sending are not in the pipeline: the
         * pipeline's i counts the sent ones */
        int sent[BATCH_MAX];
        int nsent = 0;
        for (int i = 0; i < b->ncalls; i++)
            if (b->calls[i].status == CALL_SENT)
                sent[nsent++] = i;
        round rd = {b, sent};
        int failed = ctr_rclient_drain(a->redis, on_call_reply, &rd) != 0;
        /* in a cluster a write must reach a replica before its record
         * goes out: a failover would lose it otherwise */
        for (int i = 0; i < b->ncalls; i++) {
            call *c = &b->calls[i];
            if (c->status != CALL_OK)
                continue;
            const char *key = c->single ? c->write.argv[3] : c->fold.argv[3];
            int waited = ctr_rclient_wait(a->redis, key, WAIT_REPLICAS_MS);
            if (waited > 0 && !a->wait_short_logged) {
                ctr_warn("redis: a write reached fewer replicas than "
                         "redis.wait_replicas within %d ms",
                         WAIT_REPLICAS_MS);
                a->wait_short_logged = 1;
            }
            if (waited < 0)
                c->status = CALL_RETRY; /* the fence makes it safe again */
        }
        int lost = 0, applied_n = 0;
        for (int i = 0; i < b->ncalls; i++) {
            call *c = &b->calls[i];
            applied_n += c->n;
            if (c->status == CALL_OK || c->status == CALL_REFUSED)
                call_done(a, b, c);
            else
                failed = 1;
            lost |= c->status == CALL_LOST;
            call_clear(c);
        }
        /* the time each event of the round waited for Redis */
        double took = (double)(ctr_time_mono_us() - t0) / 1e6;
        for (int k = 0; k < applied_n; k++)
            ctr_hist_observe(&a->apply_seconds, took);
        if (failed || lost) {
            ctr_warn("redis: %s", lost ? "the data set is gone"
                                       : ctr_rclient_errstr(a->redis));
            applier_redis_drop(a); /* reconnecting restores a lost data set */
        } else {
            backoff = 50;
        }
    }
}

/* Decodes and plans message i of the batch; 0 when it goes to Redis, 1
 * when it is done already (an error, an applied event, a dead letter). */
static int item_prepare(applier *a, item *it)
{
    rd_kafka_message_t *msg = it->msg;
    char err[256];
    if (msg->err) {
        if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            ctr_warn("kafka consumer: %s", rd_kafka_message_errstr(msg));
        return 1;
    }
    char origin[16];
    if (ctr_message_origin(msg, origin, sizeof(origin))) {
        a->skipped++; /* already in Redis, or our own record */
        return 1;
    }
    int legacy = applier_topic_index(a, rd_kafka_topic_name(msg->rkt)) == 1;
    if (legacy)
        ctr_legacy_activity(a->legacy);
    if (ctr_event_decode(msg->payload, msg->len, &it->ev, err, sizeof(err)) !=
        0) {
        dead_letter(a, msg, err);
        return 1;
    }
    it->def = ctr_config_counter(a->cfg, it->ev.counter);
    if (it->def->kind == CTR_KIND_UNIQUE &&
        (it->ev.user_id == NULL || it->ev.delta != 1)) {
        dead_letter(a, msg,
                    it->ev.user_id == NULL
                        ? "user_id: required for a unique counter"
                        : "delta: must be 1 for a unique counter");
        return 1;
    }
    ctr_apply_plan(&it->spec, it->def, it->ev.ts_ms, ctr_time_now_ms(),
                   a->cfg->lateness_s, it->ev.user_id, 0, it->ev.delta);
    it->spec.fence_offset = msg->offset;
    it->spec.fence_partition = msg->partition;
    it->spec.fence_kind = legacy ? 'o' : 'i';
    /* a keyed api write the api sent around Redis: its key names it for
     * as long as the api's own keys do, in a guard key of its own */
    it->gen = message_gen(msg);
    if (it->gen > 0) {
        it->spec.guard_id = it->ev.id;
        it->spec.guard_ttl_s = a->cfg->idempotency_ttl_s;
    }
    return 0;
}

/* Stores the offsets after the batch's messages, partition by partition. */
static void store_offsets(applier *a, rd_kafka_message_t **msgs, int n)
{
    /* A list of librdkafka's own, not one on the stack: librdkafka may
     * keep a reference to the partition in an element, which only the
     * list's destroy gives back. */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (int i = 0; i < n; i++) {
        if (msgs[i]->err || msgs[i]->offset < 0)
            continue; /* an error, not a message of the log */
        const char *topic = rd_kafka_topic_name(msgs[i]->rkt);
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(l, topic, msgs[i]->partition);
        if (tp == NULL)
            tp =
                rd_kafka_topic_partition_list_add(l, topic, msgs[i]->partition);
        if (msgs[i]->offset + 1 > tp->offset)
            tp->offset = msgs[i]->offset + 1;
    }
    if (l->cnt > 0)
        rd_kafka_offsets_store(a->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    a->uncommitted += (size_t)n;
}

/* Applies messages msgs[0..n), in order per partition. */
void applier_apply_batch(applier *a, rd_kafka_message_t **msgs, int n)
{
    batch b;
    memset(&b, 0, sizeof(b));
    b.items = calloc((size_t)n, sizeof(*b.items));
    b.lanes = calloc((size_t)n, sizeof(*b.lanes));
    b.calls = calloc((size_t)n, sizeof(*b.calls));
    b.nslots = 16;
    while (b.nslots < 2 * n)
        b.nslots *= 2;
    b.slots = calloc((size_t)b.nslots, sizeof(*b.slots));
    b.cap_lanes = n;
    if (b.items == NULL || b.lanes == NULL || b.calls == NULL ||
        b.slots == NULL) {
        ctr_error("out of memory for a batch of %d events; exiting", n);
        exit(1);
    }
    ctr_hist_observe(&a->batch_events, (double)n);
    for (int i = 0; i < n; i++) {
        item *it = &b.items[b.n];
        it->msg = msgs[i];
        it->next = -1;
        if (item_prepare(a, it) != 0) {
            ctr_event_clear(&it->ev);
            continue;
        }
        if (lane_add(&b, b.n) != 0) {
            ctr_error("batch lanes overflowed; exiting");
            exit(1);
        }
        b.n++;
    }
    int stopped = apply_items(a, &b);
    for (int i = 0; i < b.n; i++)
        ctr_event_clear(&b.items[i].ev);
    free(b.items);
    free(b.lanes);
    free(b.calls);
    free(b.slots);
    if (!stopped) /* stopping: these offsets stay unprocessed */
        store_offsets(a, msgs, n);
}
