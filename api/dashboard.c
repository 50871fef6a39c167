/*
 * dashboard.c - see dashboard.h. The page's files are static data in the
 * binary, so serving them touches no store and no disk; the list of names
 * is one query on the api's PostgreSQL reader.
 */
#include "api/dashboard.h"
#include "api/query.h"

#include "api/reply.h"
#include "api/metrics.h"
#include "common/strbuf.h"

#include <sys/queue.h> /* before evhttp's, for TAILQ_INIT */

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const api_web_asset *api_web_asset_find(const char *name)
{
    for (const api_web_asset *a = api_web_assets; a->name; a++)
        if (strcmp(a->name, name) == 0)
            return a;
    return NULL;
}

void api_handle_dashboard(api_app *app, struct evhttp_request *req,
                          const api_route *route)
{
    const api_web_asset *asset = NULL;

    if (route->endpoint == API_EP_DASHBOARD) {
        asset = api_web_asset_find("index.html");
    } else {
        const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
        const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
        /* the router matched "/ui/" + at least one byte */
        if (path && strncmp(path, "/ui/", 4) == 0)
            asset = api_web_asset_find(path + 4);
    }
    if (asset == NULL) {
        app->metrics.rejected_4xx++;
        api_reply_error(req, 404, "not_found", NULL, "no such file");
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) {
        api_reply_error(req, 500, "internal", NULL, "out of memory");
        return;
    }
    evhttp_add_header(h, "Content-Type", asset->content_type);
    /* small files that change with the binary: always revalidate */
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    /* the page runs only its own files and talks only to this api */
    evhttp_add_header(h, "Content-Security-Policy",
                      "default-src 'self'; img-src 'self' data:; "
                      "frame-ancestors 'none'; base-uri 'none'; "
                      "form-action 'none'");
    evbuffer_add_reference(b, asset->data, asset->len, NULL, NULL);
    api_metrics_end(req, 200);
    api_reply_send(req, 200, b);
    evbuffer_free(b);
}

/* ------------------------------------------------------------- names */

static int names_bad(const char **field, const char *name, char *errbuf,
                     size_t errlen, const char *message)
{
    *field = name;
    snprintf(errbuf, errlen, "%s: %s", name, message);
    return -1;
}

/* libevent decodes values into C strings, where a "%00" would end a value
 * early: refuse one in any parameter of ours. */
static const char *param_with_nul(const char *query)
{
    static const char *const ours[] = {"prefix", "after", "limit"};
    for (const char *p = query; p && (p = strstr(p, "%00")) != NULL; p++) {
        const char *start = p;
        while (start > query && start[-1] != '&')
            start--;
        size_t n = strcspn(start, "=&");
        for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
            if (n == strlen(ours[i]) && strncmp(start, ours[i], n) == 0)
                return ours[i];
    }
    return NULL;
}

int api_query_names(const char *query, api_names_query *out, const char **field,
                    char *errbuf, size_t errlen)
{
    struct evkeyvalq params;
    int dup, rc = -1;
    const char *v, *nul;

    memset(out, 0, sizeof(*out));
    out->limit = API_NAMES_LIMIT_MAX;
    TAILQ_INIT(&params);
    if (query == NULL)
        return 0;
    if ((nul = param_with_nul(query)) != NULL)
        return names_bad(field, nul, errbuf, errlen,
                         "must not contain NUL (%00)");
    if (evhttp_parse_query_str(query, &params) != 0) {
        names_bad(field, "prefix", errbuf, errlen,
                  "the query string is malformed");
        goto out;
    }
    v = api_query_param(&params, "prefix", &dup);
    if (dup || (v && v[0] && !ctr_name_valid(v, strlen(v)))) {
        names_bad(field, "prefix", errbuf, errlen,
                  "give it once, as 0-128 characters of [A-Za-z0-9_.-]");
        goto out;
    }
    if (v)
        snprintf(out->prefix, sizeof(out->prefix), "%s", v);
    v = api_query_param(&params, "after", &dup);
    if (dup || (v && !ctr_name_valid(v, strlen(v)))) {
        names_bad(field, "after", errbuf, errlen,
                  "give it once, as a counter name (1-128 characters of "
                  "[A-Za-z0-9_.-])");
        goto out;
    }
    if (v)
        snprintf(out->after, sizeof(out->after), "%s", v);
    v = api_query_param(&params, "limit", &dup);
    if (v) {
        char *end = NULL;
        long n = strtol(v, &end, 10);
        if (dup || v[0] < '0' || v[0] > '9' || *end != '\0' || n < 1 ||
            n > API_NAMES_LIMIT_MAX) {
            char msg[80];
            snprintf(msg, sizeof(msg),
                     "give it once, as an integer from 1 to %d",
                     API_NAMES_LIMIT_MAX);
            names_bad(field, "limit", errbuf, errlen, msg);
            goto out;
        }
        out->limit = (int)n;
    }
    rc = 0;
out:
    evhttp_clear_headers(&params);
    return rc;
}

