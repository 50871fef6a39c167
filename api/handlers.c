/*
 * handlers.c - routing every request to its handler, and the two small
 * operational endpoints: /healthz and /metrics (Prometheus text).
 */
#include "api/handlers.h"
#include "api/reply.h"

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
    const api_metrics *m = &app->metrics;
    struct evbuffer *b = evbuffer_new();
    static const char *const help =
        "# HELP counter_api_requests_total HTTP requests received.\n"
        "# TYPE counter_api_requests_total counter\n"
        "# HELP counter_api_writes_total Writes by outcome.\n"
        "# TYPE counter_api_writes_total counter\n"
        "# HELP counter_api_reads_total Reads by where they were answered "
        "from.\n"
        "# TYPE counter_api_reads_total counter\n";
    evbuffer_add(b, help, strlen(help));
    evbuffer_add_printf(b, "counter_api_requests_total %" PRIu64 "\n",
                        m->requests);
    const struct {
        const char *outcome;
        uint64_t n;
    } writes[] = {
        {"applied", m->writes_applied},
        {"duplicate", m->writes_duplicate},
        {"bound_refused", m->writes_bound_refused},
        {"clamped", m->writes_clamped},
        {"unavailable", m->writes_unavailable},
        {"indeterminate", m->writes_indeterminate},
        {"undone", m->writes_undone},
        {"via_log", m->writes_via_log},
        {"replayed", m->writes_replayed},
        {"rejected", m->rejected_4xx},
    };
    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++)
        evbuffer_add_printf(
            b, "counter_api_writes_total{outcome=\"%s\"} %" PRIu64 "\n",
            writes[i].outcome, writes[i].n);
    evbuffer_add_printf(
        b,
        "counter_api_reads_total{source=\"redis\"} %" PRIu64
        "\ncounter_api_reads_total{source=\"postgres\"} "
        "%" PRIu64 "\ncounter_api_reads_total{source=\"failed\"} %" PRIu64 "\n",
        m->reads_redis, m->reads_postgres, m->reads_failed);
    evbuffer_add_printf(b, "counter_api_inflight %ld\n", app->inflight);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

void api_handle_request(struct evhttp_request *req, void *arg)
{
    api_app *app = arg;
    api_route route;
    enum api_method method;

    app->metrics.requests++;
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: method = API_GET; break;
    case EVHTTP_REQ_HEAD: method = API_HEAD; break;
    case EVHTTP_REQ_POST: method = API_POST; break;
    default: method = API_OTHER; break;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;

    if (api_route_match(method, path, &route) != 0) {
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
    if (app->stopping && route.endpoint != API_EP_HEALTH &&
        route.endpoint != API_EP_METRICS) {
        api_reply_error(req, 503, "shutting_down", NULL,
                        "the server is shutting down");
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
    case API_EP_COUNTER_GET: api_handle_read(app, req, &route, 0); break;
    case API_EP_COUNTERS_GET: api_handle_read(app, req, &route, 1); break;
    case API_EP_HISTORY: api_handle_history(app, req, &route); break;
    case API_EP_DEFINITIONS: api_handle_definitions(app, req); break;
    case API_EP_HEALTH: handle_health(app, req); break;
    case API_EP_METRICS: handle_metrics(app, req); break;
    case API_EP_NONE:
        api_reply_error(req, 404, "not_found", NULL, "no such endpoint");
        break;
    }
}
