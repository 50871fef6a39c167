/*
 * slots.h - what a Redis Cluster client needs besides connections: the
 * slot of a key, the slot map CLUSTER SLOTS answers, and the target of a
 * MOVED or ASK redirection. Shared by the api's asynchronous client
 * (api/redis_store.c) and the synchronous one (redis/rclient.c).
 */
#ifndef COUNTER_REDIS_SLOTS_H
#define COUNTER_REDIS_SLOTS_H

#include <hiredis/hiredis.h>
#include <stddef.h>

enum { CTR_SLOTS = 16384, CTR_HOST_MAX = 256 };

/* The cluster slot of key[0..len): CRC16 (XMODEM) of the part inside the
 * first non-empty {...}, or of the whole key, modulo 16384. */
int ctr_key_slot(const char *key, size_t len);

typedef struct ctr_slot_range {
    int start, end; /* inclusive */
    char host[CTR_HOST_MAX];
    int port;
    int replicas; /* replicas the shard lists */
} ctr_slot_range;

/*
 * Parses a CLUSTER SLOTS reply into *ranges (malloc'd, *n entries). A
 * master listed with an empty host is at seed_host (the node that
 * answered). 0, or -1 if the reply is not a slot map.
 */
int ctr_slots_parse(const redisReply *r, const char *seed_host,
                    ctr_slot_range **ranges, size_t *n);

/*
 * For an error reply "MOVED <slot> <host>:<port>" or "ASK ...": 1 for
 * MOVED, 2 for ASK, with the slot and the target; 0 for any other text.
 */
int ctr_redirect_parse(const char *err, int *slot, char *host, size_t hostlen,
                       int *port);

/*
 * The next "host:port" of a comma-separated list at *pos (advanced past
 * it). 1 with host and port, 0 at the end, -1 on a malformed entry.
 */
int ctr_addr_list_next(const char *list, size_t *pos, char *host,
                       size_t hostlen, int *port);

#endif
