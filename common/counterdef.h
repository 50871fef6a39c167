/*
 * counterdef.h - what a counter is: its kind and policies, declared in
 * config.yaml under `counters:` by exact name or by prefix ("daily_*"; "*"
 * matches every name and so sets the default for undeclared ones).
 */
#ifndef COUNTER_COMMON_COUNTERDEF_H
#define COUNTER_COMMON_COUNTERDEF_H

#include "common/tz.h"

#include <stddef.h>
#include <stdint.h>

enum ctr_kind { CTR_KIND_COUNTER, CTR_KIND_GAUGE, CTR_KIND_UNIQUE };
enum ctr_reset { CTR_RESET_NONE, CTR_RESET_DAILY };
enum ctr_on_bound { CTR_BOUND_REJECT, CTR_BOUND_CLAMP };
enum ctr_dedup { CTR_DEDUP_EXACT, CTR_DEDUP_HLL };

typedef struct ctr_counter_def {
    char *pattern;     /* "online_players", "daily_*" or "*" */
    size_t prefix_len; /* for patterns: the length before '*' */
    int is_prefix;
    enum ctr_kind kind;
    int has_min, has_max;
    int64_t min, max;
    enum ctr_on_bound on_bound;
    enum ctr_reset reset;
    const ctr_tz *tz;
    enum ctr_dedup dedup;
    int retention_days;
} ctr_counter_def;

const char *ctr_kind_name(enum ctr_kind k);
const char *ctr_reset_name(enum ctr_reset r);
const char *ctr_dedup_name(enum ctr_dedup d);
const char *ctr_on_bound_name(enum ctr_on_bound b);

/*
 * The definition for `name`: an exact match first, then the longest
 * matching prefix pattern, else `fallback`. Never NULL if fallback is not.
 */
const ctr_counter_def *ctr_counter_def_find(const ctr_counter_def *defs,
                                            size_t n, const char *name,
                                            const ctr_counter_def *fallback);

#endif
