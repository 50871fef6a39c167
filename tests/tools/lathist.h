/*
 * lathist.h - the latency histogram of the load tools (tests/tools/loadgen,
 * bench/openloop): log-linear buckets of microseconds, 128 per power of
 * two (under 0.8 % error), fixed size, no allocation per sample.
 * Header-only: each tool is a single file built on its own.
 */
#ifndef COUNTER_TOOLS_LATHIST_H
#define COUNTER_TOOLS_LATHIST_H

#include <stddef.h>
#include <stdint.h>

enum {
    LATHIST_SUB_BITS = 7,
    LATHIST_BUCKETS = 64 << LATHIST_SUB_BITS,
};

typedef struct lathist {
    uint64_t n;
    uint64_t b[LATHIST_BUCKETS];
} lathist;

static inline int lathist_msb(uint64_t v)
{
    int b = 0;
    while (v >>= 1)
        b++;
    return b;
}

static inline void lathist_add_us(lathist *h, uint64_t us)
{
    size_t i = (size_t)us;
    if (us >= (1u << LATHIST_SUB_BITS)) {
        int shift = lathist_msb(us) - LATHIST_SUB_BITS;
        i = ((size_t)(shift + 1) << LATHIST_SUB_BITS) +
            (size_t)((us >> shift) & ((1u << LATHIST_SUB_BITS) - 1));
    }
    h->b[i < LATHIST_BUCKETS ? i : LATHIST_BUCKETS - 1]++;
    h->n++;
}

/* The middle of bucket i's range, in microseconds. */
static inline double lathist_bucket_value(size_t i)
{
    if (i < (1u << LATHIST_SUB_BITS))
        return (double)i;
    int shift = (int)(i >> LATHIST_SUB_BITS) - 1;
    uint64_t sub = i & ((1u << LATHIST_SUB_BITS) - 1);
    uint64_t low = ((uint64_t)(1u << LATHIST_SUB_BITS) + sub) << shift;
    return (double)low + ((double)((uint64_t)1 << shift) - 1.0) / 2.0;
}

/* The smallest value with at least q of the samples at or below it, in
 * milliseconds; 0 without samples. */
static inline double lathist_ms(const lathist *h, double q)
{
    if (h->n == 0)
        return 0.0;
    uint64_t rank = (uint64_t)(q * (double)h->n);
    if ((double)rank < q * (double)h->n)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < LATHIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank)
            return lathist_bucket_value(i) / 1000.0;
    }
    return lathist_bucket_value(LATHIST_BUCKETS - 1) / 1000.0;
}

#endif
