/*
 * jsonparse.c - see jsonparse.h.
 *
 * json-c's JSON_TOKENER_STRICT still takes NaN, Infinity, "1.", single
 * quotes, raw control characters in strings and ill-formed UTF-8, and
 * writes NaN, Infinity, "1." and the bad bytes back out as they came: a
 * request's metadata holding them went into Kafka as an event that strict
 * consumers (Jackson, Go's encoding/json, Python's json on bytes) refuse.
 * So the text is first checked against the grammar of RFC 8259, with
 * strings in well-formed UTF-8 (RFC 3629), and only then handed to json-c.
 *
 * The same pass makes the stricter checks of ctr_json_parse_ex: repeated
 * keys (each object's keys are hashed as they are read, and compared when
 * the object closes) and integers json-c would clamp.
 */
#include "common/jsonparse.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Deeper than json-c's own limit (32), so that one is the one that bites;
 * it also bounds the recursion below. */
enum { SCAN_MAX_DEPTH = 64 };

/* A key of an object still open, for CTR_JSON_UNIQUE_KEYS. */
typedef struct key_ent {
    uint64_t hash;          /* of the decoded key */
    const unsigned char *s; /* the key's text between its quotes */
    size_t n;
    int escaped; /* holds a backslash: its text is not its decoding */
} key_ent;

typedef struct json_scan {
    const unsigned char *p, *end;
    unsigned flags;
    enum ctr_json_fault fault; /* 0 while none */
    key_ent member;            /* the top-level member being read (s NULL:
                                  none) */
    key_ent dup;               /* CTR_JSON_DUPLICATE_KEY: the key */
    key_ent *keys;             /* the keys of every object open, in order */
    size_t nkeys, cap;
} json_scan;

static void skip_ws(json_scan *s)
{
    while (s->p < s->end &&
           (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int is_digit(const json_scan *s)
{
    return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

/* One UTF-8 sequence of two to four bytes at s->p (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF). */
static int scan_utf8(json_scan *s)
{
    unsigned c = *s->p;
    unsigned lo = 0x80, hi = 0xbf;
    int n;

    if (c >= 0xc2 && c <= 0xdf)
        n = 1;
    else if (c >= 0xe0 && c <= 0xef)
        n = 2, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 3, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return -1;
    if (s->end - s->p <= n || s->p[1] < lo || s->p[1] > hi)
        return -1;
    for (int i = 2; i <= n; i++)
        if ((s->p[i] & 0xc0) != 0x80)
            return -1;
    s->p += n + 1;
    return 0;
}

static int hexdigit(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
}

/* Four hex digits after "\u" into *cp; s->p moves past them. */
static int scan_hex4(json_scan *s, unsigned *cp)
{
    if (s->end - s->p < 4)
        return -1;
    *cp = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char h = (unsigned char)s->p[i];
        if (!hexdigit(h))
            return -1;
        *cp = *cp * 16 + (unsigned)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    s->p += 4;
    return 0;
}

/* A string, s->p at its opening quote; *escaped set if it holds a
 * backslash. */
static int scan_string(json_scan *s, int *escaped)
{
    s->p++;
    *escaped = 0;
    while (s->p < s->end) {
        unsigned char c = *s->p;
        if (c == '"') {
            s->p++;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            if (scan_utf8(s) != 0)
                return -1;
            continue;
        }
        s->p++;
        if (c != '\\')
            continue;
        *escaped = 1;
        if (s->p >= s->end)
            return -1;
        c = *s->p++;
        if (c == 'u') {
            unsigned cp;
            if (scan_hex4(s, &cp) != 0)
                return -1;
            /* a surrogate only as a high-low pair: json-c turns a lone one
             * into U+FFFD, so that two different ids would read alike */
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return -1;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (s->end - s->p < 2 || s->p[0] != '\\' || s->p[1] != 'u')
                    return -1;
                s->p += 2;
                if (scan_hex4(s, &cp) != 0 || cp < 0xdc00 || cp > 0xdfff)
                    return -1;
            }
        } else if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' &&
                   c != 'n' && c != 'r' && c != 't') {
            return -1;
        }
    }
    return -1;
}

/* True if the integer digits[0..n) (no sign, no leading zero) lies
 * beyond what json-c holds: 2^63 when negative, else 2^64 - 1. */
static int int_out_of_range(const unsigned char *digits, size_t n, int neg)
{
    const char *limit = neg ? "9223372036854775808" : "18446744073709551615";
    size_t limit_n = strlen(limit);
    return n > limit_n || (n == limit_n && memcmp(digits, limit, n) > 0);
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int scan_number(json_scan *s)
{
    int neg = s->p < s->end && *s->p == '-';
    if (neg)
        s->p++;
    if (!is_digit(s))
        return -1;
    const unsigned char *digits = s->p;
    if (*s->p++ != '0')
        while (is_digit(s))
            s->p++;
    if ((s->flags & CTR_JSON_EXACT_INTS) &&
        !(s->p < s->end && (*s->p == '.' || *s->p == 'e' || *s->p == 'E')) &&
        int_out_of_range(digits, (size_t)(s->p - digits), neg)) {
        s->fault = CTR_JSON_INT_RANGE;
        return -1;
    }
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!is_digit(s))
            return -1;
        while (is_digit(s))
            s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!is_digit(s))
            return -1;
        while (is_digit(s))
            s->p++;
    }
    return 0;
}

