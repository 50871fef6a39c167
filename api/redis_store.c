/*
 * redis_store.c - see redis_store.h.
 */
#include "api/redis_store.h"
#include "api/reply_pool.h"

#include "api/metrics.h"
#include "common/timeutil.h"

#include "common/log.h"
#include "common/strbuf.h"
#include "common/name.h"
#include "redis/slots.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    BACKOFF_MIN_MS = 100,
    BACKOFF_MAX_MS = 2000,
    MAX_NODES = 64,
    MAX_HOPS = 5,           /* redirections of one command */
    REFRESH_SOON_MS = 100,  /* after a MOVED or a lost node */
    REFRESH_EVERY_MS = 1000 /* the slot map and the epoch, in a cluster */
};

/* Status passed to on_reply for an answer that came after the deadline. */
#define CMD_LATE ((enum api_redis_status)100)

/* One server: the only one, or a master of the cluster. */
typedef struct rnode {
    api_redis *r;
    int idx;
    redisAsyncContext *ac;
    char host[CTR_HOST_MAX];
    int port;
    int replicas;   /* the shard's, from CLUSTER SLOTS */
    int ready;      /* connected, authenticated, scripts loaded */
    int suspect;    /* a write timed out: the server may hang; until a PING
                     * comes back, writes and reads go elsewhere */
    int probing;    /* that PING is in flight */
    int setup_left; /* SCRIPT LOAD answers still to come */
    int used;       /* serves slots (or is the only server): keep connected */
    struct event *reconnect_ev;
    int backoff_ms;
    int down_logged; /* one line per outage, not one per retry */
} rnode;

struct api_redis {
    struct event_base *base;
    int cluster;
    rnode *nodes[MAX_NODES];
    int nnodes;
    int16_t map[CTR_SLOTS]; /* slot -> node, -1 unknown */
    int map_ok;
    int epoch_ok; /* the epoch key was seen (single: since connecting) */
    int epoch_missing_logged;
    int epoch_inflight;
    struct event *epoch_ev;
    struct event *refresh_ev;
    int refresh_inflight;
    char *seeds;
    char *password;
    int db;
    int wait_replicas;
    int write_timeout_ms;
    char write_sha[41];
    char undo_sha[41];
    char finish_sha[41];
    char idem_sha[41];
    char epoch[64]; /* the last marker seen, for the events' header */
    int closing;
    api_redis_cluster_stats stats;
    /* writes of this loop turn, sent together (api_redis_write) */
    struct write_op **writes;
    size_t nwrite, write_cap, write_seq;
    struct event *write_ev;
    /* finishes of this loop turn, sent together (api_redis_finish) */
    struct finish_item *finishes;
    size_t nfinish, finish_cap;
    struct event *finish_ev;
    int finish_timeout_ms;
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
    int node;   /* where it was sent */
    int hops;   /* redirections followed */
    char *resp; /* cluster: the command again, for a redirection */
    size_t resp_len;
} redis_cmd;

static void schedule_reconnect(rnode *n);
static void node_connect(evutil_socket_t fd, short what, void *arg);
static void refresh_soon(api_redis *r);

static void cmd_free(redis_cmd *cmd)
{
    free(cmd->resp);
    free(cmd);
}

static void probe_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    rnode *n = privdata;
    (void)ac;
    n->probing = 0;
    if (replyp != NULL && n->suspect) {
        n->suspect = 0;
        ctr_info("redis at %s:%d answers again", n->host, n->port);
    }
}

/* A command outlived its deadline: the server may hang (stopped, swapping,
 * a slow script). Send nothing more until a PING, queued behind what is
 * stuck, comes back. */
static void mark_suspect(rnode *n)
{
    if (!n->suspect)
        ctr_warn("redis at %s:%d missed a deadline; reading from postgresql "
                 "and sending writes through kafka until it answers",
                 n->host, n->port);
    n->suspect = 1;
    if (!n->probing && n->ac &&
        redisAsyncCommand(n->ac, probe_reply, n, "PING") == REDIS_OK)
        n->probing = 1;
}

static void cmd_timeout(evutil_socket_t fd, short what, void *arg)
{
    redis_cmd *cmd = arg;
    (void)fd;
    (void)what;
    cmd->answered = 1;
    api_metrics_redis((double)(ctr_time_mono_us() - cmd->t0_us) / 1e6, 1);
    if (cmd->index < 0 && cmd->node >= 0)
        mark_suspect(cmd->r->nodes[cmd->node]);
    cmd->on_reply(cmd, NULL, API_REDIS_TIMEOUT);
}

/* The node for host:port, added (and connecting) if new; -1 if full. */
static int node_find(api_redis *r, const char *host, int port)
{
    for (int i = 0; i < r->nnodes; i++)
        if (r->nodes[i]->port == port && strcmp(r->nodes[i]->host, host) == 0)
            return i;
    if (r->nnodes == MAX_NODES || strlen(host) >= CTR_HOST_MAX)
        return -1;
    rnode *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return -1;
    n->r = r;
    n->idx = r->nnodes;
    strcpy(n->host, host);
    n->port = port;
    n->backoff_ms = BACKOFF_MIN_MS;
    n->reconnect_ev = evtimer_new(r->base, node_connect, n);
    if (n->reconnect_ev == NULL) {
        free(n);
        return -1;
    }
    r->nodes[r->nnodes++] = n;
    return n->idx;
}

/* Where a command on key goes: the node, or -1. */
static int node_of(const api_redis *r, const char *key)
{
    return r->cluster ? r->map[ctr_key_slot(key, strlen(key))] : 0;
}

/* Queues the command's RESP on node ni. */
static int cmd_put(api_redis *r, redis_cmd *cmd, int ni, int asking);

static void cmd_reply(redisAsyncContext *ac, void *replyp, void *privdata);

static void scripts_load(rnode *n);

static void write_flush(evutil_socket_t fd, short what, void *arg);

/*
 * A cluster's answer that is not the command's own: a redirection (sent
 * on, 1), or a state in which the command did not run (TRYAGAIN during a
 * slot migration, CLUSTERDOWN, NOSCRIPT on a promoted replica: 2).
 * 0 otherwise. NOSCRIPT has the node load the scripts again, in either
 * mode.
 */

