/*
 * event.h - the counter event (schema version 1): the one record that flows
 * from the api and from other producers through Kafka into Redis and
 * PostgreSQL. docs/events.md is the user-facing description.
 *
 *   {"v":1,"id":"...","counter":"games_played","delta":1,
 *    "user_id":"u1","ts":1764153000123,"metadata":{...}}
 *
 * Kafka key = counter name; header "origin: api" marks events the api has
 * already applied to Redis.
 */
#ifndef COUNTER_INGEST_EVENT_H
#define COUNTER_INGEST_EVENT_H

#include "common/name.h"

#include <stddef.h>
#include <stdint.h>

#define CTR_EVENT_VERSION   1
#define CTR_EVENT_ID_MAX    128
#define CTR_EVENT_MAX_BYTES (64 * 1024)

/*
 * The latest event time (ms since the epoch) an event may carry:
 * 9999-12-30T23:59:59.999Z, so that its local date in any zone is at most
 * 9999-12-31, which every store and reader holds (PostgreSQL's date and
 * timestamptz, Redis window keys, RFC 3339's four-digit years). The
 * earliest is 1 ms.
 */
#define CTR_EVENT_TS_MAX_MS INT64_C(253402214399999)

typedef struct ctr_event {
    int v;
    char id[CTR_EVENT_ID_MAX + 1];
    char counter[CTR_NAME_MAX + 1];
    int64_t delta;
    char *user_id;  /* owned; NULL when absent */
    int64_t ts_ms;  /* event time, ms since the epoch */
    char *metadata; /* owned JSON text of an object; NULL when absent */
} ctr_event;

/* Frees what the event owns and zeroes it. ev may be NULL. */
void ctr_event_clear(ctr_event *ev);

/*
 * True if s[0..len) may be an event id: 1-128 printable ASCII characters
 * (Idempotency-Key values become event ids, so they follow the same rule).
 */
/* 64 random bits (not for secrets): per-thread xorshift128+. */
uint64_t ctr_random_u64(void);

int ctr_event_id_valid(const char *s, size_t len);

/* Writes a fresh random UUID (36 characters + NUL) into buf. Any thread. */
void ctr_event_new_id(char buf[37]);

/*
 * Encodes ev as compact JSON. Returns a malloc'd NUL-terminated string the
 * caller frees, with its length in *outlen, or NULL when out of memory.
 */
char *ctr_event_encode(const ctr_event *ev, size_t *outlen)
    __attribute__((warn_unused_result));

/* The length ctr_event_encode would give, without building the text. */
size_t ctr_event_encoded_len(const ctr_event *ev);

/*
 * Decodes and validates one event. On success returns 0 and fills ev (the
 * caller clears it). On failure returns -1, leaves ev cleared, and writes a
 * reason naming the field into errbuf.
 */
int ctr_event_decode(const char *buf, size_t len, ctr_event *ev, char *errbuf,
                     size_t errlen) __attribute__((warn_unused_result));

#endif
