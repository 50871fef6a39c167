/*
 * dashboard.h - the web dashboard counter-api serves: the page at "/" and
 * its files at "/ui/<file>", all from web/ (embedded into the binary at
 * build time by web/embed.cmake, which generates web_assets.c), and
 * GET /api/v1/counters/names, the list of counters the page shows. Loop
 * thread only.
 */
#ifndef COUNTER_API_DASHBOARD_H
#define COUNTER_API_DASHBOARD_H

#include "api/app.h"
#include "api/router.h"

#include <stddef.h>

typedef struct api_web_asset {
    const char *name;         /* "index.html": its name under web/ */
    const char *content_type; /* from its extension */
    const unsigned char *data;
    size_t len;
} api_web_asset;

/* Every embedded file, sorted by name, closed by an entry whose name is
 * NULL (web_assets.c, generated). */
extern const api_web_asset api_web_assets[];

/* The embedded file called name, or NULL. Static data: never freed. */
const api_web_asset *api_web_asset_find(const char *name);

/* GET / (index.html) and GET /ui/<file>: the file, or 404 not_found. */
void api_handle_dashboard(api_app *app, struct evhttp_request *req,
                          const api_route *route);

#define API_NAMES_LIMIT_MAX 1000

typedef struct api_names_query {
    char prefix[CTR_NAME_MAX + 1]; /* "" for every name */
    char after[CTR_NAME_MAX + 1];  /* "" to start at the first */
    int limit;                     /* 1..API_NAMES_LIMIT_MAX */
} api_names_query;

/*
 * Parses the raw query (after '?', not yet percent-decoded; NULL when the
 * URI has none) of GET /api/v1/counters/names: "prefix" (a start of a
 * counter name), "after" (a counter name) and "limit" (an integer from 1
 * to API_NAMES_LIMIT_MAX, default API_NAMES_LIMIT_MAX), each at most once;
 * other parameters are ignored. Returns 0 with out filled, or -1 with
 * *field set to the parameter at fault and a message in errbuf.
 */
int api_query_names(const char *query, api_names_query *out, const char **field,
                    char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * GET /api/v1/counters/names: the names PostgreSQL holds a total for, and
 * the names declared exactly in the config, sorted, at most limit of them:
 * {"names": [...], "truncated": bool}. Answers once, later (503 when
 * PostgreSQL cannot answer in time).
 */
void api_handle_names(api_app *app, struct evhttp_request *req);

#endif
