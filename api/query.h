/*
 * query.h - parses the query strings of the batch read
 * (GET /api/v1/counters?names=a,b) and of the history read
 * (GET /api/v1/counter/{name}/history?from=&to=&interval=). Pure functions,
 * no I/O: the handlers in read_path.c, and the fuzz tests, call them.
 */
#ifndef COUNTER_API_QUERY_H
#define COUNTER_API_QUERY_H

#include "api/router.h"

#include <stddef.h>
#include <stdint.h>

/*
 * Parses the raw query (after '?', not yet percent-decoded; NULL when the
 * URI has none) of a batch read: exactly one "names" parameter, read by
 * api_parse_names. Returns 0 with out filled, or -1 with a message in errbuf.
 */
int api_query_batch(const char *query, api_name_list *out, char *errbuf,
                    size_t errlen) __attribute__((warn_unused_result));

typedef struct api_history_query {
    int64_t from_ms;      /* "from", ms since the epoch (if has_from) */
    int64_t to_ms;        /* "to" (if has_to); > from_ms when both given */
    int has_from, has_to; /* given; else api_history_default_range's */
    const char *interval; /* "minute", "hour" (the default) or "day"; static */
    int64_t step_ms;      /* the interval's length: 60000, 3600000, 86400000 */
} api_history_query;

/*
 * Parses the raw query (as above) of a history read: "from" and "to" at
 * most once each as RFC 3339 date-times, to after from when both are
 * given, "interval" at most once. Returns 0 with out filled, or -1 with
 * *field set to the parameter at fault and a message in errbuf. The bound
 * on the number of points is the handler's: it depends on the counter's
 * time zone.
 */
int api_query_history(const char *query, api_history_query *out,
                      const char **field, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* How far back a history without "from" reaches, in periods. */
enum {
    API_HISTORY_DEFAULT_MINUTES = 60, /* the last hour */
    API_HISTORY_DEFAULT_HOURS = 24,   /* the last day */
    API_HISTORY_DEFAULT_DAYS = 30,    /* the last 30 local days */
};

struct ctr_tz;
/*
 * Fills in what h's query left out, so that nobody has to work out a range
 * by hand: "to" becomes the end of the period (of h's interval, aligned in
 * tz) that holds now_ms, so the last point is the one still filling;
 * "from" the default span before "to" (API_HISTORY_DEFAULT_*; days are
 * local days), never before the year 0001. Returns 0, or -1 with *field
 * and errbuf when the range is empty: a given "from" not before the
 * default "to" ("from"), a given "to" at the year 0001's first instant
 * ("to").
 */
int api_history_default_range(api_history_query *h, const struct ctr_tz *tz,
                              int64_t now_ms, const char **field, char *errbuf,
                              size_t errlen)
    __attribute__((warn_unused_result));

struct evkeyvalq;
/* The value of query parameter key in q, or NULL; *dup set if it comes
 * more than once. */
const char *api_query_param(struct evkeyvalq *q, const char *key, int *dup);

#endif
