/*
 * fold.h - what one Kafka message means for PostgreSQL, shared by the
 * persister and counterctl's replays:
 * - the api's events (origin: api) count as they are;
 * - the applier's records (origin: applier) count once per event id;
 * - raw external events count through their record, so only their
 *   offset advances;
 * - an event that fails validation is reported (for the dead-letter
 *   topic) and only its offset advances.
 */
#ifndef COUNTER_PERSISTER_FOLD_H
#define COUNTER_PERSISTER_FOLD_H

#include "common/config.h"
#include "persister/batch.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>

enum ps_fold_result {
    PS_FOLD_ADDED = 0,
    PS_FOLD_INVALID = 1, /* added as a skip; the reason is in errbuf */
    PS_FOLD_FULL = -1,   /* the batch cannot take it: flush, then again */
};

/* Folds msg (no error set) into b. */
enum ps_fold_result ps_fold_message(ps_batch *b, const ctr_config *cfg,
                                    const rd_kafka_message_t *msg, char *errbuf,
                                    size_t errlen)
    __attribute__((warn_unused_result));

#endif
