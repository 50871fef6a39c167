/*
 * main.c - counter-api: parse config, connect, serve HTTP until SIGTERM or
 * SIGINT, then stop accepting, let requests and writes in flight settle and
 * their answers reach the kernel, flush Kafka, and close in reverse order.
 */
#include "api/app.h"
#include "common/log.h"
#include "common/timeutil.h"

#include <event2/event.h>
#include <event2/http.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * deploy/stack.sh stop sends SIGKILL 10 s after SIGTERM: draining (bounded
 * by the write deadlines, see drain_deadline_ms) plus the final flush stay
 * under that with the default timeouts.
 */
enum {
    FLUSH_DEADLINE_MS = 2500,
    SETTLE_AFTER_FLUSH_MS = 500,
    DRAIN_MIN_MS = 2000,
    DRAIN_MAX_MS = 30000
};

typedef struct api_main {
    api_app app;
    struct evhttp *http;
    struct event *drain_ev;
    int64_t drain_deadline_ms;
} api_main;

/*
 * The longest a write can take to settle: Redis's deadline, then Kafka's
 * (twice: a write that goes through the log while Redis is away may publish
 * again), plus a second for the undo of a refused event.
 */
static int drain_deadline_ms(const ctr_config *cfg)
{
    long ms = (long)cfg->redis_write_timeout_ms +
              2L * cfg->kafka_delivery_timeout_ms + 1000;
    if (ms < cfg->postgres_timeout_ms + 1000L)
        ms = cfg->postgres_timeout_ms + 1000L; /* fallback reads */
    return ms < DRAIN_MIN_MS   ? DRAIN_MIN_MS
           : ms > DRAIN_MAX_MS ? DRAIN_MAX_MS
                               : (int)ms;
}

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    api_main *m = arg;
    (void)fd;
    (void)what;
    int settled =
        m->app.inflight == 0 && api_listener_output_flushed(m->app.listener);
    if (!settled && ctr_time_mono_ms() < m->drain_deadline_ms)
        return;
    if (m->app.inflight > 0)
        ctr_warn("shutting down with %ld requests still in flight",
                 m->app.inflight);
    else if (!settled)
        ctr_warn("shutting down with answers not yet sent");
    event_base_loopbreak(m->app.base);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    api_main *m = arg;
    (void)what;
    if (m->app.stopping)
        return;
    ctr_info("received signal %d, shutting down", (int)sig);
    m->app.stopping = 1;
    api_listener_close(m->app.listener);
    m->drain_deadline_ms = ctr_time_mono_ms() + drain_deadline_ms(m->app.cfg);
    struct timeval tick = {0, 20 * 1000};
    event_add(m->drain_ev, &tick);
}

/* Long on purpose: start-up read top to bottom and torn down in reverse
 * (STYLE.md 11), every step in one place, in order. */
