/*
 * fold.h - a run of external events of one counter (one value key, one
 * partition of one topic) as one call of redis/fold.lua: its arguments,
 * the events' id fingerprints, and the codes of its reply. The script says
 * what each code means; applier/main.c acts on them.
 */
#ifndef COUNTER_APPLIER_FOLD_H
#define COUNTER_APPLIER_FOLD_H

#include "redis/apply.h"
#include "ingest/event.h"

#include <stddef.h>
#include <stdint.h>

/* Events in one call at most: bounds a call's arguments and its time in
 * Redis (other clients wait while a script runs). */
enum { CTR_FOLD_MAX = 256 };

/* What a call shares besides the run's plan. */
typedef struct ctr_fold_ctx {
    const char *sha;   /* of ctr_script_fold */
    int64_t now_s;     /* the applier's clock: picks the id window's slice */
    int window_s;      /* applier.dedup_window_s */
    int64_t committed; /* the group's committed offset of the partition; -1:
                        * not known (nothing is dropped from the log) */
    int log_ttl_s;     /* expiry of the outcome log */
} ctr_fold_ctx;

/* The arguments of one EVALSHA, owned: ctr_fold_args_clear. */
typedef struct ctr_fold_args {
    int argc;
    const char **argv;
    char *store; /* keys and numbers the argv points into */
} ctr_fold_args;

/*
 * Builds the call of fold.lua for events evs[0..n) (1 <= n <= CTR_FOLD_MAX)
 * at offsets[0..n) of counter `name`, planned as plan (its key suffixes,
 * bounds, expiries; fence_kind and fence_partition name the fence). The
 * events' strings are pointed to, not copied: they must outlive a. argv[3]
 * is a key of the counter's slot. 0, or -1 (out of memory, a key too
 * long).
 */
int ctr_fold_args_build(ctr_fold_args *a, const ctr_fold_ctx *ctx,
                        const char *name, const ctr_apply_spec *plan,
                        const ctr_event *const *evs, const int64_t *offsets,
                        size_t n) __attribute__((warn_unused_result));

/* Frees what a holds (embedded: a itself stays). */
void ctr_fold_args_clear(ctr_fold_args *a);

/* The 63-bit fingerprint fold.lua keeps of an event id (MurmurHash64A of
 * its bytes, shifted right once), the same in every process. */
uint64_t ctr_fold_fingerprint(const char *id);

#endif
