/*
 * fold.c - see fold.h.
 */
#include "persister/fold.h"

#include "ingest/consumer.h"
#include "ingest/producer.h"
#include "persister/evdecode.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The generation a "dedup" header carries (its ms); 0 for none or the
 * "id" of versions before generations (one per key for ever). */
static int64_t key_generation(const char *v)
{
    int64_t g = 0;
    if (*v == '\0')
        return 0;
    for (; *v; v++) {
        if (*v < '0' || *v > '9' || g > (INT64_MAX - 9) / 10)
            return 0;
        g = g * 10 + (*v - '0');
    }
    return g;
}

/* "<topic>:<partition>:<offset>" into src (pointing into s, which it
 * cuts); 0 or -1. Topic names hold no ':'. */
static int source_parse(char *s, ps_source *src)
{
    char *a = strchr(s, ':'), *end;
    char *b = a ? strchr(a + 1, ':') : NULL;
    if (a == NULL || b == NULL || a == s)
        return -1;
    *a = *b = '\0';
    long p = strtol(a + 1, &end, 10);
    if (end != b || p < 0 || p > INT32_MAX)
        return -1;
    long long o = strtoll(b + 1, &end, 10);
    if (*end != '\0' || end == b + 1 || o < 0)
        return -1;
    src->topic = s;
    src->partition = (int32_t)p;
    src->offset = o;
    return 0;
}

enum ps_fold_result ps_fold_message(ps_batch *b, const ctr_config *cfg,
                                    const rd_kafka_message_t *msg, char *errbuf,
                                    size_t errlen)
{
    ctr_event ev;
    char origin[16];
    const ctr_date none = {0, 0, 0};
    int rc;

    ctr_message_origin(msg, origin, sizeof(origin));
    if (origin[0] == '\0')
        return ps_batch_add(b, msg->partition, msg->offset, NULL, NULL, none)
                   ? PS_FOLD_FULL
                   : PS_FOLD_ADDED;
    if (ps_event_decode(msg->payload, msg->len, &ev, errbuf, errlen) != 0)
        return ps_batch_add(b, msg->partition, msg->offset, NULL, NULL, none)
                   ? PS_FOLD_FULL
                   : PS_FOLD_INVALID;
    const ctr_counter_def *def = ctr_config_counter(cfg, ev.counter);
    ctr_date day = ctr_tz_local_day(def->tz, ev.ts_ms, NULL, NULL);
    char dedup[24];
    /* the applier's records, and api events keyed by a client's
     * Idempotency-Key (a retry may log one twice), count once per (id,
     * generation of the key; 0 for an external event's record) */
    int keyed = ctr_message_header(msg, CTR_HEADER_DEDUP, dedup, sizeof(dedup));
    int64_t gen = keyed ? key_generation(dedup) : 0;
    /* an external event's record names the event it records: counted
     * once per source offset (older records: once per id) */
    char source[320];
    ps_source src;
    int sourced =
        gen == 0 && strcmp(origin, "applier") == 0 &&
        ctr_message_header(msg, CTR_HEADER_SOURCE, source, sizeof(source)) &&
        source_parse(source, &src) == 0;
    if (strcmp(origin, "applier") == 0 || keyed)
        rc = ps_batch_add_record(b, msg->partition, msg->offset, &ev, def, day,
                                 gen, sourced ? &src : NULL);
    else
        rc = ps_batch_add(b, msg->partition, msg->offset, &ev, def, day);
    ctr_event_clear(&ev);
    return rc ? PS_FOLD_FULL : PS_FOLD_ADDED;
}
