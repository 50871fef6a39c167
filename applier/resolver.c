/*
 * resolver.c - see resolver.h.
 */
#include "applier/resolver.h"

#include "common/log.h"
#include "common/strbuf.h"
#include "common/timeutil.h"
#include "redis/apply.h"
#include "ingest/consumer.h"
#include "ingest/event.h"
#include "ingest/producer.h"
#include "redis/restore.h"
#include "redis/scripts.h"

#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    LOOK_BACK_MS = 60000, /* before an entry's time: the api's clock may lag */
    MAX_ITEMS = 10000,    /* settled per sweep; the rest waits for the next */
    DELIVERY_WAIT_MS = 30000,
};

/* One claimed entry. */
typedef struct item {
    char pkey[CTR_APPLY_KEY_MAX];
    char vkey[CTR_APPLY_KEY_MAX];
    char name[CTR_NAME_MAX + 1];
    char id[CTR_EVENT_ID_MAX + 1];
    int64_t delta, stamp_ms, created_ms, gen_ms;
    char flags[8];
    char *user; /* NULL: none */
    int32_t partition;
    int found;
} item;

struct ctr_resolver {
    const ctr_config *cfg;
    ctr_producer *producer; /* its own: a failed delivery is not fatal */
    char claim_sha[41], finish_sha[41];
    int64_t last_ms;
    char token[20];
    item *items;
    size_t n;
    int delivered, undelivered;
    ctr_resolver_stats stats;
};

static void on_delivery(enum ctr_delivery result, void *arg)
{
    ctr_resolver *r = arg;
    if (result == CTR_DELIVERED)
        r->delivered++;
    else
        r->undelivered++;
}

ctr_resolver *ctr_resolver_new(const ctr_config *cfg)
{
    ctr_resolver *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->cfg = cfg;
    r->items = calloc(MAX_ITEMS, sizeof(*r->items));
    if (r->items == NULL) {
        free(r);
        return NULL;
    }
    snprintf(r->token, sizeof(r->token), "%016" PRIx64, ctr_random_u64());
    return r;
}

static void items_clear(ctr_resolver *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->items[i].user);
    r->n = 0;
}

void ctr_resolver_free(ctr_resolver *r)
{
    if (r == NULL)
        return;
    items_clear(r);
    free(r->items);
    ctr_producer_free(r->producer);
    free(r);
}

void ctr_resolver_new_connection(ctr_resolver *r)
{
    r->claim_sha[0] = r->finish_sha[0] = '\0';
}

void ctr_resolver_stats_get(const ctr_resolver *r, ctr_resolver_stats *out)
{
    *out = r->stats;
}

/* ------------------------------------------------------------ entries --- */

/* Reads field i (0-based, '|'-separated) of an entry as an int64. */
static int entry_i64(const char *e, int i, int64_t *out)
{
    for (; i > 0; i--) {
        e = strchr(e, '|');
        if (e == NULL)
            return -1;
        e++;
    }
    char *end;
    long long v = strtoll(e, &end, 10);
    if (end == e || *end != '|')
        return -1;
    *out = v;
    return 0;
}

/* The claim time of a claimed entry "C<token>@<ms>|...", or -1. */
static int64_t claim_ms(const char *e)
{
    const char *at = e[0] == 'C' ? strchr(e, '@') : NULL;
    return at ? strtoll(at + 1, NULL, 10) : -1;
}

/* The entry without its claim prefix. */
static const char *unclaimed(const char *e)
{
    if (e[0] != 'C')
        return e;
    const char *bar = strchr(e, '|');
    return bar ? bar + 1 : e;
}

/* Fills it from the entry text e of event id in pending hash pkey; 0 or
 * -1 (not an entry this version wrote). */
