/*
 * apply.c - see apply.h.
 */
#include "ingest/apply.h"

#include "common/strbuf.h"
#include "common/tz.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MIN_WINDOW_TTL_S = 60 };

/*
 * The write, in one call so that no interleaving can see half of it:
 * the applier's fence and id guard, dedup (SADD or PFADD), bounds (reject
 * or clamp), the add or set, the last-update stamp and the expiries.
 *
 * KEYS: value, dedup key, fence, guard, stamp.
 * ARGV: 1 op (add|set), 2 delta or target, 3 stamp ms ("0": none),
 * 4 dedup (""|exact|hll), 5 user id, 6 min, 7 max ("": none), 8 on_bound
 * (reject|clamp), 9 expiry of the value and stamp, 10 of the dedup key ("0":
 * none), 11 fence offset ("": none), 12 guard expiry ("0": no guard),
 * 13 the api's idempotency record head ("": an applier guard).
 * Returns {outcome, value, previous value, previous stamp, recorded}:
 * outcome 0 applied, 1 duplicate user, 2 refused by a bound, 3 offset
 * already applied, 4 event id already applied, 5 (api) idempotency key
 * seen before, nothing done; recorded is what the guard holds: "a<delta>"
 * or "r" (applier), or the api's record (see apply.h). The api keeps no
 * record of a refused write: a definite error leaves no trace (G2).
 * Values go back as strings: Lua numbers are
 * doubles and would round past 2^53. A set whose difference from the
 * current value would not fit in 64 bits (the event carries it) is refused
 * with an "overflow" error before anything changes.
 */
const char ctr_apply_write_script[] =
    /* exact decimal arithmetic: a set's difference is carried in the
     * event, and Lua's doubles would round it past 2^53 */
    "local function cmp(a, b)\n"
    "  if #a ~= #b then return #a < #b and -1 or 1 end\n"
    "  if a == b then return 0 end\n"
    "  return a < b and -1 or 1\n"
    "end\n"
    "local function digits(a, b, add)\n"
    "  local out, carry, i, j = {}, 0, #a, #b\n"
    "  while i >= 1 or carry ~= 0 do\n"
    "    local x = i >= 1 and tonumber(a:sub(i, i)) or 0\n"
    "    local y = j >= 1 and tonumber(b:sub(j, j)) or 0\n"
    "    local d = add and x + y + carry or x - y - carry\n"
    "    carry = 0\n"
    "    if d < 0 then d, carry = d + 10, 1 elseif d > 9 then d, carry = d - "
    "10, 1 end\n"
    "    out[#out + 1] = tostring(d)\n"
    "    i, j = i - 1, j - 1\n"
    "  end\n"
    "  local s = string.reverse(table.concat(out)):gsub('^0+', '')\n"
    "  return s == '' and '0' or s\n"
    "end\n"
    "local function split(x)\n"
    "  if x:sub(1, 1) == '-' then return -1, x:sub(2) end\n"
    "  return 1, x\n"
    "end\n"
    "local function int_sub(x, y)\n"
    "  local sx, ax = split(x)\n"
    "  local sy, ay = split(y)\n"
    "  local neg, s\n"
    "  if sx ~= sy then s, neg = digits(ax, ay, true), sx < 0\n"
    "  else\n"
    "    local c = cmp(ax, ay)\n"
    "    if c == 0 then return '0' end\n"
    "    if c > 0 then s, neg = digits(ax, ay, false), sx < 0\n"
    "    else s, neg = digits(ay, ax, false), sx > 0 end\n"
    "  end\n"
    "  return neg and '-' .. s or s\n"
    "end\n"
    "local function fits(x)\n"
    "  local sx, ax = split(x)\n"
    "  return cmp(ax, sx < 0 and '9223372036854775808' or "
    "'9223372036854775807') <= 0\n"
    "end\n"
    "local key, dkey, fkey, gkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"
    "local tkey = KEYS[5]\n"
    "local op, arg, ts = ARGV[1], ARGV[2], ARGV[3]\n"
    "local ttl, dttl = tonumber(ARGV[9]), tonumber(ARGV[10])\n"
    "local prev = redis.call('GET', key) or '0'\n"
    "local old_t = redis.call('GET', tkey) or ''\n"
    "local function done(outcome, recorded)\n"
    "  if ARGV[11] ~= '' then redis.call('SET', fkey, ARGV[11]) end\n"
    "  local v = redis.call('GET', key) or '0'\n"
    "  if ARGV[13] ~= '' and outcome ~= 2 then\n"
    "    recorded = ARGV[13] .. '|' .. outcome .. '|' .. v .. '|' ..\n"
    "      (recorded:sub(2)) .. '|' .. ts\n"
    "    redis.call('SET', gkey, recorded, 'EX', ARGV[12])\n"
    "  elseif ARGV[12] ~= '0' and ARGV[13] == '' then\n"
    "    redis.call('SET', gkey, recorded, 'EX', ARGV[12])\n"
    "  end\n"
    "  return {outcome, v, prev, old_t, recorded}\n"
    "end\n"
    "if ARGV[11] ~= '' then\n"
    "  local last = redis.call('GET', fkey)\n"
    "  if last and tonumber(ARGV[11]) <= tonumber(last) then\n"
    "    return {3, prev, prev, old_t, redis.call('GET', gkey) or ''}\n"
    "  end\n"
    "end\n"
    "if ARGV[12] ~= '0' then\n"
    "  local seen = redis.call('GET', gkey)\n"
    "  if seen and ARGV[13] ~= '' then return {5, prev, prev, old_t, seen} "
    "end\n"
    "  if seen then\n"
    "    if ARGV[11] ~= '' then redis.call('SET', fkey, ARGV[11]) end\n"
    "    return {4, prev, prev, old_t, seen}\n"
    "  end\n"
    "end\n"
    "if ARGV[4] == 'exact' then\n"
    "  local added = redis.call('SADD', dkey, ARGV[5])\n"
    "  if dttl > 0 then redis.call('EXPIRE', dkey, dttl) end\n"
    "  if added == 0 then return done(1, 'a0') end\n"
    "elseif ARGV[4] == 'hll' then\n"
    "  local before = redis.call('PFCOUNT', dkey)\n"
    "  redis.call('PFADD', dkey, ARGV[5])\n"
    "  if dttl > 0 then redis.call('EXPIRE', dkey, dttl) end\n"
    "  local after = redis.call('PFCOUNT', dkey)\n"
    "  if after <= before then return done(1, 'a0') end\n"
    "  arg = tostring(after - before)\n"
    "end\n"
    "local cur = tonumber(prev)\n"
    "local new = op == 'set' and tonumber(arg) or cur + tonumber(arg)\n"
    "local lo, hi = tonumber(ARGV[6]), tonumber(ARGV[7])\n"
    "local applied = arg\n"
    "if (lo and new < lo) or (hi and new > hi) then\n"
    "  if ARGV[8] ~= 'clamp' then return done(2, 'r') end\n"
    "  local target = (lo and new < lo) and lo or hi\n"
    "  op, arg = 'set', string.format('%d', target)\n"
    "end\n"
    "if op == 'set' then\n"
    "  applied = int_sub(arg, prev)\n"
    "  if not fits(applied) then\n"
    "    return redis.error_reply('ERR set: the difference would overflow')\n"
    "  end\n"
    "  redis.call('SET', key, arg)\n"
    "else\n"
    "  redis.call('INCRBY', key, arg)\n"
    "end\n"
    "if ts ~= '0' then redis.call('SET', tkey, ts) end\n"
    "if ttl > 0 then\n"
    "  redis.call('EXPIRE', key, ttl)\n"
    "  redis.call('EXPIRE', tkey, ttl)\n"
    "end\n"
    "return done(0, 'a' .. applied)\n";

