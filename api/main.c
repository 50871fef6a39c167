/*
 * main.c - counter-api: parse config, connect, serve HTTP until SIGTERM or
 * SIGINT, then stop accepting, let writes in flight settle, flush Kafka,
 * and close in reverse order.
 */
#include "api/app.h"
#include "common/log.h"
#include "common/timeutil.h"

#include <event2/event.h>
#include <event2/http.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { DRAIN_DEADLINE_MS = 10000, FLUSH_DEADLINE_MS = 5000 };

typedef struct api_main {
    api_app app;
    struct evhttp *http;
    struct evhttp_bound_socket *listener;
    struct event *drain_ev;
    int64_t drain_deadline_ms;
} api_main;

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    api_main *m = arg;
    (void)fd;
    (void)what;
    if (m->app.inflight > 0 && ctr_time_mono_ms() < m->drain_deadline_ms)
        return;
    if (m->app.inflight > 0)
        ctr_warn("shutting down with %ld requests still in flight",
                 m->app.inflight);
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
    if (m->listener) {
        evhttp_del_accept_socket(m->http, m->listener);
        m->listener = NULL;
    }
    m->drain_deadline_ms = ctr_time_mono_ms() + DRAIN_DEADLINE_MS;
    struct timeval tick = {0, 20 * 1000};
    event_add(m->drain_ev, &tick);
}

/*
 * evhttp_bind_socket listens with a backlog of 128, which makes a burst of
 * new connections wait for SYN retries; this listens with the system's
 * maximum instead.
 */
static struct evhttp_bound_socket *listen_on(struct evhttp *http,
                                             const char *bind_addr, int port)
{
    struct addrinfo hints, *ai = NULL;
    char portstr[16];
    evutil_socket_t fd = -1;
    int one = 1;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
    snprintf(portstr, sizeof(portstr), "%d", port);
    if (getaddrinfo(bind_addr, portstr, &hints, &ai) != 0 || ai == NULL) {
        errno = EINVAL;
        return NULL;
    }
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0 || evutil_make_socket_nonblocking(fd) != 0 ||
        evutil_make_socket_closeonexec(fd) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
        listen(fd, SOMAXCONN > 4096 ? SOMAXCONN : 4096) != 0) {
        int saved = errno;
        if (fd >= 0)
            evutil_closesocket(fd);
        freeaddrinfo(ai);
        errno = saved;
        return NULL;
    }
    freeaddrinfo(ai);
    struct evhttp_bound_socket *bound =
        evhttp_accept_socket_with_handle(http, fd);
    if (bound == NULL)
        evutil_closesocket(fd);
    return bound;
}

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

    m.app.base = event_base_new();
    if (m.app.base == NULL) {
        ctr_error("could not create event loop");
        goto out;
    }
    m.app.redis = api_redis_new(cfg, m.app.base, err, sizeof(err));
    if (m.app.redis == NULL) {
        ctr_error("could not set up redis: %s", err);
        goto out;
    }
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
     * evhttp's own limit answers with an HTML 413 that cannot be changed
     * (libevent 2.1 has no error callback), so it is set well above ours:
     * bodies up to it reach the handler, which answers a JSON 413. Past it
     * evhttp answers 413 itself and closes the connection.
     */
    size_t hard_cap = (size_t)cfg->server_max_body_bytes * 4;
    evhttp_set_max_body_size(m.http,
                             hard_cap < (1u << 20) ? (1u << 20) : hard_cap);
    evhttp_set_max_headers_size(m.http, 16384);
    evhttp_set_timeout(m.http, cfg->server_timeout_s);
    evhttp_set_gencb(m.http, api_handle_request, &m.app);
    m.listener = listen_on(m.http, cfg->server_bind, cfg->server_port);
    if (m.listener == NULL) {
        ctr_error("could not listen on %s:%d: %s", cfg->server_bind,
                  cfg->server_port, strerror(errno));
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

    ctr_info("listening on http://%s:%d (config %s)", cfg->server_bind,
             cfg->server_port,
             cfg->source_path[0] ? cfg->source_path : "defaults");
    event_base_dispatch(m.app.base);

    int left = ctr_producer_flush(m.app.producer, FLUSH_DEADLINE_MS);
    if (left > 0)
        ctr_warn("%d kafka messages still undelivered at shutdown", left);
    rc = 0;
    ctr_info("stopped");
out:
    if (sigterm_ev)
        event_free(sigterm_ev);
    if (sigint_ev)
        event_free(sigint_ev);
    if (m.drain_ev)
        event_free(m.drain_ev);
    if (m.http)
        evhttp_free(m.http);
    ctr_producer_free(m.app.producer);
    api_redis_free(m.app.redis);
    api_pg_free(m.app.pg);
    if (m.app.base)
        event_base_free(m.app.base);
    ctr_config_free(cfg);
    return rc;
}
