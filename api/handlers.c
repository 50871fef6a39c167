/*
 * handlers.c - routing every request to its handler (after the bearer
 * token and the in-flight limit are checked), and the two small
 * operational endpoints: /healthz and /metrics (Prometheus text).
 */
#include "api/handlers.h"
#include "api/dashboard.h"
#include "api/framing.h"
#include "api/reply.h"
#include "api/metrics.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void handle_health(api_app *app, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"status\":\"%s\",\"redis\":%s,\"kafka\":%s}\n",
                        app->stopping ? "stopping" : "ok",
                        api_redis_ready(app->redis) ? "true" : "false",
                        ctr_producer_brokers_down(app->producer) ? "false"
                                                                 : "true");
    api_reply_json(req, 200, b);
    evbuffer_free(b);
}

static void handle_metrics(api_app *app, struct evhttp_request *req)
{
    api_metrics_gauges g = {
        .inflight = app->inflight,
        .connections = api_listener_connections(app->listener),
        .redis_up = api_redis_ready(app->redis),
        .kafka_up = !ctr_producer_brokers_down(app->producer),
        .kafka_queue = ctr_producer_outq_len(app->producer),
    };
    api_redis_cluster_stats_get(app->redis, &g.cluster);
    ctr_strbuf text = {0};
    api_metrics_render(&app->metrics, &g, &text);
    if (text.failed) {
        ctr_strbuf_clear(&text);
        api_reply_error(req, 500, "internal", NULL, "out of memory");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, text.s, text.len);
    ctr_strbuf_clear(&text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    api_metrics_end(req, 200);
    api_reply_send(req, 200, b);
    evbuffer_free(b);
}

void api_refuse_overloaded(api_app *app, struct evhttp_request *req)
{
    app->metrics.overloaded++;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
                      "1");
    api_reply_error(req, 503, "overloaded", NULL,
                    "too many requests in flight; nothing was applied, "
                    "retry later");
}

/* What an endpoint asks of the caller's token when auth is on. */
static enum api_access endpoint_access(enum api_endpoint ep)
{
    switch (ep) {
    case API_EP_HEALTH:
    case API_EP_READY: return API_ACCESS_NONE; /* probes carry no token */
    case API_EP_DASHBOARD:
    case API_EP_UI_ASSET:
        return API_ACCESS_NONE; /* the page asks for a token to read with */
    case API_EP_COUNTER_INCR:
    case API_EP_COUNTER_DECR:
    case API_EP_COUNTER_SET:
    case API_EP_COUNTERS_BATCH: return API_ACCESS_WRITE;
    default: return API_ACCESS_READ; /* reads, and /metrics */
    }
}

/*
 * The access the request's Authorization header grants. More than one such
 * header is refused: proxies and servers disagree on which one counts.
 */
static enum api_access request_access(const api_app *app,
                                      struct evhttp_request *req)
{
    const char *value = NULL;
    int seen = 0;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    for (struct evkeyval *h = in->tqh_first; h; h = h->next.tqe_next)
        if (evutil_ascii_strcasecmp(h->key, "Authorization") == 0) {
            value = h->value;
            seen++;
        }
    return seen == 1 ? api_auth_check(app->auth, value) : API_ACCESS_NONE;
}

/*
 * 0 when the request may go on; else it has been answered 401 or 403.
 * Neither answer says whether the token exists or how it differs.
 */
static int authorize(api_app *app, struct evhttp_request *req,
                     enum api_endpoint ep)
{
    enum api_access need = endpoint_access(ep);
    if (api_auth_count(app->auth) == 0 || need == API_ACCESS_NONE)
        return 0;
    enum api_access has = request_access(app, req);
    if ((has & need) == need)
        return 0;
    if (has == API_ACCESS_NONE) {
        app->metrics.unauthorized++;
        evhttp_add_header(evhttp_request_get_output_headers(req),
                          "WWW-Authenticate", "Bearer realm=\"counter\"");
        api_reply_error(req, 401, "unauthorized", NULL,
                        "a valid bearer token is required");
    } else {
        app->metrics.forbidden++;
        api_reply_error(req, 403, "forbidden", NULL,
                        "this token may read but not write");
    }
    return -1;
}

enum api_framing_refusal
api_preflight(void *arg, enum api_framing_method method, const char *path,
              const char *authorization, int authorizations,
              uint64_t content_length)
{
    api_app *app = arg;
    api_route route;
    enum api_method m = method == API_FM_GET    ? API_GET
                        : method == API_FM_HEAD ? API_HEAD
                        : method == API_FM_POST ? API_POST
                                                : API_OTHER;
    int routed = api_route_match(m, path, &route) == 0;
    int batch = routed && route.endpoint == API_EP_COUNTERS_BATCH;
    if (content_length > (batch ? app->framing.max_batch_body_bytes
                                : app->framing.max_body_bytes))
        return batch ? API_REFUSE_BATCH_TOO_LARGE : API_REFUSE_BODY_TOO_LARGE;
    /* Unrouted, it is refused after its body: 404, 405, 400. */
    if (api_auth_count(app->auth) == 0 || !routed)
        return API_REFUSE_NONE;
    enum api_access need = endpoint_access(route.endpoint);
    if (need == API_ACCESS_NONE)
        return API_REFUSE_NONE;
    enum api_access has = authorizations == 1
                              ? api_auth_check(app->auth, authorization)
                              : API_ACCESS_NONE;
    if ((has & need) == need)
        return API_REFUSE_NONE;
    return has == API_ACCESS_NONE ? API_REFUSE_UNAUTHORIZED
                                  : API_REFUSE_FORBIDDEN;
}

