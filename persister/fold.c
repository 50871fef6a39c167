/*
 * fold.c - see fold.h.
 */
#include "persister/fold.h"

#include <string.h>

/* The message's origin header ("api", "applier"), or "" when none. */
static void message_origin(const rd_kafka_message_t *msg, char *out, size_t len)
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *val;
    size_t size;
    out[0] = '\0';
    if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(hdrs, "origin", &val, &size) ==
            RD_KAFKA_RESP_ERR_NO_ERROR &&
        val != NULL && size < len) {
        memcpy(out, val, size);
        out[size] = '\0';
    }
}

enum ps_fold_result ps_fold_message(ps_batch *b, const ctr_config *cfg,
                                    const rd_kafka_message_t *msg, char *errbuf,
                                    size_t errlen)
{
    ctr_event ev;
    char origin[16];
    const ctr_date none = {0, 0, 0};
    int rc;

    message_origin(msg, origin, sizeof(origin));
    if (origin[0] == '\0')
        return ps_batch_add(b, msg->partition, msg->offset, NULL, NULL, none)
                   ? PS_FOLD_FULL
                   : PS_FOLD_ADDED;
    if (ctr_event_decode(msg->payload, msg->len, &ev, errbuf, errlen) != 0)
        return ps_batch_add(b, msg->partition, msg->offset, NULL, NULL, none)
                   ? PS_FOLD_FULL
                   : PS_FOLD_INVALID;
    const ctr_counter_def *def = ctr_config_counter(cfg, ev.counter);
    ctr_date day = ctr_tz_local_day(def->tz, ev.ts_ms, NULL, NULL);
    if (strcmp(origin, "applier") == 0)
        rc = ps_batch_add_record(b, msg->partition, msg->offset, &ev, def, day);
    else
        rc = ps_batch_add(b, msg->partition, msg->offset, &ev, def, day);
    ctr_event_clear(&ev);
    return rc ? PS_FOLD_FULL : PS_FOLD_ADDED;
}
