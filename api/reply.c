/*
 * reply.c - see reply.h.
 */
#include "api/reply.h"

#include "api/stats.h"

#include <event2/keyvalq_struct.h>
#include <stdio.h>

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
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

void api_json_append_string(struct evbuffer *buf, const char *s)
{
    evbuffer_add(buf, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            evbuffer_add_printf(buf, "\\%c", *p);
        else if (*p < 0x20)
            evbuffer_add_printf(buf, "\\u%04x", *p);
        else
            evbuffer_add(buf, p, 1);
    }
    evbuffer_add(buf, "\"", 1);
}

void api_reply_json(struct evhttp_request *req, int status,
                    struct evbuffer *body)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Content-Type", "application/json");
    api_stats_end(req, status);
    evhttp_send_reply(req, status, reason_phrase(status), body);
}

void api_reply_error(struct evhttp_request *req, int status, const char *code,
                     const char *field, const char *message)
{
    struct evbuffer *body = evbuffer_new();
    if (body == NULL) {
        api_stats_end(req, 500);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(body, "{\"success\":false,\"error\":{\"code\":");
    api_json_append_string(body, code);
    evbuffer_add_printf(body, ",\"message\":");
    api_json_append_string(body, message);
    if (field) {
        evbuffer_add_printf(body, ",\"field\":");
        api_json_append_string(body, field);
    }
    evbuffer_add_printf(body, "}}\n");
    api_reply_json(req, status, body);
    evbuffer_free(body);
}