static int cluster_redirect(redis_cmd *cmd, redisReply *reply)
{
    api_redis *r = cmd->r;
    if (reply == NULL || reply->type != REDIS_REPLY_ERROR)
        return 0;
    /* SCRIPT FLUSH, or a node that lost its scripts: load them again */
    if (strncmp(reply->str, "NOSCRIPT", 8) == 0 && cmd->node >= 0 &&
        r->nodes[cmd->node]->ac)
        scripts_load(r->nodes[cmd->node]);
    if (!r->cluster)
        return 0;
    char host[CTR_HOST_MAX];
    int port, slot;
    int kind = ctr_redirect_parse(reply->str, &slot, host, sizeof(host), &port);
    if (kind == 0) {
        static const char *const words[] = {
            "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "LOADING", "NOSCRIPT"};
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
            if (strncmp(reply->str, words[i], strlen(words[i])) == 0) {
                r->stats.unavailable++;
                refresh_soon(r);
                return 2;
            }
        return 0;
    }
    const char *from = cmd->node >= 0 ? r->nodes[cmd->node]->host : "";
    int to = node_find(r, host[0] ? host : from, port);
    if (kind == 1) {
        r->stats.moved++;
        if (to >= 0)
            r->map[slot] = (int16_t)to;
        refresh_soon(r);
    } else {
        r->stats.ask++;
    }
    if (to < 0 || cmd->answered || ++cmd->hops > MAX_HOPS ||
        cmd->resp == NULL || cmd_put(r, cmd, to, kind == 2) != 0)
        return 2;
    return 1;
}

static void cmd_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    redis_cmd *cmd = privdata;
    redisReply *reply = replyp;
    (void)ac;

    switch (cluster_redirect(cmd, reply)) {
    case 1: return; /* sent on: this callback fires again */
    case 2:
        /* it did not run: nothing to take back, nothing to wait for */
        if (cmd->timer)
            event_free(cmd->timer);
        cmd->timer = NULL;
        cmd->on_reply(cmd, NULL,
                      cmd->answered ? CMD_LATE : API_REDIS_UNAVAILABLE);
        cmd_free(cmd);
        return;
    default: break;
    }
    if (cmd->timer)
        event_free(cmd->timer);
    cmd->timer = NULL;
    if (!cmd->answered) {
        cmd->answered = 1;
        api_metrics_redis((double)(ctr_time_mono_us() - cmd->t0_us) / 1e6,
                          reply == NULL || reply->type == REDIS_REPLY_ERROR);
        cmd->on_reply(cmd, reply,
                      reply == NULL ? API_REDIS_DISCONNECTED : API_REDIS_OK);
    } else {
        /* already timed out: on_reply gets a second, "late" call */
        cmd->on_reply(cmd, reply, CMD_LATE);
    }
    cmd_free(cmd);
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

static int cmd_put(api_redis *r, redis_cmd *cmd, int ni, int asking)
{
    rnode *n = r->nodes[ni];
    /* a node still setting up would run the command before its scripts */
    if (!n->ready || n->ac == NULL)
        return -1;
    if (asking && redisAsyncCommand(n->ac, NULL, NULL, "ASKING") != REDIS_OK)
        return -1;
    if (redisAsyncFormattedCommand(n->ac, cmd_reply, cmd, cmd->resp,
                                   cmd->resp_len) != REDIS_OK)
        return -1;
    cmd->node = ni;
    return 0;
}

/* Sends argv to the server of key; on success the command's on_reply
 * fires as described. */
static int cmd_send(api_redis *r, redis_cmd *cmd, const char *key,
                    int timeout_ms, int argc, const char **argv,
                    const size_t *argvlen)
{
    int ni = node_of(r, key);
    if (ni < 0 || !r->nodes[ni]->ready)
        return -1;
    rnode *n = r->nodes[ni];
    cmd->r = r;
    cmd->node = ni;
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
    char buf[4096];
    long len = resp_format(buf, sizeof(buf), argc, argv, argvlen);
    int rc;
    if (r->cluster) {
        /* kept for a redirection */
        char *f = NULL;
        int flen = len > 0 ? (int)len
                           : redisFormatCommandArgv(&f, argc, argv, argvlen);
        cmd->resp = flen > 0 ? malloc((size_t)flen) : NULL;
        if (cmd->resp)
            memcpy(cmd->resp, len > 0 ? buf : f, (size_t)flen);
        cmd->resp_len = (size_t)flen;
        if (f)
            redisFreeCommand(f);
        rc = cmd->resp ? cmd_put(r, cmd, ni, 0) : -1;
    } else {
        rc = len > 0 ? redisAsyncFormattedCommand(n->ac, cmd_reply, cmd, buf,
                                                  (size_t)len)
                     : redisAsyncCommandArgv(n->ac, cmd_reply, cmd, argc, argv,
                                             argvlen);
    }
    if (rc != REDIS_OK) {
        if (cmd->timer)
            event_free(cmd->timer);
        cmd->timer = NULL;
        free(cmd->resp);
        cmd->resp = NULL;
        return -1;
    }
    return 0;
}

/* Sends NUL-terminated argv with on_reply(owner) to the server of key; on
 * failure nothing is sent and owner is untouched. */
static int send_args(api_redis *r,
                     void (*on_reply)(redis_cmd *, redisReply *,
                                      enum api_redis_status),
                     void *owner, int index, int timeout_ms, const char *key,
                     int argc, const char **argv)
{
    size_t argvlen[2 + 3 * API_REDIS_GET_MAX];
    redis_cmd *cmd;

    if (argc > 2 + 3 * API_REDIS_GET_MAX ||
        (cmd = calloc(1, sizeof(*cmd))) == NULL)
        return -1;
    for (int i = 0; i < argc; i++)
        argvlen[i] = strlen(argv[i]);
    cmd->on_reply = on_reply;
    cmd->owner = owner;
    cmd->index = index;
    if (cmd_send(r, cmd, key, timeout_ms, argc, argv, argvlen) != 0) {
        free(cmd);
        return -1;
    }
    return 0;
}

/* ---- connection management ---- */

static int setup_check(rnode *n, redisReply *reply)
{
    if (reply == NULL)
        return -1; /* disconnected; the disconnect callback reconnects */
    if (reply->type == REDIS_REPLY_ERROR) {
        ctr_error("redis setup at %s:%d failed: %s", n->host, n->port,
                  reply->str);
        redisAsyncDisconnect(n->ac);
        return -1;
    }
    return 0;
}

static void setup_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    (void)ac;
    setup_check(privdata, replyp);
}

static void epoch_check(api_redis *r);

/* The node is usable once its scripts are loaded (the last setup step;
 * the epoch is checked on top: epoch_check). */
