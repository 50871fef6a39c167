/*
 * evdecode.h - a decoder for the common shape of an event, without a JSON
 * DOM: the persister reads every event in the log, and json-c (a tree of
 * heap objects, a locale switch per number) was most of its CPU.
 *
 * It takes only what it can judge with certainty: one object whose keys
 * are among v, id, counter, delta, user_id, ts (metadata only as null),
 * each at most once, with strings of printable ASCII and no escapes, and
 * integers without fraction or exponent of at most 18 digits, every field
 * valid. Anything else (another key, an escape, UTF-8, a big number, an
 * invalid or missing field, a metadata object) is left to
 * ctr_event_decode, which stays the one judge of what is invalid and why.
 * So whatever it accepts, ctr_event_decode accepts with the same fields.
 */
#ifndef COUNTER_PERSISTER_EVDECODE_H
#define COUNTER_PERSISTER_EVDECODE_H

#include "ingest/event.h"

#include <stddef.h>

/* Returns 0 with ev filled (the caller clears it), or -1 with ev cleared:
 * then the caller decodes with ctr_event_decode. */
int ps_event_decode_fast(const char *buf, size_t len, ctr_event *ev)
    __attribute__((warn_unused_result));

/* Decodes buf: the fast path, else ctr_event_decode (same contract). */
int ps_event_decode(const char *buf, size_t len, ctr_event *ev, char *errbuf,
                    size_t errlen) __attribute__((warn_unused_result));

#endif
