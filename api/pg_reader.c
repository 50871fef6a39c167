/*
 * pg_reader.c - see pg_reader.h.
 */
#include "api/pg_reader.h"

#include "common/log.h"
#include "common/pgconn.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { QUEUE_MAX = 1024 };

enum pg_state { PG_DOWN, PG_CONNECTING, PG_IDLE, PG_BUSY };

enum { MAX_PARAMS = 8 };

typedef struct pg_request {
    struct pg_request *next;
    api_pg *pg;
    api_pg_cb cb;
    void *arg;
    struct event *timer;
    const char *sql; /* static text */
    int nparams;
    char *params[MAX_PARAMS];
} pg_request;

struct api_pg {
    struct event_base *base;
    PGconn *conn;
    enum pg_state state;
    struct event *sock_ev;
    pg_request *head, *tail; /* head is in flight when state == PG_BUSY */
    size_t queued;
    int timeout_ms;
    ctr_pg_params params;
    char where[CTR_PG_HOSTS_LEN]; /* for log lines */
};

static void pump(api_pg *pg);

static void request_free(pg_request *req)
{
    if (req->timer)
        event_free(req->timer);
    for (int i = 0; i < req->nparams; i++)
        free(req->params[i]);
    free(req);
}

/* Unlinks req from the queue (it must be there). */
static void unlink_request(api_pg *pg, pg_request *req)
{
    pg_request **pp = &pg->head, *prev = NULL;
    while (*pp && *pp != req) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return;
    *pp = req->next;
    if (pg->tail == req)
        pg->tail = prev;
    pg->queued--;
}

static void reset_connection(api_pg *pg)
{
    if (pg->sock_ev) {
        event_free(pg->sock_ev);
        pg->sock_ev = NULL;
    }
    if (pg->conn)
        PQfinish(pg->conn);
    pg->conn = NULL;
    pg->state = PG_DOWN;
}

/* Answers every queued request with failure. */
static void fail_all(api_pg *pg)
{
    while (pg->head) {
        pg_request *req = pg->head;
        unlink_request(pg, req);
        req->cb(NULL, req->arg);
        request_free(req);
    }
}

static void on_socket(evutil_socket_t fd, short what, void *arg);

static int wait_socket(api_pg *pg, short what)
{
    if (pg->sock_ev)
        event_free(pg->sock_ev);
    pg->sock_ev = event_new(pg->base, PQsocket(pg->conn), what, on_socket, pg);
    return pg->sock_ev && event_add(pg->sock_ev, NULL) == 0 ? 0 : -1;
}

static void connect_failed(api_pg *pg)
{
    char reason[512];
    ctr_pg_one_line(reason, sizeof(reason),
                    pg->conn ? PQerrorMessage(pg->conn) : "out of memory");
    ctr_warn("could not connect to postgresql at %s: %s", pg->where, reason);
    reset_connection(pg);
    fail_all(pg);
}

static void connect_step(api_pg *pg)
{
    switch (PQconnectPoll(pg->conn)) {
    case PGRES_POLLING_READING:
        if (wait_socket(pg, EV_READ) == 0)
            return;
        break;
    case PGRES_POLLING_WRITING:
        if (wait_socket(pg, EV_WRITE) == 0)
            return;
        break;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(pg->conn, 1) != 0)
            break;
        pg->state = PG_IDLE;
        ctr_info("connected to postgresql at %s:%s for reads", PQhost(pg->conn),
                 PQport(pg->conn));
        pump(pg);
        return;
    default: break;
    }
    connect_failed(pg);
}

static void start_connect(api_pg *pg)
{
    pg->conn = PQconnectStartParams(pg->params.keys, pg->params.vals, 0);
    if (pg->conn == NULL || PQstatus(pg->conn) == CONNECTION_BAD) {
        connect_failed(pg);
        return;
    }
    pg->state = PG_CONNECTING;
    connect_step(pg);
}

