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
 */
#include "common/jsonparse.h"

#include <limits.h>

/* Deeper than json-c's own limit (32), so that one is the one that bites;
 * it also bounds the recursion below. */
enum { SCAN_MAX_DEPTH = 64 };

typedef struct json_scan {
    const unsigned char *p, *end;
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

/* A string, s->p at its opening quote. */
static int scan_string(json_scan *s)
{
    s->p++;
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

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int scan_number(json_scan *s)
{
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (!is_digit(s))
        return -1;
    if (*s->p++ != '0')
        while (is_digit(s))
            s->p++;
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

static int scan_value(json_scan *s, int depth)
{
    if (s->p >= s->end)
        return -1;
    switch (*s->p) {
    case '"': return scan_string(s);
    case 't': return scan_literal(s, "true");
    case 'f': return scan_literal(s, "false");
    case 'n': return scan_literal(s, "null");
    case '{':
    case '[': {
        const unsigned char close = *s->p == '{' ? '}' : ']';
        const int object = close == '}';
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
                if (s->p >= s->end || *s->p != '"' || scan_string(s) != 0)
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
                return 0;
            }
            if (*s->p++ != ',')
                return -1;
            skip_ws(s);
        }
    }
    default: return scan_number(s);
    }
}

/* True if buf[0..len) is exactly one RFC 8259 value, with whitespace. */
static int json_text_valid(const char *buf, size_t len)
{
    json_scan s = {(const unsigned char *)buf,
                   (const unsigned char *)buf + len};
    skip_ws(&s);
    if (scan_value(&s, 0) != 0)
        return 0;
    skip_ws(&s);
    return s.p == s.end;
}

struct json_object *ctr_json_parse(const char *buf, size_t len)
{
    struct json_tokener *tok;
    struct json_object *root;

    if (len > INT_MAX || !json_text_valid(buf, len))
        return NULL;
    tok = json_tokener_new();
    if (tok == NULL)
        return NULL;
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
    return root;
}
