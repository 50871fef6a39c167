/*
 * apply.c - see apply.h.
 */
#include "redis/apply.h"

#include "common/strbuf.h"
#include "common/tz.h"
#include "redis/slots.h"

#include <pthread.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MIN_WINDOW_TTL_S = 60 };

void ctr_apply_plan(ctr_apply_spec *s, const ctr_counter_def *def,
                    int64_t ts_ms, int64_t now_ms, int lateness_s,
                    const char *user_id, int is_set, int64_t arg)
{
    int64_t day_start, day_end;
    char date[11];

    memset(s, 0, sizeof(*s));
    s->fence_offset = -1;
    ctr_date day = ctr_tz_local_day(def->tz, ts_ms, &day_start, &day_end);
    ctr_date_format(day, date, sizeof(date));
    int64_t ttl = (day_end - now_ms) / 1000 + lateness_s + 86400;
    if (ttl < MIN_WINDOW_TTL_S)
        ttl = MIN_WINDOW_TTL_S;
    if (def->reset == CTR_RESET_DAILY) {
        snprintf(s->key_suffix, sizeof(s->key_suffix), ":d:%s", date);
        memcpy(s->period, date, sizeof(s->period));
        s->ttl_s = (int)ttl;
    }
    if (def->kind == CTR_KIND_UNIQUE) {
        snprintf(s->dedup_suffix, sizeof(s->dedup_suffix), ":%c:%s",
                 def->dedup == CTR_DEDUP_HLL ? 'h' : 'u', date);
        s->dedup = def->dedup == CTR_DEDUP_HLL ? CTR_APPLY_DEDUP_HLL
                                               : CTR_APPLY_DEDUP_EXACT;
        s->user_id = user_id;
        s->dedup_ttl_s = (int)ttl;
        arg = 1;
        is_set = 0;
    }
    s->is_set = is_set;
    s->arg = arg;
    s->stamp_ms = ts_ms;
    if (def->kind == CTR_KIND_GAUGE) {
        s->has_min = def->has_min;
        s->min = def->min;
        s->has_max = def->has_max;
        s->max = def->max;
        s->clamp = def->on_bound == CTR_BOUND_CLAMP;
    }
}

/* buf = "{c:" name "}" suffix; -1 if it does not fit. Every write builds
 * four of these, so without snprintf. */
static int make_key(char *buf, size_t len, const char *name, const char *suffix)
{
    size_t nl = strlen(name), sl = strlen(suffix);
    if (nl + sl + 5 > len)
        return -1;
    memcpy(buf, "{c:", 3);
    memcpy(buf + 3, name, nl);
    buf[3 + nl] = '}';
    memcpy(buf + 4 + nl, suffix, sl + 1);
    return 0;
}

static const char *dedup_word(enum ctr_apply_dedup d)
{
    return d == CTR_APPLY_DEDUP_EXACT ? "exact"
           : d == CTR_APPLY_DEDUP_HLL ? "hll"
                                      : "";
}

int ctr_apply_stamp_key(char *buf, size_t len, const char *value_key)
{
    size_t n = strlen(value_key);
    if (n + sizeof(CTR_APPLY_STAMP_SUFFIX) > len)
        return -1;
    memcpy(buf, value_key, n);
    memcpy(buf + n, CTR_APPLY_STAMP_SUFFIX, sizeof(CTR_APPLY_STAMP_SUFFIX));
    return 0;
}

int ctr_apply_lo_key(char *buf, size_t len, const char *value_key)
{
    size_t n = strlen(value_key);
    if (n + sizeof(CTR_APPLY_LO_SUFFIX) > len)
        return -1;
    memcpy(buf, value_key, n);
    memcpy(buf + n, CTR_APPLY_LO_SUFFIX, sizeof(CTR_APPLY_LO_SUFFIX));
    return 0;
}

