/*
 * router.h - maps a request's method and path to an endpoint, and parses
 * the query of the batch read. Pure functions, no I/O: the fuzz and unit
 * tests call them directly.
 */
#ifndef COUNTER_API_ROUTER_H
#define COUNTER_API_ROUTER_H

#include "common/name.h"

#include <stddef.h>

enum api_method { API_GET, API_POST, API_HEAD, API_OTHER };

enum api_endpoint {
    API_EP_NONE = 0,       /* see status */
    API_EP_COUNTER_GET,    /* GET  /api/v1/counter/{name} */
    API_EP_COUNTER_INCR,   /* POST /api/v1/counter/{name}/increment */
    API_EP_COUNTER_DECR,   /* POST /api/v1/counter/{name}/decrement */
    API_EP_COUNTER_SET,    /* POST /api/v1/counter/{name}/set */
    API_EP_HISTORY,        /* GET  /api/v1/counter/{name}/history */
    API_EP_COUNTERS_GET,   /* GET  /api/v1/counters?names=a,b */
    API_EP_DEFINITIONS,    /* GET  /api/v1/counters/definitions */
    API_EP_HEALTH,         /* GET  /healthz */
    API_EP_METRICS,        /* GET  /metrics */
    API_EP_READY,          /* GET  /readyz */
    API_EP_NAMES,          /* GET  /api/v1/counters/names */
    API_EP_DASHBOARD,      /* GET  / (web/index.html) */
    API_EP_UI_ASSET,       /* GET  /ui/<file> (web/<file>) */
    API_EP_COUNTERS_BATCH, /* POST /api/v1/counters/batch */
    API_EP_COUNT
};

typedef struct api_route {
    enum api_endpoint endpoint;
    int status;        /* 0 when matched, else 400, 404 or 405 */
    const char *allow; /* for 405: the Allow header value */
    char name[CTR_NAME_MAX + 1];
} api_route;

/*
 * Routes path (the URI path only, not yet percent-decoded). On a match
 * returns 0 with route->endpoint set and the decoded, validated counter name
 * in route->name. Otherwise returns -1 with route->status 404 (no such
 * path), 405 (path exists, method does not; route->allow set) or 400 (the
 * name is not valid).
 */
int api_route_match(enum api_method method, const char *path, api_route *route)
    __attribute__((warn_unused_result));

#define API_BATCH_MAX 100

typedef struct api_name_list {
    size_t n;
    char names[API_BATCH_MAX][CTR_NAME_MAX + 1];
} api_name_list;

/*
 * Parses the value of "names=" (already percent-decoded): comma-separated
 * counter names, 1 to API_BATCH_MAX of them, in order, duplicates kept.
 * Returns 0, or -1 with a message naming the problem in errbuf.
 */
int api_parse_names(const char *value, api_name_list *out, char *errbuf,
                    size_t errlen) __attribute__((warn_unused_result));

#endif
