/*
 * slots.c - see slots.h.
 */
#include "redis/slots.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the function
 * Redis Cluster specifies for key slots, computed a byte at a time from a
 * table built on first use. */
static uint16_t crc_table[256];
static int crc_ready;

static void crc_init(void)
{
    for (int i = 0; i < 256; i++) {
        uint16_t c = (uint16_t)(i << 8);
        for (int b = 0; b < 8; b++)
            c = (uint16_t)(c & 0x8000 ? (c << 1) ^ 0x1021 : c << 1);
        crc_table[i] = c;
    }
    crc_ready = 1;
}

static uint16_t crc16(const unsigned char *p, size_t len)
{
    uint16_t crc = 0;
    if (!crc_ready)
        crc_init();
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ crc_table[((crc >> 8) ^ p[i]) & 0xff]);
    return crc;
}

int ctr_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open != NULL) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - from);
        /* "{}" hashes the whole key, as Redis does */
        if (close != NULL && close > open + 1)
            return crc16((const unsigned char *)open + 1,
                         (size_t)(close - open - 1)) &
                   (CTR_SLOTS - 1);
    }
    return crc16((const unsigned char *)key, len) & (CTR_SLOTS - 1);
}

int ctr_slots_parse(const redisReply *r, const char *seed_host,
                    ctr_slot_range **ranges, size_t *n)
{
    *ranges = NULL;
    *n = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return -1;
    ctr_slot_range *out = calloc(r->elements ? r->elements : 1, sizeof(*out));
    if (out == NULL)
        return -1;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY ||
            e->element[2]->elements < 2 ||
            e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
            e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
            goto bad;
        ctr_slot_range *s = &out[i];
        s->start = (int)e->element[0]->integer;
        s->end = (int)e->element[1]->integer;
        if (s->start < 0 || s->end >= CTR_SLOTS || s->start > s->end)
            goto bad;
        const redisReply *m = e->element[2];
        const char *host = m->element[0]->len ? m->element[0]->str : seed_host;
        if (strlen(host) >= sizeof(s->host))
            goto bad;
        strcpy(s->host, host);
        s->port = (int)m->element[1]->integer;
        s->replicas = (int)e->elements - 3;
    }
    *ranges = out;
    *n = r->elements;
    return 0;
bad:
    free(out);
    return -1;
}

static int split_host_port(const char *s, size_t len, char *host,
                           size_t hostlen, int *port)
{
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ':')
            colon = s + i;
    if (colon == NULL || (size_t)(colon - s) >= hostlen)
        return -1;
    long p = 0;
    const char *d = colon + 1;
    if (d == s + len)
        return -1;
    for (; d < s + len; d++) {
        if (*d < '0' || *d > '9' || (p = p * 10 + (*d - '0')) > 65535)
            return -1;
    }
    if (p == 0)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)p;
    return 0;
}

int ctr_redirect_parse(const char *err, int *slot, char *host, size_t hostlen,
                       int *port)
{
    int kind;
    if (strncmp(err, "MOVED ", 6) == 0) {
        kind = 1;
        err += 6;
    } else if (strncmp(err, "ASK ", 4) == 0) {
        kind = 2;
        err += 4;
    } else {
        return 0;
    }
    char *end;
    long s = strtol(err, &end, 10);
    if (end == err || *end != ' ' || s < 0 || s >= CTR_SLOTS)
        return 0;
    end++;
    if (split_host_port(end, strlen(end), host, hostlen, port) != 0)
        return 0;
    /* "MOVED 3999 :6381": the node did not know its own address; the
     * caller substitutes the host it asked */
    *slot = (int)s;
    return kind;
}

int ctr_addr_list_next(const char *list, size_t *pos, char *host,
                       size_t hostlen, int *port)
{
    const char *p = list + *pos;
    while (*p == ',' || *p == ' ')
        p++;
    if (*p == '\0') {
        *pos = (size_t)(p - list);
        return 0;
    }
    const char *end = p;
    while (*end && *end != ',' && *end != ' ')
        end++;
    *pos = (size_t)(end - list);
    if (split_host_port(p, (size_t)(end - p), host, hostlen, port) != 0 ||
        host[0] == '\0')
        return -1;
    size_t hl = strlen(host);
    if (host[0] == '[') { /* [::1]:7000, as redis.addr takes it */
        if (hl < 3 || host[hl - 1] != ']')
            return -1;
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    return 1;
}
