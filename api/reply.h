/*
 * reply.h - JSON responses. Every request gets exactly one reply, through
 * one of these functions; the reply is what frees the request.
 */
#ifndef COUNTER_API_REPLY_H
#define COUNTER_API_REPLY_H

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdint.h>
#include <string.h>

/* Sends body (NULL: what the request's output buffer holds) with status
 * and the headers set so far; to a HEAD, its length and no body. */
void api_reply_send(struct evhttp_request *req, int status,
                    struct evbuffer *body);

/* Sends body (consumed; NULL: what the request's output buffer holds)
 * with the given status and a JSON content type. */
void api_reply_json(struct evhttp_request *req, int status,
                    struct evbuffer *body);

/*
 * Sends {"success":false,"error":{"code":..,"message":..[,"field":..]}}.
 * field may be NULL. Strings are JSON-escaped.
 */
void api_reply_error(struct evhttp_request *req, int status, const char *code,
                     const char *field, const char *message);

/* The same with Connection: close: the connection ends after it. */
void api_reply_error_close(struct evhttp_request *req, int status,
                           const char *code, const char *field,
                           const char *message);

/* Appends s to buf as a JSON string literal. */
void api_json_append_string(struct evbuffer *buf, const char *s);

/* The hot paths write JSON piece by piece rather than through printf. */
#define API_JSON_LIT(buf, lit) evbuffer_add((buf), (lit), sizeof(lit) - 1)
void api_json_append_i64(struct evbuffer *buf, int64_t v);
/*
 * The same, written at p (into room the caller reserved, e.g. with
 * evbuffer_reserve_space), returning the end: a read answer is one copy
 * into the output rather than a dozen evbuffer calls per counter.
 */
static inline char *api_put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}
#define API_PUT_LIT(p, lit) api_put((p), (lit), sizeof(lit) - 1)
char *api_put_i64(char *p, int64_t v);   /* at most 20 bytes */
char *api_put_time(char *p, int64_t ms); /* at most 26 bytes */

#endif