static void finish_query(api_pg *pg, PGresult *res)
{
    pg_request *req = pg->head;

    pg->state = PG_IDLE;
    if (req == NULL)
        return;
    unlink_request(pg, req);
    if (res && PQresultStatus(res) != PGRES_TUPLES_OK) {
        char line[256];
        snprintf(line, sizeof(line), "%s", PQresultErrorMessage(res));
        line[strcspn(line, "\n")] = '\0';
        ctr_warn("postgresql read failed: %s", line);
        res = NULL;
    }
    req->cb(res, req->arg);
    request_free(req);
}

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
    api_pg *pg = arg;
    (void)fd;

    if (pg->state == PG_CONNECTING) {
        connect_step(pg);
        return;
    }
    if (pg->state != PG_BUSY)
        return;
    if (what & EV_WRITE) {
        int f = PQflush(pg->conn);
        if (f < 0)
            goto broken;
        if (wait_socket(pg, f == 1 ? EV_READ | EV_WRITE : EV_READ) != 0)
            goto broken;
        if (!(what & EV_READ))
            return;
    }
    if (!PQconsumeInput(pg->conn))
        goto broken;
    if (PQisBusy(pg->conn)) {
        if (wait_socket(pg, EV_READ) != 0)
            goto broken;
        return;
    }
    PGresult *res, *first = NULL;
    while ((res = PQgetResult(pg->conn)) != NULL) {
        if (first == NULL)
            first = res;
        else
            PQclear(res);
    }
    finish_query(pg, first);
    PQclear(first);
    pump(pg);
    return;
broken:
    ctr_warn("postgresql connection failed: %s", PQerrorMessage(pg->conn));
    reset_connection(pg);
    fail_all(pg);
}

/* Starts the next queued request if the connection is free. */
static void pump(api_pg *pg)
{
    if (pg->head == NULL)
        return;
    if (pg->state == PG_DOWN) {
        start_connect(pg);
        return;
    }
    if (pg->state != PG_IDLE)
        return;
    pg_request *req = pg->head;
    if (!PQsendQueryParams(pg->conn, req->sql, req->nparams, NULL,
                           (const char *const *)req->params, NULL, NULL, 0)) {
        ctr_warn("could not send postgresql query: %s",
                 PQerrorMessage(pg->conn));
        reset_connection(pg);
        fail_all(pg);
        return;
    }
    pg->state = PG_BUSY;
    int f = PQflush(pg->conn);
    if (f < 0 || wait_socket(pg, f == 1 ? EV_READ | EV_WRITE : EV_READ)) {
        reset_connection(pg);
        fail_all(pg);
    }
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    pg_request *req = arg;
    api_pg *pg = req->pg;
    (void)fd;
    (void)what;

    /* A query stuck in flight poisons the connection: drop it. */
    if (pg->head == req && pg->state == PG_BUSY)
        reset_connection(pg);
    unlink_request(pg, req);
    ctr_warn("postgresql read timed out after %d ms", pg->timeout_ms);
    req->cb(NULL, req->arg);
    request_free(req);
    pump(pg);
}

int api_pg_query(api_pg *pg, const char *sql, int nparams,
                 const char *const *params, api_pg_cb cb, void *arg)
{
    pg_request *req;

    if (pg->queued >= QUEUE_MAX || nparams > MAX_PARAMS)
        return -1;
    req = calloc(1, sizeof(*req));
    if (req == NULL)
        return -1;
    req->timer = evtimer_new(pg->base, on_timeout, req);
    req->nparams = nparams;
    int ok = req->timer != NULL;
    for (int i = 0; i < nparams; i++)
        if ((req->params[i] = strdup(params[i])) == NULL)
            ok = 0;
    if (!ok) {
        request_free(req);
        return -1;
    }
    req->pg = pg;
    req->cb = cb;
    req->arg = arg;
    req->sql = sql;
    struct timeval tv = {pg->timeout_ms / 1000, (pg->timeout_ms % 1000) * 1000};
    evtimer_add(req->timer, &tv);
    if (pg->tail)
        pg->tail->next = req;
    else
        pg->head = req;
    pg->tail = req;
    pg->queued++;
    pump(pg);
    return 0;
}

api_pg *api_pg_new(const ctr_config *cfg, struct event_base *base, char *errbuf,
                   size_t errlen)
{
    api_pg *pg = calloc(1, sizeof(*pg));

    if (pg == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    pg->base = base;
    pg->timeout_ms = cfg->postgres_timeout_ms;
    ctr_pg_params_init(&pg->params, cfg, "counter-api",
                       cfg->postgres_read_session_attrs);
    char where[sizeof(pg->where)];
    snprintf(pg->where, sizeof(pg->where), "%s",
             ctr_pg_where(cfg, where, sizeof(where)));
    return pg;
}

void api_pg_free(api_pg *pg)
{
    if (pg == NULL)
        return;
    reset_connection(pg);
    fail_all(pg);
    free(pg);
}