/* buf = value_key suffix; -1 if it does not fit. */
static int beside(char *buf, size_t len, const char *value_key,
                  const char *suffix)
{
    size_t n = strlen(value_key), sl = strlen(suffix);
    if (n + sl + 1 > len)
        return -1;
    memcpy(buf, value_key, n);
    memcpy(buf + n, suffix, sl + 1);
    return 0;
}

int ctr_apply_pending_key(char *buf, size_t len, const char *value_key)
{
    return beside(buf, len, value_key, CTR_APPLY_PENDING_SUFFIX);
}

/* The tag of each slot: the smallest number whose decimal text hashes to
 * it. Found once per process (about 160,000 CRCs), the same everywhere. */
static uint32_t slot_tag[CTR_SLOTS];
static pthread_once_t slot_tags_once = PTHREAD_ONCE_INIT;

static void slot_tags_find(void)
{
    char txt[16];
    int left = CTR_SLOTS;
    for (uint32_t i = 1; left > 0; i++) {
        int n = snprintf(txt, sizeof(txt), "%u", (unsigned)i);
        int slot = ctr_key_slot(txt, (size_t)n);
        if (slot_tag[slot] == 0) {
            slot_tag[slot] = i;
            left--;
        }
    }
}

void ctr_apply_epoch_key(char *buf, int slot)
{
    pthread_once(&slot_tags_once, slot_tags_find);
    snprintf(buf, CTR_APPLY_EPOCH_KEY_MAX, CTR_APPLY_EPOCH_PREFIX "{%u}",
             (unsigned)slot_tag[slot & (CTR_SLOTS - 1)]);
}

