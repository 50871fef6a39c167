/*
 * fold.c - see fold.h.
 */
#include "persister/fold.h"

#include "ingest/consumer.h"
#include "ingest/producer.h"
#include "persister/evdecode.h"

#include <string.h>

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
    char dedup[8];
    /* the applier's records, and api events keyed by a client's
     * Idempotency-Key (a retry may log one twice), count once per id */
    if (strcmp(origin, "applier") == 0 ||
        ctr_message_header(msg, CTR_HEADER_DEDUP, dedup, sizeof(dedup)))
        rc = ps_batch_add_record(b, msg->partition, msg->offset, &ev, def, day);
    else
        rc = ps_batch_add(b, msg->partition, msg->offset, &ev, def, day);
    ctr_event_clear(&ev);
    return rc ? PS_FOLD_FULL : PS_FOLD_ADDED;
}
