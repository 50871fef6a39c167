/*
 * rclient.h - a synchronous Redis client for one server or a Redis
 * Cluster, for the applier, the restore and counterctl.
 *
 * With redis.cluster_nodes empty it is one connection to redis.addr (AUTH,
 * SELECT). Otherwise it keeps a connection per master, a slot map from
 * CLUSTER SLOTS, sends each command to the master of its key's slot,
 * follows MOVED (and reloads the map before the next command) and ASK
 * (ASKING first), and loads a script again on a node that answers
 * NOSCRIPT (a promoted replica has none). Every command carries the
 * timeout given at creation.
 *
 * Errors: a command returns NULL when no server gave an answer it could
 * use (connection lost, cluster down, redirections without end); the
 * reason is in ctr_rclient_errstr. An error reply of the command itself
 * (an overflow, a wrong type) is returned as a reply.
 */
#ifndef COUNTER_REDIS_RCLIENT_H
#define COUNTER_REDIS_RCLIENT_H

#include "common/config.h"

#include <hiredis/hiredis.h>
#include <stddef.h>

typedef struct ctr_rclient ctr_rclient;

/* Connects (and in cluster mode reads the slot map). NULL with the reason
 * in errbuf. */
ctr_rclient *ctr_rclient_new(const ctr_config *cfg, int timeout_ms,
                             char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

void ctr_rclient_free(ctr_rclient *c);

/* Why the last command returned NULL (or the pipeline failed). */
const char *ctr_rclient_errstr(const ctr_rclient *c);

/* Runs argv on the server owning key (any server when key is NULL).
 * lens: the arguments' lengths, or NULL for NUL-terminated arguments
 * (hiredis takes their strlen). */
redisReply *ctr_rclient_argv(ctr_rclient *c, const char *key, int argc,
                             const char **argv, const size_t *lens);

/* The same with a printf-like hiredis format. */
redisReply *ctr_rclient_cmd(ctr_rclient *c, const char *key, const char *fmt,
                            ...);

/*
 * Loads script text on every master and remembers it, so that a node
 * answering NOSCRIPT later gets it again. sha gets its 40-digit SHA-1.
 * 0 or -1.
 */
int ctr_rclient_script(ctr_rclient *c, const char *text, char sha[41]);

/*
 * In cluster mode with redis.wait_replicas > 0: WAIT until that many
 * replicas (at most the shard's) have the writes made so far on the master
 * of key. 0 when they have (or nothing is to wait for), 1 when fewer did
 * within timeout_ms, -1 when the master's connection failed.
 */
int ctr_rclient_wait(ctr_rclient *c, const char *key, int timeout_ms);

/*
 * Pipelining: commands queued per server (on_reply's i counts them from 0
 * after each drain), then every answer read by ctr_rclient_drain. A
 * command whose server failed before its answer is sent again, routed
 * anew: queue only commands that may run twice (reads, SET, HSET, ...).
 * lens as for ctr_rclient_argv.
 */
int ctr_rclient_append(ctr_rclient *c, const char *key, int argc,
                       const char **argv, const size_t *lens);

/*
 * Reads every queued answer, calling on_reply (if not NULL) with each
 * answer in queue order (r NULL when none could be had; r lives only
 * during the call). 0, or -1 if a server failed or, without on_reply, any
 * answer was an error (the first reason in ctr_rclient_errstr).
 */
int ctr_rclient_drain(ctr_rclient *c,
                      void (*on_reply)(const redisReply *r, size_t i,
                                       void *arg),
                      void *arg);

/* Commands queued since the last drain. */
size_t ctr_rclient_queued(const ctr_rclient *c);

/*
 * Calls fn on a connection to each master (the one server when not a
 * cluster), for commands that go to every node (SCAN). Commands queued
 * with ctr_rclient_append may share that connection: fn drains them
 * before it reads an answer of its own. Stops at the first
 * fn that returns non-zero and returns that; -1 if a master is
 * unreachable.
 */
int ctr_rclient_each_master(ctr_rclient *c,
                            int (*fn)(redisContext *node, void *arg),
                            void *arg);

/*
 * One slot of each master (its first), into slots[0..max): a command on
 * a key of each reaches every master. The one server: slot 0. Returns how
 * many, or -1 if the slot map could not be read.
 */
int ctr_rclient_master_slots(ctr_rclient *c, int *slots, int max)
    __attribute__((warn_unused_result));

#endif
