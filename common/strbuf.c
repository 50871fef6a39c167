/*
 * strbuf.c - see strbuf.h.
 */
#include "common/strbuf.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ctr_strbuf_put(ctr_strbuf *b, const char *p, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *grown = realloc(b->s, cap);
        if (grown == NULL) {
            b->failed = 1;
            return;
        }
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void ctr_strbuf_puts(ctr_strbuf *b, const char *s)
{
    ctr_strbuf_put(b, s, strlen(s));
}

void ctr_strbuf_printf(ctr_strbuf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
    } else if ((size_t)n < sizeof(small)) {
        ctr_strbuf_put(b, small, (size_t)n);
    } else {
        char *big = malloc((size_t)n + 1);
        if (big == NULL) {
            b->failed = 1;
            return;
        }
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        ctr_strbuf_put(b, big, (size_t)n);
        free(big);
    }
}

void ctr_strbuf_clear(ctr_strbuf *b)
{
    free(b->s);
    memset(b, 0, sizeof(*b));
}

void ctr_pgarray_open(ctr_strbuf *b)
{
    b->len = 0;
    ctr_strbuf_put(b, "{", 1);
}

void ctr_json_quote(const char *s, ctr_put_fn put, void *dst)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *run = p;
    put(dst, "\"", 1);
    for (; *p; p++) {
        char esc[6] = {'\\', 'u', '0', '0'};
        if (*p != '"' && *p != '\\' && *p >= 0x20)
            continue;
        put(dst, (const char *)run, (size_t)(p - run));
        if (*p == '"' || *p == '\\') {
            esc[1] = (char)*p;
            put(dst, esc, 2);
        } else {
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
            put(dst, esc, 6);
        }
        run = p + 1;
    }
    put(dst, (const char *)run, (size_t)(p - run));
    put(dst, "\"", 1);
}

static void strbuf_sink(void *dst, const char *p, size_t n)
{
    ctr_strbuf_put(dst, p, n);
}

void ctr_strbuf_put_json(ctr_strbuf *b, const char *s)
{
    ctr_json_quote(s, strbuf_sink, b);
}

/* Past "{", every element is preceded by a comma. */
static void separate(ctr_strbuf *b)
{
    if (b->len > 1)
        ctr_strbuf_put(b, ",", 1);
}

void ctr_pgarray_text(ctr_strbuf *b, const char *s)
{
    separate(b);
    ctr_strbuf_put(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            ctr_strbuf_put(b, "\\", 1);
        ctr_strbuf_put(b, s, 1);
    }
    ctr_strbuf_put(b, "\"", 1);
}

size_t ctr_i64_text(int64_t v, char out[21])
{
    /* Two digits per division: the api writes ~50 numbers per batch GET
     * (RESP lengths, values, times), most of them one or two digits. */
    static const char pairs[] = "00010203040506070809"
                                "10111213141516171819"
                                "20212223242526272829"
                                "30313233343536373839"
                                "40414243444546474849"
                                "50515253545556575859"
                                "60616263646566676869"
                                "70717273747576777879"
                                "80818283848586878889"
                                "90919293949596979899";
    char tmp[20], *p = tmp + sizeof(tmp);
    /* through unsigned, so INT64_MIN negates without overflow */
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0;
    while (u >= 100) {
        unsigned i = (unsigned)(u % 100) * 2;
        u /= 100;
        *--p = pairs[i + 1];
        *--p = pairs[i];
    }
    if (u >= 10) {
        *--p = pairs[u * 2 + 1];
        *--p = pairs[u * 2];
    } else {
        *--p = (char)('0' + u);
    }
    if (v < 0)
        out[n++] = '-';
    size_t digits = (size_t)(tmp + sizeof(tmp) - p);
    memcpy(out + n, p, digits);
    n += digits;
    out[n] = '\0';
    return n;
}

void ctr_pgarray_i64(ctr_strbuf *b, int64_t v)
{
    char num[21];
    size_t n = ctr_i64_text(v, num);
    separate(b);
    ctr_strbuf_put(b, num, n);
}

size_t ctr_i128_text(__int128 v, char out[CTR_I128_TEXT_MAX])
{
    /* most sums fit 64 bits, whose division is not a library call */
    if (v >= INT64_MIN && v <= INT64_MAX)
        return ctr_i64_text((int64_t)v, out);
    unsigned __int128 u = v < 0 ? -(unsigned __int128)v : (unsigned __int128)v;
    char digits[CTR_I128_TEXT_MAX];
    size_t n = 0, len = 0;
    do {
        digits[n++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u != 0);
    if (v < 0)
        out[len++] = '-';
    while (n > 0)
        out[len++] = digits[--n];
    out[len] = '\0';
    return len;
}

void ctr_pgarray_i128(ctr_strbuf *b, __int128 v)
{
    char num[CTR_I128_TEXT_MAX];
    size_t n = ctr_i128_text(v, num);
    separate(b);
    ctr_strbuf_put(b, num, n);
}

void ctr_pgarray_close(ctr_strbuf *b)
{
    ctr_strbuf_put(b, "}", 1);
}
