/*
 * loadgen - a closed-loop HTTP load client on libevent's evhttp client.
 *
 * C keep-alive connections run concurrently; each issues its R requests one
 * after another (the next goes out when the previous answer is in), so the
 * number of requests in flight never exceeds C and the run is bounded by
 * C * R requests and by --timeout-s.
 *
 * Used by the integration tests (exact accounting of which writes were
 * acknowledged) and by benchmarks, so it must never retry a request on its
 * own: a retried write would be counted twice by the service and once here.
 *
 * stdout: one JSON line,
 *   {"sent":N,"status":{"200":N,...},"errors":N,"timed_out":false,
 *    "elapsed_s":X,"rps":X,"p50_ms":X,"p99_ms":X,"p999_ms":X}
 * sent: requests handed to the connection; errors: requests that got no
 * HTTP answer (connect error, reset, per-request timeout, or still in
 * flight at --timeout-s); rps: answered requests per second; percentiles
 * over answered requests, from a log-linear histogram (< 1% error).
 *
 * --body-template STRING: like --body, but every "{conn}" in it becomes the
 * connection's index and every "{req}" the request's index on that
 * connection (both from 0), so that requests can differ (one user id per
 * request, say). --body sends its string as it is.
 *
 * --log FILE: one line per finished request, tab-separated:
 *   conn_index  request_index  http_status(0 = no answer)  event_id|-
 *
 * Exit status: 0 when every request finished (whatever its status), 1 when
 * --timeout-s cut the run short, 2 on bad usage or setup failure.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "lathist.h"
#include "loadtool.h"

enum {
    STATUS_MAX = 600,
    EVENT_ID_MAX = 64,
    MAX_HEADERS = 32,
};

typedef struct options {
    const char *url;
    const char *method;
    const char *body;
    int body_is_template; /* substitute {conn} and {req} in body */
    const char *log_path;
    const char *headers[MAX_HEADERS];
    int n_headers;
    long connections;
    long requests_per_conn;
    double timeout_s;
    double req_timeout_s;
} options;

struct loadgen;

typedef struct conn {
    struct loadgen *lg;
    struct evhttp_connection *evcon;
    long index;
    long next_req;     /* index of the next request to send */
    long inflight_req; /* -1 when idle */
    struct timespec started;
    int done;
} conn;

typedef struct loadgen {
    options opt;
    struct event_base *base;
    struct evhttp_uri *uri;
    char host[256];
    int port;
    char *path_and_query;
    enum evhttp_cmd_type cmd;
    conn *conns;
    long conns_done;
    FILE *log;
    uint64_t sent, errors, answered;
    uint64_t status[STATUS_MAX];
    lathist hist;
    int timed_out;
    struct event *deadline_ev;
} loadgen;

static void usage(FILE *f)
{
    fputs("usage: loadgen --url http://HOST:PORT/PATH [--method METHOD]\n"
          "         [--body STRING | --body-template STRING]\n"
          "         [--header 'Name: value']...\n"
          "         [--connections C] [--requests-per-conn R]\n"
          "         [--timeout-s S] [--req-timeout-s S] [--log FILE]\n"
          "defaults: --method GET (POST with a body), C=1, R=1,\n"
          "          --timeout-s 120, --req-timeout-s 30\n"
          "--body-template: each {conn} and {req} in it becomes the index\n"
          "          of the connection and of the request on it (from 0)\n",
          f);
}

static double elapsed_s(const struct timespec *from, const struct timespec *to)
{
    return (double)(to->tv_sec - from->tv_sec) +
           (double)(to->tv_nsec - from->tv_nsec) / 1e9;
}

/* ------------------------------------------------------------- requests */

/*
 * A plain scan instead of a JSON parser: the tool is also a benchmark
 * client, and the api writes the id as a bare "event_id":"..." pair.
 */
static void find_event_id(struct evhttp_request *req, char *out, size_t outlen)
{
    static const char key[] = "\"event_id\"";
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    snprintf(out, outlen, "-");
    if (len == 0)
        return;
    const char *body = (const char *)evbuffer_pullup(in, -1);
    const char *end = body + len;
    const char *p = body;
    size_t klen = sizeof(key) - 1;
    for (; p + klen <= end; p++)
        if (memcmp(p, key, klen) == 0)
            break;
    if (p + klen > end)
        return;
    p += klen;
    while (p < end && (*p == ' ' || *p == ':'))
        p++;
    if (p >= end || *p != '"')
        return;
    p++;
    size_t n = 0;
    while (p + n < end && p[n] != '"' && n + 1 < outlen && n < EVENT_ID_MAX)
        n++;
    if (p + n >= end || p[n] != '"' || n == 0)
        return;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || p[i] == '\t' || p[i] == '\\')
            return; /* keep the log one clean token per field */
    memcpy(out, p, n);
    out[n] = '\0';
}

