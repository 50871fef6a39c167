/*
 * redis_store.c - see redis_store.h.
 */
#include "api/redis_store.h"

#include "api/stats.h"
#include "common/timeutil.h"

#include "common/log.h"
#include "common/strbuf.h"
#include "common/name.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BACKOFF_MIN_MS = 100, BACKOFF_MAX_MS = 2000 };

/* Status passed to on_reply for an answer that came after the deadline. */
#define CMD_LATE ((enum api_redis_status)100)

struct api_redis {
    struct event_base *base;
    redisAsyncContext *ac;
    int ready;   /* connected, authenticated, scripts loaded, epoch seen */
    int suspect; /* a write timed out: the server may hang; until a PING
                  * comes back, writes and reads go elsewhere */
    int probing; /* that PING is in flight */
    int epoch_missing_logged;
    struct event *epoch_ev;
    char host[256];
    int port;
    char *password;
    int db;
    char write_sha[41];
    char undo_sha[41];
    char idem_sha[41];
    struct event *reconnect_ev;
    int backoff_ms;
    int closing;
    int down_logged; /* one line per outage, not one per retry */
};

/* One command in flight. Freed by whichever of reply/timeout comes last. */
typedef struct redis_cmd {
    api_redis *r;
    int64_t t0_us;
    struct event *timer;
    int answered; /* the caller's callback has fired */
    void (*on_reply)(struct redis_cmd *cmd, redisReply *reply,
                     enum api_redis_status st);
    void *owner; /* what on_reply works on */
    int index;
} redis_cmd;

static void schedule_reconnect(api_redis *r);

static void probe_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    api_redis *r = privdata;
    (void)ac;
    r->probing = 0;
    if (replyp != NULL && r->suspect) {
        r->suspect = 0;
        ctr_info("redis at %s:%d answers again", r->host, r->port);
    }
}

/* A command outlived its deadline: the server may hang (stopped, swapping,
 * a slow script). Send nothing more until a PING, queued behind what is
 * stuck, comes back. */
static void mark_suspect(api_redis *r)
{
    if (!r->suspect)
        ctr_warn("redis at %s:%d missed a deadline; reading from postgresql "
                 "and sending writes through kafka until it answers",
                 r->host, r->port);
    r->suspect = 1;
    if (!r->probing && r->ac &&
        redisAsyncCommand(r->ac, probe_reply, r, "PING") == REDIS_OK)
        r->probing = 1;
}

static void cmd_timeout(evutil_socket_t fd, short what, void *arg)
{
    redis_cmd *cmd = arg;
    (void)fd;
    (void)what;
    cmd->answered = 1;
    api_stats_redis((double)(ctr_time_mono_us() - cmd->t0_us) / 1e6, 1);
    if (cmd->index < 0)
        mark_suspect(cmd->r);
    cmd->on_reply(cmd, NULL, API_REDIS_TIMEOUT);
}

static void cmd_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    redis_cmd *cmd = privdata;
    redisReply *reply = replyp;
    (void)ac;

    if (cmd->timer)
        event_free(cmd->timer);
    cmd->timer = NULL;
    if (!cmd->answered) {
        cmd->answered = 1;
        api_stats_redis((double)(ctr_time_mono_us() - cmd->t0_us) / 1e6,
                        reply == NULL || reply->type == REDIS_REPLY_ERROR);
        cmd->on_reply(cmd, reply,
                      reply == NULL ? API_REDIS_DISCONNECTED : API_REDIS_OK);
    } else {
        /* already timed out: on_reply gets a second, "late" call */
        cmd->on_reply(cmd, reply, CMD_LATE);
    }
    free(cmd);
}

