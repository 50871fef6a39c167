/*
 * counterdef.c - see counterdef.h.
 */
#include "common/counterdef.h"

#include <string.h>

const char *ctr_kind_name(enum ctr_kind k)
{
    return k == CTR_KIND_GAUGE    ? "gauge"
           : k == CTR_KIND_UNIQUE ? "unique"
                                  : "counter";
}

const char *ctr_reset_name(enum ctr_reset r)
{
    return r == CTR_RESET_DAILY ? "daily" : "none";
}

const char *ctr_dedup_name(enum ctr_dedup d)
{
    return d == CTR_DEDUP_HLL ? "hll" : "exact";
}

const char *ctr_on_bound_name(enum ctr_on_bound b)
{
    return b == CTR_BOUND_CLAMP ? "clamp" : "reject";
}

const ctr_counter_def *ctr_counter_def_find(const ctr_counter_def *defs,
                                            size_t n, const char *name,
                                            const ctr_counter_def *fallback)
{
    const ctr_counter_def *best = NULL;
    for (size_t i = 0; i < n; i++) {
        const ctr_counter_def *d = &defs[i];
        if (!d->is_prefix) {
            if (strcmp(d->pattern, name) == 0)
                return d;
        } else if (strncmp(d->pattern, name, d->prefix_len) == 0 &&
                   (best == NULL || d->prefix_len > best->prefix_len)) {
            best = d;
        }
    }
    return best ? best : fallback;
}
