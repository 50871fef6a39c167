/*
 * rclient.c - see rclient.h.
 */
#include "redis/rclient.h"

#include "redis/slots.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    MAX_NODES = 128,
    MAX_SCRIPTS = 16,
    MAX_HOPS = 8,          /* redirections and retries for one command */
    TRYAGAIN_SLEEP_MS = 50 /* a slot in the middle of a migration step */
};

typedef struct rnode {
    char host[CTR_HOST_MAX];
    int port;
    int replicas;
    redisContext *ctx;
    int queued; /* pipelined commands whose replies are unread */
} rnode;

typedef struct queued_cmd {
    char *buf; /* RESP, from redisFormatCommandArgv */
    int len;
    int slot;
    int node;
} queued_cmd;

struct ctr_rclient {
    const ctr_config *cfg;
    int cluster;
    struct timeval tv;
    rnode nodes[MAX_NODES];
    int nnodes;
    int16_t map[CTR_SLOTS]; /* slot -> node, -1 unknown */
    int refresh_wanted;
    char *scripts[MAX_SCRIPTS];
    int nscripts;
    queued_cmd *queue;
    size_t nqueue, capqueue;
    char err[256];
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void set_err(ctr_rclient *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_err(ctr_rclient *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
}

static void node_drop(ctr_rclient *c, int ni)
{
    if (c->nodes[ni].ctx)
        redisFree(c->nodes[ni].ctx);
    c->nodes[ni].ctx = NULL;
    c->nodes[ni].queued = 0;
    if (c->cluster)
        c->refresh_wanted = 1; /* a failover may have moved its slots */
}

/* The node's connection, connecting (AUTH, SELECT) if needed; NULL with
 * c->err. */
static redisContext *node_ctx(ctr_rclient *c, int ni)
{
    rnode *n = &c->nodes[ni];
    if (n->ctx)
        return n->ctx;
    redisContext *ctx = redisConnectWithTimeout(n->host, n->port, c->tv);
    if (ctx == NULL || ctx->err) {
        set_err(c, "could not connect to redis at %s:%d: %s", n->host, n->port,
                ctx ? ctx->errstr : "out of memory");
        if (ctx)
            redisFree(ctx);
        return NULL;
    }
    redisSetTimeout(ctx, c->tv);
    redisReply *r = NULL;
    if (c->cfg->redis_password[0]) {
        r = redisCommand(ctx, "AUTH %s", c->cfg->redis_password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            goto failed;
        freeReplyObject(r);
        r = NULL;
    }
    if (!c->cluster && c->cfg->redis_db) {
        r = redisCommand(ctx, "SELECT %d", c->cfg->redis_db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            goto failed;
        freeReplyObject(r);
    }
    n->ctx = ctx;
    return ctx;
failed:
    set_err(c, "redis at %s:%d: %s", n->host, n->port,
            r ? r->str : ctx->errstr);
    freeReplyObject(r);
    redisFree(ctx);
    return NULL;
}

static int node_find(ctr_rclient *c, const char *host, int port)
{
    for (int i = 0; i < c->nnodes; i++)
        if (c->nodes[i].port == port && strcmp(c->nodes[i].host, host) == 0)
            return i;
    if (c->nnodes == MAX_NODES || strlen(host) >= CTR_HOST_MAX)
        return -1;
    rnode *n = &c->nodes[c->nnodes];
    memset(n, 0, sizeof(*n));
    strcpy(n->host, host);
    n->port = port;
    return c->nnodes++;
}

/* Reads the slot map from the first node that gives one. 0 or -1. */
static int refresh(ctr_rclient *c)
{
    /* seeds last: a known node is likelier to be current */
    size_t pos = 0;
    char host[CTR_HOST_MAX];
    int port;
    while (ctr_addr_list_next(c->cfg->redis_cluster_nodes, &pos, host,
                              sizeof(host), &port) == 1)
        node_find(c, host, port);
    for (int i = 0; i < c->nnodes; i++) {
        redisContext *ctx = node_ctx(c, i);
        if (ctx == NULL)
            continue;
        redisReply *r = redisCommand(ctx, "CLUSTER SLOTS");
        ctr_slot_range *ranges;
        size_t n;
        if (r == NULL) {
            set_err(c, "redis at %s:%d: %s", c->nodes[i].host, c->nodes[i].port,
                    ctx->errstr);
            node_drop(c, i);
            continue;
        }
        int rc = ctr_slots_parse(r, c->nodes[i].host, &ranges, &n);
        if (rc != 0 || n == 0) {
            set_err(c, "redis at %s:%d: no slot map: %s", c->nodes[i].host,
                    c->nodes[i].port,
                    r->type == REDIS_REPLY_ERROR ? r->str : "empty");
            freeReplyObject(r);
            continue;
        }
        freeReplyObject(r);
        for (int s = 0; s < CTR_SLOTS; s++)
            c->map[s] = -1;
        for (size_t k = 0; k < n; k++) {
            int ni = node_find(c, ranges[k].host, ranges[k].port);
            if (ni < 0)
                continue;
            c->nodes[ni].replicas = ranges[k].replicas;
            for (int s = ranges[k].start; s <= ranges[k].end; s++)
                c->map[s] = (int16_t)ni;
        }
        free(ranges);
        c->refresh_wanted = 0;
        return 0;
    }
    return -1;
}

ctr_rclient *ctr_rclient_new(const ctr_config *cfg, int timeout_ms,
                             char *errbuf, size_t errlen)
{
    ctr_rclient *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    c->cfg = cfg;
    c->cluster = cfg->redis_cluster_nodes[0] != '\0';
    c->tv.tv_sec = timeout_ms / 1000;
    c->tv.tv_usec = (timeout_ms % 1000) * 1000;
    for (int s = 0; s < CTR_SLOTS; s++)
        c->map[s] = c->cluster ? -1 : 0;
    if (!c->cluster) {
        char host[CTR_HOST_MAX];
        int port;
        if (ctr_config_split_addr(cfg->redis_addr, host, sizeof(host), &port) !=
            0) {
            snprintf(errbuf, errlen, "redis.addr: expected host:port");
            goto err;
        }
        node_find(c, host, port);
        if (node_ctx(c, 0) == NULL) {
            snprintf(errbuf, errlen, "%s", c->err);
            goto err;
        }
    } else if (refresh(c) != 0) {
        snprintf(errbuf, errlen, "redis cluster %s: %s",
                 cfg->redis_cluster_nodes,
                 c->err[0] ? c->err : "no node reachable");
        goto err;
    }
    return c;
err:
    ctr_rclient_free(c);
    return NULL;
}

void ctr_rclient_free(ctr_rclient *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < c->nnodes; i++)
        if (c->nodes[i].ctx)
            redisFree(c->nodes[i].ctx);
    for (int i = 0; i < c->nscripts; i++)
        free(c->scripts[i]);
    for (size_t i = 0; i < c->nqueue; i++)
        redisFreeCommand(c->queue[i].buf);
    free(c->queue);
    free(c);
}

const char *ctr_rclient_errstr(const ctr_rclient *c)
{
    return c->err;
}

/* The node serving slot (-1: any), reloading the map if it is stale. */
static int node_for(ctr_rclient *c, int slot)
{
    if (c->cluster && c->refresh_wanted)
        (void)refresh(c);
    if (slot < 0 || !c->cluster) {
        for (int i = 0; i < c->nnodes; i++)
            if (!c->cluster || c->nodes[i].ctx)
                return i;
        return c->nnodes ? 0 : -1;
    }
    if (c->map[slot] < 0 && refresh(c) != 0)
        return -1;
    return c->map[slot];
}

static int transient(const redisReply *r)
{
    static const char *const words[] = {"TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN",
                                        "LOADING"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strncmp(r->str, words[i], strlen(words[i])) == 0)
            return 1;
    return 0;
}

/* Loads the remembered scripts on node ni (after NOSCRIPT). 0 or -1. */
static int reload_scripts(ctr_rclient *c, int ni)
{
    redisContext *ctx = node_ctx(c, ni);
    for (int i = 0; ctx && i < c->nscripts; i++) {
        redisReply *r = redisCommand(ctx, "SCRIPT LOAD %s", c->scripts[i]);
        int ok = r && r->type == REDIS_REPLY_STRING;
        freeReplyObject(r);
        if (!ok)
            return -1;
    }
    return ctx ? 0 : -1;
}

/* Sends the formatted command to the owner of slot, following redirects.
 * The reply, or NULL with c->err. */
static redisReply *route(ctr_rclient *c, int slot, const char *buf, int len)
{
    int asking = -1; /* node an ASK sent us to */
    int reloaded = 0;
    for (int hop = 0; hop < MAX_HOPS; hop++) {
        int ni = asking >= 0 ? asking : node_for(c, slot);
        if (ni < 0) {
            char why[sizeof(c->err)];
            snprintf(why, sizeof(why), "%s", c->err);
            set_err(c, "no redis node serves slot %d%s%s", slot,
                    why[0] ? ": " : "", why);
            return NULL;
        }
        redisContext *ctx = node_ctx(c, ni);
        if (ctx == NULL) {
            if (!c->cluster)
                return NULL;
            c->refresh_wanted = 1;
            continue;
        }
        if (asking >= 0)
            redisAppendCommand(ctx, "ASKING");
        redisAppendFormattedCommand(ctx, buf, (size_t)len);
        redisReply *r = NULL;
        if (asking >= 0 && redisGetReply(ctx, (void **)&r) == REDIS_OK) {
            /* ASKING's +OK; anything else means the replies on this
             * connection are not the ones expected: drop it */
            int ok =
                r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
            freeReplyObject(r);
            r = NULL;
            if (!ok) {
                set_err(c, "redis at %s:%d: ASKING was not answered OK",
                        c->nodes[ni].host, c->nodes[ni].port);
                node_drop(c, ni);
                return NULL;
            }
        }
        if (ctx->err == 0 && redisGetReply(ctx, (void **)&r) != REDIS_OK)
            r = NULL;
        if (r == NULL) {
            set_err(c, "redis at %s:%d: %s", c->nodes[ni].host,
                    c->nodes[ni].port, ctx->errstr);
            node_drop(c, ni);
            return NULL; /* the command may have run: the caller decides */
        }
        asking = -1;
        if (r->type != REDIS_REPLY_ERROR)
            return r;
        if (strncmp(r->str, "NOSCRIPT", 8) == 0 && !reloaded && c->nscripts) {
            freeReplyObject(r);
            reloaded = 1;
            if (reload_scripts(c, ni) != 0)
                return NULL;
            continue;
        }
        if (!c->cluster)
            return r;
        char host[CTR_HOST_MAX];
        int port, rslot;
        int kind =
            ctr_redirect_parse(r->str, &rslot, host, sizeof(host), &port);
        if (kind != 0) {
            int to = node_find(c, host[0] ? host : c->nodes[ni].host, port);
            freeReplyObject(r);
            if (to < 0) {
                set_err(c, "too many redis nodes");
                return NULL;
            }
            if (kind == 1) {
                c->map[rslot] = (int16_t)to;
                c->refresh_wanted = 1;
            } else {
                asking = to;
            }
            continue;
        }
        if (transient(r)) {
            set_err(c, "redis at %s:%d: %s", c->nodes[ni].host,
                    c->nodes[ni].port, r->str);
            freeReplyObject(r);
            c->refresh_wanted = 1;
            sleep_ms(TRYAGAIN_SLEEP_MS);
            continue;
        }
        return r;
    }
    if (!c->err[0])
        set_err(c, "redis: too many redirections for slot %d", slot);
    return NULL;
}

static int key_slot(const ctr_rclient *c, const char *key)
{
    return key && c->cluster ? ctr_key_slot(key, strlen(key)) : -1;
}

/* Routes a command formatted by hiredis (len < 0: formatting failed) and
 * frees it. */
static redisReply *route_formatted(ctr_rclient *c, const char *key, char *buf,
                                   int len)
{
    if (len < 0) {
        set_err(c, "out of memory");
        return NULL;
    }
    c->err[0] = '\0';
    redisReply *r = route(c, key_slot(c, key), buf, len);
    redisFreeCommand(buf);
    return r;
}

redisReply *ctr_rclient_argv(ctr_rclient *c, const char *key, int argc,
                             const char **argv, const size_t *lens)
{
    char *buf = NULL;
    int len = redisFormatCommandArgv(&buf, argc, argv, lens);
    return route_formatted(c, key, buf, len);
}

redisReply *ctr_rclient_cmd(ctr_rclient *c, const char *key, const char *fmt,
                            ...)
{
    char *buf = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&buf, fmt, ap);
    va_end(ap);
    return route_formatted(c, key, buf, len);
}

/* Node i is the one server, or a master with slots in the map. */
static int serves_slots(const ctr_rclient *c, int i)
{
    if (!c->cluster)
        return 1;
    for (int s = 0; s < CTR_SLOTS; s++)
        if (c->map[s] == i)
            return 1;
    return 0;
}

int ctr_rclient_script(ctr_rclient *c, const char *text, char sha[41])
{
    int loaded = 0, known = 0;
    /* a script loaded before is loaded again (its sha is wanted), but
     * remembered once */
    for (int i = 0; i < c->nscripts && !known; i++)
        known = strcmp(c->scripts[i], text) == 0;
    if (!known) {
        if (c->nscripts == MAX_SCRIPTS ||
            (c->scripts[c->nscripts] = strdup(text)) == NULL) {
            set_err(c, "too many scripts");
            return -1;
        }
        c->nscripts++;
    }
    for (int i = 0; i < c->nnodes; i++) {
        if (!serves_slots(c, i))
            continue;
        redisContext *ctx = node_ctx(c, i);
        if (ctx == NULL)
            return -1; /* c->err says why */
        redisReply *r = redisCommand(ctx, "SCRIPT LOAD %s", text);
        if (r == NULL || r->type != REDIS_REPLY_STRING || r->len != 40) {
            set_err(c, "could not load a script on %s:%d: %s", c->nodes[i].host,
                    c->nodes[i].port,
                    r && r->type == REDIS_REPLY_ERROR ? r->str : ctx->errstr);
            if (r == NULL)
                node_drop(c, i);
            freeReplyObject(r);
            return -1;
        }
        memcpy(sha, r->str, 40);
        sha[40] = '\0';
        freeReplyObject(r);
        loaded = 1;
    }
    if (!loaded)
        set_err(c, "no redis node to load a script on");
    return loaded ? 0 : -1;
}

int ctr_rclient_wait(ctr_rclient *c, const char *key, int timeout_ms)
{
    if (!c->cluster || c->cfg->redis_wait_replicas <= 0)
        return 0;
    int ni = node_for(c, key_slot(c, key));
    if (ni < 0 || c->nodes[ni].ctx == NULL) {
        set_err(c, "no connection to the master of %s", key);
        return -1;
    }
    int want = c->nodes[ni].replicas < c->cfg->redis_wait_replicas
                   ? c->nodes[ni].replicas
                   : c->cfg->redis_wait_replicas;
    if (want == 0)
        return 0;
    redisReply *r =
        redisCommand(c->nodes[ni].ctx, "WAIT %d %d", want, timeout_ms);
    if (r == NULL) {
        set_err(c, "redis at %s:%d: %s", c->nodes[ni].host, c->nodes[ni].port,
                c->nodes[ni].ctx->errstr);
        node_drop(c, ni);
        return -1;
    }
    int ok = r->type == REDIS_REPLY_INTEGER && r->integer >= want;
    freeReplyObject(r);
    return ok ? 0 : 1;
}

int ctr_rclient_append(ctr_rclient *c, const char *key, int argc,
                       const char **argv, const size_t *lens)
{
    if (c->nqueue == c->capqueue) {
        size_t cap = c->capqueue ? c->capqueue * 2 : 256;
        queued_cmd *q = realloc(c->queue, cap * sizeof(*q));
        if (q == NULL)
            goto oom;
        c->queue = q;
        c->capqueue = cap;
    }
    queued_cmd *q = &c->queue[c->nqueue];
    q->len = redisFormatCommandArgv(&q->buf, argc, argv, lens);
    if (q->len < 0)
        goto oom;
    q->slot = key_slot(c, key);
    q->node = node_for(c, q->slot);
    redisContext *ctx = q->node >= 0 ? node_ctx(c, q->node) : NULL;
    if (ctx == NULL ||
        redisAppendFormattedCommand(ctx, q->buf, (size_t)q->len) != REDIS_OK)
        q->node = -1; /* sent by route() when the replies are read */
    else
        c->nodes[q->node].queued++;
    c->nqueue++;
    return 0;
oom:
    set_err(c, "out of memory");
    return -1;
}

size_t ctr_rclient_queued(const ctr_rclient *c)
{
    return c->nqueue;
}

int ctr_rclient_drain(ctr_rclient *c,
                      void (*on_reply)(const redisReply *r, size_t i,
                                       void *arg),
                      void *arg)
{
    int failed = 0;
    char first[sizeof(c->err)] = "";
    /*
     * Every pipelined reply is read first, and only then are the
     * redirected, refused and unsent commands routed one at a time: route()
     * sends on a node's connection (ASKING, the command, CLUSTER SLOTS for
     * a new map) and reads the first reply there, which while other
     * replies were still queued on it was another command's. A fold call
     * then took a second call's answer, and the second one ASKING's +OK:
     * both looked refused, although both had run.
     */
    redisReply **got = calloc(c->nqueue ? c->nqueue : 1, sizeof(*got));
    unsigned char *reroute = calloc(c->nqueue ? c->nqueue : 1, 1);
    if (got == NULL || reroute == NULL) {
        free(got);
        free(reroute);
        set_err(c, "out of memory");
        for (size_t i = 0; i < c->nqueue; i++)
            redisFreeCommand(c->queue[i].buf);
        for (int k = 0; k < c->nnodes; k++)
            if (c->nodes[k].queued > 0)
                node_drop(c, k); /* its replies can no longer be matched */
        c->nqueue = 0;
        return -1;
    }
    for (size_t i = 0; i < c->nqueue; i++) {
        queued_cmd *q = &c->queue[i];
        rnode *n = q->node >= 0 ? &c->nodes[q->node] : NULL;
        if (n && n->ctx && n->queued > 0) {
            n->queued--;
            if (redisGetReply(n->ctx, (void **)&got[i]) != REDIS_OK) {
                set_err(c, "redis at %s:%d: %s", n->host, n->port,
                        n->ctx->errstr);
                node_drop(c, q->node);
                got[i] = NULL; /* it may have run: the caller decides */
            }
        } else {
            reroute[i] = 1; /* never queued, or its server failed */
        }
    }
    for (size_t i = 0; i < c->nqueue; i++) {
        queued_cmd *q = &c->queue[i];
        redisReply *r = got[i];
        char host[CTR_HOST_MAX];
        int port, slot;
        if (r && r->type == REDIS_REPLY_ERROR && c->cluster &&
            (ctr_redirect_parse(r->str, &slot, host, sizeof(host), &port) ||
             transient(r))) {
            /* moved while queued: route() follows it */
            freeReplyObject(r);
            r = NULL;
            reroute[i] = 1;
        }
        if (reroute[i])
            r = route(c, q->slot, q->buf, q->len);
        if (on_reply)
            on_reply(r, i, arg);
        if ((r == NULL || (r->type == REDIS_REPLY_ERROR && !on_reply)) &&
            !failed) {
            failed = 1;
            snprintf(first, sizeof(first), "%s",
                     r           ? r->str
                     : c->err[0] ? c->err
                                 : "redis failed");
        }
        freeReplyObject(r);
        redisFreeCommand(q->buf);
    }
    free(got);
    free(reroute);
    c->nqueue = 0;
    if (failed)
        snprintf(c->err, sizeof(c->err), "%s", first);
    return failed ? -1 : 0;
}

int ctr_rclient_each_master(ctr_rclient *c,
                            int (*fn)(redisContext *node, void *arg), void *arg)
{
    if (c->cluster && c->refresh_wanted && refresh(c) != 0)
        return -1;
    for (int i = 0; i < c->nnodes; i++) {
        if (!serves_slots(c, i))
            continue;
        redisContext *ctx = node_ctx(c, i);
        if (ctx == NULL)
            return -1;
        int rc = fn(ctx, arg);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int ctr_rclient_master_slots(ctr_rclient *c, int *slots, int max)
{
    int n = 0;
    if (!c->cluster) {
        if (max > 0)
            slots[n++] = 0;
        return n;
    }
    if (c->refresh_wanted && refresh(c) != 0)
        return -1;
    for (int i = 0; i < c->nnodes && n < max; i++)
        for (int s = 0; s < CTR_SLOTS; s++)
            if (c->map[s] == i) {
                slots[n++] = s;
                break;
            }
    return n;
}