static void node_setup_step(rnode *n)
{
    if (--n->setup_left > 0)
        return;
    api_redis *r = n->r;
    if (!r->write_sha[0] || !r->undo_sha[0] || !r->finish_sha[0] ||
        !r->idem_sha[0])
        return;
    n->ready = 1;
    n->suspect = 0;
    n->backoff_ms = BACKOFF_MIN_MS;
    if (r->cluster && n->down_logged)
        ctr_info("connected to redis at %s:%d", n->host, n->port);
    n->down_logged = 0;
    if (!r->cluster)
        epoch_check(r);
}

static void script_reply(redisAsyncContext *ac, void *replyp, void *privdata,
                         char *dst)
{
    rnode *n = privdata;
    redisReply *reply = replyp;
    (void)ac;
    if (setup_check(n, reply) != 0)
        return;
    size_t len = reply->type == REDIS_REPLY_STRING && reply->len == 40 ? 40 : 0;
    memcpy(dst, reply->str, len);
    dst[len] = '\0';
    node_setup_step(n);
}

static void write_sha_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    script_reply(ac, replyp, privdata, ((rnode *)privdata)->r->write_sha);
}

static void undo_sha_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    script_reply(ac, replyp, privdata, ((rnode *)privdata)->r->undo_sha);
}

static void finish_sha_reply(redisAsyncContext *ac, void *replyp,
                             void *privdata)
{
    script_reply(ac, replyp, privdata, ((rnode *)privdata)->r->finish_sha);
}

static void idem_sha_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    script_reply(ac, replyp, privdata, ((rnode *)privdata)->r->idem_sha);
}

/* A marker's text names a data set in use: not empty, not a restore's. */
static int epoch_in_use(const char *s, size_t len)
{
    static const char restoring[] = "restoring:";
    return len > 0 && !(len >= sizeof(restoring) - 1 &&
                        memcmp(s, restoring, sizeof(restoring) - 1) == 0);
}

/*
 * The epoch markers (redis/apply.h). A Redis that restarted without its
 * data has none; its values would be wrong (too low) until the applier
 * has rebuilt them from PostgreSQL and the log and set them again. Every
 * write and read checks the marker of its own slot, in the same command,
 * so this flag is only a hint that spares Redis the attempts: it follows
 * the marker of slot 0, read at connect, with every map refresh, and
 * whenever a command found its slot's marker missing.
 */
static void epoch_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    api_redis *r = privdata;
    redisReply *reply = replyp;
    (void)ac;
    r->epoch_inflight = 0;
    if (reply == NULL)
        return; /* reconnecting asks again */
    if (reply->type == REDIS_REPLY_ERROR) {
        /* LOADING, or its slot moving: as it was, and ask again */
        struct timeval tv = {0, 250 * 1000};
        evtimer_add(r->epoch_ev, &tv);
        return;
    }
    if (reply->type != REDIS_REPLY_STRING ||
        !epoch_in_use(reply->str, reply->len)) {
        if (!r->epoch_missing_logged)
            ctr_warn("redis %s has no epoch key %s (started empty?); "
                     "waiting for the applier to rebuild it",
                     r->cluster ? r->seeds : r->nodes[0]->host,
                     CTR_APPLY_EPOCH_PREFIX);
        r->epoch_missing_logged = 1;
        r->epoch_ok = 0;
        struct timeval tv = {0, 250 * 1000};
        evtimer_add(r->epoch_ev, &tv);
        return;
    }
    if (!r->epoch_ok) {
        rnode *n = r->nodes[0];
        if (r->cluster)
            ctr_info("connected to redis cluster %s (epoch %.*s)", r->seeds,
                     (int)reply->len, reply->str);
        else
            ctr_info("connected to redis at %s:%d (epoch %.*s)", n->host,
                     n->port, (int)reply->len, reply->str);
    }
    r->epoch_ok = 1;
    r->epoch_missing_logged = 0;
    if (reply->len < sizeof(r->epoch)) {
        memcpy(r->epoch, reply->str, reply->len);
        r->epoch[reply->len] = '\0';
    }
}

static void epoch_check(api_redis *r)
{
    char key[CTR_APPLY_EPOCH_KEY_MAX];
    ctr_apply_epoch_key(key, 0);
    int ni = node_of(r, key);
    if (r->epoch_inflight || ni < 0 || !r->nodes[ni]->ready)
        return;
    if (redisAsyncCommand(r->nodes[ni]->ac, epoch_reply, r, "GET %s", key) ==
        REDIS_OK)
        r->epoch_inflight = 1;
}

/* A command found its slot without an epoch: stop using the store until
 * the markers are back (epoch_reply). */
static void epoch_lost(api_redis *r)
{
    if (r->epoch_ok)
        ctr_warn("redis has no epoch for a counter's slot (restarted empty, "
                 "or being restored); reading from postgresql and sending "
                 "writes through kafka until it is restored");
    r->epoch_ok = 0;
    r->epoch_missing_logged = 1;
    struct timeval tv = {0, 250 * 1000};
    if (r->epoch_ev && !r->closing)
        evtimer_add(r->epoch_ev, &tv);
}

static void epoch_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    epoch_check(arg);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rnode *n = ac->data;
    api_redis *r = n->r;
    if (status != REDIS_OK) {
        if (!n->down_logged)
            ctr_warn("could not connect to redis at %s:%d: %s; retrying",
                     n->host, n->port, ac->errstr);
        n->down_logged = 1;
        n->ac = NULL; /* hiredis frees the context after this callback */
        if (n->used)  /* a master that failed over is left alone */
            schedule_reconnect(n);
        if (r->cluster)
            refresh_soon(r);
        return;
    }
    /* Pipelined in order: setup completes before any command of ours. */
    if (r->password[0])
        redisAsyncCommand(n->ac, setup_reply, n, "AUTH %s", r->password);
    if (r->db && !r->cluster)
        redisAsyncCommand(n->ac, setup_reply, n, "SELECT %d", r->db);
    scripts_load(n);
}