int main(void)
{
    api_main m;
    ctr_config *cfg = NULL;
    struct event *sigterm_ev = NULL, *sigint_ev = NULL;
    char err[512];
    int rc = 1;

    memset(&m, 0, sizeof(m));
    signal(SIGPIPE, SIG_IGN);

    cfg = ctr_config_load(NULL, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "counter-api: %s\n", err);
        return 2;
    }
    ctr_log_init("counter-api", ctr_log_level_parse(cfg->log_level));
    m.app.cfg = cfg;
    m.app.auth = api_auth_new(cfg, err, sizeof(err));
    if (m.app.auth == NULL) {
        fprintf(stderr, "counter-api: %s\n", err);
        ctr_config_free(cfg);
        return 2;
    }

    /* epoll's change list: evhttp turns a connection's read and write
     * events off and on around every request, and the list folds what
     * changes in one loop pass into one epoll_ctl. On a 10-name batch GET
     * that was about one syscall in five, and 10 % more GETs per second.
     * (Unsafe only with dup()ed descriptors, which the api does not
     * watch.) */
    struct event_config *ecfg = event_config_new();
    if (ecfg != NULL) {
        event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        m.app.base = event_base_new_with_config(ecfg);
        event_config_free(ecfg);
    }
    if (m.app.base == NULL) {
        ctr_error("could not create event loop");
        goto out;
    }
    m.app.redis = api_redis_new(cfg, m.app.base, err, sizeof(err));
    if (m.app.redis == NULL) {
        ctr_error("could not set up redis: %s", err);
        goto out;
    }
    m.app.floor = api_floor_new();
    m.app.pg = api_pg_new(cfg, m.app.base, err, sizeof(err));
    if (m.app.pg == NULL) {
        ctr_error("could not set up postgresql: %s", err);
        goto out;
    }
    m.app.producer =
        ctr_producer_new(cfg, m.app.base, api_on_delivery, err, sizeof(err));
    if (m.app.producer == NULL) {
        ctr_error("could not set up kafka: %s", err);
        goto out;
    }

    m.http = evhttp_new(m.app.base);
    if (m.http == NULL) {
        ctr_error("could not create http server");
        goto out;
    }
    /* Let every method through so wrong ones get our JSON 405. */
    evhttp_set_allowed_methods(
        m.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                    EVHTTP_REQ_PATCH | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
    /*
     * Every request is framed (api/framing.c) before evhttp reads it, with
     * these limits: evhttp's own, which would answer in HTML, can then
     * never be reached.
     */
    m.app.framing.max_header_bytes = (size_t)cfg->server_max_header_bytes;
    m.app.framing.max_body_bytes = (size_t)cfg->server_max_body_bytes;
    m.app.framing.max_batch_body_bytes =
        (size_t)cfg->server_max_batch_body_bytes;
    m.app.framing.preflight = api_preflight;
    m.app.framing.preflight_arg = &m.app;
    evhttp_set_max_body_size(
        m.http, (ev_ssize_t)(cfg->server_max_body_bytes >
                                     cfg->server_max_batch_body_bytes
                                 ? cfg->server_max_body_bytes
                                 : cfg->server_max_batch_body_bytes));
    evhttp_set_max_headers_size(m.http,
                                (ev_ssize_t)cfg->server_max_header_bytes);
    /* libevent 2.1 has one timeout for both directions: idle reading (a
     * slow or silent client, a kept-alive connection) and a blocked write
     * (a client that does not read its answer) each close the connection
     * after server.timeout_s. */
    evhttp_set_timeout(m.http, cfg->server_timeout_s);
    evhttp_set_gencb(m.http, api_handle_request, &m.app);
    m.app.listener = api_listener_new(
        m.app.base, m.http, cfg->server_bind, cfg->server_port,
        cfg->server_max_connections, &m.app.framing, err, sizeof(err));
    if (m.app.listener == NULL) {
        ctr_error("%s", err);
        goto out;
    }

    m.drain_ev = event_new(m.app.base, -1, EV_PERSIST, drain_check, &m);
    sigterm_ev = evsignal_new(m.app.base, SIGTERM, on_signal, &m);
    sigint_ev = evsignal_new(m.app.base, SIGINT, on_signal, &m);
    if (!m.drain_ev || !sigterm_ev || !sigint_ev ||
        event_add(sigterm_ev, NULL) || event_add(sigint_ev, NULL)) {
        ctr_error("could not register signal handlers");
        goto out;
    }

    ctr_info("listening on http://%s:%d (config %s, auth %s)", cfg->server_bind,
             cfg->server_port,
             cfg->source_path[0] ? cfg->source_path : "defaults",
             api_auth_count(m.app.auth) ? "on" : "off");
    event_base_dispatch(m.app.base);

    int left = ctr_producer_flush(m.app.producer, FLUSH_DEADLINE_MS);
    if (left > 0)
        ctr_warn("%d kafka messages still undelivered at shutdown", left);
    /* The flush's delivery reports queued finishes and undos on Redis:
     * a last turn of the loop sends them. What is still pending after it
     * stays in Redis for the applier's resolver. */
    if (m.app.inflight > 0 || api_redis_queued(m.app.redis)) {
        event_del(m.drain_ev);
        struct timeval tv = {SETTLE_AFTER_FLUSH_MS / 1000,
                             (SETTLE_AFTER_FLUSH_MS % 1000) * 1000};
        event_base_loopexit(m.app.base, &tv);
        event_base_dispatch(m.app.base);
    }
    m.app.closing = 1;
    rc = 0;
    ctr_info("stopped");
out:
    if (sigterm_ev)
        event_free(sigterm_ev);
    if (sigint_ev)
        event_free(sigint_ev);
    if (m.drain_ev)
        event_free(m.drain_ev);
    /* evhttp_free() closes the connections, whose close callbacks reach
     * the listener: it stops accepting first and is freed after. */
    api_listener_close(m.app.listener);
    if (m.http)
        evhttp_free(m.http);
    api_listener_free(m.app.listener);
    ctr_producer_free(m.app.producer);
    api_redis_free(m.app.redis);
    api_pg_free(m.app.pg);
    api_floor_free(m.app.floor);
    if (m.app.base)
        event_base_free(m.app.base);
    api_auth_free(m.app.auth);
    ctr_config_free(cfg);
    return rc;
}
