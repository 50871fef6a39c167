/*
 * listener.c - see listener.h.
 *
 * How a connection is followed. evhttp calls on_new_connection() from its
 * accept callback before it builds the connection object, so the new
 * bufferevent is counted there (and accepting paused at the limit), held
 * by a reference and queued. adopt_pending() runs right after, in the same
 * loop iteration: evhttp has by then set the bufferevent's callbacks with
 * the connection as their argument, so the connection's close callback can
 * be set; it fires exactly once, when evhttp closes the socket. A
 * connection that evhttp dropped before that (its callbacks are cleared by
 * bufferevent_free) is uncounted at once.
 *
 * Each connection holds a reference to its bufferevent, from accept to
 * its close callback, so that its framing (which watches the input buffer)
 * is always taken off a live one. Bufferevents are made with
 * BEV_OPT_CLOSE_ON_FREE, so evhttp only shuts a closing connection's
 * socket for writing and the last reference closes it: a lingering
 * connection keeps the reference until the lingering ends.
 */
#include "api/listener.h"
#include "common/log.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

enum {
    FD_RESERVE = 256,          /* descriptors kept for Redis, Kafka, logs */
    ACCEPT_RETRY_MS = 100,     /* after accept() failed for want of fds */
    LISTEN_BACKLOG_MIN = 4096, /* evhttp_bind_socket's 128 is too short */
    LINGER_S = 2,              /* after a refusal's answer, at most */
    LINGER_MAX_BYTES = 4 << 20 /* read and dropped while lingering */
};

typedef struct conn_node {
    struct conn_node *prev, *next;
    struct evhttp_connection *evcon;
    struct bufferevent *bev; /* a reference of our own: see above */
    api_listener *owner;
    api_framing *framing; /* NULL when it could not be had */
} conn_node;

/* A connection accepted, its close callback not yet set. */
typedef struct pending_conn {
    struct bufferevent *bev;
    api_framing *framing;
} pending_conn;

/* A refused connection's socket, read and dropped until it ends. */
typedef struct lingering {
    struct lingering *prev, *next;
    api_listener *owner;
    struct bufferevent *bev; /* the connection's reference, kept */
    struct event *begin;     /* once evhttp has let go of bev */
    size_t dropped;
} lingering;

struct api_listener {
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound; /* NULL once closed */
    struct evconnlistener *lev;        /* owned by bound */
    struct event *adopt_ev;
    struct event *retry_ev;
    const api_framing_limits *framing;
    pending_conn *pending;
    size_t n_pending, cap_pending;
    conn_node conns;   /* sentinel of the open connections' ring */
    lingering lingers; /* sentinel of the lingering sockets' ring */
    long open;
    long max;
    int full;        /* paused: at max */
    int fd_shortage; /* paused: accept() ran out of descriptors */
    int closed;
};

static void update_accepting(api_listener *l)
{
    if (l->lev == NULL)
        return;
    if (l->full || l->fd_shortage)
        evconnlistener_disable(l->lev);
    else
        evconnlistener_enable(l->lev);
}

static void conn_gone(api_listener *l)
{
    l->open--;
    if (l->full && l->open < l->max) {
        l->full = 0;
        update_accepting(l);
    }
}

static void linger_end(lingering *lg)
{
    api_listener *l = lg->owner;
    lg->prev->next = lg->next;
    lg->next->prev = lg->prev;
    bufferevent_setcb(lg->bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(lg->bev, EV_READ | EV_WRITE);
    bufferevent_decref(lg->bev); /* the last one: the socket closes */
    event_free(lg->begin);
    free(lg);
    conn_gone(l);
}

static void linger_read(struct bufferevent *bev, void *arg)
{
    lingering *lg = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    lg->dropped += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (lg->dropped > LINGER_MAX_BYTES)
        linger_end(lg);
}

/* The client closed, the socket failed, or LINGER_S passed. */
static void linger_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    linger_end(arg);
}

/* evhttp has freed its connection (so it no longer sets bev's callbacks)
 * and shut the socket for writing. */
static void linger_begin(evutil_socket_t fd, short what, void *arg)
{
    lingering *lg = arg;
    struct timeval tv = {LINGER_S, 0};
    (void)fd;
    (void)what;
    bufferevent_setwatermark(lg->bev, EV_READ, 0, 0);
    bufferevent_setcb(lg->bev, linger_read, NULL, linger_event, lg);
    bufferevent_set_timeouts(lg->bev, &tv, NULL);
    bufferevent_disable(lg->bev, EV_WRITE);
    bufferevent_enable(lg->bev, EV_READ);
    linger_read(lg->bev, lg);
}