static void scripts_load(rnode *n)
{
    n->setup_left = 4;
    redisAsyncCommand(n->ac, write_sha_reply, n, "SCRIPT LOAD %s",
                      ctr_script_writes);
    redisAsyncCommand(n->ac, undo_sha_reply, n, "SCRIPT LOAD %s",
                      ctr_script_undo);
    redisAsyncCommand(n->ac, finish_sha_reply, n, "SCRIPT LOAD %s",
                      ctr_script_finish);
    redisAsyncCommand(n->ac, idem_sha_reply, n, "SCRIPT LOAD %s",
                      ctr_script_idem);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rnode *n = ac->data;
    api_redis *r = n->r;
    n->ready = 0;
    n->suspect = 0;
    n->probing = 0;
    n->ac = NULL;
    if (!r->cluster) {
        r->epoch_ok = 0; /* it may come back empty */
        r->epoch_inflight = 0;
        evtimer_del(r->epoch_ev);
    }
    if (r->closing)
        return;
    ctr_warn("lost connection to redis at %s:%d: %s", n->host, n->port,
             status == REDIS_OK ? "closed" : ac->errstr);
    if (r->cluster)
        refresh_soon(r); /* a replica may be taking its slots over */
    if (n->used)
        schedule_reconnect(n);
}

static void node_connect(evutil_socket_t fd, short what, void *arg)
{
    rnode *n = arg;
    (void)fd;
    (void)what;
    if (n->ac || n->r->closing || !n->used)
        return;
    n->ac = redisAsyncConnect(n->host, n->port);
    if (n->ac == NULL || n->ac->err) {
        if (!n->down_logged)
            ctr_warn("could not connect to redis at %s:%d: %s; retrying",
                     n->host, n->port, n->ac ? n->ac->errstr : "out of memory");
        n->down_logged = 1;
        if (n->ac)
            redisAsyncFree(n->ac);
        n->ac = NULL;
        schedule_reconnect(n);
        return;
    }
    n->ac->data = n;
    /* nothing is read yet: its replies come from the pool from the first */
    n->ac->c.reader->fn = &api_reply_pool_functions;
    redisLibeventAttach(n->ac, n->r->base);
    redisAsyncSetConnectCallback(n->ac, on_connect);
    redisAsyncSetDisconnectCallback(n->ac, on_disconnect);
}

static void schedule_reconnect(rnode *n)
{
    struct timeval tv = {n->backoff_ms / 1000, (n->backoff_ms % 1000) * 1000};
    evtimer_add(n->reconnect_ev, &tv);
    n->backoff_ms *= 2;
    if (n->backoff_ms > BACKOFF_MAX_MS)
        n->backoff_ms = BACKOFF_MAX_MS;
}

/* ---- the cluster's slot map ---- */

static void slots_reply(redisAsyncContext *ac, void *replyp, void *privdata)
{
    api_redis *r = privdata;
    rnode *from = ac->data;
    ctr_slot_range *ranges;
    size_t n;

    r->refresh_inflight = 0;
    if (ctr_slots_parse(replyp, from->host, &ranges, &n) != 0 || n == 0) {
        if (replyp)
            ctr_warn("redis at %s:%d gave no slot map", from->host, from->port);
        return;
    }
    int16_t map[CTR_SLOTS];
    for (int s = 0; s < CTR_SLOTS; s++)
        map[s] = -1;
    for (int i = 0; i < r->nnodes; i++)
        r->nodes[i]->used = 0;
    for (size_t k = 0; k < n; k++) {
        int ni = node_find(r, ranges[k].host, ranges[k].port);
        if (ni < 0)
            continue;
        rnode *node = r->nodes[ni];
        node->replicas = ranges[k].replicas;
        node->used = 1;
        for (int s = ranges[k].start; s <= ranges[k].end; s++)
            map[s] = (int16_t)ni;
    }
    free(ranges);
    memcpy(r->map, map, sizeof(map));
    r->stats.refreshes++;
    for (int i = 0; i < r->nnodes; i++) {
        rnode *node = r->nodes[i];
        if (node->used && node->ac == NULL &&
            !evtimer_pending(node->reconnect_ev, NULL))
            node_connect(-1, 0, node);
    }
    if (!r->map_ok)
        ctr_info("redis cluster %s: slot map of %zu ranges", r->seeds, n);
    r->map_ok = 1;
    epoch_check(r);
}

/* Asks a connected node (a master, or a seed) for the slot map; connects
 * to the seeds while none is. */
static void refresh_tick(evutil_socket_t fd, short what, void *arg)
{
    api_redis *r = arg;
    (void)fd;
    (void)what;
    struct timeval tv = {REFRESH_EVERY_MS / 1000,
                         (REFRESH_EVERY_MS % 1000) * 1000};
    evtimer_add(r->refresh_ev, &tv);
    if (r->refresh_inflight)
        return;
    int asked = 0;
    for (int i = 0; i < r->nnodes && !asked; i++) {
        rnode *n = r->nodes[i];
        if (n->ac && n->ready && !n->suspect &&
            redisAsyncCommand(n->ac, slots_reply, r, "CLUSTER SLOTS") ==
                REDIS_OK)
            asked = 1;
    }
    if (asked) {
        r->refresh_inflight = 1;
        return;
    }
    /* nothing connected: every seed and known node tries again */
    for (int i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        n->used = 1;
        if (n->ac == NULL && !evtimer_pending(n->reconnect_ev, NULL))
            node_connect(-1, 0, n);
    }
}

static void refresh_soon(api_redis *r)
{
    struct timeval tv = {0, REFRESH_SOON_MS * 1000};
    if (!r->closing)
        evtimer_add(r->refresh_ev, &tv);
}

api_redis *api_redis_new(const ctr_config *cfg, struct event_base *base,
                         char *errbuf, size_t errlen)
{
    api_redis *r = calloc(1, sizeof(*r));
    char host[CTR_HOST_MAX];
    int port;
    if (r == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        goto err;
    }
    r->base = base;
    r->db = cfg->redis_db;
    r->cluster = cfg->redis_cluster_nodes[0] != '\0';
    r->wait_replicas = cfg->redis_wait_replicas;
    r->write_timeout_ms = cfg->redis_write_timeout_ms;
    r->password = strdup(cfg->redis_password);
    r->seeds = strdup(cfg->redis_cluster_nodes);
    r->epoch_ev = evtimer_new(base, epoch_poll, r);
    r->refresh_ev = evtimer_new(base, refresh_tick, r);
    if (r->password == NULL || r->seeds == NULL || r->epoch_ev == NULL ||
        r->refresh_ev == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        goto err;
    }
    for (int s = 0; s < CTR_SLOTS; s++)
        r->map[s] = r->cluster ? -1 : 0;
    if (!r->cluster) {
        if (ctr_config_split_addr(cfg->redis_addr, host, sizeof(host), &port) ||
            node_find(r, host, port) != 0) {
            snprintf(errbuf, errlen, "redis.addr: expected host:port");
            goto err;
        }
        r->nodes[0]->used = 1;
        r->map_ok = 1;
        node_connect(-1, 0, r->nodes[0]);
        return r;
    }
    size_t pos = 0;
    int rc;
    while ((rc = ctr_addr_list_next(r->seeds, &pos, host, sizeof(host),
                                    &port)) == 1)
        if (node_find(r, host, port) < 0)
            break;
    if (rc != 0 || r->nnodes == 0) {
        snprintf(errbuf, errlen, "redis.cluster_nodes: expected host:port,...");
        goto err;
    }
    /* the first tick connects to the seeds, the next asks for the map */
    refresh_tick(-1, 0, r);
    refresh_soon(r);
    return r;
err:
    api_redis_free(r);
    return NULL;
}

