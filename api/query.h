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
    int64_t from_ms;      /* "from", ms since the epoch */
    int64_t to_ms;        /* "to", > from_ms */
    const char *interval; /* "minute", "hour" (the default) or "day"; static */
    int64_t step_ms;      /* the interval's length: 60000, 3600000, 86400000 */
} api_history_query;

/*
 * Parses the raw query (as above) of a history read: "from" and "to" once
 * each as RFC 3339 date-times with to after from, "interval" at most once.
 * Returns 0 with out filled, or -1 with *field set to the parameter at fault
 * and a message in errbuf. The bound on the number of points is the
 * handler's: it depends on the counter's time zone.
 */
int api_query_history(const char *query, api_history_query *out,
                      const char **field, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

struct evkeyvalq;
/* The value of query parameter key in q, or NULL; *dup set if it comes
 * more than once. */
const char *api_query_param(struct evkeyvalq *q, const char *key, int *dup);

#endif