static int item_parse(item *it, const char *pkey, const char *id, const char *e)
{
    memset(it, 0, sizeof(*it));
    size_t plen = strlen(pkey), slen = strlen(CTR_APPLY_PENDING_SUFFIX);
    if (plen + 1 > sizeof(it->pkey) || plen <= slen + 4 ||
        strlen(id) >= sizeof(it->id) || strncmp(pkey, "{c:", 3) != 0)
        return -1;
    memcpy(it->pkey, pkey, plen + 1);
    memcpy(it->vkey, pkey, plen - slen);
    it->vkey[plen - slen] = '\0';
    const char *close = strchr(pkey, '}');
    if (close == NULL || (size_t)(close - pkey - 3) > CTR_NAME_MAX)
        return -1;
    memcpy(it->name, pkey + 3, (size_t)(close - pkey - 3));
    strcpy(it->id, id);
    e = unclaimed(e);
    if (entry_i64(e, 0, &it->delta) || entry_i64(e, 1, &it->stamp_ms) ||
        entry_i64(e, 3, &it->created_ms) || entry_i64(e, 4, &it->gen_ms))
        return -1;
    /* fields 5 flags, 6 dedup key, 7 user (the rest) */
    const char *p = e;
    for (int i = 0; i < 5 && p; i++)
        p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL;
    if (p == NULL)
        return -1;
    size_t fl = strcspn(p, "|");
    if (fl >= sizeof(it->flags) || p[fl] != '|')
        return -1;
    memcpy(it->flags, p, fl);
    const char *dkey = p + fl + 1, *user = strchr(dkey, '|');
    if (user == NULL)
        return -1;
    if (user[1] != '\0' && (it->user = strdup(user + 1)) == NULL)
        return -1;
    return 0;
}

/* Claims entry e (as read) of id in pkey; 1 claimed, 0 not, -1 error. */
static int claim(ctr_resolver *r, ctr_rclient *c, const char *pkey,
                 const char *id, const char *e, int64_t now)
{
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "C%s@%" PRId64 "|", r->token, now);
    const char *argv[] = {"EVALSHA", r->claim_sha, "1", pkey, id, e, prefix};
    redisReply *rep = ctr_rclient_argv(c, pkey, 7, argv, NULL);
    int rc = rep && rep->type == REDIS_REPLY_INTEGER ? (int)rep->integer : -1;
    freeReplyObject(rep);
    return rc;
}

/* Claims the entries of pending hash pkey that are due. 0 or -1. */
static int claim_due(ctr_resolver *r, ctr_rclient *c, const char *pkey,
                     int64_t now)
{
    redisReply *h = ctr_rclient_cmd(c, pkey, "HGETALL %s", pkey);
    if (h == NULL)
        return -1;
    int64_t after = r->cfg->applier_resolve_after_ms;
    for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements &&
                       r->n < MAX_ITEMS;
         i += 2) {
        const redisReply *f = h->element[i], *v = h->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            f->len < 3 || strncmp(f->str, "e:", 2) != 0)
            continue;
        int64_t created, claimed = claim_ms(v->str);
        if (entry_i64(unclaimed(v->str), 3, &created) != 0 ||
            now - (claimed >= 0 ? claimed : created) < after)
            continue;
        item *it = &r->items[r->n];
        if (item_parse(it, pkey, f->str + 2, v->str) != 0) {
            ctr_warn("pending entry %s of %s unreadable: %.80s", f->str + 2,
                     pkey, v->str);
            continue;
        }
        int rc = claim(r, c, pkey, f->str + 2, v->str, now);
        if (rc == 1) {
            r->n++;
        } else {
            free(it->user);
            if (rc < 0) {
                freeReplyObject(h);
                return -1;
            }
        }
    }
    freeReplyObject(h);
    return 0;
}

typedef struct scan_state {
    ctr_resolver *r;
    ctr_rclient *c;
    int64_t now;
    int failed;
} scan_state;