/* The server of key is connected, set up and answering. */
static int key_ready(const api_redis *r, const char *key)
{
    int ni = node_of(r, key);
    return ni >= 0 && r->nodes[ni]->ready && !r->nodes[ni]->suspect;
}

int api_redis_ready(const api_redis *r)
{
    if (!r->map_ok || !r->epoch_ok)
        return 0;
    if (r->cluster)
        return 1; /* per key: key_ready */
    return r->nodes[0]->ready && !r->nodes[0]->suspect;
}

const char *api_redis_state(const api_redis *r)
{
    if (r->map_ok && r->epoch_ok) {
        int suspect = 0, down = 0;
        for (int i = 0; i < r->nnodes; i++) {
            const rnode *n = r->nodes[i];
            if (n->used && !n->ready)
                down = 1;
            suspect |= n->used && n->suspect;
        }
        if (!r->cluster)
            return down ? "connecting" : suspect ? "suspect" : "ready";
        return down || suspect ? "degraded" : "ready";
    }
    if (r->epoch_missing_logged)
        return "no_epoch";
    for (int i = 0; i < r->nnodes; i++)
        if (r->nodes[i]->ac)
            return "connecting";
    return "down";
}

void api_redis_cluster_stats_get(const api_redis *r,
                                 api_redis_cluster_stats *out)
{
    *out = r->stats;
}

void api_redis_free(api_redis *r)
{
    if (r == NULL)
        return;
    r->closing = 1;
    write_flush(-1, 0, r); /* queued writes were never sent: not applied */
    for (int i = 0; i < r->nnodes; i++) {
        rnode *n = r->nodes[i];
        if (n->ac)
            redisAsyncFree(n->ac); /* pending callbacks fire with NULL */
        event_free(n->reconnect_ev);
        free(n);
    }
    if (r->epoch_ev)
        event_free(r->epoch_ev);
    if (r->refresh_ev)
        event_free(r->refresh_ev);
    if (r->finish_ev)
        event_free(r->finish_ev);
    if (r->write_ev)
        event_free(r->write_ev);
    free(r->finishes); /* unsent: the resolver finishes them */
    free(r->password);
    free(r->seeds);
    free(r);
    api_reply_pool_drain();
}

/* ---- write ---- */

/* A write's 9 keys and 16 arguments of write.lua (redis/apply.h). */
enum { WRITE_KEYS = 9, WRITE_ARGS = 25 };

typedef struct write_op {
    api_redis_write_cb cb, late_cb;
    void *arg;
    ctr_apply_result res; /* held while WAIT runs */
    /* queued until the end of the loop turn (write_flush) */
    int slot;   /* its keys' slot in a cluster, 0 on one server */
    size_t seq; /* its place in the turn */
    int timeout_ms;
    const char *args[WRITE_ARGS]; /* into text */
    size_t lens[WRITE_ARGS];
    char text[];
} write_op;

/* The writes of one call of the writes script, answered together. */
typedef struct write_group {
    size_t n;
    write_op *ops[];
} write_group;

static enum api_redis_status classify(redisReply *reply, ctr_apply_result *res)
{
    char err[256];
    switch (ctr_apply_parse(reply, res, err, sizeof(err))) {
    case CTR_APPLY_OK: return API_REDIS_OK;
    case CTR_APPLY_OVERFLOW: return API_REDIS_OVERFLOW;
    default: ctr_warn("redis write failed: %s", err); return API_REDIS_ERROR;
    }
}

/*
 * The answer to the WAIT after a write in a cluster. A write that reached
 * fewer replicas than asked (or whose WAIT ran out) is API_REDIS_WAIT_SHORT:
 * a failover may yet lose it with its pending entry, so the caller must
 * not publish it; if it survives, the resolver publishes it.
 */
static void wait_reply(redis_cmd *cmd, redisReply *reply,
                       enum api_redis_status st)
{
    write_op *op = cmd->owner;
    if (st == CMD_LATE) {
        free(op); /* the write was answered at the timeout */
        return;
    }
    int whole = reply != NULL && reply->type == REDIS_REPLY_INTEGER &&
                reply->integer >= cmd->index;
    if (!whole)
        cmd->r->stats.wait_short++;
    op->cb(whole ? API_REDIS_OK : API_REDIS_WAIT_SHORT, &op->res, op->arg);
    if (st != API_REDIS_TIMEOUT)
        free(op);
}

/* In a cluster with replicas, sends WAIT after a write on node ni; 0 when
 * sent (wait_reply answers), -1 when there is nothing to wait for. */
static int write_wait(api_redis *r, write_op *op, int ni)
{
    if (!r->cluster || r->wait_replicas <= 0 || ni < 0)
        return -1;
    rnode *n = r->nodes[ni];
    int want = n->replicas < r->wait_replicas ? n->replicas : r->wait_replicas;
    if (want <= 0 || !n->ready)
        return -1;
    char num[16], ms[16];
    snprintf(num, sizeof(num), "%d", want);
    snprintf(ms, sizeof(ms), "%d", r->write_timeout_ms);
    redis_cmd *cmd = calloc(1, sizeof(*cmd));
    if (cmd == NULL)
        return -1;
    const char *argv[] = {"WAIT", num, ms};
    size_t lens[] = {4, strlen(num), strlen(ms)};
    cmd->on_reply = wait_reply;
    cmd->owner = op;
    cmd->index = want;
    cmd->r = r;
    cmd->node = ni;
    cmd->t0_us = ctr_time_mono_us();
    /* the client's deadline a little past the server's own */
    struct timeval tv = {(r->write_timeout_ms + 100) / 1000,
                         ((r->write_timeout_ms + 100) % 1000) * 1000};
    cmd->timer = evtimer_new(r->base, cmd_timeout, cmd);
    if (cmd->timer == NULL || evtimer_add(cmd->timer, &tv) != 0 ||
        redisAsyncCommandArgv(n->ac, cmd_reply, cmd, 3, argv, lens) !=
            REDIS_OK) {
        if (cmd->timer)
            event_free(cmd->timer);
        free(cmd);
        return -1;
    }
    return 0;
}

