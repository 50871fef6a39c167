/*
 * strbuf.h - a growable text buffer, and PostgreSQL array literals built
 * in it ({"a","b\"c"}, {1,2}), for batches sent as one parameter; JSON
 * string literals for it or any other buffer.
 *
 * Allocation failure is sticky: the buffer keeps what it had and sets
 * failed, so a caller appends freely and checks once at the end.
 */
#ifndef COUNTER_COMMON_STRBUF_H
#define COUNTER_COMMON_STRBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct ctr_strbuf {
    char *s; /* NUL-terminated once anything was added */
    size_t len, cap;
    int failed;
} ctr_strbuf;

void ctr_strbuf_put(ctr_strbuf *b, const char *p, size_t n);
void ctr_strbuf_puts(ctr_strbuf *b, const char *s);
void ctr_strbuf_printf(ctr_strbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Frees the text of b (embedded: b itself stays); b may be reused after. */
void ctr_strbuf_clear(ctr_strbuf *b);

/*
 * Writes s as a JSON string literal, quotes included: '"', '\\' and the
 * control bytes escaped, bytes >= 0x80 passed through (UTF-8). Plain runs
 * go out in one piece through put, so that any buffer can take it (the
 * api's evbuffers, a ctr_strbuf).
 */
typedef void (*ctr_put_fn)(void *dst, const char *p, size_t n);
void ctr_json_quote(const char *s, ctr_put_fn put, void *dst);
/* ctr_json_quote into a ctr_strbuf. */
void ctr_strbuf_put_json(ctr_strbuf *b, const char *s);

/*
 * Writes v in decimal and a NUL into out (room for INT64_MIN: 21 bytes);
 * returns the length. The hot paths use it instead of snprintf.
 */
size_t ctr_i64_text(int64_t v, char out[21]);

/*
 * The same for a 128-bit integer (sums of int64 values: see
 * persister/batch.h), room for -2^127 included.
 */
#define CTR_I128_TEXT_MAX 41
size_t ctr_i128_text(__int128 v, char out[CTR_I128_TEXT_MAX]);

/* Empties b and starts an array literal. */
void ctr_pgarray_open(ctr_strbuf *b);
/* Appends a text element, quoted, with '"' and '\' escaped. */
void ctr_pgarray_text(ctr_strbuf *b, const char *s);
void ctr_pgarray_i64(ctr_strbuf *b, int64_t v);
void ctr_pgarray_i128(ctr_strbuf *b, __int128 v);
/* Ends the literal; b->failed tells whether all of it was built. */
void ctr_pgarray_close(ctr_strbuf *b);

#endif