/* The body of request REQ on connection C: the template with every
 * "{conn}" and "{req}" replaced by those indexes. */
static void add_templated_body(struct evbuffer *out, const char *tmpl, long c,
                               long req)
{
    static const char conn_tag[] = "{conn}";
    static const char req_tag[] = "{req}";
    const char *p = tmpl;
    while (*p) {
        const char *brace = strchr(p, '{');
        if (brace == NULL) {
            evbuffer_add(out, p, strlen(p));
            return;
        }
        evbuffer_add(out, p, (size_t)(brace - p));
        if (strncmp(brace, conn_tag, sizeof(conn_tag) - 1) == 0) {
            evbuffer_add_printf(out, "%ld", c);
            p = brace + sizeof(conn_tag) - 1;
        } else if (strncmp(brace, req_tag, sizeof(req_tag) - 1) == 0) {
            evbuffer_add_printf(out, "%ld", req);
            p = brace + sizeof(req_tag) - 1;
        } else {
            evbuffer_add(out, brace, 1);
            p = brace + 1;
        }
    }
}

static void send_next(conn *c);

static void finish_conn(conn *c)
{
    loadgen *lg = c->lg;
    if (c->done)
        return;
    c->done = 1;
    if (++lg->conns_done == lg->opt.connections)
        event_base_loopbreak(lg->base);
}

static void record(conn *c, int status, struct evhttp_request *req)
{
    loadgen *lg = c->lg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);

    if (status > 0 && status < STATUS_MAX) {
        double us = elapsed_s(&c->started, &now) * 1e6;
        lg->status[status]++;
        lg->answered++;
        lathist_add_us(&lg->hist, us < 0 ? 0 : (uint64_t)us);
    } else {
        status = 0;
        lg->errors++;
    }
    if (lg->log) {
        char id[EVENT_ID_MAX + 1] = "-";
        if (req && status)
            find_event_id(req, id, sizeof(id));
        fprintf(lg->log, "%ld\t%ld\t%d\t%s\n", c->index, c->inflight_req,
                status, id);
    }
    c->inflight_req = -1;
}

static void on_response(struct evhttp_request *req, void *arg)
{
    conn *c = arg;
    /* NULL: the connection failed, timed out or was reset before an
     * answer. A response code of 0 means the same. */
    int status = req ? evhttp_request_get_response_code(req) : 0;
    if (c->lg->timed_out)
        return;
    record(c, status, req);
    send_next(c);
}