/* One write's answer (reply: its element of the writes script's answer;
 * NULL with st when the call got none, CMD_LATE after its timeout). */
static void write_settle(api_redis *r, int node, write_op *op,
                         redisReply *reply, enum api_redis_status st)
{
    ctr_apply_result res;
    int late = st == CMD_LATE;

    memset(&res, 0, sizeof(res));
    if (reply)
        st = classify(reply, &res);
    else if (late)
        st = API_REDIS_DISCONNECTED;
    if (st == API_REDIS_OK && res.outcome == CTR_APPLY_NO_EPOCH)
        epoch_lost(r);
    else if (st == API_REDIS_OK && res.epoch[0])
        memcpy(r->epoch, res.epoch, sizeof(res.epoch));
    if (!late) {
        if (st == API_REDIS_OK && res.outcome == CTR_APPLY_APPLIED) {
            op->res = res;
            if (write_wait(r, op, node) == 0)
                return;
        }
        op->cb(st, &res, op->arg);
        if (st != API_REDIS_TIMEOUT)
            free(op);
        return;
    }
    if (op->late_cb)
        op->late_cb(st, &res, op->arg);
    free(op);
}

/* The writes script's answer: an array with each write's own, in order;
 * anything else (an error, none) is every write's. */
static void group_reply(redis_cmd *cmd, redisReply *reply,
                        enum api_redis_status st)
{
    write_group *g = cmd->owner;
    int each = reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
               reply->elements == g->n;
    for (size_t i = 0; i < g->n; i++)
        write_settle(cmd->r, cmd->node, g->ops[i],
                     each ? reply->element[i] : reply, st);
    if (st != API_REDIS_TIMEOUT || reply != NULL)
        free(g);
}

/*
 * The api's writes go out at the end of their loop turn, those of one
 * server (of one slot in a cluster, where a script touches one slot) in
 * one call of the writes script, WRITES_PER_CALL at most: under load a
 * turn holds tens of writes, and each call and each command on the
 * connection cost Redis more than the write itself. Writes of one slot
 * keep their order; nothing waits longer than the turn.
 */
enum { WRITES_PER_CALL = 32 };

static void write_send(api_redis *r, write_op *const *ops, size_t n)
{
    const char *argv[3 + WRITE_ARGS * WRITES_PER_CALL];
    size_t lens[3 + WRITE_ARGS * WRITES_PER_CALL];
    char nkeys[16];
    int argc = 0;
    write_group *g = malloc(sizeof(*g) + n * sizeof(g->ops[0]));
    redis_cmd *cmd = calloc(1, sizeof(*cmd));
    if (g == NULL || cmd == NULL)
        goto fail;
    g->n = n;
    memcpy(g->ops, ops, n * sizeof(ops[0]));
    snprintf(nkeys, sizeof(nkeys), "%zu", WRITE_KEYS * n);
    lens[argc] = 7;
    argv[argc++] = "EVALSHA";
    lens[argc] = strlen(r->write_sha);
    argv[argc++] = r->write_sha;
    lens[argc] = strlen(nkeys);
    argv[argc++] = nkeys;
    /* the keys of every write, then the arguments of every write */
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < WRITE_KEYS; k++) {
            lens[argc] = ops[i]->lens[k];
            argv[argc++] = ops[i]->args[k];
        }
    for (size_t i = 0; i < n; i++)
        for (int k = WRITE_KEYS; k < WRITE_ARGS; k++) {
            lens[argc] = ops[i]->lens[k];
            argv[argc++] = ops[i]->args[k];
        }
    cmd->on_reply = group_reply;
    cmd->owner = g;
    cmd->index = -1;
    if (cmd_send(r, cmd, ops[0]->args[0], ops[0]->timeout_ms, argc, argv,
                 lens) == 0)
        return;
fail:
    /* nothing was sent: nothing applied */
    free(cmd);
    free(g);
    for (size_t i = 0; i < n; i++)
        write_settle(r, -1, ops[i], NULL, API_REDIS_UNAVAILABLE);
}

static int write_cmp(const void *a, const void *b)
{
    const write_op *x = *(write_op *const *)a, *y = *(write_op *const *)b;
    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void write_flush(evutil_socket_t fd, short what, void *arg)
{
    api_redis *r = arg;
    (void)fd;
    (void)what;
    /* taken whole: a write settled here may queue another for next turn */
    write_op **q = r->writes;
    size_t n = r->nwrite;
    r->writes = NULL;
    r->nwrite = r->write_cap = 0;
    if (n == 0) {
        free(q);
        return;
    }
    if (r->cluster)
        qsort(q, n, sizeof(q[0]), write_cmp);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && j - i < WRITES_PER_CALL && q[j]->slot == q[i]->slot)
            j++;
        if (r->closing) {
            for (size_t k = i; k < j; k++)
                write_settle(r, -1, q[k], NULL, API_REDIS_UNAVAILABLE);
        } else {
            write_send(r, q + i, j - i);
        }
        i = j;
    }
    free(q);
}

int api_redis_write(api_redis *r, const char *name, const ctr_apply_spec *w,
                    int timeout_ms, api_redis_write_cb cb,
                    api_redis_write_cb late_cb, void *arg)
{
    ctr_apply_argv a;
    write_op *op;

    if (!api_redis_ready(r) ||
        ctr_apply_write_argv(&a, r->write_sha, name, w) != 0 ||
        !key_ready(r, a.argv[3]))
        return -1;
    if (r->write_ev == NULL &&
        (r->write_ev = event_new(r->base, -1, 0, write_flush, r)) == NULL)
        return -1;
    if (r->nwrite == r->write_cap) {
        size_t cap = r->write_cap ? 2 * r->write_cap : 64;
        write_op **grown = realloc(r->writes, cap * sizeof(*grown));
        if (grown == NULL)
            return -1;
        r->writes = grown;
        r->write_cap = cap;
    }
    /* the arguments are copied: the caller's strings need not outlive
     * this call */
    size_t lens[WRITE_ARGS], total = 0;
    for (int k = 0; k < WRITE_ARGS; k++) {
        lens[k] = strlen(a.argv[3 + k]);
        total += lens[k] + 1;
    }
    op = malloc(sizeof(*op) + total);
    if (op == NULL)
        return -1;
    op->cb = cb;
    op->late_cb = late_cb;
    op->arg = arg;
    op->slot = r->cluster ? ctr_key_slot(a.argv[3], lens[0]) : 0;
    op->seq = r->write_seq++;
    op->timeout_ms = timeout_ms;
    char *at = op->text;
    for (int k = 0; k < WRITE_ARGS; k++) {
        memcpy(at, a.argv[3 + k], lens[k] + 1);
        op->args[k] = at;
        op->lens[k] = lens[k];
        at += lens[k] + 1;
    }
    r->writes[r->nwrite++] = op;
    if (r->nwrite == 1)
        event_active(r->write_ev, 0, 0);
    return 0;
}

