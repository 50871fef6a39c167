/*
 * apply.h - how one write or event is applied to Redis, shared by the api
 * (asynchronous hiredis), the applier and the restore (synchronous): the
 * plan a counter's definition makes of a write, the arguments of the
 * scripts of redis/ (redis/scripts.h) and the reading of their replies.
 *
 * Keys of counter NAME (all with the hash tag {c:NAME}, so each script
 * stays in one Redis Cluster slot):
 *   {c:NAME}              value (an integer string) of a counter
 *                         without reset
 *   {c:NAME}:d:DATE       value of the daily window of local DATE
 *   <value key>:t         last-update stamp of that value (epoch ms);
 *                         two plain strings rather than one hash, so that
 *                         a batch read is one MGET
 *   <value key>:p         pending hash of that value, present only while
 *                         a write is pending (applied, its event not yet
 *                         known to be in the log): "e:<event id>" its
 *                         entry (redis/entry.lua), "m:<dedup key>|<user>"
 *                         how many pending writes rest on a counted user
 *   <value key>:lo, :hi   the worst cases of the value should the pending
 *                         writes fail (escrow: bounds and the int64 range
 *                         are judged on them); present only while writes
 *                         are pending. A counter that only grows is read
 *                         at lo: what no failure can take back
 *   {c:NAME}:u:DATE       exact dedup set of DATE;  :h:DATE  HyperLogLog
 *   {c:NAME}:o:P          applier fence: last offset of partition P of
 *                         kafka.topic applied to NAME (bare events from
 *                         before the input topic; its events normally
 *                         share one partition; a producer keying
 *                         differently may spread them); {c:NAME}:i:P the
 *                         same for kafka.input_topic
 *   <fence key>:x         the outcome log of redis/fold.lua: what events
 *                         after the committed offset led to, where their
 *                         own delta would not tell (a list, short-lived)
 *   {c:NAME}:w:SLICE      the id window of external events: the meta of
 *                         one slice of applier.dedup_window_s (redis/
 *                         fold.lua), and {c:NAME}:w:SLICE:B its intsets
 *                         of 63-bit id fingerprints
 *   {c:NAME}:id:ID        guard: event ID was seen. The applier's holds
 *                         what it applied ("a<delta>" or "r"); the api's,
 *                         for an Idempotency-Key, holds a record
 *                         "A<state>|<lease ms>|<token>|<fingerprint>|
 *                         <outcome>|<value>|<applied>|<event ms>|<gen>|
 *                         <seen>",
 *                         state P (pending: the event is not known to be
 *                         in the log) or D (done), so a retry can replay
 *                         the first answer or finish what a crash left;
 *                         gen is when the key was first used (api clock,
 *                         ms): with the key it names the write everywhere
 *   counter:epoch:3:{TAG} the epoch marker of the slot TAG hashes to
 *                         (one per slot, ctr_apply_epoch_key): the id of
 *                         the data set, set by the restore that built it,
 *                         or "restoring:<token>" while one does. Every
 *                         write checks its slot's marker in the same
 *                         script, so no write lands in a data set that
 *                         lost its keys (a restart without data, an empty
 *                         shard) or that a restore is rebuilding.
 */
#ifndef COUNTER_REDIS_APPLY_H
#define COUNTER_REDIS_APPLY_H

#include "common/counterdef.h"
#include "ingest/event.h"
#include "redis/scripts.h"

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#define CTR_APPLY_KEY_MAX (CTR_NAME_MAX + CTR_EVENT_ID_MAX + 16)

enum ctr_apply_dedup {
    CTR_APPLY_DEDUP_NONE,
    CTR_APPLY_DEDUP_EXACT,
    CTR_APPLY_DEDUP_HLL
};