/* "$<n>\r\n" and friends: the decimal digits of n at p, returning the end. */
static char *put_count(char *p, char tag, size_t n)
{
    char num[21];
    size_t l = ctr_i64_text((int64_t)n, num);
    *p++ = tag;
    memcpy(p, num, l);
    p += l;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/*
 * The command in RESP in buf, or -1 when it does not fit (the caller lets
 * hiredis format it then). hiredis's formatter builds every argument with
 * sdscatfmt, which cost more than anything else a write does in this
 * process.
 */
static long resp_format(char *buf, size_t cap, int argc, const char **argv,
                        const size_t *argvlen)
{
    size_t need = 24;
    for (int i = 0; i < argc; i++)
        need += argvlen[i] + 26;
    if (need > cap)
        return -1;
    char *p = put_count(buf, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        p = put_count(p, '$', argvlen[i]);
        memcpy(p, argv[i], argvlen[i]);
        p += argvlen[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    return (long)(p - buf);
}

/* Sends argv; on success the command's on_reply fires as described. */
static int cmd_send(api_redis *r, redis_cmd *cmd, int timeout_ms, int argc,
                    const char **argv, const size_t *argvlen)
{
    if (!r->ready)
        return -1;
    cmd->r = r;
    cmd->t0_us = ctr_time_mono_us();
    if (timeout_ms > 0) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        cmd->timer = evtimer_new(r->base, cmd_timeout, cmd);
        if (cmd->timer == NULL || evtimer_add(cmd->timer, &tv) != 0) {
            if (cmd->timer)
                event_free(cmd->timer);
            cmd->timer = NULL;
            return -1;
        }
    }
    char resp[4096];
    long len = resp_format(resp, sizeof(resp), argc, argv, argvlen);
    int rc = len > 0 ? redisAsyncFormattedCommand(r->ac, cmd_reply, cmd, resp,
                                                  (size_t)len)
                     : redisAsyncCommandArgv(r->ac, cmd_reply, cmd, argc, argv,
                                             argvlen);
    if (rc != REDIS_OK) {
        if (cmd->timer)
            event_free(cmd->timer);
        cmd->timer = NULL;
        return -1;
    }
    return 0;
}

/* Sends NUL-terminated argv with on_reply(owner); on failure nothing is
 * sent and owner is untouched. */
static int
send_args(api_redis *r,
          void (*on_reply)(redis_cmd *, redisReply *, enum api_redis_status),
          void *owner, int index, int timeout_ms, int argc, const char **argv)
{
    size_t argvlen[24];
    redis_cmd *cmd;

    if (argc > 24 || (cmd = calloc(1, sizeof(*cmd))) == NULL)
        return -1;
    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);
    cmd->on_reply = on_reply;
    cmd->owner = owner;
    cmd->index = index;
    if (cmd_send(r, cmd, timeout_ms, argc, argv, argvlen) != 0) {
        free(cmd);
        return -1;
    }
    return 0;
}

/* ---- connection management ---- */

static int setup_check(api_redis *r, redisReply *reply)
{
    if (reply == NULL)
        return -1; /* disconnected; the disconnect callback reconnects */
    if (reply->type == REDIS_REPLY_ERROR) {
        ctr_error("redis setup failed: %s", reply->str);
        redisAsyncDisconnect(r->ac);
        return -1;
    }
    return 0;
}

static void setup_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    (void)ac;
    setup_check(privdata, replyp);
}

static void copy_sha(char *dst, const redisReply *reply)
{
    size_t n = reply->type == REDIS_REPLY_STRING && reply->len == 40 ? 40 : 0;
    memcpy(dst, reply->str, n);
    dst[n] = '\0';
}

static void write_sha_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    api_redis *r = privdata;
    (void)ac;
    if (setup_check(r, replyp) == 0)
        copy_sha(r->write_sha, replyp);
}

static void undo_sha_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    api_redis *r = privdata;
    (void)ac;
    if (setup_check(r, replyp) == 0)
        copy_sha(r->undo_sha, replyp);
}

static void idem_sha_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    api_redis *r = privdata;
    (void)ac;
    if (setup_check(r, replyp) == 0)
        copy_sha(r->idem_sha, replyp);
}

/*
 * The last setup step: the epoch key. A Redis that restarted without its
 * data has none; its values would be wrong (too low) until the applier
 * has rebuilt them from PostgreSQL and the log, and it sets the key when
 * done. Until then the connection is not ready: reads come from
 * PostgreSQL, writes go through Kafka to the applier.
 */
static void epoch_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    api_redis *r = privdata;
    redisReply *reply = replyp;
    (void)ac;
    if (setup_check(r, reply) != 0)
        return;
    if (reply->type != REDIS_REPLY_STRING) {
        if (!r->epoch_missing_logged)
            ctr_warn("redis at %s:%d has no epoch key %s (started empty?); "
                     "waiting for the applier to rebuild it",
                     r->host, r->port, API_REDIS_EPOCH_KEY);
        r->epoch_missing_logged = 1;
        struct timeval tv = {0, 250 * 1000};
        evtimer_add(r->epoch_ev, &tv);
        return;
    }
    if (r->write_sha[0] && r->undo_sha[0] && r->idem_sha[0]) {
        r->ready = 1;
        r->suspect = 0;
        r->down_logged = 0;
        r->epoch_missing_logged = 0;
        r->backoff_ms = BACKOFF_MIN_MS;
        ctr_info("connected to redis at %s:%d (epoch %.*s)", r->host, r->port,
                 (int)reply->len, reply->str);
    }
}