typedef struct undo_op {
    api_redis_undo_cb cb;
    void *arg;
} undo_op;

/* The answer to an undo or a finish: the script's integer. */
static void undo_reply(redis_cmd *cmd, redisReply *reply,
                       enum api_redis_status st)
{
    undo_op *op = cmd->owner;
    long long result = 0;
    if (st == CMD_LATE) {
        free(op); /* the caller already heard about the timeout */
        return;
    }
    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        st = API_REDIS_OK;
        result = reply->integer;
    } else if (reply) {
        if (reply->type == REDIS_REPLY_ERROR)
            ctr_warn("redis undo or finish failed: %s", reply->str);
        st = API_REDIS_ERROR;
    }
    if (op->cb)
        op->cb(st, (int)result, op->arg);
    if (st != API_REDIS_TIMEOUT || reply != NULL)
        free(op);
}

static int send_pending(api_redis *r, ctr_apply_argv *a, int timeout_ms,
                        api_redis_undo_cb cb, void *arg)
{
    undo_op *op = malloc(sizeof(*op));
    if (op == NULL)
        return -1;
    op->cb = cb;
    op->arg = arg;
    if (send_args(r, undo_reply, op, 0, timeout_ms, a->argv[3], a->argc,
                  a->argv) != 0) {
        free(op);
        return -1;
    }
    return 0;
}

int api_redis_undo(api_redis *r, const char *name, const ctr_apply_spec *w,
                   int timeout_ms, api_redis_undo_cb cb, void *arg)
{
    ctr_apply_argv a;
    if (!r->map_ok || ctr_apply_undo_argv(&a, r->undo_sha, name, w) != 0)
        return -1;
    return send_pending(r, &a, timeout_ms, cb, arg);
}

/*
 * Finishes are not answered to anyone, and finish.lua takes any number of
 * writes of one value key: those of one loop turn (a poll's delivery
 * reports come in runs) go out together, one call per value key and up to
 * FINISH_PER_CALL writes each, where one call per write cost Redis as much
 * as the write itself. A finish that never reaches Redis leaves its entry
 * to the resolver, as before.
 */
enum { FINISH_PER_CALL = 64 };

typedef struct finish_item {
    char vkey[CTR_APPLY_KEY_MAX]; /* the value key; the others beside it */
    char pkey[CTR_APPLY_KEY_MAX];
    char lkey[CTR_APPLY_KEY_MAX];
    char hkey[CTR_APPLY_KEY_MAX];
    char gkey[CTR_APPLY_KEY_MAX];
    char id[CTR_EVENT_ID_MAX + 1];
    char token[24];
} finish_item;

static int finish_cmp(const void *a, const void *b)
{
    return strcmp((*(finish_item *const *)a)->vkey,
                  (*(finish_item *const *)b)->vkey);
}

/* One finish.lua call for *items[0..n) (one value key). */
static void finish_send(api_redis *r, finish_item *const *items, size_t n)
{
    const char *argv[7 + 3 * FINISH_PER_CALL];
    char nkeys[16];
    int argc = 0;
    undo_op *op = malloc(sizeof(*op));
    if (op == NULL) {
        ctr_warn("could not finish %zu pending writes of %s (out of memory); "
                 "the resolver will",
                 n, items[0]->vkey);
        return;
    }
    op->cb = NULL;
    op->arg = NULL;
    snprintf(nkeys, sizeof(nkeys), "%zu", 4 + n);
    argv[argc++] = "EVALSHA";
    argv[argc++] = r->finish_sha;
    argv[argc++] = nkeys;
    argv[argc++] = items[0]->vkey;
    argv[argc++] = items[0]->pkey;
    argv[argc++] = items[0]->lkey;
    argv[argc++] = items[0]->hkey;
    for (size_t i = 0; i < n; i++)
        argv[argc++] = items[i]->gkey;
    for (size_t i = 0; i < n; i++) {
        argv[argc++] = items[i]->id;
        argv[argc++] = items[i]->token;
    }
    if (send_args(r, undo_reply, op, 0, r->finish_timeout_ms, items[0]->vkey,
                  argc, argv) != 0) {
        free(op);
        ctr_warn("could not send the finish of %zu pending writes of %s; "
                 "the resolver will",
                 n, items[0]->vkey);
    }
}

static void finish_flush(evutil_socket_t fd, short what, void *arg)
{
    api_redis *r = arg;
    (void)fd;
    (void)what;
    size_t n = r->nfinish;
    r->nfinish = 0;
    if (n == 0 || r->closing)
        return;
    finish_item **by_key = malloc(n * sizeof(*by_key));
    if (by_key == NULL) {
        ctr_warn("could not finish %zu pending writes (out of memory); the "
                 "resolver will",
                 n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        by_key[i] = &r->finishes[i];
    qsort(by_key, n, sizeof(*by_key), finish_cmp);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && j - i < FINISH_PER_CALL &&
               strcmp(by_key[j]->vkey, by_key[i]->vkey) == 0)
            j++;
        finish_send(r, by_key + i, j - i);
        i = j;
    }
    free(by_key);
}