/* One master's pending hashes. */
static int sweep_node(redisContext *node, void *arg)
{
    scan_state *ss = arg;
    char cursor[32] = "0";
    do {
        redisReply *rep =
            redisCommand(node,
                         "SCAN %s MATCH {c:*" CTR_APPLY_PENDING_SUFFIX
                         " COUNT 1000 TYPE hash",
                         cursor);
        if (rep == NULL || rep->type != REDIS_REPLY_ARRAY ||
            rep->elements != 2) {
            freeReplyObject(rep);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", rep->element[0]->str);
        const redisReply *keys = rep->element[1];
        char **names = calloc(keys->elements + 1, sizeof(*names));
        size_t n = 0;
        for (size_t i = 0; names && i < keys->elements; i++)
            if ((names[n] = strdup(keys->element[i]->str)) != NULL)
                n++;
        freeReplyObject(rep);
        /* the HGETALLs may go to this node's connection: read after */
        for (size_t i = 0; i < n; i++) {
            if (!ss->failed && ss->r->n < MAX_ITEMS &&
                claim_due(ss->r, ss->c, names[i], ss->now) != 0)
                ss->failed = 1;
            free(names[i]);
        }
        free(names);
        if (ss->failed)
            return -1;
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

/* ------------------------------------------------------------ the log --- */

/* Marks the items of partition p whose event (the api's, or the
 * applier's record) is in the log from the offset of time since_ms to the
 * end. A bare event with the id is not enough: the persister counts only
 * through its record. 0 or -1. */
static int look_in_partition(ctr_resolver *r, rd_kafka_t *rk, int32_t p,
                             int64_t since_ms)
{
    const char *topic = r->cfg->kafka_topic;
    int64_t lo, hi;
    if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000) != 0)
        return -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, p)->offset = since_ms;
    rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(rk, l, 10000);
    int64_t from = err == 0 && l->elems[0].err == 0 && l->elems[0].offset >= 0
                       ? l->elems[0].offset
                       : hi;
    if (err != 0)
        from = lo; /* no time index: read it all */
    l->elems[0].offset = from;
    if (from >= hi) {
        rd_kafka_topic_partition_list_destroy(l);
        return 0;
    }
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    int rc = 0;
    for (;;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 10000);
        if (m == NULL) {
            rc = -1;
            break;
        }
        int64_t off = m->offset;
        char origin[16];
        if (!m->err && m->partition == p &&
            ctr_message_origin(m, origin, sizeof(origin))) {
            for (size_t i = 0; i < r->n; i++) {
                item *it = &r->items[i];
                ctr_event ev;
                char e[64];
                if (it->found || it->partition != p ||
                    m->key_len != strlen(it->name) ||
                    memcmp(m->key, it->name, m->key_len) != 0)
                    continue;
                if (ctr_event_decode(m->payload, m->len, &ev, e, sizeof(e)))
                    break;
                for (size_t j = i; j < r->n; j++)
                    if (r->items[j].partition == p &&
                        strcmp(r->items[j].id, ev.id) == 0 &&
                        strcmp(r->items[j].name, ev.counter) == 0)
                        r->items[j].found = 1;
                ctr_event_clear(&ev);
                break;
            }
        }
        rd_kafka_message_destroy(m);
        if (off + 1 >= hi)
            break;
    }
    rd_kafka_assign(rk, NULL);
    return rc;
}

/* Looks for every item's event; 0 or -1. */
static int look_in_log(ctr_resolver *r)
{
    char err[256];
    rd_kafka_t *rk =
        ctr_reader_new(r->cfg, "counter-resolver", err, sizeof(err));
    if (rk == NULL) {
        ctr_warn("resolver: %s", err);
        return -1;
    }
    int nparts = ctr_topic_partitions(rk, r->cfg->kafka_topic);
    int rc = nparts > 0 ? 0 : -1;
    for (size_t i = 0; i < r->n && rc == 0; i++)
        r->items[i].partition = rd_kafka_msg_partitioner_murmur2(
            NULL, r->items[i].name, strlen(r->items[i].name), nparts, NULL,
            NULL);
    for (int32_t p = 0; p < nparts && rc == 0; p++) {
        int64_t since = INT64_MAX;
        for (size_t i = 0; i < r->n; i++)
            if (r->items[i].partition == p && r->items[i].created_ms < since)
                since = r->items[i].created_ms;
        if (since != INT64_MAX)
            rc = look_in_partition(r, rk, p, since - LOOK_BACK_MS);
    }
    ctr_reader_free(rk);
    return rc;
}

/* ---------------------------------------------------------- settling --- */

/* Publishes the event of an item the log lacks, as the api would have;
 * 0 once Kafka confirmed it. */
