/*
 * api_client.c - see api_client.h.
 */
#include "ctl/api_client.h"

#include "common/timeutil.h"
#include "ctl/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    REQUEST_TIMEOUT_MS = 15000, /* above the api's longest write deadline */
    WRITE_ATTEMPTS = 4,
    TOKEN_MAX = 256,
    RETRY_WAIT_MAX_S = 10, /* a longer Retry-After: wait 1 s instead */
};

int ctl_api_init(ctl_api *api, const ctr_config *cfg, const char *url_opt,
                 char *errbuf, size_t errlen)
{
    const char *url = url_opt, *token = getenv("COUNTER_API_TOKEN");
    char fallback[64];

    memset(api, 0, sizeof(*api));
    api->timeout_ms = REQUEST_TIMEOUT_MS;
    if (url == NULL || url[0] == '\0')
        url = getenv("COUNTER_API_URL");
    if (url == NULL || url[0] == '\0') {
        snprintf(fallback, sizeof(fallback), "http://127.0.0.1:%d",
                 cfg->server_port);
        url = fallback;
    }
    if (ctl_url_parse(url, &api->url, errbuf, errlen) != 0)
        return -1;
    snprintf(api->display, sizeof(api->display), "http://%s%s%s:%s%s",
             strchr(api->url.host, ':') ? "[" : "", api->url.host,
             strchr(api->url.host, ':') ? "]" : "", api->url.port,
             api->url.base);
    if (token && token[0]) {
        size_t len = strlen(token);
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)token[i] <= ' ' || token[i] == 0x7f)
                len = 0; /* never echo a token, not even a bad one */
        if (len == 0 || len > TOKEN_MAX) {
            snprintf(errbuf, errlen,
                     "COUNTER_API_TOKEN must be 1-%d printable characters "
                     "without spaces",
                     TOKEN_MAX);
            return -1;
        }
        snprintf(api->auth, sizeof(api->auth), "Authorization: Bearer %s\r\n",
                 token);
    }
    return 0;
}

void ctl_api_result_free(ctl_api_result *res)
{
    if (res->doc)
        json_object_put(res->doc);
    res->doc = NULL;
    free(res->body);
    res->body = NULL;
}

/* The api's {"error": {"code", "message"}}, if the answer has one. */
static void error_of(const json_object *doc, const char **code,
                     const char **message)
{
    json_object *err, *v;
    *code = *message = NULL;
    if (doc == NULL || !json_object_object_get_ex(doc, "error", &err) ||
        !json_object_is_type(err, json_type_object))
        return;
    if (json_object_object_get_ex(err, "code", &v) &&
        json_object_is_type(v, json_type_string))
        *code = json_object_get_string(v);
    if (json_object_object_get_ex(err, "message", &v) &&
        json_object_is_type(v, json_type_string))
        *message = json_object_get_string(v);
}

