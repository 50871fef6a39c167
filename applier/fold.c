/*
 * fold.c - see fold.h.
 */
#include "applier/fold.h"

#include "common/strbuf.h"

#include <stdlib.h>
#include <string.h>

enum {
    FIXED_ARGS = 3 + 11 + 11, /* EVALSHA sha numkeys, KEYS, fixed ARGV */
    PER_EVENT = 6,
    NUM = 24, /* an int64's text and its NUL, rounded */
};

uint64_t ctr_fold_fingerprint(const char *id)
{
    /* MurmurHash64A (Austin Appleby, public domain), seed 0 */
    const uint64_t m = UINT64_C(0xc6a4a7935bd1e995);
    const int r = 47;
    size_t len = strlen(id);
    uint64_t h = len * m;
    const unsigned char *p = (const unsigned char *)id;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t k;
        memcpy(&k, p + i, 8);
        k *= m;
        k ^= k >> r;
        k *= m;
        h ^= k;
        h *= m;
    }
    uint64_t t = 0;
    switch (len - i) {
    case 7: t ^= (uint64_t)p[i + 6] << 48; /* fall through */
    case 6: t ^= (uint64_t)p[i + 5] << 40; /* fall through */
    case 5: t ^= (uint64_t)p[i + 4] << 32; /* fall through */
    case 4: t ^= (uint64_t)p[i + 3] << 24; /* fall through */
    case 3: t ^= (uint64_t)p[i + 2] << 16; /* fall through */
    case 2: t ^= (uint64_t)p[i + 1] << 8;  /* fall through */
    case 1:
        t ^= (uint64_t)p[i];
        h ^= t;
        h *= m;
    }
    h ^= h >> r;
    h *= m;
    h ^= h >> r;
    return h >> 1;
}

int ctr_fold_args_build(ctr_fold_args *a, const ctr_fold_ctx *ctx,
                        const char *name, const ctr_apply_spec *plan,
                        const ctr_event *const *evs, const int64_t *offsets,
                        size_t n)
{
    ctr_apply_argv w;
    memset(a, 0, sizeof(*a));
    if (n == 0 || n > CTR_FOLD_MAX ||
        ctr_apply_write_argv(&w, ctx->sha, name, plan) != 0)
        return -1;
    size_t nkeys = 11 * CTR_APPLY_KEY_MAX, nnums = (9 + 4 * n) * NUM;
    a->argv = malloc((FIXED_ARGS + PER_EVENT * n) * sizeof(*a->argv));
    a->store = malloc(nkeys + nnums);
    if (a->argv == NULL || a->store == NULL)
        goto err;
    /* KEYS: value, stamp, pending, dedup, fence, epoch, lo, hi (as the
     * write script has them), then the outcome log beside the fence, the
     * id window's and the guards' prefixes: all in the counter's slot */
    char *key[11], *num = a->store + nkeys;
    const int from_w[8] = {0, 1, 2, 3, 4, 6, 7, 8};
    for (int k = 0; k < 11; k++)
        key[k] = a->store + (size_t)k * CTR_APPLY_KEY_MAX;
    for (int k = 0; k < 8; k++)
        memcpy(key[k], w.keys[from_w[k]], strlen(w.keys[from_w[k]]) + 1);
    size_t fl = strlen(w.keys[4]), nl = strlen(name);
    if (fl + 3 > CTR_APPLY_KEY_MAX || nl + 9 > CTR_APPLY_KEY_MAX)
        goto err;
    memcpy(key[8], w.keys[4], fl);
    memcpy(key[8] + fl, ":x", 3);
    memcpy(key[9], "{c:", 3);
    memcpy(key[9] + 3, name, nl);
    memcpy(key[9] + 3 + nl, "}:w", 4);
    memcpy(key[10], key[9], 4 + nl);
    memcpy(key[10] + 4 + nl, ":id:", 5);

    const char **v = a->argv;
    int c = 0;
#define NUMBER(x) (ctr_i64_text((x), num), num += NUM, num - NUM)
    v[c++] = "EVALSHA";
    v[c++] = ctx->sha;
    v[c++] = "11";
    for (int k = 0; k < 11; k++)
        v[c++] = key[k];
    /* ARGV */
    v[c++] = plan->dedup == CTR_APPLY_DEDUP_EXACT ? "exact"
             : plan->dedup == CTR_APPLY_DEDUP_HLL ? "hll"
                                                  : "";
    v[c++] = plan->has_min ? NUMBER(plan->min) : "";
    v[c++] = plan->has_max ? NUMBER(plan->max) : "";
    v[c++] = plan->clamp ? "clamp" : "reject";
    v[c++] = NUMBER(plan->ttl_s);
    v[c++] = NUMBER(plan->dedup_ttl_s);
    v[c++] = NUMBER(ctx->now_s);
    v[c++] = NUMBER(ctx->window_s);
    v[c++] = ctx->committed >= 0 ? NUMBER(ctx->committed) : "";
    v[c++] = NUMBER(ctx->log_ttl_s); /* 9 numbers at most so far */
    v[c++] = NUMBER((int64_t)n);
    for (size_t i = 0; i < n; i++) {
        v[c++] = NUMBER(offsets[i]);
        v[c++] = evs[i]->id;
        v[c++] = NUMBER((int64_t)ctr_fold_fingerprint(evs[i]->id));
        /* a unique counter's event counts 1 (validated before) */
        v[c++] =
            NUMBER(plan->dedup != CTR_APPLY_DEDUP_NONE ? 1 : evs[i]->delta);
        v[c++] = NUMBER(evs[i]->ts_ms);
        v[c++] = evs[i]->user_id ? evs[i]->user_id : "";
    }
#undef NUMBER
    a->argc = c;
    return 0;
err:
    ctr_fold_args_clear(a);
    return -1;
}

void ctr_fold_args_clear(ctr_fold_args *a)
{
    free(a->argv);
    free(a->store);
    memset(a, 0, sizeof(*a));
}