static void send_next(conn *c)
{
    loadgen *lg = c->lg;
    const options *o = &lg->opt;

    if (lg->timed_out)
        return;
    if (c->next_req >= o->requests_per_conn) {
        finish_conn(c);
        return;
    }
    struct evhttp_request *req = evhttp_request_new(on_response, c);
    if (req == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        c->inflight_req = c->next_req++;
        lg->sent++;
        record(c, 0, NULL);
        finish_conn(c);
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char hostport[300];
    snprintf(hostport, sizeof(hostport), "%s:%d", lg->host, lg->port);
    evhttp_add_header(h, "Host", hostport);
    if (o->body) {
        struct evbuffer *out = evhttp_request_get_output_buffer(req);
        evhttp_add_header(h, "Content-Type", "application/json");
        if (o->body_is_template)
            add_templated_body(out, o->body, c->index, c->next_req);
        else
            evbuffer_add(out, o->body, strlen(o->body));
    }
    for (int i = 0; i < o->n_headers; i++) {
        char name[256];
        const char *colon = strchr(o->headers[i], ':');
        size_t nlen = (size_t)(colon - o->headers[i]);
        const char *value = colon + 1;
        memcpy(name, o->headers[i], nlen);
        name[nlen] = '\0';
        while (*value == ' ')
            value++;
        evhttp_add_header(h, name, value);
    }
    c->inflight_req = c->next_req++;
    clock_gettime(CLOCK_MONOTONIC, &c->started);
    lg->sent++;
    /* On failure evhttp_make_request frees req itself. */
    if (evhttp_make_request(c->evcon, req, lg->cmd, lg->path_and_query) != 0) {
        record(c, 0, NULL);
        /* Later requests would fail the same way; do not spin. */
        while (c->next_req < o->requests_per_conn) {
            c->inflight_req = c->next_req++;
            lg->sent++;
            record(c, 0, NULL);
        }
        finish_conn(c);
    }
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    loadgen *lg = arg;
    (void)fd;
    (void)what;
    lg->timed_out = 1;
    /* In-flight requests will never be answered now: count them lost. */
    for (long i = 0; i < lg->opt.connections; i++)
        if (lg->conns[i].inflight_req >= 0)
            record(&lg->conns[i], 0, NULL);
    event_base_loopbreak(lg->base);
}

/* --------------------------------------------------------------- setup */

static int parse_long(const char *s, long min, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < min)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof(*o));
    o->connections = 1;
    o->requests_per_conn = 1;
    o->timeout_s = 120;
    o->req_timeout_s = 30;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "loadgen: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--url") == 0) {
            o->url = v;
        } else if (strcmp(a, "--method") == 0) {
            o->method = v;
        } else if (strcmp(a, "--body") == 0 ||
                   strcmp(a, "--body-template") == 0) {
            o->body = v;
            o->body_is_template = strcmp(a, "--body-template") == 0;
        } else if (strcmp(a, "--log") == 0) {
            o->log_path = v;
        } else if (strcmp(a, "--header") == 0) {
            const char *colon = strchr(v, ':');
            if (colon == NULL || colon == v || colon - v >= 255 ||
                o->n_headers >= MAX_HEADERS) {
                fprintf(stderr, "loadgen: bad --header '%s'\n", v);
                return -1;
            }
            o->headers[o->n_headers++] = v;
        } else if (strcmp(a, "--connections") == 0) {
            if (parse_long(v, 1, &o->connections))
                goto bad;
        } else if (strcmp(a, "--requests-per-conn") == 0) {
            if (parse_long(v, 0, &o->requests_per_conn))
                goto bad;
        } else if (strcmp(a, "--timeout-s") == 0) {
            if (parse_double(v, &o->timeout_s))
                goto bad;
        } else if (strcmp(a, "--req-timeout-s") == 0) {
            if (parse_double(v, &o->req_timeout_s))
                goto bad;
        } else {
            fprintf(stderr, "loadgen: unknown option %s\n", a);
            return -1;
        }
        continue;
    bad:
        fprintf(stderr, "loadgen: bad value for %s: '%s'\n", a, v);
        return -1;
    }
    if (o->url == NULL) {
        fprintf(stderr, "loadgen: --url is required\n");
        return -1;
    }
    if (o->method == NULL)
        o->method = o->body ? "POST" : "GET";
    return 0;
}

static int parse_method(const char *m, enum evhttp_cmd_type *out)
{
    static const struct {
        const char *name;
        enum evhttp_cmd_type cmd;
    } methods[] = {
        {"GET", EVHTTP_REQ_GET},       {"POST", EVHTTP_REQ_POST},
        {"HEAD", EVHTTP_REQ_HEAD},     {"PUT", EVHTTP_REQ_PUT},
        {"DELETE", EVHTTP_REQ_DELETE}, {"OPTIONS", EVHTTP_REQ_OPTIONS},
        {"PATCH", EVHTTP_REQ_PATCH},
    };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(m, methods[i].name) == 0) {
            *out = methods[i].cmd;
            return 0;
        }
    return -1;
}

static int parse_url(loadgen *lg)
{
    lg->uri = evhttp_uri_parse(lg->opt.url);
    if (lg->uri == NULL)
        goto bad;
    const char *scheme = evhttp_uri_get_scheme(lg->uri);
    const char *host = evhttp_uri_get_host(lg->uri);
    if (scheme == NULL || strcmp(scheme, "http") != 0 || host == NULL ||
        host[0] == '\0' || strlen(host) >= sizeof(lg->host))
        goto bad;
    snprintf(lg->host, sizeof(lg->host), "%s", host);
    lg->port = evhttp_uri_get_port(lg->uri);
    if (lg->port < 0)
        lg->port = 80;
    const char *path = evhttp_uri_get_path(lg->uri);
    const char *query = evhttp_uri_get_query(lg->uri);
    if (path == NULL || path[0] == '\0')
        path = "/";
    size_t len = strlen(path) + (query ? strlen(query) + 1 : 0) + 1;
    lg->path_and_query = malloc(len);
    if (lg->path_and_query == NULL)
        goto bad;
    snprintf(lg->path_and_query, len, "%s%s%s", path, query ? "?" : "",
             query ? query : "");
    return 0;
bad:
    fprintf(stderr, "loadgen: --url must look like http://HOST[:PORT]/PATH\n");
    return -1;
}