/* A request framing.c refused, answered in its turn; the connection ends
 * with it (nothing after it was read). */
static void answer_refused(api_app *app, struct evhttp_request *req,
                           enum api_framing_refusal r)
{
    api_framing_answer a;
    api_framing_describe(r, &app->framing, &a);
    api_metrics_begin(req, API_EP_NONE);
    if (r == API_REFUSE_UNAUTHORIZED) {
        app->metrics.unauthorized++;
        evhttp_add_header(evhttp_request_get_output_headers(req),
                          "WWW-Authenticate", "Bearer realm=\"counter\"");
    } else if (r == API_REFUSE_FORBIDDEN) {
        app->metrics.forbidden++;
    }
    if (a.status < 500)
        app->metrics.rejected_4xx++;
    api_reply_error_close(req, a.status, a.code, a.field, a.message);
}

/* Long on purpose: the order of the checks every request meets (draining,
 * framing refusals, auth, routing, the in-flight limit) is the contract,
 * and reads best in one place. */
void api_handle_request(struct evhttp_request *req, void *arg)
{
    api_app *app = arg;
    api_route route;
    enum api_method method;

    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: method = API_GET; break;
    case EVHTTP_REQ_HEAD: method = API_HEAD; break;
    case EVHTTP_REQ_POST: method = API_POST; break;
    default: method = API_OTHER; break;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum api_framing_refusal refused = api_framing_refusal_of(path);
    if (refused != API_REFUSE_NONE) {
        answer_refused(app, req, refused);
        return;
    }
    /* While draining, every answer closes its connection. */
    if (app->stopping)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection",
                          "close");

    int routed = api_route_match(method, path, &route);
    api_metrics_begin(req, routed == 0 ? route.endpoint : API_EP_NONE);
    if (routed != 0) {
        app->metrics.rejected_4xx++;
        if (route.status == 405) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                              route.allow);
            api_reply_error(req, 405, "method_not_allowed", NULL,
                            "method not allowed on this path");
        } else if (route.status == 400) {
            api_reply_error(req, 400, "invalid_name", "name",
                            "counter names are 1-128 characters of "
                            "[A-Za-z0-9_.-]");
        } else {
            api_reply_error(req, 404, "not_found", NULL, "no such endpoint");
        }
        return;
    }
    if (authorize(app, req, route.endpoint) != 0)
        return;
    int operational = route.endpoint == API_EP_HEALTH ||
                      route.endpoint == API_EP_METRICS ||
                      route.endpoint == API_EP_READY;
    if (app->stopping && !operational) {
        api_reply_error(req, 503, "shutting_down", NULL,
                        "the server is shutting down");
        return;
    }
    /* Past the limit, refuse before any store is touched. */
    if (app->inflight >= app->cfg->server_max_inflight && !operational) {
        api_refuse_overloaded(app, req);
        return;
    }
    switch (route.endpoint) {
    case API_EP_COUNTER_INCR:
        api_handle_write(app, req, &route, API_WRITE_INCR);
        break;
    case API_EP_COUNTER_DECR:
        api_handle_write(app, req, &route, API_WRITE_DECR);
        break;
    case API_EP_COUNTER_SET:
        api_handle_write(app, req, &route, API_WRITE_SET);
        break;
    case API_EP_COUNTERS_BATCH: api_handle_batch_write(app, req); break;
    case API_EP_COUNTER_GET: api_handle_read(app, req, &route, 0); break;
    case API_EP_COUNTERS_GET: api_handle_read(app, req, &route, 1); break;
    case API_EP_HISTORY: api_handle_history(app, req, &route); break;
    case API_EP_DEFINITIONS: api_handle_definitions(app, req); break;
    case API_EP_HEALTH: handle_health(app, req); break;
    case API_EP_METRICS: handle_metrics(app, req); break;
    case API_EP_READY: api_handle_ready(app, req); break;
    case API_EP_NAMES: api_handle_names(app, req); break;
    case API_EP_DASHBOARD:
    case API_EP_UI_ASSET: api_handle_dashboard(app, req, &route); break;
    case API_EP_COUNT:
    case API_EP_NONE:
        api_reply_error(req, 404, "not_found", NULL, "no such endpoint");
        break;
    }
}
