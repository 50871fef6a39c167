/*
 * router.c - see router.h.
 */
#include "api/router.h"

#include <stdio.h>
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes seg[0..len) into out and validates it as a counter name. */
static int decode_name(const char *seg, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = seg[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= len)
                return -1;
            hi = hexval(seg[i + 1]);
            lo = hexval(seg[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (o >= CTR_NAME_MAX)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return ctr_name_valid(out, o) ? 0 : -1;
}

static int method_is(enum api_method m, enum api_method want)
{
    return m == want || (want == API_GET && m == API_HEAD);
}

static int finish(api_route *route, enum api_method method,
                  enum api_method want, enum api_endpoint ep, const char *allow)
{
    if (!method_is(method, want)) {
        route->status = 405;
        route->allow = allow;
        return -1;
    }
    route->endpoint = ep;
    route->status = 0;
    return 0;
}

/* An endpoint: its path (fixed) or suffix after a counter's name, the
 * method it takes and the Allow header a wrong one gets. */
typedef struct route_def {
    const char *path;
    enum api_endpoint ep;
    enum api_method want;
} route_def;

static const route_def fixed_routes[] = {
    {"/healthz", API_EP_HEALTH, API_GET},
    {"/readyz", API_EP_READY, API_GET},
    {"/metrics", API_EP_METRICS, API_GET},
    {"/api/v1/counters/definitions", API_EP_DEFINITIONS, API_GET},
    {"/api/v1/counters", API_EP_COUNTERS_GET, API_GET},
    {"/api/v1/counters/names", API_EP_NAMES, API_GET},
    {"/", API_EP_DASHBOARD, API_GET},
};

/* after "/api/v1/counter/<name>" */
static const route_def counter_routes[] = {
    {"", API_EP_COUNTER_GET, API_GET},
    {"/increment", API_EP_COUNTER_INCR, API_POST},
    {"/decrement", API_EP_COUNTER_DECR, API_POST},
    {"/set", API_EP_COUNTER_SET, API_POST},
    {"/history", API_EP_HISTORY, API_GET},
};

static int finish_def(api_route *route, enum api_method method,
                      const route_def *d)
{
    return finish(route, method, d->want, d->ep,
                  d->want == API_GET ? "GET, HEAD" : "POST");
}

int api_route_match(enum api_method method, const char *path, api_route *route)
{
    static const char counter_prefix[] = "/api/v1/counter/";
    const size_t plen = sizeof(counter_prefix) - 1;

    memset(route, 0, sizeof(*route));
    route->status = 404;
    if (path == NULL)
        return -1;

    for (size_t i = 0; i < sizeof(fixed_routes) / sizeof(fixed_routes[0]); i++)
        if (strcmp(path, fixed_routes[i].path) == 0)
            return finish_def(route, method, &fixed_routes[i]);
    /* which files exist is the handler's business (api/dashboard.c) */
    if (strncmp(path, "/ui/", 4) == 0 && path[4] != '\0')
        return finish(route, method, API_GET, API_EP_UI_ASSET, "GET, HEAD");
    if (strncmp(path, counter_prefix, plen) != 0)
        return -1;

    const char *seg = path + plen;
    const char *slash = strchr(seg, '/');
    size_t seglen = slash ? (size_t)(slash - seg) : strlen(seg);
    const char *suffix = slash ? slash : "";
    const route_def *d = NULL;
    for (size_t i = 0; i < sizeof(counter_routes) / sizeof(counter_routes[0]);
         i++)
        if (strcmp(suffix, counter_routes[i].path) == 0)
            d = &counter_routes[i];
    if (d == NULL || seglen == 0)
        return -1;
    if (decode_name(seg, seglen, route->name) != 0) {
        route->status = 400;
        return -1;
    }
    return finish_def(route, method, d);
}

int api_parse_names(const char *value, api_name_list *out, char *errbuf,
                    size_t errlen)
{
    out->n = 0;
    if (value == NULL || value[0] == '\0') {
        snprintf(errbuf, errlen, "names: give 1 to %d comma-separated names",
                 API_BATCH_MAX);
        return -1;
    }
    const char *p = value;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (out->n >= API_BATCH_MAX) {
            snprintf(errbuf, errlen, "names: at most %d names per request",
                     API_BATCH_MAX);
            return -1;
        }
        if (!ctr_name_valid(p, len)) {
            snprintf(errbuf, errlen,
                     "names: item %zu is not a valid counter name (1-128 "
                     "characters of [A-Za-z0-9_.-])",
                     out->n + 1);
            return -1;
        }
        memcpy(out->names[out->n], p, len);
        out->names[out->n][len] = '\0';
        out->n++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}