static void epoch_poll(evutil_socket_t fd, short what, void *arg)
{
    api_redis *r = arg;
    (void)fd;
    (void)what;
    if (r->ac && !r->ready)
        redisAsyncCommand(r->ac, epoch_reply, r, "GET %s", API_REDIS_EPOCH_KEY);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    api_redis *r = ac->data;
    if (status != REDIS_OK) {
        if (!r->down_logged)
            ctr_warn("could not connect to redis at %s:%d: %s; retrying",
                     r->host, r->port, ac->errstr);
        r->down_logged = 1;
        r->ac = NULL; /* hiredis frees the context after this callback */
        schedule_reconnect(r);
        return;
    }
    /* Pipelined in order: setup completes before any command of ours. */
    if (r->password[0])
        redisAsyncCommand(r->ac, setup_reply, r, "AUTH %s", r->password);
    if (r->db)
        redisAsyncCommand(r->ac, setup_reply, r, "SELECT %d", r->db);
    redisAsyncCommand(r->ac, write_sha_reply, r, "SCRIPT LOAD %s",
                      ctr_apply_write_script);
    redisAsyncCommand(r->ac, undo_sha_reply, r, "SCRIPT LOAD %s",
                      ctr_apply_undo_script);
    redisAsyncCommand(r->ac, idem_sha_reply, r, "SCRIPT LOAD %s",
                      ctr_apply_idem_script);
    redisAsyncCommand(r->ac, epoch_reply, r, "GET %s", API_REDIS_EPOCH_KEY);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    api_redis *r = ac->data;
    r->ready = 0;
    r->suspect = 0;
    r->probing = 0;
    r->ac = NULL;
    evtimer_del(r->epoch_ev);
    if (r->closing)
        return;
    ctr_warn("lost connection to redis at %s:%d: %s", r->host, r->port,
             status == REDIS_OK ? "closed" : ac->errstr);
    schedule_reconnect(r);
}

static void do_connect(evutil_socket_t fd, short what, void *arg)
{
    api_redis *r = arg;
    (void)fd;
    (void)what;
    r->ac = redisAsyncConnect(r->host, r->port);
    if (r->ac == NULL || r->ac->err) {
        if (!r->down_logged)
            ctr_warn("could not connect to redis at %s:%d: %s; retrying",
                     r->host, r->port, r->ac ? r->ac->errstr : "out of memory");
        r->down_logged = 1;
        if (r->ac)
            redisAsyncFree(r->ac);
        r->ac = NULL;
        schedule_reconnect(r);
        return;
    }
    r->ac->data = r;
    redisLibeventAttach(r->ac, r->base);
    redisAsyncSetConnectCallback(r->ac, on_connect);
    redisAsyncSetDisconnectCallback(r->ac, on_disconnect);
}

static void schedule_reconnect(api_redis *r)
{
    struct timeval tv = {r->backoff_ms / 1000, (r->backoff_ms % 1000) * 1000};
    evtimer_add(r->reconnect_ev, &tv);
    r->backoff_ms *= 2;
    if (r->backoff_ms > BACKOFF_MAX_MS)
        r->backoff_ms = BACKOFF_MAX_MS;
}

api_redis *api_redis_new(const ctr_config *cfg, struct event_base *base,
                         char *errbuf, size_t errlen)
{
    api_redis *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        goto err;
    }
    r->base = base;
    r->db = cfg->redis_db;
    r->backoff_ms = BACKOFF_MIN_MS;
    if (ctr_config_split_addr(cfg->redis_addr, r->host, sizeof(r->host),
                              &r->port)) {
        snprintf(errbuf, errlen, "redis.addr: expected host:port");
        goto err;
    }
    r->password = strdup(cfg->redis_password);
    r->reconnect_ev = evtimer_new(base, do_connect, r);
    r->epoch_ev = evtimer_new(base, epoch_poll, r);
    if (r->password == NULL || r->reconnect_ev == NULL || r->epoch_ev == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        goto err;
    }
    do_connect(-1, 0, r);
    return r;
