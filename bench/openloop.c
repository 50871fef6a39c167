/*
 * openloop - the open-loop HTTP load generator of bench/run.sh, and its
 * probe of the end-to-end lag from a write's 2xx to the PostgreSQL commit.
 *
 * wrk and tests/tools/loadgen are closed loop: a slow answer delays the
 * next request, so a server that falls behind is asked less and its
 * queueing never shows (coordinated omission). Here request k (from 0) is
 * due at t0 + k / RATE for DURATION seconds whatever the server does. It
 * goes out on an idle keep-alive connection of a pool of C; when none is
 * idle it waits in this client's queue, and its latency still counts from
 * the time it was due. A request sent more than --late-ms after it was due
 * is "late": the count says how far short of RATE the server (or this
 * client, which shares the machine) fell. Requests still unsent when the
 * run ends (DURATION + --drain-s) are "not_sent".
 *
 * The lag (--pg CONNINFO --counter NAME): every request must add 1 to the
 * counter NAME. A second thread reads counter_totals.value of NAME (what
 * counter-persister commits, one transaction per batch) every --poll-ms
 * and records when each answer arrived and the value. The 2xx answers are
 * numbered in the order they arrived: when the i-th came, i increments had
 * been acknowledged, and its lag is the arrival of the first poll that
 * shows at least baseline + i, minus the arrival of the i-th 2xx. A poll
 * shows a commit made before its snapshot, so the lag is an upper bound,
 * too long by at most the poll interval plus one query (the resolution,
 * reported as poll_gap_max_ms). A commit already visible before the 2xx
 * (the persister beat the HTTP answer) counts as lag 0 and is counted in
 * visible_before_2xx. Non-2xx answers and requests without an answer add
 * nothing to i; were any of them applied anyway, the lag reads short.
 *
 * stdout: one JSON line (see main). Exit status 0, 1 when --drain-s cut
 * the run short or PostgreSQL never showed every 2xx, 2 on bad usage or
 * setup failure. Built by bench/run.sh: cc bench/openloop.c -levent -lpq.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "../tests/tools/lathist.h"
#include "../tests/tools/loadtool.h"

enum {
    STATUS_MAX = 600,
};

typedef struct options {
    const char *url;
    const char *method;
    const char *body;
    double rate;
    double duration_s;
    long connections;
    double late_ms;
    double drain_s;
    double req_timeout_s;
    const char *pg;
    const char *counter;
    double poll_ms;
    double lag_timeout_s;
} options;

typedef lathist hist;

typedef struct poll_sample {
    int64_t at_ns; /* when the answer arrived */
    int64_t value;
    int64_t query_ns; /* how long the query took */
} poll_sample;

struct gen;

typedef struct conn {
    struct gen *g;
    struct evhttp_connection *evcon;
    long k;          /* the request in flight, -1 when idle */
    int64_t sent_ns; /* when it went out */
} conn;

typedef struct gen {
    options opt;
    struct event_base *base;
    char host[256];
    int port;
    char *path;
    enum evhttp_cmd_type cmd;
    conn *conns;
    long *idle; /* a stack of idle connection indexes */
    long n_idle;
    long total;   /* requests in the timetable */
    long next;    /* the next request to send */
    long pending; /* in flight */
    int64_t t0_ns;
    uint64_t late, errors, answered;
    uint64_t status[STATUS_MAX];
    hist latency;    /* due time -> answer, every answer */
    hist service;    /* sent -> answer */
    hist delay;      /* due -> sent */
    int64_t *ack_ns; /* arrival of each 2xx, in order */
    long acked;
    int64_t last_sent_ns;
    int cut;
    struct event *tick;
    struct event *deadline;
} gen;

/* Shared with the poller thread: the main thread writes target (the 2xx
 * count, once no more can come) and stop; the poller owns its samples
 * until it is joined. */