int api_redis_finish(api_redis *r, const char *name, const ctr_apply_spec *w,
                     int timeout_ms)
{
    ctr_apply_argv a;
    const char *tok = w->idem_token ? w->idem_token : "";
    if (!r->map_ok || ctr_apply_finish_argv(&a, r->finish_sha, name, w) != 0 ||
        strlen(w->pending_id) > CTR_EVENT_ID_MAX ||
        strlen(tok) >= sizeof(((finish_item *)0)->token))
        return -1;
    if (r->finish_ev == NULL &&
        (r->finish_ev = event_new(r->base, -1, 0, finish_flush, r)) == NULL)
        return -1;
    if (r->nfinish == r->finish_cap) {
        size_t cap = r->finish_cap ? 2 * r->finish_cap : 64;
        finish_item *grown = realloc(r->finishes, cap * sizeof(*grown));
        if (grown == NULL)
            return -1;
        r->finishes = grown;
        r->finish_cap = cap;
    }
    finish_item *it = &r->finishes[r->nfinish++];
    /* the keys as ctr_apply_finish_argv laid them out (see redis/apply.c) */
    strcpy(it->vkey, a.keys[0]);
    strcpy(it->pkey, a.keys[2]);
    strcpy(it->lkey, a.keys[4]);
    strcpy(it->hkey, a.keys[5]);
    strcpy(it->gkey, a.keys[3]);
    strcpy(it->id, w->pending_id);
    strcpy(it->token, tok);
    r->finish_timeout_ms = timeout_ms;
    if (r->nfinish == 1)
        event_active(r->finish_ev, 0, 0);
    return 0;
}

int api_redis_queued(const api_redis *r)
{
    return r->nwrite > 0 || r->nfinish > 0;
}

const char *api_redis_epoch(const api_redis *r)
{
    return r->epoch;
}

/* ---- read ---- */

typedef struct get_op {
    api_redis_get_cb cb;
    void *arg;
    size_t n, pending;
    size_t per; /* names per MGET: n on one server, 1 in a cluster */
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

/* values[from..] from an MGET's answer [v, t, lo, v, t, lo, ..., marker];
 * a value that is not an integer fails the whole read, a stamp that is
 * not reads as none, a low worst case that is not as none. */
static void get_take(get_op *op, size_t from, const redisReply *reply)
{
    for (size_t i = 0; i < reply->elements / 3; i++) {
        const redisReply *v = reply->element[3 * i];
        api_redis_value *val = &op->values[from + i];
        if (v->type == REDIS_REPLY_NIL) {
            val->exists = 0;
        } else if (ctr_apply_reply_i64(v, &val->value) == 0) {
            val->exists = 1;
            if (ctr_apply_reply_i64(reply->element[3 * i + 1],
                                    &val->updated_ms) != 0)
                val->updated_ms = 0;
            if (ctr_apply_reply_i64(reply->element[3 * i + 2],
                                    &val->confirmed) != 0)
                val->confirmed = val->value;
        } else {
            op->status = API_REDIS_ERROR;
        }
    }
}

/* One MGET's answer: all the names (cmd->index 0, one server) or the one
 * name cmd->index (a cluster, where each name has its own slot). */
static void get_reply(redis_cmd *cmd, redisReply *reply,
                      enum api_redis_status st)
{
    get_op *op = cmd->owner;
    size_t names = op->per;

    op->pending--;
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY &&
        reply->elements == 3 * names + 1) {
        const redisReply *m = reply->element[3 * names];
        if (m->type != REDIS_REPLY_STRING || !epoch_in_use(m->str, m->len)) {
            /* the slot's data set is gone or being rebuilt */
            if (op->status == API_REDIS_OK)
                op->status = API_REDIS_UNAVAILABLE;
            if (st != CMD_LATE)
                epoch_lost(cmd->r);
        } else if (op->status == API_REDIS_OK) {
            get_take(op, (size_t)cmd->index, reply);
        }
    } else if (op->status == API_REDIS_OK) {
        if (reply == NULL) {
            op->status = st == CMD_LATE ? API_REDIS_DISCONNECTED : st;
        } else {
            if (reply->type == REDIS_REPLY_ERROR)
                ctr_warn("redis read failed: %s", reply->str);
            op->status = API_REDIS_ERROR;
        }
    }
    if (op->pending == 0 || op->status != API_REDIS_OK)
        get_finish(op);
}

int api_redis_get(api_redis *r, const char *const *keys, size_t n,
                  int timeout_ms, api_redis_get_cb cb, void *arg)
{
    get_op *op;

    /* One timer covers the whole batch, so the commands carry none. */
    if (!api_redis_ready(r) || n == 0 || n > API_REDIS_GET_MAX)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!key_ready(r, keys[i]))
            return -1; /* all from Redis or none */
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
    /* Value and stamp are two string keys, so one MGET reads a whole batch
     * from one server; a cluster refuses keys of different slots in one
     * command, so there each name has its own. */
    size_t per = op->per = r->cluster ? 1 : n;
    for (size_t i = 0; i < n; i += per) {
        const char *argv[2 + 3 * API_REDIS_GET_MAX];
        char stamps[API_REDIS_GET_MAX][API_KEY_MAX + 2];
        char los[API_REDIS_GET_MAX][API_KEY_MAX + 3];
        char marker[CTR_APPLY_EPOCH_KEY_MAX];
        int fits = 1;
        argv[0] = "MGET";
        for (size_t j = 0; j < per; j++) {
            /* cannot fail for a key of API_KEY_MAX; if it did, no read */
            fits &= ctr_apply_stamp_key(stamps[j], sizeof(stamps[j]),
                                        keys[i + j]) == 0 &&
                    ctr_apply_lo_key(los[j], sizeof(los[j]), keys[i + j]) == 0;
            argv[1 + 3 * j] = keys[i + j];
            argv[2 + 3 * j] = stamps[j];
            argv[3 + 3 * j] = los[j];
        }
        /* one server holds every marker; in a cluster, the key's own */
        ctr_apply_epoch_key(marker, ctr_key_slot(keys[i], strlen(keys[i])));
        argv[1 + 3 * per] = marker;
        if (!fits || send_args(r, get_reply, op, (int)i, 0, keys[i],
                               2 + 3 * (int)per, argv) != 0) {
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

int api_redis_idem_claim(api_redis *r, const char *name, const char *key,
                         const char *expected, const char *replacement,
                         int timeout_ms, api_redis_idem_cb cb, void *arg)
{
    char gkey[CTR_APPLY_KEY_MAX];
    if (!r->map_ok || !r->epoch_ok ||
        ctr_apply_guard_key(gkey, sizeof(gkey), name, key) != 0)
        return -1;
    idem_op *op = malloc(sizeof(*op));
    if (op == NULL)
        return -1;
    op->cb = cb;
    op->arg = arg;
    const char *argv[] = {"EVALSHA", r->idem_sha, "1",
                          gkey,      expected,    replacement};
    if (send_args(r, idem_reply, op, 0, timeout_ms, gkey, 6, argv) != 0) {
        free(op);
        return -1;
    }
    return 0;
}