/*
 * Takes back a write that the event log refused: restores the previous
 * value (by the applied difference, so later writes survive) and, if no
 * later write stamped the counter, the previous stamp; removes the user
 * from an exact dedup set. A value of 0 without a stamp is deleted: the
 * write made it.
 * ARGV: negated applied delta, our stamp, previous stamp, dedup, user id,
 * and the api's idempotency token ("": none).
 * KEYS: value, dedup key, idempotency guard, stamp.
 * A keyed write is undone only while its guard still names our token (no
 * retry has taken the write over), and its guard goes with it, so that a
 * retry applies afresh.
 */
const char ctr_apply_undo_script[] =
    "local key, dkey, gkey, tkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"
    "if ARGV[6] ~= '' then\n"
    "  local g = redis.call('GET', gkey)\n"
    "  if not g or g:match('^AP|%d+|(%x+)|') ~= ARGV[6] then return -1 end\n"
    "  redis.call('DEL', gkey)\n"
    "end\n"
    "local v = redis.call('INCRBY', key, ARGV[1])\n"
    "if redis.call('GET', tkey) == ARGV[2] then\n"
    "  if ARGV[3] == '' then redis.call('DEL', tkey)\n"
    "  else redis.call('SET', tkey, ARGV[3], 'KEEPTTL') end\n"
    "end\n"
    "if v == 0 and redis.call('EXISTS', tkey) == 0 then\n"
    "  redis.call('DEL', key)\n"
    "end\n"
    "if ARGV[4] == 'exact' then redis.call('SREM', dkey, ARGV[5]) end\n"
    "return 0\n";

