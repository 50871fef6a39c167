/*
 * listener.h - counter-api's listening socket and its connection limit.
 *
 * libevent 2.1 has no evhttp_set_max_connections (2.2 has), so the limit is
 * kept here: every connection evhttp accepts is counted (evhttp's bufferevent
 * callback runs once per accepted connection) and uncounted when evhttp
 * closes it (the connection's close callback). At the limit the listener is
 * disabled: new connections wait in the kernel's accept queue, which is
 * served again as soon as one closes. The close callback of every server
 * connection belongs to this module.
 */
#ifndef COUNTER_API_LISTENER_H
#define COUNTER_API_LISTENER_H

#include <event2/event.h>
#include <event2/http.h>
#include <stddef.h>

typedef struct api_listener api_listener;

/*
 * Listens on bind_addr:port (numeric) with a deep backlog and serves it with
 * http, at most max_connections open at once. Returns a new listener, or
 * NULL with a one-line reason in errbuf. Call api_listener_close() before
 * evhttp_free(http) and api_listener_free() after it. Loop thread.
 */
api_listener *api_listener_new(struct event_base *base, struct evhttp *http,
                               const char *bind_addr, int port,
                               int max_connections, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* Stops accepting for good and closes the listening socket. Idempotent. */
void api_listener_close(api_listener *l);

/* Connections open now. */
long api_listener_connections(const api_listener *l);

/*
 * 1 when every open connection has handed all its answers to the kernel:
 * what shutdown waits for before it closes them.
 */
int api_listener_output_flushed(const api_listener *l);

/* After evhttp_free(): frees what is left. NULL is a no-op. */
void api_listener_free(api_listener *l);

#endif
