/*
 * evdecode.c - see evdecode.h. A single pass over the text; every doubt
 * returns -1 so that ctr_event_decode decides.
 */
#include "persister/evdecode.h"

#include "common/name.h"

#include <string.h>

enum {
    F_V = 1 << 0,
    F_ID = 1 << 1,
    F_COUNTER = 1 << 2,
    F_DELTA = 1 << 3,
    F_USER = 1 << 4,
    F_TS = 1 << 5,
    F_META = 1 << 6,
    F_REQUIRED = F_V | F_ID | F_COUNTER | F_DELTA | F_TS,
    MAX_DIGITS = 18, /* below 2^63 whatever the digits */
};

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end &&
           (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

/* A string of printable ASCII without escapes, c->p at its opening quote;
 * *s and *n get its contents. */
static int plain_string(cursor *c, const char **s, size_t *n)
{
    if (c->p >= c->end || *c->p != '"')
        return -1;
    const char *start = ++c->p;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            *s = start;
            *n = (size_t)(c->p - start);
            c->p++;
            return 0;
        }
        if (ch < 0x20 || ch >= 0x7f || ch == '\\')
            return -1;
        c->p++;
    }
    return -1;
}

/* -?(0|[1-9][0-9]*) of at most MAX_DIGITS digits, not followed by a
 * fraction or an exponent (json-c would make those doubles). */
static int plain_int(cursor *c, int64_t *out)
{
    int neg = 0, digits = 0;
    int64_t v = 0;

    if (c->p < c->end && *c->p == '-')
        neg = 1, c->p++;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (++digits > MAX_DIGITS || (digits == 2 && v == 0))
            return -1; /* too long, or a leading zero */
        v = v * 10 + (*c->p - '0');
        c->p++;
    }
    if (digits == 0 ||
        (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E')))
        return -1;
    *out = neg ? -v : v;
    return 0;
}

static int literal_null(cursor *c)
{
    if (c->end - c->p < 4 || memcmp(c->p, "null", 4) != 0)
        return -1;
    c->p += 4;
    return 0;
}

static int key_flag(const char *k, size_t n)
{
    static const struct {
        const char *name;
        int flag;
    } keys[] = {
        {"v", F_V},          {"id", F_ID},        {"counter", F_COUNTER},
        {"delta", F_DELTA},  {"user_id", F_USER}, {"ts", F_TS},
        {"metadata", F_META}};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strlen(keys[i].name) == n && memcmp(keys[i].name, k, n) == 0)
            return keys[i].flag;
    return 0;
}

/* Parses into ev without owning anything yet: user_id is kept as a span
 * and copied once everything is known to be valid. */
static int parse(cursor *c, ctr_event *ev, const char **user, size_t *user_len)
{
    int seen = 0;
    int64_t v = 0;

    skip_ws(c);
    if (c->p >= c->end || *c->p++ != '{')
        return -1;
    skip_ws(c);
    for (;;) {
        const char *k, *s;
        size_t kn, sn;
        if (plain_string(c, &k, &kn) != 0)
            return -1;
        int flag = key_flag(k, kn);
        if (flag == 0 || (seen & flag))
            return -1; /* another key, or a repeated one */
        seen |= flag;
        skip_ws(c);
        if (c->p >= c->end || *c->p++ != ':')
            return -1;
        skip_ws(c);
        switch (flag) {
        case F_V:
            if (plain_int(c, &v) != 0 || v != CTR_EVENT_VERSION)
                return -1;
            break;
        case F_DELTA:
            if (plain_int(c, &ev->delta) != 0)
                return -1;
            break;
        case F_TS:
            if (plain_int(c, &ev->ts_ms) != 0 || ev->ts_ms <= 0 ||
                ev->ts_ms > CTR_EVENT_TS_MAX_MS)
                return -1;
            break;
        case F_ID:
            if (plain_string(c, &s, &sn) != 0 || !ctr_event_id_valid(s, sn))
                return -1;
            memcpy(ev->id, s, sn);
            ev->id[sn] = '\0';
            break;
        case F_COUNTER:
            if (plain_string(c, &s, &sn) != 0 || !ctr_name_valid(s, sn))
                return -1;
            memcpy(ev->counter, s, sn);
            ev->counter[sn] = '\0';
            break;
        case F_USER:
            if (c->p < c->end && *c->p == 'n') {
                if (literal_null(c) != 0)
                    return -1;
            } else if (plain_string(c, &s, &sn) != 0 ||
                       !ctr_user_id_valid(s, sn)) {
                return -1;
            } else {
                *user = s;
                *user_len = sn;
            }
            break;
        default: /* F_META: only null, which means none */
            if (literal_null(c) != 0)
                return -1;
            break;
        }
        skip_ws(c);
        if (c->p >= c->end)
            return -1;
        if (*c->p == '}') {
            c->p++;
            break;
        }
        if (*c->p++ != ',')
            return -1;
        skip_ws(c);
    }
    skip_ws(c);
    if (c->p != c->end || (seen & F_REQUIRED) != F_REQUIRED)
        return -1;
    ev->v = (int)v;
    return 0;
}

int ps_event_decode_fast(const char *buf, size_t len, ctr_event *ev)
{
    cursor c = {buf, buf + len};
    const char *user = NULL;
    size_t user_len = 0;

    memset(ev, 0, sizeof(*ev));
    if (buf == NULL || len > CTR_EVENT_MAX_BYTES ||
        parse(&c, ev, &user, &user_len) != 0) {
        memset(ev, 0, sizeof(*ev));
        return -1;
    }
    if (user) {
        ev->user_id = strndup(user, user_len);
        if (ev->user_id == NULL) {
            memset(ev, 0, sizeof(*ev));
            return -1; /* ctr_event_decode reports the lack of memory */
        }
    }
    return 0;
}

int ps_event_decode(const char *buf, size_t len, ctr_event *ev, char *errbuf,
                    size_t errlen)
{
    if (ps_event_decode_fast(buf, len, ev) == 0)
        return 0;
    return ctr_event_decode(buf, len, ev, errbuf, errlen);
}
