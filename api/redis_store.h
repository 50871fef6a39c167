/*
 * redis_store.h - the api's connection to Redis: the write script, reads,
 * per-command deadlines, and reconnection.
 *
 * Keys: every key of counter <name> carries the hash tag "{c:<name>}", so a
 * script touching one counter stays in one Redis Cluster slot. The counter
 * itself is the string "{c:<name>}" (its value) beside "{c:<name>}:t" (last
 * update, ms since the epoch); redis/apply.h has all the keys.
 *
 * With redis.cluster_nodes set it is a Redis Cluster client: a connection
 * per master, the slot map from CLUSTER SLOTS (read again every second,
 * and soon after a MOVED or a lost connection), MOVED and ASK followed,
 * a batch read sent per key to each key's master. A command whose slot's
 * master is not connected is not sent (the call returns non-zero: the
 * caller reads from PostgreSQL or writes through Kafka), and one the
 * cluster refused to run (TRYAGAIN while its slot moves, CLUSTERDOWN)
 * ends with API_REDIS_UNAVAILABLE. An applied write is answered after a
 * WAIT for redis.wait_replicas replicas (at most the shard's), so that a
 * failover keeps it.
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
#include "redis/apply.h"
#include "redis/restore.h"

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
    API_REDIS_UNAVAILABLE,  /* cluster: the command did not run (its slot
                             * is moving, failing over, or the node lacks
                             * the script); nothing was applied. A read:
                             * the slot has no epoch */
    API_REDIS_WAIT_SHORT,   /* cluster: a write applied on its master that
                             * fewer replicas than asked confirmed */
};

/* What the cluster client did, for /metrics. */
typedef struct api_redis_cluster_stats {
    uint64_t moved, ask;  /* redirections followed */
    uint64_t refreshes;   /* slot maps read */
    uint64_t unavailable; /* commands refused: TRYAGAIN, CLUSTERDOWN, ... */
    uint64_t wait_short;  /* writes fewer replicas had when WAIT ended */
} api_redis_cluster_stats;

/* Longest value key: "{c:" name "}" ":d:2026-11-26" */
#define API_KEY_MAX (CTR_NAME_MAX + 32)

/* Result of a write; res lives only during the call. */
typedef void (*api_redis_write_cb)(enum api_redis_status st,
                                   const ctr_apply_result *res, void *arg);

/* The integer an undo or finish script answered (redis/undo.lua,
 * redis/finish.lua), with API_REDIS_OK. */
typedef void (*api_redis_undo_cb)(enum api_redis_status st, int result,
                                  void *arg);

/* One counter as read from Redis; exists 0 means never written. */
typedef struct api_redis_value {
    int exists;
    int64_t value;     /* with every write applied, pending ones too */
    int64_t confirmed; /* what no pending write failing can take back:
                        * the value of a counter that only grows */
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
 * Applies write w to counter name (redis/write.lua), sent at the end of
 * this loop turn with the turn's other writes to the same server (slot,
 * in a cluster) in one call of the writes script. cb fires once, never
 * from within this call. If the deadline passes first, cb fires with
 * API_REDIS_TIMEOUT, and when the real answer arrives later late_cb (if
 * not NULL) fires with it, so the caller can finish the write. An outcome
 * of CTR_APPLY_NO_EPOCH also stops the store's use until the epoch is
 * back (api_redis_ready).
 */
int api_redis_write(api_redis *r, const char *name, const ctr_apply_spec *w,
                    int timeout_ms, api_redis_write_cb cb,
                    api_redis_write_cb late_cb, void *arg)
    __attribute__((warn_unused_result));

/*
 * Takes back pending write w (the event log refused it): redis/undo.lua,
 * whose answer cb gets (1 undone, 0 no entry, -1 the key's record is
 * another attempt's, -2 a resolver holds the entry). cb fires once.
 */
int api_redis_undo(api_redis *r, const char *name, const ctr_apply_spec *w,
                   int timeout_ms, api_redis_undo_cb cb, void *arg)
    __attribute__((warn_unused_result));

/*
 * Finishes pending write w (its event is in the log): redis/finish.lua,
 * sent at the end of this loop turn with the other finishes of the turn
 * (one call per value key). Nobody hears the answer: an entry a finish
 * does not reach stays for the applier's resolver. -1 if it could not be
 * queued.
 */
int api_redis_finish(api_redis *r, const char *name, const ctr_apply_spec *w,
                     int timeout_ms) __attribute__((warn_unused_result));

/* Writes or finishes queued for the end of this loop turn (a loop turn
 * sends them). */
int api_redis_queued(const api_redis *r);

/* The epoch marker last seen ("" before any): the data set's id. */
const char *api_redis_epoch(const api_redis *r);

/* Reads the counters at n (at most API_REDIS_GET_MAX) full value keys
 * within timeout_ms: value, stamp and low worst case of each with the
 * slot's epoch marker, one MGET on one server, one per name in a
 * cluster. cb fires once. */
#define API_REDIS_GET_MAX 100
int api_redis_get(api_redis *r, const char *const *keys, size_t n,
                  int timeout_ms, api_redis_get_cb cb, void *arg)
    __attribute__((warn_unused_result));

typedef void (*api_redis_idem_cb)(enum api_redis_status st, int changed,
                                  void *arg);

/*
 * A retry takes over the Idempotency-Key record of counter name's key if
 * it still reads `expected`, by writing `replacement` (redis/idem.lua).
 * cb fires once with changed 1 if it did. Works while the connection is
 * suspect: it queues.
 */
int api_redis_idem_claim(api_redis *r, const char *name, const char *key,
                         const char *expected, const char *replacement,
                         int timeout_ms, api_redis_idem_cb cb, void *arg)
    __attribute__((warn_unused_result));

/* What /readyz says of the connection: "ready", "suspect" (missed a
 * deadline, waiting for a PING), "no_epoch" (restarted empty, not yet
 * restored), "connecting" or "down". */
const char *api_redis_state(const api_redis *r);

void api_redis_cluster_stats_get(const api_redis *r,
                                 api_redis_cluster_stats *out);

/* Closes the connection; pending callbacks fire with DISCONNECTED. */
void api_redis_free(api_redis *r);

#endif