/* 0 when the socket of a connection evhttp is closing now lingers; it
 * takes over the connection's reference to bev. */
static int linger_start(api_listener *l, struct bufferevent *bev)
{
    lingering *lg = calloc(1, sizeof(*lg));
    if (lg == NULL ||
        (lg->begin = event_new(l->base, -1, 0, linger_begin, lg)) == NULL) {
        free(lg);
        return -1;
    }
    lg->owner = l;
    lg->bev = bev;
    lg->prev = l->lingers.prev;
    lg->next = &l->lingers;
    l->lingers.prev->next = lg;
    l->lingers.prev = lg;
    event_active(lg->begin, EV_TIMEOUT, 1);
    return 0;
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    conn_node *node = arg;
    api_listener *l = node->owner;
    struct bufferevent *bev = node->bev;
    int refused = api_framing_refused(node->framing);
    (void)evcon;
    api_framing_free(node->framing);
    node->prev->next = node->next;
    node->next->prev = node->prev;
    free(node);
    if (refused && !l->closed && linger_start(l, bev) == 0)
        return;
    bufferevent_decref(bev); /* evhttp frees it right after */
    conn_gone(l);
}

/* evhttp's bufferevent callback: once per accepted connection. */
static struct bufferevent *on_new_connection(struct event_base *base, void *arg)
{
    api_listener *l = arg;
    struct bufferevent *bev =
        bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    api_framing *framing = NULL;

    if (bev == NULL)
        return NULL;
    framing = api_framing_new(l->framing, bev);
    if (framing == NULL)
        ctr_warn("out of memory: a connection goes unframed");
    if (l->n_pending == l->cap_pending) {
        size_t cap = l->cap_pending ? l->cap_pending * 2 : 64;
        pending_conn *grown = realloc(l->pending, cap * sizeof(*grown));
        if (grown == NULL) {
            ctr_warn("out of memory: a connection goes uncounted");
            api_framing_free(framing);
            return bev;
        }
        l->pending = grown;
        l->cap_pending = cap;
    }
    bufferevent_incref(bev);
    l->pending[l->n_pending].bev = bev;
    l->pending[l->n_pending++].framing = framing;
    l->open++;
    if (l->open >= l->max && !l->full) {
        l->full = 1;
        update_accepting(l); /* evconnlistener stops its accept loop */
        ctr_debug("%ld connections open: accepting paused", l->open);
    }
    event_active(l->adopt_ev, EV_TIMEOUT, 1);
    return bev;
}

static void adopt_pending(evutil_socket_t fd, short what, void *arg)
{
    api_listener *l = arg;
    (void)fd;
    (void)what;
    for (size_t i = 0; i < l->n_pending; i++) {
        struct bufferevent *bev = l->pending[i].bev;
        bufferevent_data_cb readcb = NULL;
        void *cbarg = NULL;
        conn_node *node = NULL;

        bufferevent_getcb(bev, &readcb, NULL, NULL, &cbarg);
        struct evhttp_connection *evcon = cbarg;
        if (readcb != NULL && evcon != NULL &&
            evhttp_connection_get_bufferevent(evcon) == bev)
            node = calloc(1, sizeof(*node));
        if (node != NULL) {
            node->evcon = evcon;
            node->bev = bev; /* the reference taken at accept */
            node->owner = l;
            node->framing = l->pending[i].framing;
            node->prev = l->conns.prev;
            node->next = &l->conns;
            l->conns.prev->next = node;
            l->conns.prev = node;
            evhttp_connection_set_closecb(evcon, on_conn_close, node);
        } else {
            api_framing_free(l->pending[i].framing);
            bufferevent_decref(bev);
            conn_gone(l); /* already closed, or out of memory */
        }
    }
    l->n_pending = 0;
}

static void retry_accept(evutil_socket_t fd, short what, void *arg)
{
    api_listener *l = arg;
    (void)fd;
    (void)what;
    l->fd_shortage = 0;
    update_accepting(l);
}

/*
 * accept() failed with something other than "try again", typically EMFILE.
 * The listening socket stays readable, so without a pause the loop would
 * spin on it.
 */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    api_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
    (void)lev;
    ctr_warn("could not accept a connection: %s; pausing %d ms", strerror(err),
             ACCEPT_RETRY_MS);
    l->fd_shortage = 1;
    update_accepting(l);
    event_add(l->retry_ev, &tv);
}

/*
 * Makes room for max connections under RLIMIT_NOFILE, raising the soft
 * limit up to the hard one; returns the limit that fits.
 */