static int publish(ctr_resolver *r, const item *it, const char *epoch)
{
    ctr_event ev;
    size_t len;
    memset(&ev, 0, sizeof(ev));
    ev.v = CTR_EVENT_VERSION;
    memcpy(ev.id, it->id, sizeof(ev.id));
    memcpy(ev.counter, it->name, sizeof(ev.counter));
    /* a unique counter logs the attempt; PostgreSQL dedups by itself */
    const ctr_counter_def *def = ctr_config_counter(r->cfg, it->name);
    ev.delta = def->kind == CTR_KIND_UNIQUE ? 1 : it->delta;
    ev.user_id = it->user;
    ev.ts_ms = it->stamp_ms;
    char *payload = ctr_event_encode(&ev, &len);
    if (payload == NULL)
        return -1;
    ctr_event_headers h = {.origin = "api",
                           .dedup_gen = strchr(it->flags, 'k') ? it->gen_ms : 0,
                           .epoch = epoch};
    r->delivered = r->undelivered = 0;
    int rc = ctr_producer_send(r->producer, it->name, strlen(it->name), payload,
                               len, &h, r);
    free(payload);
    if (rc != 0)
        return -1;
    ctr_producer_flush(r->producer, DELIVERY_WAIT_MS);
    return r->delivered == 1 ? 0 : -1;
}

/* Finishes an item's entry (redis/finish.lua); 0 or -1. */
static int finish(ctr_resolver *r, ctr_rclient *c, const item *it)
{
    char gkey[CTR_APPLY_KEY_MAX], lkey[CTR_APPLY_KEY_MAX + 4],
        hkey[CTR_APPLY_KEY_MAX + 4];
    if (ctr_apply_guard_key(gkey, sizeof(gkey), it->name, it->id) != 0 ||
        ctr_apply_lo_key(lkey, sizeof(lkey), it->vkey) != 0)
        return -1;
    snprintf(hkey, sizeof(hkey), "%s:hi", it->vkey);
    const char *argv[] = {"EVALSHA", r->finish_sha, "5",  it->vkey, it->pkey,
                          lkey,      hkey,          gkey, it->id,   ""};
    redisReply *rep = ctr_rclient_argv(c, it->pkey, 10, argv, NULL);
    int ok = rep && rep->type == REDIS_REPLY_INTEGER;
    freeReplyObject(rep);
    return ok ? 0 : -1;
}

int ctr_resolver_step(ctr_resolver *r, ctr_rclient *c, const char *epoch)
{
    int64_t now = ctr_time_now_ms();
    if (now - r->last_ms < r->cfg->applier_resolve_every_ms)
        return 0;
    r->last_ms = now;
    if (r->producer == NULL) {
        char err[256];
        r->producer =
            ctr_producer_new(r->cfg, NULL, on_delivery, err, sizeof(err));
        if (r->producer == NULL) {
            ctr_warn("resolver: could not set up kafka: %s", err);
            return -1;
        }
    }
    /* once per connection: the client remembers them, and loads them again
     * on a node that lost them */
    if (!r->claim_sha[0] &&
        (ctr_rclient_script(c, ctr_script_claim, r->claim_sha) != 0 ||
         ctr_rclient_script(c, ctr_script_finish, r->finish_sha) != 0)) {
        r->claim_sha[0] = '\0';
        return -1;
    }

    scan_state ss = {r, c, now, 0};
    r->stats.sweeps++;
    if (ctr_rclient_each_master(c, sweep_node, &ss) != 0 && r->n == 0)
        return -1;
    if (r->n == 0)
        return 0;
    ctr_info("resolver: %zu pending writes older than %d ms; looking for "
             "their events in the log",
             r->n, r->cfg->applier_resolve_after_ms);
    int settled = 0;
    if (look_in_log(r) == 0) {
        for (size_t i = 0; i < r->n; i++) {
            item *it = &r->items[i];
            int found = it->found;
            if (!found && publish(r, it, epoch) != 0) {
                r->stats.failed++;
                ctr_warn("resolver: could not publish write %s to counter "
                         "%s; trying again later",
                         it->id, it->name);
                continue;
            }
            if (finish(r, c, it) != 0) {
                r->stats.failed++;
                continue;
            }
            settled++;
            if (found)
                r->stats.found++;
            else
                r->stats.published++;
            ctr_info("resolver: write %s to counter %s (delta %" PRId64 ") %s",
                     it->id, it->name, it->delta,
                     found ? "was in the log; finished"
                           : "was not in the log; published it");
        }
    } else {
        r->stats.failed += r->n;
        ctr_warn("resolver: could not read the log; trying again later");
    }
    items_clear(r);
    return settled;
}
