/*
 * counterdef.c - see counterdef.h.
 */
#include "common/counterdef.h"

#include <stdbool.h>
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

/* Byte loops rather than strcmp/strncmp: names and patterns are short
 * and most differ in their first bytes, where the library calls' set-up
 * costs more than the compare (a 10-name batch GET looks up 10 names in
 * every definition). */
static bool same_text(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

static bool has_prefix(const char *name, const char *prefix, size_t len)
{
    /* a shorter name stops at its NUL, which no prefix byte matches */
    for (size_t i = 0; i < len; i++)
        if (name[i] != prefix[i])
            return false;
    return true;
}

const ctr_counter_def *ctr_counter_def_find(const ctr_counter_def *defs,
                                            size_t n, const char *name,
                                            const ctr_counter_def *fallback)
{
    const ctr_counter_def *best = NULL;
    for (size_t i = 0; i < n; i++) {
        const ctr_counter_def *d = &defs[i];
        if (!d->is_prefix) {
            if (same_text(d->pattern, name))
                return d;
        } else if (has_prefix(name, d->pattern, d->prefix_len) &&
                   (best == NULL || d->prefix_len > best->prefix_len)) {
            best = d;
        }
    }
    return best ? best : fallback;
}
