/*
 * http_client.h - a small blocking HTTP/1.1 client for counterctl's calls
 * to counter-api: one request per connection ("Connection: close"), one
 * deadline for the whole exchange, plain http:// only (TLS belongs to a
 * proxy in front of the api; see README "TLS").
 *
 * Blocking on purpose: counterctl makes one call at a time, and a plain
 * socket says exactly why a call failed (refused, timed out, cut short),
 * which decides whether a write may be retried.
 */
#ifndef COUNTER_CTL_HTTP_CLIENT_H
#define COUNTER_CTL_HTTP_CLIENT_H

#include <stddef.h>

/* Where the api is: http://HOST[:PORT][/BASE] */
typedef struct ctl_url {
    char host[256]; /* without the brackets of an IPv6 literal */
    char port[8];
    char base[256]; /* path prefix without a final '/', "" for none */
} ctl_url;

/* Parses url. Returns 0, or -1 with the reason in errbuf. */
int ctl_url_parse(const char *url, ctl_url *out, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

typedef struct ctl_http_response {
    int status;
    char *body; /* NUL-terminated (the body may hold NULs itself); owned */
    size_t body_len;
    int retry_after_s; /* Retry-After in seconds, -1 when absent */
    int replayed;      /* Idempotent-Replayed: true */
} ctl_http_response;

enum ctl_http_result {
    CTL_HTTP_OK = 0,         /* an answer, whatever its status */
    CTL_HTTP_NOT_SENT = -1,  /* no connection: the server saw nothing */
    CTL_HTTP_NO_ANSWER = -2, /* the request may have reached the server but
                              * no whole answer came back in time */
};

/*
 * Sends METHOD base+target (target starts with '/' and is sent as is: the
 * caller escapes it) with the extra header lines `headers` (each ending in
 * "\r\n"; NULL for none) and the body (NULL for none; then no
 * Content-Type), and reads the whole answer within timeout_ms. Fills resp
 * on CTL_HTTP_OK (free it with ctl_http_response_free); otherwise returns
 * the failure with a one-line reason in errbuf and resp empty. Bodies
 * above 64 MiB are refused as no answer. SIGPIPE must be ignored.
 */
int ctl_http_request(const ctl_url *url, const char *method, const char *target,
                     const char *headers, const char *body, size_t body_len,
                     int timeout_ms, ctl_http_response *resp, char *errbuf,
                     size_t errlen) __attribute__((warn_unused_result));

/* Frees what resp holds; resp may be zeroed or already freed. */
void ctl_http_response_free(ctl_http_response *resp);

#endif