/* One write, as a counter's definition shapes it. */
typedef struct ctr_apply_spec {
    char key_suffix[24];   /* ":d:<date>" or "" */
    char dedup_suffix[24]; /* ":u:<date>" / ":h:<date>" or "" */
    char period[11];       /* the daily window's date, or "" */
    enum ctr_apply_dedup dedup;
    const char *user_id; /* for dedup; not copied */
    int is_set;          /* arg is a target value, not a delta */
    int64_t arg;
    int64_t stamp_ms; /* last-update stamp: the event time */
    int has_min, has_max, clamp;
    int64_t min, max;
    int ttl_s;            /* expiry of a daily window; 0: none */
    int dedup_ttl_s;      /* expiry of the dedup key */
    int64_t fence_offset; /* applier: this event's offset; -1: none */
    int32_t fence_partition;
    char fence_kind;      /* 'o' (kafka.topic, the default when 0) or 'i' */
    const char *guard_id; /* event id to remember; NULL: none */
    int guard_ttl_s;
    /* api, Idempotency-Key: "AP|<lease>|<token>|<fingerprint>", the head
     * of the record the guard keeps; NULL for an applier guard */
    const char *idem_head;
    const char *idem_token; /* undo only while the guard holds this */
    /* api: the write's pending entry, "e:<pending_id>" (its event id);
     * NULL for a write that comes from the log (applier, restore) */
    const char *pending_id;
    int64_t created_ms; /* pending: when the api applied it */
    int64_t gen_ms;     /* keyed: when the key was first used; else 0 */
    /* the epoch check: NULL the slot's marker must hold an epoch; "=X"
     * it must be X (a restore); "X" as NULL, and skip if it is X (an api
     * event applied again on a newer data set only) */
    const char *epoch_want;
} ctr_apply_spec;

enum ctr_apply_outcome {
    CTR_APPLY_APPLIED,
    CTR_APPLY_DUPLICATE,       /* dedup: this user was already counted */
    CTR_APPLY_BOUND_REFUSED,   /* would cross min/max, on_bound reject */
    CTR_APPLY_ALREADY_APPLIED, /* fence: this offset was applied before */
    CTR_APPLY_DUPLICATE_ID,    /* guard: this event id was applied before */
    CTR_APPLY_KEY_SEEN,        /* api: the key has a record; see record */
    CTR_APPLY_NO_EPOCH,        /* the slot has no epoch: nothing done */
    CTR_APPLY_OUT_OF_RANGE,    /* would leave int64 (pending writes
                                * failing included): nothing done */
    CTR_APPLY_SAME_EPOCH,      /* epoch_want "X" found X: nothing done */
};

typedef struct ctr_apply_result {
    enum ctr_apply_outcome outcome;
    int64_t value; /* after the write */
    int64_t prev;  /* before it: value - prev is what was applied */
    char prev_stamp[24];
    /* ALREADY_APPLIED / DUPLICATE_ID: what the first time recorded: 'a'
     * applied (delta in recorded_delta), 'r' refused, 0 unknown */
    char recorded;
    int64_t recorded_delta;
    char record[192]; /* what the guard held, as it was ("" if too long) */
    char epoch[64];   /* the slot's marker ("" if none or too long) */
    int64_t seen;     /* what a reader of a counter that only grows sees
                       * once this write is confirmed (its lo then) */
} ctr_apply_result;

/* The api's idempotency record, parsed. */
typedef struct ctr_idem_record {
    char state; /* 'P' pending, 'D' done */
    int64_t lease_ms;
    char token[17];
    char fingerprint[17];
    int outcome; /* CTR_APPLY_APPLIED or CTR_APPLY_DUPLICATE */
    int64_t value, applied, ts_ms;
    int64_t gen_ms;
    int64_t seen; /* the first answer's value of a counter that only grows */
} ctr_idem_record;

/* Parses an api idempotency record; 0, or -1 if s is not one (an
 * applier's guard, or garbage). */
int ctr_idem_record_parse(const char *s, ctr_idem_record *out)
    __attribute__((warn_unused_result));