err:
    api_redis_free(r);
    return NULL;
}

int api_redis_ready(const api_redis *r)
{
    return r->ready && !r->suspect;
}

const char *api_redis_state(const api_redis *r)
{
    if (r->ready)
        return r->suspect ? "suspect" : "ready";
    if (r->ac && r->epoch_missing_logged)
        return "no_epoch";
    return r->ac ? "connecting" : "down";
}

void api_redis_free(api_redis *r)
{
    if (r == NULL)
        return;
    r->closing = 1;
    if (r->ac)
        redisAsyncFree(r->ac); /* pending callbacks fire with NULL */
    if (r->reconnect_ev)
        event_free(r->reconnect_ev);
    if (r->epoch_ev)
        event_free(r->epoch_ev);
    free(r->password);
    free(r);
}

/* ---- write ---- */

typedef struct write_op {
    api_redis_write_cb cb, late_cb;
    void *arg;
} write_op;

static enum api_redis_status classify(redisReply *reply, ctr_apply_result *res)
{
    char err[256];
    switch (ctr_apply_parse(reply, res, err, sizeof(err))) {
    case CTR_APPLY_OK: return API_REDIS_OK;
    case CTR_APPLY_OVERFLOW: return API_REDIS_OVERFLOW;
    default: ctr_warn("redis write failed: %s", err); return API_REDIS_ERROR;
    }
}

static void write_reply(redis_cmd *cmd, redisReply *reply,
                        enum api_redis_status st)
{
    write_op *op = cmd->owner;
    ctr_apply_result res;
    int late = st == CMD_LATE;

    memset(&res, 0, sizeof(res));
    if (reply)
        st = classify(reply, &res);
    else if (late)
        st = API_REDIS_DISCONNECTED;
    if (!late) {
        op->cb(st, &res, op->arg);
        if (st != API_REDIS_TIMEOUT)
            free(op);
        return;
    }
    if (op->late_cb)
        op->late_cb(st, &res, op->arg);
    free(op);
}

int api_redis_write(api_redis *r, const char *name, const ctr_apply_spec *w,
                    int timeout_ms, api_redis_write_cb cb,
                    api_redis_write_cb late_cb, void *arg)
{
    ctr_apply_argv a;
    write_op *op;

    if (!api_redis_ready(r) ||
        ctr_apply_write_argv(&a, r->write_sha, name, w) != 0)
        return -1;
    op = malloc(sizeof(*op));
    if (op == NULL)
        return -1;
    op->cb = cb;
    op->late_cb = late_cb;
    op->arg = arg;
    if (send_args(r, write_reply, op, -1, timeout_ms, a.argc, a.argv) != 0) {
        free(op);
        return -1;
    }
    return 0;
}

typedef struct undo_op {
    api_redis_undo_cb cb;
    void *arg;
} undo_op;

static void undo_reply(redis_cmd *cmd, redisReply *reply,
                       enum api_redis_status st)
{
    undo_op *op = cmd->owner;
    if (st == CMD_LATE) {
        free(op); /* the caller already heard about the timeout */
        return;
    }
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        st = API_REDIS_OK;
    else if (reply) {
        if (reply->type == REDIS_REPLY_ERROR)
            ctr_warn("redis undo failed: %s", reply->str);
        st = API_REDIS_ERROR;
    }
    op->cb(st, op->arg);
    if (st != API_REDIS_TIMEOUT || reply != NULL)
        free(op);
}

int api_redis_undo(api_redis *r, const char *name, const ctr_apply_spec *w,
                   const ctr_apply_result *res, int timeout_ms,
                   api_redis_undo_cb cb, void *arg)
{
    ctr_apply_argv a;

    if (!r->ready || ctr_apply_undo_argv(&a, r->undo_sha, name, w, res) != 0)
        return -1;
    undo_op *op = malloc(sizeof(*op));
    if (op == NULL)
        return -1;
    op->cb = cb;
    op->arg = arg;
    if (send_args(r, undo_reply, op, 0, timeout_ms, a.argc, a.argv) != 0) {
        free(op);
        return -1;
    }
    return 0;
}

/* ---- read ---- */

typedef struct get_op {
    api_redis_get_cb cb;
    void *arg;
    size_t n, pending;
    int answered;
    enum api_redis_status status;
    struct event *timer;
    api_redis_value values[];
} get_op;

