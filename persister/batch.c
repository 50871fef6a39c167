/*
 * batch.c - see batch.h. Totals live in an open-addressing table sized to
 * twice the batch's event limit, so it never needs to grow.
 */
#include "persister/batch.h"

#include <stdlib.h>
#include <string.h>

enum { MAX_PARTITIONS = 1024 };

struct ps_batch {
    size_t messages;
    size_t counters;
    size_t cap; /* power of two */
    ps_total *totals;
    size_t n_parts;
    ps_partition_range parts[MAX_PARTITIONS];
};

ps_batch *ps_batch_new(size_t max_events)
{
    ps_batch *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->cap = 16;
    while (b->cap < max_events * 2)
        b->cap *= 2;
    b->totals = calloc(b->cap, sizeof(*b->totals));
    if (b->totals == NULL) {
        free(b);
        return NULL;
    }
    return b;
}

void ps_batch_free(ps_batch *b)
{
    if (b == NULL)
        return;
    free(b->totals);
    free(b);
}

void ps_batch_reset(ps_batch *b)
{
    if (b->counters)
        memset(b->totals, 0, b->cap * sizeof(*b->totals));
    b->counters = 0;
    b->messages = 0;
    b->n_parts = 0;
}

size_t ps_batch_messages(const ps_batch *b)
{
    return b->messages;
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
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

int ps_batch_add(ps_batch *b, int32_t partition, int64_t offset,
                 const ctr_event *ev)
{
    ps_total *t = NULL;

    if (ev) {
        size_t mask = b->cap - 1;
        size_t i = hash_name(ev->counter) & mask;
        while (b->totals[i].used && strcmp(b->totals[i].name, ev->counter))
            i = (i + 1) & mask;
        t = &b->totals[i];
        int64_t sum;
        if (t->used && __builtin_add_overflow(t->delta, ev->delta, &sum))
            return -1;
        if (b->counters + 1 >= b->cap && !t->used)
            return -1;
    }
    ps_partition_range *r = range_for(b, partition);
    if (r == NULL)
        return -1;
    if (r->first_offset < 0)
        r->first_offset = offset;
    r->last_offset = offset;
    b->messages++;
    if (t) {
        if (!t->used) {
            t->used = 1;
            memcpy(t->name, ev->counter, sizeof(t->name));
            b->counters++;
            t->delta = 0;
            t->last_event_ms = 0;
        }
        t->delta += ev->delta;
        if (ev->ts_ms > t->last_event_ms)
            t->last_event_ms = ev->ts_ms;
    }
    return 0;
}

size_t ps_batch_total_slots(const ps_batch *b)
{
    return b->cap;
}

const ps_total *ps_batch_total_at(const ps_batch *b, size_t i)
{
    return &b->totals[i];
}

size_t ps_batch_counters(const ps_batch *b)
{
    return b->counters;
}

size_t ps_batch_partitions(const ps_batch *b)
{
    return b->n_parts;
}

const ps_partition_range *ps_batch_partition_at(const ps_batch *b, size_t i)
{
    return &b->parts[i];
}
