/*
 * redis_store.h - the api's connection to Redis: the write script, reads,
 * per-command deadlines, and reconnection.
 *
 * Keys: every key of counter <name> carries the hash tag "{c:<name>}", so a
 * script touching one counter stays in one Redis Cluster slot. The counter
 * itself is the hash "{c:<name>}" with fields v (value) and t (last update,
 * ms since the epoch).
 *
 * hiredis 0.14 has no command timeout, so each command carries a libevent
 * timer. Every call that returns 0 fires its callback exactly once (reply,
 * error, timeout or disconnect); a call that returns non-zero never does.
 * All on the loop's thread.
 */
#ifndef COUNTER_API_REDIS_STORE_H
#define COUNTER_API_REDIS_STORE_H

#include "common/config.h"
#include "common/name.h"
#include "ingest/apply.h"
#include "ingest/restore.h"

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

typedef struct api_redis api_redis;

enum api_redis_status {
    API_REDIS_OK = 0,
    API_REDIS_OVERFLOW,     /* the change would leave the 64-bit range */
    API_REDIS_ERROR,        /* Redis answered with an error */
    API_REDIS_TIMEOUT,      /* no answer within the deadline */
    API_REDIS_DISCONNECTED, /* connection lost before the answer */
};

/* Set by whoever (re)built the Redis data set; see epoch_reply. */
#define API_REDIS_EPOCH_KEY CTR_EPOCH_KEY

/* Longest value key: "{c:" name "}" ":d:2026-11-26" */
#define API_KEY_MAX (CTR_NAME_MAX + 32)

/* Result of a write; res lives only during the call. */
typedef void (*api_redis_write_cb)(enum api_redis_status st,
                                   const ctr_apply_result *res, void *arg);

typedef void (*api_redis_undo_cb)(enum api_redis_status st, void *arg);

/* One counter as read from Redis; exists 0 means never written. */
typedef struct api_redis_value {
    int exists;
    int64_t value;
    int64_t updated_ms;
} api_redis_value;

/* Result of a read of n counters; values[] lives only during the call. */
typedef void (*api_redis_get_cb)(enum api_redis_status st,
                                 const api_redis_value *values, size_t n,
                                 void *arg);

/*
 * Creates the store and starts connecting (it keeps reconnecting with a
 * capped backoff). Returns NULL with a reason in errbuf.
 */
api_redis *api_redis_new(const ctr_config *cfg, struct event_base *base,
                         char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* 1 when connected and ready (scripts loaded, the epoch key present) and
 * not suspected of hanging. */
int api_redis_ready(const api_redis *r);

/*
 * Applies write w to counter name in one Lua call. cb fires once. If the
 * deadline passes first, cb fires with API_REDIS_TIMEOUT, and when the
 * real answer arrives later late_cb (if not NULL) fires with it, so the
 * caller can finish the write.
 */
int api_redis_write(api_redis *r, const char *name, const ctr_apply_spec *w,
                    int timeout_ms, api_redis_write_cb cb,
                    api_redis_write_cb late_cb, void *arg)
    __attribute__((warn_unused_result));

/*
 * Takes back write w whose result was res (the event log refused it).
 * cb fires once.
 */
int api_redis_undo(api_redis *r, const char *name, const ctr_apply_spec *w,
                   const ctr_apply_result *res, int timeout_ms,
                   api_redis_undo_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* Reads the hashes at n full keys (pipelined) within timeout_ms; cb fires
 * once. */
int api_redis_get(api_redis *r, const char *const *keys, size_t n,
                  int timeout_ms, api_redis_get_cb cb, void *arg)
    __attribute__((warn_unused_result));

typedef void (*api_redis_idem_cb)(enum api_redis_status st, int changed,
                                  void *arg);

/*
 * Runs the idempotency-record script on counter name's guard for key:
 * mode "finish" (arg2 the token) or "claim" (arg2 the record expected,
 * arg3 the new one). cb (may be NULL) fires once with changed 1 if the
 * record was changed. Works while the connection is suspect: it queues.
 */
int api_redis_idem(api_redis *r, const char *name, const char *key,
                   const char *mode, const char *arg2, const char *arg3,
                   int timeout_ms, api_redis_idem_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* What /readyz says of the connection: "ready", "suspect" (missed a
 * deadline, waiting for a PING), "no_epoch" (restarted empty, not yet
 * restored), "connecting" or "down". */
const char *api_redis_state(const api_redis *r);

/* Closes the connection; pending callbacks fire with DISCONNECTED. */
void api_redis_free(api_redis *r);

#endif
