/*
 * hll.c - see hll.h. Flajolet et al.'s estimator with the small-range
 * (linear counting) correction; 12 index bits, 52 bits for the rank.
 */
#include "common/hll.h"

#include <math.h>

uint64_t ctr_hll_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a, then a strong mix */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

int ctr_hll_add(uint8_t regs[CTR_HLL_REGISTERS], uint64_t h)
{
    unsigned idx = (unsigned)(h >> 52);
    uint64_t rest = (h << 12) | (1ULL << 11); /* guard bit bounds the rank */
    uint8_t rank = (uint8_t)(__builtin_clzll(rest) + 1);
    if (rank > regs[idx]) {
        regs[idx] = rank;
        return 1;
    }
    return 0;
}

int64_t ctr_hll_estimate(const uint8_t regs[CTR_HLL_REGISTERS])
{
    const double m = CTR_HLL_REGISTERS;
    double sum = 0;
    int zeros = 0;
    for (int i = 0; i < CTR_HLL_REGISTERS; i++) {
        sum += ldexp(1.0, -regs[i]);
        if (regs[i] == 0)
            zeros++;
    }
    double alpha = 0.7213 / (1.0 + 1.079 / m);
    double e = alpha * m * m / sum;
    if (e <= 2.5 * m && zeros > 0)
        e = m * log(m / zeros);
    return (int64_t)llround(e);
}
