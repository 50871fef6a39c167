/*
 * stores.h - what `counterctl counters list|get` read: the names of the
 * counters the stores know, and their current values, from Redis as the
 * api reads them, or from PostgreSQL when Redis is down or not yet
 * restored (then the values are as of the persister's last commit).
 *
 * Read-only: nothing here writes a store. Plain blocking clients; one
 * store's failure is reported once, on stderr, and the other is used.
 */
#ifndef COUNTER_CTL_STORES_H
#define COUNTER_CTL_STORES_H

#include "common/config.h"
#include "common/name.h"

#include <stddef.h>
#include <stdint.h>

typedef struct ctl_value {
    char name[CTR_NAME_MAX + 1];
    const ctr_counter_def *def; /* from cfg */
    char period[11];    /* today's local date of a daily counter, else "" */
    int64_t value;      /* 0 when never written (in this period) */
    int64_t updated_ms; /* last write, 0 when never */
    int invalid;        /* Redis holds something else than an integer */
} ctl_value;

typedef struct ctl_values {
    ctl_value *items;
    size_t n, cap;
} ctl_values;

/* Appends name (valid, as ctr_name_valid says) with its definition and
 * period; NULL when out of memory. */
ctl_value *ctl_values_add(ctl_values *v, const ctr_config *cfg,
                          const char *name, size_t len, int64_t now_ms);

void ctl_values_free(ctl_values *v);

typedef struct ctl_stores ctl_stores;

/* Nothing is connected until needed. NULL when out of memory. */
ctl_stores *ctl_stores_new(const ctr_config *cfg);
void ctl_stores_free(ctl_stores *s);

/* Where the values came from. */
typedef struct ctl_source {
    const char *store; /* "redis" or "postgres" */
    int stale;         /* values from PostgreSQL */
    int64_t as_of_ms;  /* then: the persister's last commit, 0 if unknown */
} ctl_source;

enum { CTL_NAMES_REDIS = 1, CTL_NAMES_POSTGRES = 2 };

/*
 * Adds every counter whose name starts with prefix ("" for all): the
 * names in PostgreSQL's counter_totals and counter_daily, and those with a
 * value key in Redis ({c:NAME} or a daily window {c:NAME}:d:DATE, found by
 * SCAN), which includes counters the persister has not reached yet. The
 * list is sorted by name, each once. *from gets the CTL_NAMES_* bits of
 * the stores that answered; a store that did not is named on stderr.
 * Returns 0, or -1 when neither answered.
 */
int ctl_stores_names(ctl_stores *s, const char *prefix, ctl_values *out,
                     int *from) __attribute__((warn_unused_result));

/*
 * Fills the value and last update of every item: its keys in Redis (a
 * daily counter's window of today), or when Redis is down or lacks its
 * epoch key (restarted empty, not yet restored) counter_totals (a daily
 * counter's row of counter_daily for today) in PostgreSQL. A Redis value
 * that is no integer (or a key that is no string) marks its item invalid,
 * named on stderr; the others are read all the same. Returns 0 with
 * *src filled, or -1 when neither store answered (each reason printed).
 */
int ctl_stores_values(ctl_stores *s, ctl_values *vals, ctl_source *src)
    __attribute__((warn_unused_result));

#endif