/* The stamp key that goes with a value key; 0, or -1 if too long. */
#define CTR_APPLY_STAMP_SUFFIX ":t"
int ctr_apply_stamp_key(char *buf, size_t len, const char *value_key)
    __attribute__((warn_unused_result));

/* The epoch marker key of cluster slot `slot` (0..16383), into buf of
 * CTR_APPLY_EPOCH_KEY_MAX bytes: "counter:epoch:3:{TAG}" where TAG is the
 * shortest decimal number that hashes to the slot. */
#define CTR_APPLY_EPOCH_PREFIX  "counter:epoch:3:"
#define CTR_APPLY_EPOCH_KEY_MAX 32
void ctr_apply_epoch_key(char *buf, int slot);

/* The low worst case that goes with a value key (see the layout above);
 * 0, or -1 if too long. */
#define CTR_APPLY_LO_SUFFIX ":lo"
int ctr_apply_lo_key(char *buf, size_t len, const char *value_key)
    __attribute__((warn_unused_result));

/* The pending hash that goes with a value key; 0, or -1 if too long. */
#define CTR_APPLY_PENDING_SUFFIX ":p"
int ctr_apply_pending_key(char *buf, size_t len, const char *value_key)
    __attribute__((warn_unused_result));

/* The guard key of event id on counter name; 0, or -1 if too long. */
int ctr_apply_guard_key(char *buf, size_t len, const char *name, const char *id)
    __attribute__((warn_unused_result));

/*
 * Plans a write of arg (a signed delta, or the target of a set) to the
 * counter `def` describes, at event time ts_ms: the daily window and dedup
 * day are ts_ms's local date; keys expire lateness_s after that day ends,
 * plus a day. Unique counters always add 1.
 */
void ctr_apply_plan(ctr_apply_spec *s, const ctr_counter_def *def,
                    int64_t ts_ms, int64_t now_ms, int lateness_s,
                    const char *user_id, int is_set, int64_t arg);

/* The arguments of one EVALSHA; strings point into the struct or spec.
 * argv[3] is always a key of the counter's slot. */
typedef struct ctr_apply_argv {
    int argc;
    const char *argv[28];
    char keys[9][CTR_APPLY_KEY_MAX];
    char nums[10][24];
    char info[48];
} ctr_apply_argv;

/* Fills a with the write script's EVALSHA (sha of ctr_script_write).
 * Returns 0, or -1 if a key would not fit. */
int ctr_apply_write_argv(ctr_apply_argv *a, const char *sha, const char *name,
                         const ctr_apply_spec *s)
    __attribute__((warn_unused_result));

/* Fills a with the undo script's EVALSHA for pending write s. Returns 0,
 * or -1 if a key would not fit. */
int ctr_apply_undo_argv(ctr_apply_argv *a, const char *sha, const char *name,
                        const ctr_apply_spec *s)
    __attribute__((warn_unused_result));

/* Fills a with the finish script's EVALSHA for pending write s (the
 * api's token when keyed). Returns 0, or -1 if a key would not fit. */
int ctr_apply_finish_argv(ctr_apply_argv *a, const char *sha, const char *name,
                          const ctr_apply_spec *s)
    __attribute__((warn_unused_result));

/* Reads a bulk-string reply holding a whole int64 ("-12"). 0 or -1. */
int ctr_apply_reply_i64(const redisReply *r, int64_t *out)
    __attribute__((warn_unused_result));

enum ctr_apply_status {
    CTR_APPLY_OK = 0,
    CTR_APPLY_OVERFLOW = -1, /* the value would leave the int64 range */
    CTR_APPLY_ERROR = -2,    /* any other error reply */
};

/* Reads the write script's reply. NOSCRIPT and other errors are
 * CTR_APPLY_ERROR with the reply's text in errbuf; outcome
 * CTR_APPLY_OUT_OF_RANGE is CTR_APPLY_OVERFLOW. */
enum ctr_apply_status ctr_apply_parse(const redisReply *reply,
                                      ctr_apply_result *res, char *errbuf,
                                      size_t errlen);

#endif