static void print_summary(const loadgen *lg, double secs)
{
    printf("{\"sent\":%" PRIu64 ",\"status\":{", lg->sent);
    int first = 1;
    for (int s = 1; s < STATUS_MAX; s++)
        if (lg->status[s]) {
            printf("%s\"%d\":%" PRIu64, first ? "" : ",", s, lg->status[s]);
            first = 0;
        }
    printf("},\"errors\":%" PRIu64 ",\"timed_out\":%s,\"elapsed_s\":%.3f,"
           "\"rps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f}\n",
           lg->errors, lg->timed_out ? "true" : "false", secs,
           secs > 0 ? (double)lg->answered / secs : 0.0,
           lathist_ms(&lg->hist, 0.50), lathist_ms(&lg->hist, 0.99),
           lathist_ms(&lg->hist, 0.999));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static loadgen lg; /* the histogram is large: keep it off the stack */
    int rc = 2;

    if (parse_args(argc, argv, &lg.opt) != 0) {
        usage(stderr);
        return 2;
    }
    if (parse_method(lg.opt.method, &lg.cmd) != 0) {
        fprintf(stderr, "loadgen: unsupported method %s\n", lg.opt.method);
        return 2;
    }
    if (parse_url(&lg) != 0)
        goto out;
    raise_nofile("loadgen", lg.opt.connections);
    if (lg.opt.log_path) {
        lg.log = fopen(lg.opt.log_path, "w");
        if (lg.log == NULL) {
            fprintf(stderr, "loadgen: cannot write %s: %s\n", lg.opt.log_path,
                    strerror(errno));
            goto out;
        }
        /* Lines are small and many; one write per request would dominate. */
        setvbuf(lg.log, NULL, _IOFBF, 1 << 20);
    }
    lg.base = event_base_new();
    lg.conns = calloc((size_t)lg.opt.connections, sizeof(*lg.conns));
    if (lg.base == NULL || lg.conns == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        goto out;
    }

    struct timeval req_tv = to_timeval(lg.opt.req_timeout_s);
    for (long i = 0; i < lg.opt.connections; i++) {
        conn *c = &lg.conns[i];
        c->lg = &lg;
        c->index = i;
        c->inflight_req = -1;
        c->evcon = evhttp_connection_base_new(lg.base, NULL, lg.host,
                                              (ev_uint16_t)lg.port);
        if (c->evcon == NULL) {
            fprintf(stderr, "loadgen: cannot create connection %ld\n", i);
            goto out;
        }
        /* evhttp would resend a request whose connection broke; a resent
         * write is a second write. */
        evhttp_connection_set_retries(c->evcon, 0);
        evhttp_connection_set_timeout_tv(c->evcon, &req_tv);
    }

    struct timeval deadline = to_timeval(lg.opt.timeout_s);
    lg.deadline_ev = evtimer_new(lg.base, on_deadline, &lg);
    if (lg.deadline_ev == NULL || evtimer_add(lg.deadline_ev, &deadline) != 0) {
        fprintf(stderr, "loadgen: cannot arm the deadline\n");
        goto out;
    }

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < lg.opt.connections; i++)
        send_next(&lg.conns[i]);
    if (lg.conns_done < lg.opt.connections)
        event_base_dispatch(lg.base);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    print_summary(&lg, elapsed_s(&t0, &t1));
    rc = lg.timed_out ? 1 : 0;
out:
    if (lg.log && fclose(lg.log) != 0) {
        fprintf(stderr, "loadgen: writing %s failed\n", lg.opt.log_path);
        rc = 2;
    }
    if (lg.conns) {
        /* Frees any request still queued, without calling it back. */
        for (long i = 0; i < lg.opt.connections; i++)
            if (lg.conns[i].evcon)
                evhttp_connection_free(lg.conns[i].evcon);
        free(lg.conns);
    }
    if (lg.deadline_ev)
        event_free(lg.deadline_ev);
    if (lg.base)
        event_base_free(lg.base);
    if (lg.uri)
        evhttp_uri_free(lg.uri);
    free(lg.path_and_query);
    return rc;
}
