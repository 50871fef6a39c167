/*
 * hll.h - HyperLogLog with 4096 one-byte registers (standard error about
 * 1.6%), for unique counters declared `dedup: hll`. Deterministic: the same
 * user ids give the same registers, so replaying the log reproduces them.
 */
#ifndef COUNTER_COMMON_HLL_H
#define COUNTER_COMMON_HLL_H

#include <stddef.h>
#include <stdint.h>

#define CTR_HLL_REGISTERS 4096

/* 64-bit hash of a user id. */
uint64_t ctr_hll_hash(const char *s, size_t len);

/* Records hash h in regs; returns 1 if a register grew. */
int ctr_hll_add(uint8_t regs[CTR_HLL_REGISTERS], uint64_t h);

/* The cardinality estimate of regs. */
int64_t ctr_hll_estimate(const uint8_t regs[CTR_HLL_REGISTERS]);

#endif