/*
 * The api's idempotency record after the first attempt: KEYS[1] guard.
 * ARGV[1] "finish": the event is in the log; if the record is still
 * pending under token ARGV[2] it becomes done. ARGV[1] "claim": a retry
 * takes over a pending record whose lease ran out, if it still reads
 * ARGV[2] exactly, by writing ARGV[3]. Both keep the record's expiry and
 * return 1 if they changed it, else 0.
 */
const char ctr_apply_idem_script[] =
    "local g = redis.call('GET', KEYS[1])\n"
    "if not g then return 0 end\n"
    "if ARGV[1] == 'finish' then\n"
    "  if g:match('^AP|%d+|(%x+)|') ~= ARGV[2] then return 0 end\n"
    "  redis.call('SET', KEYS[1], 'AD' .. g:sub(3), 'KEEPTTL')\n"
    "  return 1\n"
    "end\n"
    "if g ~= ARGV[2] then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')\n"
    "return 1\n";

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
    ctr_i64_text(s->fence_partition, fence + 3);
    if (make_key(a->keys[0], sizeof(a->keys[0]), name, s->key_suffix) ||
        make_key(a->keys[1], sizeof(a->keys[1]), name,
                 s->dedup_suffix[0] ? s->dedup_suffix : ":none") ||
        make_key(a->keys[2], sizeof(a->keys[2]), name, fence) ||
        make_guard_key(a->keys[3], sizeof(a->keys[3]), name, s->guard_id) ||
        ctr_apply_stamp_key(a->keys[4], sizeof(a->keys[4]), a->keys[0]))
        return -1;
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

    const char *argv[] = {"EVALSHA",
                          sha,
                          "5",
                          a->keys[0],
                          a->keys[1],
                          a->keys[2],
                          a->keys[3],
                          a->keys[4],
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
                          s->idem_head ? s->idem_head : ""};
    a->argc = (int)(sizeof(argv) / sizeof(argv[0]));
    memcpy(a->argv, argv, sizeof(argv));
    return 0;
}

int ctr_apply_undo_argv(ctr_apply_argv *a, const char *sha, const char *name,
                        const ctr_apply_spec *s, const ctr_apply_result *res)
{
    int64_t applied;
    if (__builtin_sub_overflow(res->value, res->prev, &applied) ||
        applied == INT64_MIN)
        return -1;
    if (make_key(a->keys[0], sizeof(a->keys[0]), name, s->key_suffix) ||
        make_key(a->keys[1], sizeof(a->keys[1]), name,
                 s->dedup_suffix[0] ? s->dedup_suffix : ":none"))
        return -1;
    if (make_guard_key(a->keys[2], sizeof(a->keys[2]), name, s->guard_id) ||
        ctr_apply_stamp_key(a->keys[3], sizeof(a->keys[3]), a->keys[0]))
        return -1;
    snprintf(a->nums[0], 24, "%" PRId64, -applied);
    snprintf(a->nums[1], 24, "%" PRId64, s->stamp_ms);
    const char *argv[] = {"EVALSHA",
                          sha,
                          "4",
                          a->keys[0],
                          a->keys[1],
                          a->keys[2],
                          a->keys[3],
                          a->nums[0],
                          a->nums[1],
                          res->prev_stamp,
                          dedup_word(s->dedup),
                          s->user_id ? s->user_id : "",
                          s->idem_token ? s->idem_token : ""};
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
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 5 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER &&
        reply->element[0]->integer >= 0 && reply->element[0]->integer <= 5 &&
        ctr_apply_reply_i64(reply->element[1], &res->value) == 0 &&
        ctr_apply_reply_i64(reply->element[2], &res->prev) == 0 &&
        reply->element[3]->type == REDIS_REPLY_STRING &&
        reply->element[3]->len < sizeof(res->prev_stamp) &&
        reply->element[4]->type == REDIS_REPLY_STRING) {
        res->outcome = (enum ctr_apply_outcome)reply->element[0]->integer;
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
    long long lease, value, applied, ts;
    int outcome, n = 0;

    memset(out, 0, sizeof(*out));
    if (s[0] != 'A' || (s[1] != 'P' && s[1] != 'D'))
        return -1;
    if (sscanf(s + 2, "|%lld|%16[0-9a-f]|%16[0-9a-f]|%d|%lld|%lld|%lld%n",
               &lease, out->token, out->fingerprint, &outcome, &value, &applied,
               &ts, &n) != 7 ||
        s[2 + n] != '\0' ||
        (outcome != CTR_APPLY_APPLIED && outcome != CTR_APPLY_DUPLICATE))
        return -1;
    out->state = s[1];
    out->lease_ms = lease;
    out->outcome = outcome;
    out->value = value;
    out->applied = applied;
    out->ts_ms = ts;
    return 0;
}