/* One request; fills res from its outcome. */
static void call_once(const ctl_api *api, const char *method,
                      const char *target, const char *body, const char *key,
                      ctl_api_result *res)
{
    ctl_http_response resp;
    char headers[600], why[400];
    const char *code, *message;

    ctl_api_result_free(res);
    memset(res->code, 0, sizeof(res->code));
    res->message[0] = '\0';
    res->status = 0;
    res->replayed = 0;
    res->retry_after_s = -1;
    res->attempts++;
    snprintf(headers, sizeof(headers), "%s%s%s%s", api->auth,
             key ? "Idempotency-Key: " : "", key ? key : "", key ? "\r\n" : "");
    int r = ctl_http_request(&api->url, method, target, headers, body,
                             body ? strlen(body) : 0, api->timeout_ms, &resp,
                             why, sizeof(why));
    if (r != CTL_HTTP_OK) {
        res->exit_code = CTL_EXIT_UNREACHABLE;
        snprintf(res->code, sizeof(res->code), "%s",
                 r == CTL_HTTP_NOT_SENT ? "api_unreachable" : "no_answer");
        snprintf(res->message, sizeof(res->message), "api at %s: %s",
                 api->display, why);
        return;
    }
    res->status = resp.status;
    res->replayed = resp.replayed;
    if (resp.body_len > 0 && strlen(resp.body) == resp.body_len) {
        json_tokener *tok = json_tokener_new();
        if (tok) {
            res->doc =
                json_tokener_parse_ex(tok, resp.body, (int)resp.body_len);
            if (json_tokener_get_error(tok) != json_tokener_success &&
                res->doc) {
                json_object_put(res->doc);
                res->doc = NULL;
            }
            json_tokener_free(tok);
        }
    }
    error_of(res->doc, &code, &message);
    if (resp.status >= 200 && resp.status < 300 && res->doc &&
        json_object_is_type(res->doc, json_type_object)) {
        res->exit_code = CTL_EXIT_OK;
    } else if (res->doc == NULL) {
        res->exit_code = CTL_EXIT_UNREACHABLE;
        snprintf(res->code, sizeof(res->code), "bad_answer");
        snprintf(res->message, sizeof(res->message),
                 "api at %s answered %d without JSON: %.100s", api->display,
                 resp.status, resp.body);
    } else {
        int refused = resp.status >= 400 && resp.status < 500 &&
                      !(code && strcmp(code, "request_in_progress") == 0);
        res->exit_code = refused ? CTL_EXIT_FAILED : CTL_EXIT_UNREACHABLE;
        snprintf(res->code, sizeof(res->code), "%s", code ? code : "unknown");
        snprintf(res->message, sizeof(res->message), "%s: %s (%d %s)",
                 refused ? "the api refused" : "the api could not do it",
                 message ? message : "no message", resp.status, res->code);
    }
    res->retry_after_s = resp.retry_after_s;
    if (res->doc) { /* handed over */
        res->body = resp.body;
        resp.body = NULL;
    }
    ctl_http_response_free(&resp);
}

int ctl_api_get(const ctl_api *api, const char *target, ctl_api_result *res)
{
    memset(res, 0, sizeof(*res));
    call_once(api, "GET", target, NULL, NULL, res);
    return res->exit_code;
}

static void sleep_s(int s)
{
    struct timespec ts = {s, 0};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Is the outcome of this try unknown, or known to have changed nothing
 * while the api asks us to come back? Then the same request is sent
 * again: under its Idempotency-Key it takes effect at most once. */
static int worth_retrying(const ctl_api_result *res)
{
    if (res->exit_code == CTL_EXIT_OK || res->exit_code == CTL_EXIT_FAILED)
        return 0;
    return strcmp(res->code, "no_answer") == 0 ||
           strcmp(res->code, "indeterminate") == 0 ||
           strcmp(res->code, "overloaded") == 0 ||
           strcmp(res->code, "request_in_progress") == 0;
}

int ctl_api_write(const ctl_api *api, const char *target, const char *body,
                  const char *key, ctl_api_result *res)
{
    memset(res, 0, sizeof(*res));
    for (int attempt = 1;; attempt++) {
        call_once(api, "POST", target, body, key, res);
        if (attempt == WRITE_ATTEMPTS || !worth_retrying(res))
            break;
        sleep_s(res->retry_after_s > 0 && res->retry_after_s <= RETRY_WAIT_MAX_S
                    ? res->retry_after_s
                    : 1);
    }
    return res->exit_code;
}

void ctl_api_new_key(char key[CTL_API_KEY_MAX + 1])
{
    unsigned char rnd[16];
    size_t got = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

    while (fd >= 0 && got < sizeof(rnd)) {
        ssize_t n = read(fd, rnd + got, sizeof(rnd) - got);
        if (n <= 0 && errno != EINTR)
            break;
        if (n > 0)
            got += (size_t)n;
    }
    if (fd >= 0)
        close(fd);
    if (got < sizeof(rnd)) {
        /* no /dev/urandom: time and pid still make a collision unlikely */
        uint64_t a = (uint64_t)ctr_time_now_ms(),
                 b = (uint64_t)getpid() ^ (uint64_t)ctr_time_mono_us();
        memcpy(rnd, &a, 8);
        memcpy(rnd + 8, &b, 8);
    }
    int n = snprintf(key, CTL_API_KEY_MAX + 1, "counterctl-");
    for (size_t i = 0; i < sizeof(rnd); i++)
        n += snprintf(key + n, (size_t)(CTL_API_KEY_MAX + 1 - n), "%02x",
                      rnd[i]);
}

int ctl_api_key_valid(const char *key)
{
    size_t len = strlen(key);
    if (len == 0 || len > CTL_API_KEY_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (key[i] <= ' ' || key[i] > '~')
            return 0;
    return 1;
}