int ctr_apply_guard_key(char *buf, size_t len, const char *name, const char *id)
{
    int n = snprintf(buf, len, "{c:%s}:id:%s", name, id);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

static int make_guard_key(char *buf, size_t len, const char *name,
                          const char *id)
{
    return ctr_apply_guard_key(buf, len, name, id ? id : "");
}

int ctr_apply_write_argv(ctr_apply_argv *a, const char *sha, const char *name,
                         const ctr_apply_spec *s)
{
    char fence[24] = ":o:";
    if (s->fence_kind)
        fence[1] = s->fence_kind;
    ctr_i64_text(s->fence_partition, fence + 3);
    if (make_key(a->keys[0], sizeof(a->keys[0]), name, s->key_suffix) ||
        ctr_apply_stamp_key(a->keys[1], sizeof(a->keys[1]), a->keys[0]) ||
        ctr_apply_pending_key(a->keys[2], sizeof(a->keys[2]), a->keys[0]) ||
        make_key(a->keys[3], sizeof(a->keys[3]), name,
                 s->dedup_suffix[0] ? s->dedup_suffix : ":none") ||
        make_key(a->keys[4], sizeof(a->keys[4]), name, fence) ||
        make_guard_key(a->keys[5], sizeof(a->keys[5]), name,
                       s->guard_id ? s->guard_id : s->pending_id) ||
        ctr_apply_lo_key(a->keys[7], sizeof(a->keys[7]), a->keys[0]) ||
        beside(a->keys[8], sizeof(a->keys[8]), a->keys[0], ":hi"))
        return -1;
    ctr_apply_epoch_key(a->keys[6],
                        ctr_key_slot(a->keys[0], strlen(a->keys[0])));
    ctr_i64_text(s->arg, a->nums[0]);
    ctr_i64_text(s->stamp_ms, a->nums[1]);
    a->nums[2][0] = a->nums[3][0] = a->nums[6][0] = '\0';
    if (s->has_min)
        ctr_i64_text(s->min, a->nums[2]);
    if (s->has_max)
        ctr_i64_text(s->max, a->nums[3]);
    ctr_i64_text(s->ttl_s, a->nums[4]);
    ctr_i64_text(s->dedup_ttl_s, a->nums[5]);
    if (s->fence_offset >= 0)
        ctr_i64_text(s->fence_offset, a->nums[6]);
    ctr_i64_text(s->guard_id ? s->guard_ttl_s : 0, a->nums[7]);
    a->info[0] = '\0';
    if (s->pending_id) {
        size_t n = ctr_i64_text(s->created_ms, a->info);
        a->info[n++] = '|';
        ctr_i64_text(s->gen_ms, a->info + n);
    }

    const char *argv[] = {"EVALSHA",
                          sha,
                          "9",
                          a->keys[0],
                          a->keys[1],
                          a->keys[2],
                          a->keys[3],
                          a->keys[4],
                          a->keys[5],
                          a->keys[6],
                          a->keys[7],
                          a->keys[8],
                          s->is_set ? "set" : "add",
                          a->nums[0],
                          a->nums[1],
                          dedup_word(s->dedup),
                          s->user_id ? s->user_id : "",
                          a->nums[2],
                          a->nums[3],
                          s->clamp ? "clamp" : "reject",
                          a->nums[4],
                          a->nums[5],
                          a->nums[6],
                          a->nums[7],
                          s->idem_head ? s->idem_head : "",
                          s->pending_id ? s->pending_id : "",
                          a->info,
                          s->epoch_want ? s->epoch_want : ""};
    a->argc = (int)(sizeof(argv) / sizeof(argv[0]));
    memcpy(a->argv, argv, sizeof(argv));
    return 0;
}

/* keys[0] value, [1] stamp, [2] pending hash, [3] guard of the write,
 * [4] lo, [5] hi. */
static int pending_keys(ctr_apply_argv *a, const char *name,
                        const ctr_apply_spec *s)
{
    if (s->pending_id == NULL ||
        make_key(a->keys[0], sizeof(a->keys[0]), name, s->key_suffix) ||
        ctr_apply_stamp_key(a->keys[1], sizeof(a->keys[1]), a->keys[0]) ||
        ctr_apply_pending_key(a->keys[2], sizeof(a->keys[2]), a->keys[0]) ||
        make_guard_key(a->keys[3], sizeof(a->keys[3]), name, s->pending_id) ||
        ctr_apply_lo_key(a->keys[4], sizeof(a->keys[4]), a->keys[0]) ||
        beside(a->keys[5], sizeof(a->keys[5]), a->keys[0], ":hi"))
        return -1;
    return 0;
}

int ctr_apply_undo_argv(ctr_apply_argv *a, const char *sha, const char *name,
                        const ctr_apply_spec *s)
{
    if (pending_keys(a, name, s) != 0)
        return -1;
    const char *argv[] = {"EVALSHA",
                          sha,
                          "6",
                          a->keys[0],
                          a->keys[1],
                          a->keys[2],
                          a->keys[3],
                          a->keys[4],
                          a->keys[5],
                          s->pending_id,
                          s->idem_token ? s->idem_token : ""};
    a->argc = (int)(sizeof(argv) / sizeof(argv[0]));
    memcpy(a->argv, argv, sizeof(argv));
    return 0;
}

int ctr_apply_finish_argv(ctr_apply_argv *a, const char *sha, const char *name,
                          const ctr_apply_spec *s)
{
    if (pending_keys(a, name, s) != 0)
        return -1;
    const char *argv[] = {"EVALSHA",     sha,
                          "5",           a->keys[0],
                          a->keys[2],    a->keys[4],
                          a->keys[5],    a->keys[3],
                          s->pending_id, s->idem_token ? s->idem_token : ""};
    a->argc = (int)(sizeof(argv) / sizeof(argv[0]));
    memcpy(a->argv, argv, sizeof(argv));
    return 0;
}

int ctr_apply_reply_i64(const redisReply *r, int64_t *out)
{
    /* Redis writes integers as -?[0-9]+; parsed by hand because strtoll's
     * locale and base handling was 5 % of a batch GET. */
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20)
        return -1;
    const char *p = r->str, *end = r->str + r->len;
    int neg = *p == '-';
    if (neg && ++p == end)
        return -1;
    uint64_t u = 0;
    for (; p < end; p++) {
        unsigned d = (unsigned)(unsigned char)*p - '0';
        if (d > 9 || __builtin_mul_overflow(u, 10, &u) ||
            __builtin_add_overflow(u, d, &u))
            return -1;
    }
    if (u > (uint64_t)INT64_MAX + (uint64_t)neg)
        return -1;
    *out = neg ? (int64_t)(0 - u) : (int64_t)u;
    return 0;
}