static void get_finish(get_op *op)
{
    if (!op->answered) {
        op->answered = 1;
        op->cb(op->status, op->values, op->n, op->arg);
    }
    if (op->pending == 0) {
        if (op->timer)
            event_free(op->timer);
        free(op);
    }
}

static void get_timeout(evutil_socket_t fd, short what, void *arg)
{
    get_op *op = arg;
    (void)fd;
    (void)what;
    op->status = API_REDIS_TIMEOUT;
    get_finish(op);
}

static void get_reply(redis_cmd *cmd, redisReply *reply,
                      enum api_redis_status st)
{
    get_op *op = cmd->owner;
    api_redis_value *val = &op->values[cmd->index];

    op->pending--;
    if (reply == NULL) {
        if (op->status == API_REDIS_OK)
            op->status = st == CMD_LATE ? API_REDIS_DISCONNECTED : st;
    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
        if (reply->element[0]->type == REDIS_REPLY_NIL) {
            val->exists = 0;
        } else if (ctr_apply_reply_i64(reply->element[0], &val->value) == 0) {
            val->exists = 1;
            if (ctr_apply_reply_i64(reply->element[1], &val->updated_ms) != 0)
                val->updated_ms = 0;
        } else if (op->status == API_REDIS_OK) {
            op->status = API_REDIS_ERROR;
        }
    } else if (op->status == API_REDIS_OK) {
        if (reply->type == REDIS_REPLY_ERROR)
            ctr_warn("redis read failed: %s", reply->str);
        op->status = API_REDIS_ERROR;
    }
    if (op->pending == 0 || op->status != API_REDIS_OK)
        get_finish(op);
}

int api_redis_get(api_redis *r, const char *const *keys, size_t n,
                  int timeout_ms, api_redis_get_cb cb, void *arg)
{
    get_op *op;

    /* One timer covers the whole batch, so the commands carry none. */
    if (!api_redis_ready(r) || n == 0)
        return -1;
    op = calloc(1, sizeof(*op) + n * sizeof(api_redis_value));
    if (op == NULL)
        return -1;
    op->cb = cb;
    op->arg = arg;
    op->n = n;
    op->timer = evtimer_new(r->base, get_timeout, op);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    if (op->timer == NULL || evtimer_add(op->timer, &tv) != 0) {
        if (op->timer)
            event_free(op->timer);
        free(op);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *argv[] = {"HMGET", keys[i], "v", "t"};
        if (send_args(r, get_reply, op, (int)i, 0, 4, argv) != 0) {
            op->status = API_REDIS_DISCONNECTED;
            break;
        }
        op->pending++;
    }
    if (op->pending == 0) {
        /* nothing was sent: a failed call never fires its callback */
        event_free(op->timer);
        free(op);
        return -1;
    }
    return 0;
}

/* ---- idempotency records ---- */

typedef struct idem_op {
    api_redis_idem_cb cb;
    void *arg;
} idem_op;

static void idem_reply(redis_cmd *cmd, redisReply *reply,
                       enum api_redis_status st)
{
    idem_op *op = cmd->owner;
    int changed = 0;
    if (st == CMD_LATE) {
        free(op);
        return;
    }
    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        st = API_REDIS_OK;
        changed = reply->integer == 1;
    } else if (reply) {
        if (reply->type == REDIS_REPLY_ERROR)
            ctr_warn("redis idempotency record: %s", reply->str);
        st = API_REDIS_ERROR;
    }
    if (op->cb)
        op->cb(st, changed, op->arg);
    if (st != API_REDIS_TIMEOUT || reply != NULL)
        free(op);
}

int api_redis_idem(api_redis *r, const char *name, const char *key,
                   const char *mode, const char *arg2, const char *arg3,
                   int timeout_ms, api_redis_idem_cb cb, void *arg)
{
    char gkey[CTR_APPLY_KEY_MAX];
    if (!r->ready || ctr_apply_guard_key(gkey, sizeof(gkey), name, key) != 0)
        return -1;
    idem_op *op = malloc(sizeof(*op));
    if (op == NULL)
        return -1;
    op->cb = cb;
    op->arg = arg;
    const char *argv[] = {"EVALSHA", r->idem_sha,     "1", gkey, mode,
                          arg2,      arg3 ? arg3 : ""};
    if (send_args(r, idem_reply, op, 0, timeout_ms, 7, argv) != 0) {
        free(op);
        return -1;
    }
    return 0;
}