typedef struct poller {
    PGconn *pg;
    const char *counter;
    int64_t baseline;
    int64_t interval_ns;
    atomic_llong target; /* -1 while answers may still come */
    atomic_llong deadline_ns;
    atomic_int stop;
    poll_sample *s;
    size_t n, cap;
    char err[256];
} poller;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------ histogram */

static void hist_add(hist *h, int64_t ns)
{
    lathist_add_us(h, ns < 0 ? 0 : (uint64_t)ns / 1000);
}

static double sorted_ms(const int64_t *v, long n, double q)
{
    if (n == 0)
        return 0.0;
    long rank = (long)(q * (double)n);
    if ((double)rank < q * (double)n)
        rank++;
    if (rank < 1)
        rank = 1;
    return (double)v[rank - 1] / 1e6;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* --------------------------------------------------------------- poller */

static int64_t query_value(poller *p, int *ok)
{
    const char *params[1] = {p->counter};
    PGresult *r = PQexecPrepared(p->pg, "value", 1, params, NULL, NULL, 0);
    int64_t v = 0;
    *ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (*ok)
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else
        snprintf(p->err, sizeof(p->err), "%s", PQerrorMessage(p->pg));
    PQclear(r);
    return v;
}

static void *poll_main(void *arg)
{
    poller *p = arg;
    int64_t next = now_ns();
    for (;;) {
        int64_t sent = now_ns();
        int ok;
        int64_t v = query_value(p, &ok);
        int64_t at = now_ns();
        if (!ok)
            break; /* p->err says why; the lag is then incomplete */
        if (p->n == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 65536;
            poll_sample *s = realloc(p->s, cap * sizeof(*s));
            if (s == NULL) {
                snprintf(p->err, sizeof(p->err), "out of memory");
                break;
            }
            p->s = s;
            p->cap = cap;
        }
        p->s[p->n++] = (poll_sample){at, v, at - sent};
        long long target = atomic_load(&p->target);
        if (atomic_load(&p->stop) ||
            (target >= 0 && v >= p->baseline + target) ||
            at > atomic_load(&p->deadline_ns))
            break;
        /* A fixed timetable; a slow query moves it on, not back. */
        next += p->interval_ns;
        if (next < at)
            next = at;
        struct timespec ts = {(time_t)(next / 1000000000),
                              (long)(next % 1000000000)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
               EINTR)
            ;
    }
    return NULL;
}

/* ------------------------------------------------------------- requests */

static void dispatch(gen *g);

static void maybe_done(gen *g)
{
    if (g->next == g->total && g->pending == 0)
        event_base_loopbreak(g->base);
}

static void on_response(struct evhttp_request *req, void *arg)
{
    conn *c = arg;
    gen *g = c->g;
    if (g->cut || c->k < 0)
        return;
    int64_t at = now_ns();
    /* NULL or code 0: the connection failed, timed out or was reset. */
    int status = req ? evhttp_request_get_response_code(req) : 0;
    int64_t due = g->t0_ns + (int64_t)((double)c->k * 1e9 / g->opt.rate);
    if (status > 0 && status < STATUS_MAX) {
        g->answered++;
        g->status[status]++;
        hist_add(&g->latency, at - due);
        hist_add(&g->service, at - c->sent_ns);
        if (status >= 200 && status < 300)
            g->ack_ns[g->acked++] = at;
    } else {
        g->errors++;
    }
    c->k = -1;
    g->pending--;
    g->idle[g->n_idle++] = c - g->conns;
    dispatch(g);
    maybe_done(g);
}

static int send_one(gen *g, conn *c, long k, int64_t at)
{
    struct evhttp_request *req = evhttp_request_new(on_response, c);
    if (req == NULL)
        return -1;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char hostport[300];
    snprintf(hostport, sizeof(hostport), "%s:%d", g->host, g->port);
    evhttp_add_header(h, "Host", hostport);
    if (g->opt.body) {
        evhttp_add_header(h, "Content-Type", "application/json");
        evbuffer_add(evhttp_request_get_output_buffer(req), g->opt.body,
                     strlen(g->opt.body));
    }
    c->k = k;
    c->sent_ns = at;
    /* On failure evhttp_make_request frees req itself. */
    if (evhttp_make_request(c->evcon, req, g->cmd, g->path) != 0) {
        c->k = -1;
        return -1;
    }
    return 0;
}

/* Sends every request that is due, as far as idle connections go. */
static void dispatch(gen *g)
{
    if (g->cut)
        return;
    int64_t now = now_ns();
    double elapsed = (double)(now - g->t0_ns) / 1e9;
    long due = elapsed < 0 ? 0 : (long)(elapsed * g->opt.rate) + 1;
    if (due > g->total)
        due = g->total;
    while (g->next < due && g->n_idle > 0) {
        long k = g->next++;
        conn *c = &g->conns[g->idle[--g->n_idle]];
        int64_t at = now_ns();
        int64_t late =
            at - (g->t0_ns + (int64_t)((double)k * 1e9 / g->opt.rate));
        hist_add(&g->delay, late);
        if ((double)late > g->opt.late_ms * 1e6)
            g->late++;
        g->last_sent_ns = at;
        if (send_one(g, c, k, at) != 0) {
            g->errors++;
            g->idle[g->n_idle++] = c - g->conns;
            continue;
        }
        g->pending++;
    }
    if (g->next == g->total && g->tick)
        event_del(g->tick);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gen *g = arg;
    dispatch(g);
    maybe_done(g);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gen *g = arg;
    g->cut = 1;
    g->errors += (uint64_t)g->pending; /* they will not be answered now */
    event_base_loopbreak(g->base);
}

/* ---------------------------------------------------------------- setup */

static void usage(FILE *f)
{
    fputs("usage: openloop --url http://HOST:PORT/PATH --rate R --duration S\n"
          "         [--method METHOD] [--body STRING] [--connections C]\n"
          "         [--late-ms MS] [--drain-s S] [--req-timeout-s S]\n"
          "         [--pg CONNINFO --counter NAME [--poll-ms MS]\n"
          "          [--lag-timeout-s S]]\n"
          "defaults: GET (POST with a body), C=256, --late-ms 10,\n"
          "          --drain-s 30, --req-timeout-s 10, --poll-ms 5,\n"
          "          --lag-timeout-s 60\n",
          f);
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof(*o));
    o->connections = 256;
    o->late_ms = 10;
    o->drain_s = 30;
    o->req_timeout_s = 10;
    o->poll_ms = 5;
    o->lag_timeout_s = 60;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d = 0;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (v == NULL)
            return -1;
        i++;
        if (strcmp(a, "--url") == 0)
            o->url = v;
        else if (strcmp(a, "--method") == 0)
            o->method = v;
        else if (strcmp(a, "--body") == 0)
            o->body = v;
        else if (strcmp(a, "--pg") == 0)
            o->pg = v;
        else if (strcmp(a, "--counter") == 0)
            o->counter = v;
        else if (parse_double(v, &d) != 0)
            return -1;
        else if (strcmp(a, "--rate") == 0)
            o->rate = d;
        else if (strcmp(a, "--duration") == 0)
            o->duration_s = d;
        else if (strcmp(a, "--connections") == 0)
            o->connections = (long)d;
        else if (strcmp(a, "--late-ms") == 0)
            o->late_ms = d;
        else if (strcmp(a, "--drain-s") == 0)
            o->drain_s = d;
        else if (strcmp(a, "--req-timeout-s") == 0)
            o->req_timeout_s = d;
        else if (strcmp(a, "--poll-ms") == 0)
            o->poll_ms = d;
        else if (strcmp(a, "--lag-timeout-s") == 0)
            o->lag_timeout_s = d;
        else
            return -1;
    }
    if (o->url == NULL || o->rate <= 0 || o->duration_s <= 0 ||
        o->connections < 1 || (o->pg == NULL) != (o->counter == NULL))
        return -1;
    return 0;
}

