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
 *
 * Every connection's input is framed (framing.h) before evhttp reads it. A
 * connection that ends with a refusal lingers: after evhttp has sent the answer
 * and shut the socket for writing, what the client still sends is read and
 * dropped for up to LINGER_S seconds (or LINGER_MAX_BYTES) before the socket
 * closes, so that its answer is not lost to a reset. It is counted open until
 * then.
 */
#ifndef COUNTER_API_LISTENER_H
#define COUNTER_API_LISTENER_H

#include "api/framing.h"

#include <event2/event.h>
#include <event2/http.h>
#include <stddef.h>

typedef struct api_listener api_listener;

/*
 * Listens on bind_addr:port (numeric) with a deep backlog and serves it with
 * http, at most max_connections open at once, each framed with framing
 * (which must outlive the listener). Returns a new listener, or NULL with a
 * one-line reason in errbuf. Call api_listener_close() before
 * evhttp_free(http) and api_listener_free() after it. Loop thread.
 */
api_listener *
api_listener_new(struct event_base *base, struct evhttp *http,
                 const char *bind_addr, int port, int max_connections,
                 const api_framing_limits *framing, char *errbuf, size_t errlen)
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
