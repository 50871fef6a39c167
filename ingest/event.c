/*
 * event.c - see event.h. Encoding is done by hand (the fields are few and
 * the api encodes one event per write); decoding uses json-c and checks
 * every field's type.
 */
#include "ingest/event.h"
#include "common/jsonparse.h"
#include "common/strbuf.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void ctr_event_clear(ctr_event *ev)
{
    if (ev == NULL)
        return;
    free(ev->user_id);
    free(ev->metadata);
    memset(ev, 0, sizeof(*ev));
}

int ctr_event_id_valid(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > CTR_EVENT_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x21 || s[i] > 0x7e)
            return 0;
    return 1;
}

/*
 * xorshift128+ seeded from /dev/urandom, one state per thread: event ids
 * need uniqueness, not secrecy, and this costs no system call per id.
 */
static _Thread_local uint64_t rng_state[2];
static _Thread_local int rng_seeded;

static uint64_t rng_next(void)
{
    if (!rng_seeded) {
        int fd = open("/dev/urandom", O_RDONLY);
        ssize_t got = fd >= 0 ? read(fd, rng_state, sizeof(rng_state)) : -1;
        if (fd >= 0)
            close(fd);
        if (got != (ssize_t)sizeof(rng_state)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            rng_state[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL;
            rng_state[1] = (uint64_t)getpid() ^ (uint64_t)ts.tv_sec;
        }
        if ((rng_state[0] | rng_state[1]) == 0)
            rng_state[1] = 1;
        rng_seeded = 1;
    }
    uint64_t s1 = rng_state[0];
    const uint64_t s0 = rng_state[1];
    rng_state[0] = s0;
    s1 ^= s1 << 23;
    rng_state[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rng_state[1] + s0;
}

uint64_t ctr_random_u64(void)
{
    return rng_next();
}

void ctr_event_new_id(char buf[37])
{
    uint8_t b[16];
    uint64_t r0 = rng_next(), r1 = rng_next();
    memcpy(b, &r0, 8);
    memcpy(b + 8, &r1, 8);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    static const char hex[] = "0123456789abcdef";
    int p = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            buf[p++] = '-';
        buf[p++] = hex[b[i] >> 4];
        buf[p++] = hex[b[i] & 15];
    }
    buf[p] = '\0';
}

static void strbuf_sink(void *dst, const char *p, size_t n)
{
    ctr_strbuf_put(dst, p, n);
}

static void count_sink(void *dst, const char *p, size_t n)
{
    (void)p;
    *(size_t *)dst += n;
}

#define PUT_LIT(put, dst, lit) put((dst), (lit), sizeof(lit) - 1)

static void put_i64(ctr_put_fn put, void *dst, int64_t v)
{
    char num[21];
    put(dst, num, ctr_i64_text(v, num));
}

/* The event's JSON, piece by piece into put. */
static void event_write(const ctr_event *ev, ctr_put_fn put, void *dst)
{
    PUT_LIT(put, dst, "{\"v\":");
    put_i64(put, dst, ev->v);
    PUT_LIT(put, dst, ",\"id\":");
    ctr_json_quote(ev->id, put, dst);
    PUT_LIT(put, dst, ",\"counter\":");
    ctr_json_quote(ev->counter, put, dst);
    PUT_LIT(put, dst, ",\"delta\":");
    put_i64(put, dst, ev->delta);
    if (ev->user_id) {
        PUT_LIT(put, dst, ",\"user_id\":");
        ctr_json_quote(ev->user_id, put, dst);
    }
    PUT_LIT(put, dst, ",\"ts\":");
    put_i64(put, dst, ev->ts_ms);
    if (ev->metadata) {
        PUT_LIT(put, dst, ",\"metadata\":");
        put(dst, ev->metadata, strlen(ev->metadata));
    }
    PUT_LIT(put, dst, "}");
}

char *ctr_event_encode(const ctr_event *ev, size_t *outlen)
{
    ctr_strbuf sb = {0};

    event_write(ev, strbuf_sink, &sb);
    if (sb.failed) {
        ctr_strbuf_clear(&sb);
        return NULL;
    }
    *outlen = sb.len;
    return sb.s;
}

size_t ctr_event_encoded_len(const ctr_event *ev)
{
    size_t n = 0;
    event_write(ev, count_sink, &n);
    return n;
}

/* Reads an integer field; json-c keeps big values as uint64, which we
 * refuse rather than silently clamp. */
static int get_int64(struct json_object *o, int64_t *out)
{
    if (!json_object_is_type(o, json_type_int))
        return -1;
    int64_t v = json_object_get_int64(o);
    if (v == INT64_MAX && json_object_get_uint64(o) > (uint64_t)INT64_MAX)
        return -1;
    *out = v;
    return 0;
}

/* Long on purpose: one pass over the fields, each checked where it is
 * read, so that a dead letter names the first field at fault. */
int ctr_event_decode(const char *buf, size_t len, ctr_event *ev, char *errbuf,
                     size_t errlen)
{
    struct json_object *root = NULL, *f;
    const char *bad = NULL;
    int64_t n;
    int rc = -1;

    memset(ev, 0, sizeof(*ev));
    if (len > CTR_EVENT_MAX_BYTES) {
        snprintf(errbuf, errlen, "event is larger than %d bytes",
                 CTR_EVENT_MAX_BYTES);
        goto out;
    }
    root = ctr_json_parse(buf, len);
    if (root == NULL) {
        snprintf(errbuf, errlen, "event is not valid JSON");
        goto out;
    }
    if (!json_object_is_type(root, json_type_object)) {
        snprintf(errbuf, errlen, "event must be a JSON object");
        goto out;
    }

    if (!json_object_object_get_ex(root, "v", &f) || get_int64(f, &n) ||
        n != CTR_EVENT_VERSION) {
        bad = "v: must be 1";
        goto bad;
    }
    ev->v = (int)n;

    if (!json_object_object_get_ex(root, "id", &f) ||
        !json_object_is_type(f, json_type_string) ||
        !ctr_event_id_valid(json_object_get_string(f),
                            (size_t)json_object_get_string_len(f))) {
        bad = "id: must be a string of 1-128 printable ASCII characters";
        goto bad;
    }
    memcpy(ev->id, json_object_get_string(f),
           (size_t)json_object_get_string_len(f) + 1);

    if (!json_object_object_get_ex(root, "counter", &f) ||
        !json_object_is_type(f, json_type_string) ||
        !ctr_name_valid(json_object_get_string(f),
                        (size_t)json_object_get_string_len(f))) {
        bad = "counter: must be 1-128 characters of [A-Za-z0-9_.-]";
        goto bad;
    }
    memcpy(ev->counter, json_object_get_string(f),
           (size_t)json_object_get_string_len(f) + 1);

    if (!json_object_object_get_ex(root, "delta", &f) ||
        get_int64(f, &ev->delta)) {
        bad = "delta: must be a 64-bit signed integer";
        goto bad;
    }

    if (json_object_object_get_ex(root, "user_id", &f) &&
        !json_object_is_type(f, json_type_null)) {
        if (!json_object_is_type(f, json_type_string) ||
            !ctr_user_id_valid(json_object_get_string(f),
                               (size_t)json_object_get_string_len(f))) {
            bad = "user_id: must be a string of 1-256 bytes without control "
                  "characters";
            goto bad;
        }
        ev->user_id = strdup(json_object_get_string(f));
        if (ev->user_id == NULL)
            goto oom;
    }

    if (!json_object_object_get_ex(root, "ts", &f) || get_int64(f, &n) ||
        n <= 0 || n > CTR_EVENT_TS_MAX_MS) {
        bad = "ts: must be an integer from 1 to 253402214399999 (ms since "
              "the epoch, up to 9999-12-30T23:59:59.999Z)";
        goto bad;
    }
    ev->ts_ms = n;

    if (json_object_object_get_ex(root, "metadata", &f) &&
        !json_object_is_type(f, json_type_null)) {
        if (!json_object_is_type(f, json_type_object)) {
            bad = "metadata: must be an object";
            goto bad;
        }
        /* json-c would write '/' as "\/": the metadata, and so a record
         * the applier re-publishes, could then outgrow the event and
         * CTR_EVENT_MAX_BYTES. Without that escape it never grows. */
        ev->metadata = strdup(json_object_to_json_string_ext(
            f, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        if (ev->metadata == NULL)
            goto oom;
    }
    rc = 0;
    goto out;
oom:
    bad = "out of memory";
bad:
    snprintf(errbuf, errlen, "%s", bad);
    ctr_event_clear(ev);
out:
    json_object_put(root);
    return rc;
}