static PGconn *pg_open(const char *conninfo, char *err, size_t errlen)
{
    PGconn *pg = PQconnectdb(conninfo);
    PGresult *r = NULL;
    if (PQstatus(pg) != CONNECTION_OK)
        goto failed;
    r = PQprepare(pg, "value",
                  "SELECT coalesce((SELECT value FROM counter_totals "
                  "WHERE name = $1), 0)",
                  1, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        goto failed;
    PQclear(r);
    return pg;
failed:
    snprintf(err, errlen, "%s", PQerrorMessage(pg));
    PQclear(r);
    PQfinish(pg);
    return NULL;
}

/* ------------------------------------------------------------- the lag */

typedef struct lag_result {
    long measured, not_seen, before_2xx;
    double p50_ms, p99_ms, p999_ms, max_ms;
    double gap_max_ms, gap_mean_ms, query_max_ms;
} lag_result;

static int lag_compute(const gen *g, const poller *p, lag_result *out)
{
    memset(out, 0, sizeof(*out));
    int64_t *lag = malloc((size_t)(g->acked ? g->acked : 1) * sizeof(*lag));
    if (lag == NULL)
        return -1;
    size_t j = 0;
    int64_t seen = INT64_MIN; /* running max: totals only grow here */
    for (long i = 0; i < g->acked; i++) {
        int64_t need = p->baseline + i + 1;
        for (; j < p->n; j++) {
            if (p->s[j].value > seen)
                seen = p->s[j].value;
            if (seen >= need)
                break;
        }
        if (j == p->n) {
            out->not_seen = g->acked - i;
            break;
        }
        int64_t d = p->s[j].at_ns - g->ack_ns[i];
        if (d < 0) {
            out->before_2xx++;
            d = 0;
        }
        lag[out->measured++] = d;
    }
    qsort(lag, (size_t)out->measured, sizeof(*lag), cmp_i64);
    out->p50_ms = sorted_ms(lag, out->measured, 0.50);
    out->p99_ms = sorted_ms(lag, out->measured, 0.99);
    out->p999_ms = sorted_ms(lag, out->measured, 0.999);
    out->max_ms = out->measured ? (double)lag[out->measured - 1] / 1e6 : 0;
    free(lag);
    for (size_t k = 0; k < p->n; k++) {
        if (k > 0) {
            double gap = (double)(p->s[k].at_ns - p->s[k - 1].at_ns) / 1e6;
            if (gap > out->gap_max_ms)
                out->gap_max_ms = gap;
        }
        double q = (double)p->s[k].query_ns / 1e6;
        if (q > out->query_max_ms)
            out->query_max_ms = q;
    }
    if (p->n > 1)
        out->gap_mean_ms = (double)(p->s[p->n - 1].at_ns - p->s[0].at_ns) /
                           1e6 / (double)(p->n - 1);
    return 0;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    int rc = 2;
    gen *g = calloc(1, sizeof(*g));
    poller *p = calloc(1, sizeof(*p));
    struct evhttp_uri *uri = NULL;
    pthread_t thread;
    int thread_started = 0;
    char err[512] = "";

    if (g == NULL || p == NULL) {
        fprintf(stderr, "openloop: out of memory\n");
        goto out;
    }
    if (parse_args(argc, argv, &g->opt) != 0) {
        usage(stderr);
        goto out;
    }
    options *o = &g->opt;
    signal(SIGPIPE, SIG_IGN);

    uri = evhttp_uri_parse(o->url);
    const char *host = uri ? evhttp_uri_get_host(uri) : NULL;
    if (host == NULL || strlen(host) >= sizeof(g->host)) {
        fprintf(stderr, "openloop: bad --url %s\n", o->url);
        goto out;
    }
    snprintf(g->host, sizeof(g->host), "%s", host);
    g->port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
    const char *path = evhttp_uri_get_path(uri);
    const char *query = evhttp_uri_get_query(uri);
    size_t plen = strlen(path && *path ? path : "/") +
                  (query ? strlen(query) + 1 : 0) + 1;
    g->path = malloc(plen);
    if (g->path == NULL)
        goto out;
    snprintf(g->path, plen, "%s%s%s", path && *path ? path : "/",
             query ? "?" : "", query ? query : "");
    const char *method = o->method ? o->method : o->body ? "POST" : "GET";
    if (strcmp(method, "GET") == 0)
        g->cmd = EVHTTP_REQ_GET;
    else if (strcmp(method, "POST") == 0)
        g->cmd = EVHTTP_REQ_POST;
    else {
        fprintf(stderr, "openloop: --method must be GET or POST\n");
        goto out;
    }

    g->total = (long)(o->rate * o->duration_s);
    g->ack_ns = malloc((size_t)(g->total ? g->total : 1) * sizeof(int64_t));
    g->conns = calloc((size_t)o->connections, sizeof(conn));
    g->idle = malloc((size_t)o->connections * sizeof(long));
    g->base = event_base_new();
    if (!g->ack_ns || !g->conns || !g->idle || !g->base) {
        fprintf(stderr, "openloop: out of memory\n");
        goto out;
    }
    raise_nofile("openloop", o->connections);
    struct timeval req_tv = to_timeval(o->req_timeout_s);
    for (long i = 0; i < o->connections; i++) {
        conn *c = &g->conns[i];
        c->g = g;
        c->k = -1;
        c->evcon = evhttp_connection_base_new(g->base, NULL, g->host,
                                              (ev_uint16_t)g->port);
        if (c->evcon == NULL) {
            fprintf(stderr, "openloop: cannot create connection %ld\n", i);
            goto out;
        }
        /* A retried write would count twice: never retry. */
        evhttp_connection_set_retries(c->evcon, 0);
        evhttp_connection_set_timeout_tv(c->evcon, &req_tv);
        g->idle[g->n_idle++] = i;
    }

    if (o->pg) {
        p->counter = o->counter;
        p->interval_ns = (int64_t)(o->poll_ms * 1e6);
        atomic_init(&p->target, -1);
        atomic_init(&p->stop, 0);
        atomic_init(&p->deadline_ns, INT64_MAX);
        p->pg = pg_open(o->pg, err, sizeof(err));
        if (p->pg == NULL) {
            fprintf(stderr, "openloop: could not connect to postgresql: %s",
                    err);
            goto out;
        }
        int ok;
        p->baseline = query_value(p, &ok);
        if (!ok) {
            fprintf(stderr, "openloop: could not read %s: %s", o->counter,
                    p->err);
            goto out;
        }
        if (pthread_create(&thread, NULL, poll_main, p) != 0) {
            fprintf(stderr, "openloop: cannot start the poller\n");
            goto out;
        }
        thread_started = 1;
    }

    /* A 1 ms tick sends what fell due; an answer that frees a connection
     * sends the next due request at once. */
    struct timeval tick_tv = {0, 1000};
    struct timeval end_tv = to_timeval(o->duration_s + o->drain_s);
    g->tick = event_new(g->base, -1, EV_PERSIST, on_tick, g);
    g->deadline = evtimer_new(g->base, on_deadline, g);
    if (g->tick == NULL || g->deadline == NULL)
        goto out;
    g->t0_ns = now_ns();
    event_add(g->tick, &tick_tv);
    event_add(g->deadline, &end_tv);
    dispatch(g);
    event_base_dispatch(g->base);
    int64_t t_end = now_ns();

    lag_result lr = {0};
    if (thread_started) {
        /* No more 2xx can come: the poller stops once it has seen them all,
         * or after --lag-timeout-s. */
        atomic_store(&p->deadline_ns,
                     now_ns() + (int64_t)(o->lag_timeout_s * 1e9));
        atomic_store(&p->target, (long long)g->acked);
        pthread_join(thread, NULL);
        thread_started = 0;
        if (lag_compute(g, p, &lr) != 0) {
            fprintf(stderr, "openloop: out of memory\n");
            goto out;
        }
    }

    double elapsed = (double)(t_end - g->t0_ns) / 1e9;
    double send_window =
        g->next ? (double)(g->last_sent_ns - g->t0_ns) / 1e9 : 0;
    printf("{\"rate\":%.0f,\"duration_s\":%.3f,\"connections\":%ld,"
           "\"scheduled\":%ld,\"sent\":%ld,\"late\":%" PRIu64
           ",\"late_ms\":%.1f,\"not_sent\":%ld,\"send_delay_p50_ms\":%.3f,"
           "\"send_delay_p99_ms\":%.3f,\"send_delay_max_ms\":%.3f,"
           "\"sent_per_s\":%.0f,\"status\":{",
           o->rate, o->duration_s, o->connections, g->total, g->next, g->late,
           o->late_ms, g->total - g->next, lathist_ms(&g->delay, 0.5),
           lathist_ms(&g->delay, 0.99), lathist_ms(&g->delay, 1.0),
           send_window > 0 ? (double)g->next / send_window : 0);
    int first = 1;
    for (int s = 0; s < STATUS_MAX; s++)
        if (g->status[s]) {
            printf("%s\"%d\":%" PRIu64, first ? "" : ",", s, g->status[s]);
            first = 0;
        }
    printf("},\"errors\":%" PRIu64 ",\"cut\":%s,\"elapsed_s\":%.3f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,"
           "\"max_ms\":%.3f,\"service_p50_ms\":%.3f,\"service_p99_ms\":%.3f",
           g->errors, g->cut ? "true" : "false", elapsed,
           lathist_ms(&g->latency, 0.5), lathist_ms(&g->latency, 0.99),
           lathist_ms(&g->latency, 0.999), lathist_ms(&g->latency, 1.0),
           lathist_ms(&g->service, 0.5), lathist_ms(&g->service, 0.99));
    if (o->pg)
        printf(",\"lag\":{\"acked\":%ld,\"measured\":%ld,\"not_seen\":%ld,"
               "\"visible_before_2xx\":%ld,\"p50_ms\":%.1f,\"p99_ms\":%.1f,"
               "\"p999_ms\":%.1f,\"max_ms\":%.1f,\"poll_ms\":%.1f,"
               "\"polls\":%zu,\"poll_gap_mean_ms\":%.2f,"
               "\"poll_gap_max_ms\":%.1f,\"poll_query_max_ms\":%.1f,"
               "\"baseline\":%" PRId64 ",\"final\":%" PRId64
               ",\"poll_error\":\"%s\"}",
               g->acked, lr.measured, lr.not_seen, lr.before_2xx, lr.p50_ms,
               lr.p99_ms, lr.p999_ms, lr.max_ms, o->poll_ms, p->n,
               lr.gap_mean_ms, lr.gap_max_ms, lr.query_max_ms, p->baseline,
               p->n ? p->s[p->n - 1].value : p->baseline,
               p->err[0] ? "query failed" : "");
    printf("}\n");
    if (p->err[0])
        fprintf(stderr, "openloop: poller: %s", p->err);
    rc = g->cut || lr.not_seen > 0 || p->err[0] ? 1 : 0;

out:
    if (thread_started) {
        atomic_store(&p->stop, 1);
        pthread_join(thread, NULL);
    }
    if (p) {
        PQfinish(p->pg);
        free(p->s);
    }
    if (g) {
        if (g->conns)
            for (long i = 0; i < g->opt.connections; i++)
                if (g->conns[i].evcon)
                    evhttp_connection_free(g->conns[i].evcon);
        if (g->tick)
            event_free(g->tick);
        if (g->deadline)
            event_free(g->deadline);
        if (g->base)
            event_base_free(g->base);
        free(g->conns);
        free(g->idle);
        free(g->ack_ns);
        free(g->path);
    }
    if (uri)
        evhttp_uri_free(uri);
    free(p);
    free(g);
    return rc;
}