static long fit_fd_limit(long max)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)max + FD_RESERVE;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur >= want)
        return max;
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want
                      ? want
                      : rl.rlim_max;
    if (rl.rlim_cur > old && setrlimit(RLIMIT_NOFILE, &rl) != 0)
        rl.rlim_cur = old;
    if (rl.rlim_cur >= want)
        return max;
    long fits =
        rl.rlim_cur > FD_RESERVE + 1 ? (long)rl.rlim_cur - FD_RESERVE : 1;
    ctr_warn("server.max_connections %ld is above what the open-file limit "
             "%lu allows; using %ld (raise ulimit -n)",
             max, (unsigned long)rl.rlim_cur, fits);
    return fits;
}

static evutil_socket_t listen_socket(const char *bind_addr, int port,
                                     char *errbuf, size_t errlen)
{
    struct addrinfo hints, *ai = NULL;
    char portstr[16];
    evutil_socket_t fd = -1;
    int one = 1, rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = getaddrinfo(bind_addr, portstr, &hints, &ai);
    if (rc != 0 || ai == NULL) {
        snprintf(errbuf, errlen, "could not listen on %s:%d: %s", bind_addr,
                 port, rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0 || evutil_make_socket_nonblocking(fd) != 0 ||
        evutil_make_socket_closeonexec(fd) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
        listen(fd, SOMAXCONN > LISTEN_BACKLOG_MIN ? SOMAXCONN
                                                  : LISTEN_BACKLOG_MIN) != 0) {
        snprintf(errbuf, errlen, "could not listen on %s:%d: %s", bind_addr,
                 port, strerror(errno));
        if (fd >= 0)
            evutil_closesocket(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

api_listener *api_listener_new(struct event_base *base, struct evhttp *http,
                               const char *bind_addr, int port,
                               int max_connections,
                               const api_framing_limits *framing, char *errbuf,
                               size_t errlen)
{
    evutil_socket_t fd = -1;
    api_listener *l = calloc(1, sizeof(*l));

    if (l == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    l->base = base;
    l->http = http;
    l->framing = framing;
    l->conns.prev = l->conns.next = &l->conns;
    l->lingers.prev = l->lingers.next = &l->lingers;
    l->max = fit_fd_limit(max_connections);
    l->adopt_ev = event_new(base, -1, 0, adopt_pending, l);
    l->retry_ev = evtimer_new(base, retry_accept, l);
    if (l->adopt_ev == NULL || l->retry_ev == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        goto err;
    }
    fd = listen_socket(bind_addr, port, errbuf, errlen);
    if (fd < 0)
        goto err;
    evhttp_set_bevcb(http, on_new_connection, l);
    l->bound = evhttp_accept_socket_with_handle(http, fd);
    if (l->bound == NULL) {
        snprintf(errbuf, errlen, "could not serve %s:%d", bind_addr, port);
        evutil_closesocket(fd);
        goto err;
    }
    l->lev = evhttp_bound_socket_get_listener(l->bound);
    evconnlistener_set_error_cb(l->lev, on_accept_error);
    return l;
err:
    evhttp_set_bevcb(http, NULL, NULL);
    api_listener_free(l);
    return NULL;
}

void api_listener_close(api_listener *l)
{
    if (l == NULL || l->closed)
        return;
    l->closed = 1;
    if (l->bound)
        evhttp_del_accept_socket(l->http, l->bound);
    l->bound = NULL;
    l->lev = NULL;
    event_del(l->retry_ev);
}

long api_listener_connections(const api_listener *l)
{
    return l ? l->open : 0;
}

int api_listener_output_flushed(const api_listener *l)
{
    for (const conn_node *n = l->conns.next; n != &l->conns; n = n->next) {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(n->evcon);
        if (bev && evbuffer_get_length(bufferevent_get_output(bev)) > 0)
            return 0;
    }
    return 1;
}

void api_listener_free(api_listener *l)
{
    if (l == NULL)
        return;
    api_listener_close(l);
    /* accepted just before the loop stopped, and freed by evhttp_free() */
    for (size_t i = 0; i < l->n_pending; i++) {
        api_framing_free(l->pending[i].framing);
        bufferevent_decref(l->pending[i].bev);
    }
    free(l->pending);
    while (l->conns.next != &l->conns) {
        conn_node *n = l->conns.next;
        l->conns.next = n->next;
        api_framing_free(n->framing);
        bufferevent_decref(n->bev);
        free(n);
    }
    while (l->lingers.next != &l->lingers)
        linger_end(l->lingers.next);
    if (l->adopt_ev)
        event_free(l->adopt_ev);
    if (l->retry_ev)
        event_free(l->retry_ev);
    free(l);
}