enum ctr_apply_status ctr_apply_parse(const redisReply *reply,
                                      ctr_apply_result *res, char *errbuf,
                                      size_t errlen)
{
    memset(res, 0, sizeof(*res));
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 7 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER &&
        reply->element[0]->integer >= 0 && reply->element[0]->integer <= 8 &&
        ctr_apply_reply_i64(reply->element[1], &res->value) == 0 &&
        ctr_apply_reply_i64(reply->element[2], &res->prev) == 0 &&
        reply->element[3]->type == REDIS_REPLY_STRING &&
        reply->element[3]->len < sizeof(res->prev_stamp) &&
        reply->element[4]->type == REDIS_REPLY_STRING &&
        reply->element[5]->type == REDIS_REPLY_STRING &&
        ctr_apply_reply_i64(reply->element[6], &res->seen) == 0) {
        res->outcome = (enum ctr_apply_outcome)reply->element[0]->integer;
        if (res->outcome == CTR_APPLY_OUT_OF_RANGE)
            return CTR_APPLY_OVERFLOW;
        const redisReply *ep = reply->element[5];
        if (ep->len < sizeof(res->epoch)) {
            memcpy(res->epoch, ep->str, ep->len);
            res->epoch[ep->len] = '\0';
        }
        memcpy(res->prev_stamp, reply->element[3]->str, reply->element[3]->len);
        const redisReply *rec = reply->element[4];
        if (rec->len < sizeof(res->record)) {
            memcpy(res->record, rec->str, rec->len);
            res->record[rec->len] = '\0';
        }
        if (rec->len > 0 && rec->str[0] == 'a') {
            char *end;
            res->recorded = 'a';
            res->recorded_delta = strtoll(rec->str + 1, &end, 10);
        } else if (rec->len > 0 && rec->str[0] == 'r') {
            res->recorded = 'r';
        }
        return CTR_APPLY_OK;
    }
    if (reply->type == REDIS_REPLY_ERROR && strstr(reply->str, "overflow"))
        return CTR_APPLY_OVERFLOW;
    snprintf(errbuf, errlen, "%s",
             reply->type == REDIS_REPLY_ERROR ? reply->str
                                              : "unexpected reply type");
    return CTR_APPLY_ERROR;
}

int ctr_idem_record_parse(const char *s, ctr_idem_record *out)
{
    long long lease, value, applied, ts, gen, seen;
    int outcome, n = 0;

    memset(out, 0, sizeof(*out));
    if (s[0] != 'A' || (s[1] != 'P' && s[1] != 'D'))
        return -1;
    if (sscanf(s + 2,
               "|%lld|%16[0-9a-f]|%16[0-9a-f]|%d|%lld|%lld|%lld|%lld|%lld%n",
               &lease, out->token, out->fingerprint, &outcome, &value, &applied,
               &ts, &gen, &seen, &n) != 9 ||
        s[2 + n] != '\0' ||
        (outcome != CTR_APPLY_APPLIED && outcome != CTR_APPLY_DUPLICATE))
        return -1;
    out->state = s[1];
    out->lease_ms = lease;
    out->outcome = outcome;
    out->value = value;
    out->applied = applied;
    out->ts_ms = ts;
    out->gen_ms = gen;
    out->seen = seen;
    return 0;
}
