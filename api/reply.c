/*
 * reply.c - see reply.h.
 */
#include "api/reply.h"

#include "api/metrics.h"

#include "common/strbuf.h"
#include "common/timeutil.h"

#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static void evbuffer_sink(void *dst, const char *p, size_t n)
{
    evbuffer_add(dst, p, n);
}

void api_json_append_string(struct evbuffer *buf, const char *s)
{
    ctr_json_quote(s, evbuffer_sink, buf);
}

char *api_put_i64(char *p, int64_t v)
{
    return p + ctr_i64_text(v, p);
}

char *api_put_time(char *p, int64_t ms)
{
    char ts[40];
    if (ms > 0 && ctr_time_format_rfc3339(ms, ts, sizeof(ts)) == 24) {
        *p++ = '"';
        p = api_put(p, ts, 24);
        *p++ = '"';
        return p;
    }
    return API_PUT_LIT(p, "null");
}

void api_json_append_i64(struct evbuffer *buf, int64_t v)
{
    char num[21];
    evbuffer_add(buf, num, ctr_i64_text(v, num));
}

/*
 * evhttp formats a Date header for every reply unless one is set; the
 * text changes once a second, so it is kept and reused.
 */
static const char *date_header(void)
{
    static _Thread_local time_t cached_at;
    static _Thread_local char text[40];
    time_t now = time(NULL);
    if (now != cached_at || text[0] == '\0') {
        struct tm tm;
        if (gmtime_r(&now, &tm) == NULL ||
            strftime(text, sizeof(text), "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
            return NULL;
        cached_at = now;
    }
    return text;
}

void api_reply_send(struct evhttp_request *req, int status,
                    struct evbuffer *body)
{
    /* libevent 2.1 writes a HEAD answer's body too, and no length: on a
     * kept-alive connection the client would read it as the next answer */
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        struct evbuffer *out = evhttp_request_get_output_buffer(req);
        struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
        char length[24];
        snprintf(length, sizeof(length), "%zu",
                 evbuffer_get_length(out) +
                     (body ? evbuffer_get_length(body) : 0));
        evhttp_remove_header(headers, "Content-Length");
        evhttp_add_header(headers, "Content-Length", length);
        evbuffer_drain(out, evbuffer_get_length(out));
        body = NULL;
    }
    evhttp_send_reply(req, status, reason_phrase(status), body);
}

void api_reply_json(struct evhttp_request *req, int status,
                    struct evbuffer *body)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    const char *date = date_header();
    evhttp_add_header(headers, "Content-Type", "application/json");
    if (date)
        evhttp_add_header(headers, "Date", date);
    api_metrics_end(req, status);
    api_reply_send(req, status, body);
}

/* The error body, written straight into the request's output buffer:
 * nothing to allocate that could fail into an answer of evhttp's own. */
static void error_body(struct evhttp_request *req, const char *code,
                       const char *field, const char *message)
{
    struct evbuffer *body = evhttp_request_get_output_buffer(req);
    api_metrics_error(code);
    API_JSON_LIT(body, "{\"success\":false,\"error\":{\"code\":");
    api_json_append_string(body, code);
    API_JSON_LIT(body, ",\"message\":");
    api_json_append_string(body, message);
    if (field) {
        API_JSON_LIT(body, ",\"field\":");
        api_json_append_string(body, field);
    }
    API_JSON_LIT(body, "}}\n");
}

void api_reply_error(struct evhttp_request *req, int status, const char *code,
                     const char *field, const char *message)
{
    error_body(req, code, field, message);
    api_reply_json(req, status, NULL);
}

void api_reply_error_close(struct evhttp_request *req, int status,
                           const char *code, const char *field,
                           const char *message)
{
    error_body(req, code, field, message);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection",
                      "close");
    api_reply_json(req, status, NULL);
}