static int scan_literal(json_scan *s, const char *lit)
{
    for (; *lit; lit++, s->p++)
        if (s->p >= s->end || *s->p != (unsigned char)*lit)
            return -1;
    return 0;
}

/* Decodes the text of a valid JSON string (between its quotes) into out,
 * which has room for n bytes (a decoding is never longer); returns its
 * length. */
static size_t decode_string(const unsigned char *p, size_t n,
                            unsigned char *out)
{
    const unsigned char *end = p + n;
    size_t o = 0;
    while (p < end) {
        if (*p != '\\') {
            out[o++] = *p++;
            continue;
        }
        p++;
        unsigned char c = *p++;
        json_scan hex = {p, end, 0, 0, {0}, {0}, NULL, 0, 0};
        unsigned cp, lo;
        switch (c) {
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u':
            (void)scan_hex4(&hex, &cp);
            if (cp >= 0xd800 && cp <= 0xdbff) {
                hex.p += 2; /* the "\u" of the low half */
                (void)scan_hex4(&hex, &lo);
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            p = hex.p;
            if (cp < 0x80) {
                out[o++] = (unsigned char)cp;
            } else if (cp < 0x800) {
                out[o++] = (unsigned char)(0xc0 | cp >> 6);
                out[o++] = (unsigned char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                out[o++] = (unsigned char)(0xe0 | cp >> 12);
                out[o++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                out[o++] = (unsigned char)(0x80 | (cp & 0x3f));
            } else {
                out[o++] = (unsigned char)(0xf0 | cp >> 18);
                out[o++] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
                out[o++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                out[o++] = (unsigned char)(0x80 | (cp & 0x3f));
            }
            break;
        default: out[o++] = c; /* '"', '\\', '/' */
        }
    }
    return o;
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* The decoding of k in a new buffer (NULL when out of memory). */
static unsigned char *key_decoded(const key_ent *k, size_t *n)
{
    unsigned char *d = malloc(k->n ? k->n : 1);
    if (d != NULL)
        *n = decode_string(k->s, k->n, d);
    return d;
}

/* 1 when a and b decode to the same bytes, 0 when not, -1 out of memory. */
static int key_equal(const key_ent *a, const key_ent *b)
{
    if (!a->escaped && !b->escaped)
        return a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
    size_t an = 0, bn = 0;
    unsigned char *ad = key_decoded(a, &an), *bd = key_decoded(b, &bn);
    int eq = ad && bd ? an == bn && memcmp(ad, bd, an) == 0 : -1;
    free(ad);
    free(bd);
    return eq;
}

/* Pushes the key just read (s[0..n), between its quotes). */
static int key_push(json_scan *sc, const unsigned char *s, size_t n,
                    int escaped)
{
    key_ent k = {0, s, n, escaped};
    if (escaped) {
        size_t dn = 0;
        unsigned char *d = key_decoded(&k, &dn);
        if (d == NULL)
            return -1;
        k.hash = fnv1a(d, dn);
        free(d);
    } else {
        k.hash = fnv1a(s, n);
    }
    if (sc->nkeys == sc->cap) {
        size_t cap = sc->cap ? sc->cap * 2 : 32;
        key_ent *grown = realloc(sc->keys, cap * sizeof(*grown));
        if (grown == NULL)
            return -1;
        sc->keys = grown;
        sc->cap = cap;
    }
    sc->keys[sc->nkeys++] = k;
    return 0;
}

static int key_order(const void *x, const void *y)
{
    const key_ent *a = x, *b = y;
    return a->hash < b->hash ? -1 : a->hash > b->hash;
}

/* The object whose keys are keys[base..] closed: refuses a repeat among
 * them, then forgets them. Few keys are compared pairwise; more are
 * sorted by hash first, so that a large object costs n log n. */
static int keys_close(json_scan *sc, size_t base)
{
    key_ent *k = sc->keys + base;
    size_t n = sc->nkeys - base;
    int rc = 0;

    if (n > 8)
        qsort(k, n, sizeof(*k), key_order);
    for (size_t i = 0; i < n && rc == 0; i++)
        for (size_t j = i + 1; j < n && rc == 0; j++) {
            if (k[j].hash != k[i].hash) {
                if (n > 8)
                    break; /* sorted: no later one shares it */
                continue;
            }
            int eq = key_equal(&k[i], &k[j]);
            if (eq != 0) {
                sc->dup = k[i];
                sc->fault = eq > 0 ? CTR_JSON_DUPLICATE_KEY : 0;
                rc = -1;
            }
        }
    sc->nkeys = base;
    return rc;
}

static int scan_value(json_scan *s, int depth)
{
    int escaped;
    if (s->p >= s->end)
        return -1;
    switch (*s->p) {
    case '"': return scan_string(s, &escaped);
    case 't': return scan_literal(s, "true");
    case 'f': return scan_literal(s, "false");
    case 'n': return scan_literal(s, "null");
    case '{':
    case '[': {
        const unsigned char close = *s->p == '{' ? '}' : ']';
        const int object = close == '}';
        const int unique = object && (s->flags & CTR_JSON_UNIQUE_KEYS);
        const size_t base = s->nkeys;
        if (depth >= SCAN_MAX_DEPTH)
            return -1;
        s->p++;
        skip_ws(s);
        if (s->p < s->end && *s->p == close) {
            s->p++;
            return 0;
        }
        for (;;) {
            if (object) {
                const unsigned char *key = s->p + 1;
                if (s->p >= s->end || *s->p != '"' ||
                    scan_string(s, &escaped) != 0)
                    return -1;
                size_t key_n = (size_t)(s->p - 1 - key);
                if (depth == 0)
                    s->member = (key_ent){0, key, key_n, escaped};
                if (unique && key_push(s, key, key_n, escaped) != 0)
                    return -1;
                skip_ws(s);
                if (s->p >= s->end || *s->p++ != ':')
                    return -1;
                skip_ws(s);
            }
            if (scan_value(s, depth + 1) != 0)
                return -1;
            skip_ws(s);
            if (s->p >= s->end)
                return -1;
            if (*s->p == close) {
                s->p++;
                if (depth == 0)
                    s->member.s = NULL; /* a repeat here is in no member */
                return unique ? keys_close(s, base) : 0;
            }
            if (*s->p++ != ',')
                return -1;
            skip_ws(s);
        }
    }
    default: return scan_number(s);
    }
}

/* Writes k's decoding into out (size cap) for a message: cut on a UTF-8
 * boundary, with "..." after a cut when mark is set; controls as '?'. */
static void key_show(const key_ent *k, char *out, size_t cap, int mark)
{
    size_t n = 0;
    unsigned char *d = k->s ? key_decoded(k, &n) : NULL;
    size_t room = cap - 1, keep = n;
    out[0] = '\0';
    if (d == NULL)
        return;
    if (n > room) {
        keep = mark && room > 3 ? room - 3 : room;
        while (keep > 0 && (d[keep] & 0xc0) == 0x80)
            keep--; /* not inside a sequence */
    }
    for (size_t i = 0; i < keep; i++)
        out[i] = d[i] < 0x20 || d[i] == 0x7f ? '?' : (char)d[i];
    out[keep] = '\0';
    if (keep < n && mark && room > 3)
        memcpy(out + keep, "...", 4);
    free(d);
}

struct json_object *ctr_json_parse_ex(const char *buf, size_t len,
                                      unsigned flags, ctr_json_error *err)
{
    struct json_tokener *tok = NULL;
    struct json_object *root = NULL;
    json_scan s = {(const unsigned char *)buf,
                   (const unsigned char *)buf + len,
                   flags,
                   0,
                   {0},
                   {0},
                   NULL,
                   0,
                   0};

    if (len > INT_MAX)
        goto refused;
    skip_ws(&s);
    if (scan_value(&s, 0) != 0)
        goto refused;
    skip_ws(&s);
    if (s.p != s.end)
        goto refused;
    tok = json_tokener_new();
    if (tok == NULL)
        goto refused;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    root = json_tokener_parse_ex(tok, buf, (int)len);
    if (root == NULL && json_tokener_get_error(tok) == json_tokener_continue)
        root = json_tokener_parse_ex(tok, "", 1); /* a bare number at EOF */
    if (root != NULL) {
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
            char c = buf[i];
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                json_object_put(root);
                root = NULL;
                break;
            }
        }
    }
    json_tokener_free(tok);
    if (root != NULL) {
        free(s.keys);
        return root;
    }
refused:
    if (err != NULL) {
        memset(err, 0, sizeof(*err));
        err->fault = s.fault ? s.fault : CTR_JSON_INVALID;
        if (s.fault)
            key_show(&s.member, err->member, sizeof(err->member), 0);
        if (s.fault == CTR_JSON_DUPLICATE_KEY)
            key_show(&s.dup, err->key, sizeof(err->key), 1);
    }
    free(s.keys);
    return NULL;
}

struct json_object *ctr_json_parse(const char *buf, size_t len)
{
    return ctr_json_parse_ex(buf, len, 0, NULL);
}
