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

void ctr_strbuf_free(ctr_strbuf *b)
{
    free(b->s);
    memset(b, 0, sizeof(*b));
}

void ctr_pgarray_open(ctr_strbuf *b)
{
    b->len = 0;
    ctr_strbuf_put(b, "{", 1);
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

void ctr_pgarray_i64(ctr_strbuf *b, int64_t v)
{
    separate(b);
    ctr_strbuf_printf(b, "%" PRId64, v);
}

void ctr_pgarray_close(ctr_strbuf *b)
{
    ctr_strbuf_put(b, "}", 1);
}
