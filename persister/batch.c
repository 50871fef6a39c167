/*
 * batch.c - see batch.h. Sums live in one open-addressing table sized for
 * three entries per event at most half full, so it never grows. The table
 * is large (megabytes for thousands of events) and a batch of few
 * counters uses a handful of its slots, so the used slots are also listed
 * in claim order: readers and reset touch only those. HLL groups (4 KiB
 * of registers each) are allocated as they come, up to one per event.
 */
#include "persister/batch.h"

#include <stdlib.h>
#include <string.h>

enum { MAX_PARTITIONS = 1024, HLL_GROUPS_FIRST = 16 };

struct ps_batch {
    size_t messages;
    size_t max_events;
    size_t cap; /* power of two */
    size_t n_sums[3];
    ps_sum *sums;
    size_t n_used;
    size_t *used_at; /* indexes of the used slots, in claim order */
    size_t n_unique;
    ps_unique_row *unique;
    size_t n_hll, cap_hll;
    ps_hll_group *hll;
    size_t n_records;
    ps_record *records;
    size_t n_quarantined, cap_quarantined;
    ps_quarantined *quarantined;
    size_t n_parts;
    ps_partition_range parts[MAX_PARTITIONS];
};

ps_batch *ps_batch_new(size_t max_events)
{
    ps_batch *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->max_events = max_events;
    b->cap = 16;
    while (b->cap < max_events * 6)
        b->cap *= 2;
    b->sums = calloc(b->cap, sizeof(*b->sums));
    b->used_at = calloc(max_events * 3 + 3, sizeof(*b->used_at));
    b->unique = calloc(max_events, sizeof(*b->unique));
    b->records = calloc(max_events, sizeof(*b->records));
    if (b->sums == NULL || b->used_at == NULL || b->unique == NULL ||
        b->records == NULL) {
        ps_batch_free(b);
        return NULL;
    }
    return b;
}

void ps_batch_reset(ps_batch *b)
{
    for (size_t i = 0; i < b->n_used; i++)
        memset(&b->sums[b->used_at[i]], 0, sizeof(*b->sums));
    b->n_used = 0;
    for (size_t i = 0; i < b->n_unique; i++)
        free(b->unique[i].user_id);
    for (size_t i = 0; i < b->n_records; i++) {
        ctr_event_clear(&b->records[i].ev);
        free(b->records[i].source_topic);
        b->records[i].source_topic = NULL;
    }
    b->n_records = 0;
    for (size_t i = 0; i < b->n_quarantined; i++)
        free(b->quarantined[i].reason);
    b->n_quarantined = 0;
    memset(b->n_sums, 0, sizeof(b->n_sums));
    b->n_unique = 0;
    b->n_hll = 0;
    b->messages = 0;
    b->n_parts = 0;
}

void ps_batch_free(ps_batch *b)
{
    if (b == NULL)
        return;
    if (b->sums && b->unique && b->records)
        ps_batch_reset(b);
    free(b->records);
    free(b->quarantined);
    free(b->sums);
    free(b->used_at);
    free(b->unique);
    free(b->hll);
    free(b);
}

size_t ps_batch_messages(const ps_batch *b)
{
    return b->messages;
}

static uint64_t hash_key(enum ps_table t, const char *name, int64_t sub)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)t; /* FNV-1a */
    for (; *name; name++) {
        h ^= (unsigned char)*name;
        h *= 1099511628211ULL;
    }
    h ^= (uint64_t)sub;
    h *= 1099511628211ULL;
    return h ^ (h >> 29);
}

static int64_t day_key(ctr_date d)
{
    return (int64_t)d.year * 10000 + d.month * 100 + d.day;
}

static int64_t sub_of(const ps_sum *s)
{
    return s->table == PS_DAILY    ? day_key(s->day)
           : s->table == PS_BUCKET ? s->minute_ms
                                   : 0;
}

/* Finds or claims the slot of (table, name, sub). */
static ps_sum *slot_for(ps_batch *b, enum ps_table t, const char *name,
                        ctr_date day, int64_t minute_ms)
{
    ps_sum probe = {.table = t, .day = day, .minute_ms = minute_ms};
    int64_t sub = sub_of(&probe);
    size_t mask = b->cap - 1;
    size_t i = hash_key(t, name, sub) & mask;
    while (b->sums[i].used &&
           (b->sums[i].table != t || sub_of(&b->sums[i]) != sub ||
            strcmp(b->sums[i].name, name) != 0))
        i = (i + 1) & mask;
    return &b->sums[i];
}