/*
 * Every written counter has a total (the persister adds one for each),
 * so counter_totals lists them; the config's exact names join in, written
 * or not. Both halves are cut at the limit before the union, so the index
 * on counter_totals.name does the work however many names there are. One
 * more than asked says whether the list was cut.
 */
static const char names_sql[] =
    "(SELECT name FROM counter_totals"
    "  WHERE name > $1 AND name >= $2 AND starts_with(name, $2)"
    "  ORDER BY name LIMIT $4)"
    " UNION "
    "(SELECT n FROM unnest($3::text[]) AS n"
    "  WHERE n > $1 AND starts_with(n, $2))"
    " ORDER BY 1 LIMIT $4";

typedef struct names_op {
    api_app *app;
    struct evhttp_request *req;
    int limit;
} names_op;

static void names_done(const PGresult *res, void *arg)
{
    names_op *op = arg;
    if (res == NULL) {
        api_reply_error(op->req, 503, "unavailable", NULL,
                        "postgresql could not answer in time");
    } else {
        struct evbuffer *b = evbuffer_new();
        int rows = PQntuples(res);
        int shown = rows > op->limit ? op->limit : rows;
        evbuffer_add_printf(b, "{\"names\":[");
        for (int i = 0; i < shown; i++) {
            if (i)
                evbuffer_add(b, ",", 1);
            api_json_append_string(b, PQgetvalue(res, i, 0));
        }
        evbuffer_add_printf(b, "],\"truncated\":%s}\n",
                            rows > op->limit ? "true" : "false");
        api_reply_json(op->req, 200, b);
        evbuffer_free(b);
    }
    op->app->inflight--;
    free(op);
}

void api_handle_names(api_app *app, struct evhttp_request *req)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    api_names_query nq;
    const char *field = NULL;
    char msg[160], limit[16];
    ctr_strbuf exact = {0};
    names_op *op = NULL;

    if (api_query_names(q, &nq, &field, msg, sizeof(msg)) != 0) {
        app->metrics.rejected_4xx++;
        api_reply_error(req, 400, "invalid_query", field, msg);
        return;
    }
    op = calloc(1, sizeof(*op));
    if (op == NULL) {
        api_reply_error(req, 500, "internal", NULL, "out of memory");
        return;
    }
    op->app = app;
    op->req = req;
    op->limit = nq.limit;
    ctr_pgarray_open(&exact);
    for (size_t i = 0; i < app->cfg->n_counters; i++)
        if (!app->cfg->counters[i].is_prefix &&
            ctr_name_valid(app->cfg->counters[i].pattern,
                           strlen(app->cfg->counters[i].pattern)))
            ctr_pgarray_text(&exact, app->cfg->counters[i].pattern);
    ctr_pgarray_close(&exact);
    snprintf(limit, sizeof(limit), "%d", nq.limit + 1);
    const char *params[4] = {nq.after, nq.prefix, exact.s, limit};
    app->inflight++;
    if (exact.failed ||
        api_pg_query(app->pg, names_sql, 4, params, names_done, op) != 0) {
        app->inflight--;
        free(op);
        api_reply_error(req, 503, "unavailable", NULL,
                        "postgresql is busy; try again");
    }
    ctr_strbuf_clear(&exact);
}