static ps_partition_range *range_for(ps_batch *b, int32_t partition)
{
    for (size_t i = 0; i < b->n_parts; i++)
        if (b->parts[i].partition == partition)
            return &b->parts[i];
    if (b->n_parts >= MAX_PARTITIONS)
        return NULL;
    ps_partition_range *r = &b->parts[b->n_parts++];
    r->partition = partition;
    r->first_offset = -1;
    r->last_offset = -1;
    return r;
}

static ps_hll_group *hll_group_for(ps_batch *b, const char *name, ctr_date day)
{
    for (size_t i = 0; i < b->n_hll; i++)
        if (day_key(b->hll[i].day) == day_key(day) &&
            strcmp(b->hll[i].name, name) == 0)
            return &b->hll[i];
    return NULL;
}

/* A new, empty group; NULL when out of memory. */
static ps_hll_group *hll_group_add(ps_batch *b, const char *name, ctr_date day)
{
    if (b->n_hll == b->cap_hll) {
        size_t cap = b->cap_hll ? b->cap_hll * 2 : HLL_GROUPS_FIRST;
        ps_hll_group *grown = realloc(b->hll, cap * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        b->hll = grown;
        b->cap_hll = cap;
    }
    ps_hll_group *g = &b->hll[b->n_hll++];
    memset(g, 0, sizeof(*g));
    memcpy(g->name, name, sizeof(g->name));
    g->day = day;
    return g;
}

int ps_batch_add(ps_batch *b, int32_t partition, int64_t offset,
                 const ctr_event *ev, const ctr_counter_def *def, ctr_date day)
{
    return ps_batch_add_as(b, partition, offset, (int64_t)b->messages, ev, def,
                           day);
}

/* A plain event: its delta into the total, its local day and its UTC
 * minute. Each slot is claimed as soon as it is found, so that the next
 * lookup probes past it (a new counter's total, day and minute must not
 * share a slot). The table has room for three slots per event and a sum
 * cannot overflow (128 bits), so nothing here refuses. */
static void add_sums(ps_batch *b, const ctr_event *ev, ctr_date day)
{
    int64_t minute = ev->ts_ms - ((ev->ts_ms % 60000) + 60000) % 60000;
    for (int t = 0; t < 3; t++) {
        ps_sum *slot = slot_for(b, (enum ps_table)t, ev->counter, day,
                                t == PS_BUCKET ? minute : 0);
        if (!slot->used) {
            slot->used = 1;
            slot->table = (enum ps_table)t;
            memcpy(slot->name, ev->counter, sizeof(slot->name));
            slot->day = day;
            slot->minute_ms = t == PS_BUCKET ? minute : 0;
            b->n_sums[t]++;
            b->used_at[b->n_used++] = (size_t)(slot - b->sums);
        }
        slot->delta += ev->delta;
        if (ev->ts_ms > slot->last_event_ms)
            slot->last_event_ms = ev->ts_ms;
    }
}

/* An approximate unique counter's user: into its (counter, day) group's
 * registers. 0, or -1 out of memory. */
static int add_hll(ps_batch *b, const ctr_event *ev, ctr_date day)
{
    ps_hll_group *group = hll_group_for(b, ev->counter, day);
    if (group == NULL && (group = hll_group_add(b, ev->counter, day)) == NULL)
        return -1;
    ctr_hll_add(group->regs, ctr_hll_hash(ev->user_id, strlen(ev->user_id)));
    if (ev->ts_ms > group->last_event_ms)
        group->last_event_ms = ev->ts_ms;
    return 0;
}

/* An exact unique counter's user: a (counter, day, user) row, which
 * PostgreSQL dedups. 0, or -1 out of memory. */
static int add_unique(ps_batch *b, const ctr_event *ev, ctr_date day,
                      int64_t seq)
{
    ps_unique_row *row = &b->unique[b->n_unique];
    row->user_id = strdup(ev->user_id);
    if (row->user_id == NULL)
        return -1;
    memcpy(row->name, ev->counter, sizeof(row->name));
    row->day = day;
    row->ts_ms = ev->ts_ms;
    row->seq = seq;
    b->n_unique++;
    return 0;
}

int ps_batch_add_as(ps_batch *b, int32_t partition, int64_t offset, int64_t seq,
                    const ctr_event *ev, const ctr_counter_def *def,
                    ctr_date day)
{
    if (b->messages >= b->max_events || b->n_parts >= MAX_PARTITIONS)
        return -1;
    /* a unique counter's event without a user counts nothing; its offset
     * still advances, as an invalid event's (ev NULL) does */
    if (ev && def->kind != CTR_KIND_UNIQUE)
        add_sums(b, ev, day);
    else if (ev && ev->user_id && def->dedup == CTR_DEDUP_HLL) {
        if (add_hll(b, ev, day) != 0)
            return -1;
    } else if (ev && ev->user_id) {
        if (add_unique(b, ev, day, seq) != 0)
            return -1;
    }
    ps_partition_range *r = range_for(b, partition); /* room checked above */
    if (r->first_offset < 0)
        r->first_offset = offset;
    r->last_offset = offset;
    b->messages++;
    return 0;
}

size_t ps_batch_sum_slots(const ps_batch *b)
{
    return b->n_used;
}

const ps_sum *ps_batch_sum_at(const ps_batch *b, size_t i)
{
    return &b->sums[b->used_at[i]];
}

size_t ps_batch_sums(const ps_batch *b, enum ps_table table)
{
    return b->n_sums[table];
}

size_t ps_batch_unique_rows(const ps_batch *b)
{
    return b->n_unique;
}

const ps_unique_row *ps_batch_unique_at(const ps_batch *b, size_t i)
{
    return &b->unique[i];
}

size_t ps_batch_hll_groups(const ps_batch *b)
{
    return b->n_hll;
}

const ps_hll_group *ps_batch_hll_at(const ps_batch *b, size_t i)
{
    return &b->hll[i];
}

size_t ps_batch_partitions(const ps_batch *b)
{
    return b->n_parts;
}

const ps_partition_range *ps_batch_partition_at(const ps_batch *b, size_t i)
{
    return &b->parts[i];
}

int ps_batch_add_record(ps_batch *b, int32_t partition, int64_t offset,
                        const ctr_event *ev, const ctr_counter_def *def,
                        ctr_date day, int64_t gen, const ps_source *src)
{
    if (b->messages >= b->max_events || b->n_parts >= MAX_PARTITIONS)
        return -1;
    ps_record *r = &b->records[b->n_records];
    r->ev = *ev;
    r->ev.user_id = ev->user_id ? strdup(ev->user_id) : NULL;
    r->ev.metadata = NULL; /* not needed to count */
    r->source_topic = src ? strdup(src->topic) : NULL;
    if ((ev->user_id && r->ev.user_id == NULL) ||
        (src && r->source_topic == NULL)) {
        ctr_event_clear(&r->ev);
        free(r->source_topic);
        r->source_topic = NULL;
        return -1;
    }
    r->source_partition = src ? src->partition : 0;
    r->source_offset = src ? src->offset : -1;
    r->def = def;
    r->day = day;
    r->gen = gen;
    r->seq = (int64_t)b->messages;
    b->n_records++;
    ps_partition_range *range = range_for(b, partition);
    if (range->first_offset < 0)
        range->first_offset = offset;
    range->last_offset = offset;
    b->messages++;
    return 0;
}

size_t ps_batch_records(const ps_batch *b)
{
    return b->n_records;
}

const ps_record *ps_batch_record_at(const ps_batch *b, size_t i)
{
    return &b->records[i];
}

int ps_batch_add_quarantined(ps_batch *b, int32_t partition, int64_t offset,
                             const char *reason)
{
    const ctr_date none = {0, 0, 0};
    char *copy = NULL;

    if (b->n_quarantined == b->cap_quarantined) {
        size_t cap = b->cap_quarantined ? b->cap_quarantined * 2 : 4;
        ps_quarantined *grown = realloc(b->quarantined, cap * sizeof(*grown));
        if (grown == NULL)
            return -1;
        b->quarantined = grown;
        b->cap_quarantined = cap;
    }
    if ((copy = strdup(reason)) == NULL ||
        ps_batch_add(b, partition, offset, NULL, NULL, none) != 0) {
        free(copy);
        return -1;
    }
    b->quarantined[b->n_quarantined++] =
        (ps_quarantined){partition, offset, copy};
    return 0;
}

size_t ps_batch_quarantined(const ps_batch *b)
{
    return b->n_quarantined;
}

const ps_quarantined *ps_batch_quarantined_at(const ps_batch *b, size_t i)
{
    return &b->quarantined[i];
}
