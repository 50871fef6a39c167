/*
 * fuzz_body.c - api_body_parse_write on any bytes, in both modes.
 *
 * Input: the first byte picks the mode (even: increment/decrement, odd:
 * set), the rest is the body (not NUL-terminated, as evhttp hands it over).
 * Beyond "no crash": an accepted body obeys the contract in body.h (value
 * >= 1 for a delta, given for a set; a valid user_id; metadata an object),
 * and written out again as JSON it parses to the very same fields; its
 * metadata is never longer than the body it came in (an event must not
 * outgrow its write); a refusal has a known code and a message, and leaves
 * nothing to free.
 */
#include "api/body.h"
#include "common/jsonparse.h"
#include "common/name.h"
#include "common/timeutil.h"
#include "fuzz.h"

#include <json-c/json.h>

static int streq_or_null(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* body as a JSON object of the fields it holds; caller puts it */
static struct json_object *to_json(const api_write_body *b)
{
    struct json_object *o = json_object_new_object();
    FUZZ_CHECK(o != NULL);
    if (b->has_value)
        json_object_object_add(o, "value", json_object_new_int64(b->value));
    if (b->ts_ms) {
        char ts[40];
        FUZZ_CHECK(ctr_time_format_rfc3339(b->ts_ms, ts, sizeof(ts)) > 0);
        json_object_object_add(o, "timestamp", json_object_new_string(ts));
    }
    if (b->user_id)
        json_object_object_add(o, "user_id",
                               json_object_new_string(b->user_id));
    if (b->metadata) {
        struct json_object *m =
            ctr_json_parse(b->metadata, strlen(b->metadata));
        FUZZ_CHECK(m != NULL && json_object_is_type(m, json_type_object));
        json_object_object_add(o, "metadata", m);
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum api_body_mode mode = (data[0] & 1) ? API_BODY_SET : API_BODY_DELTA;
    const char *buf = (const char *)data + 1;
    api_write_body b, again;
    api_body_error err;

    memset(&err, 0, sizeof(err));
    if (api_body_parse_write(buf, size - 1, mode, &b, &err) != 0) {
        FUZZ_CHECK(err.code != NULL);
        FUZZ_CHECK(strcmp(err.code, "invalid_json") == 0 ||
                   strcmp(err.code, "invalid_field") == 0 ||
                   strcmp(err.code, "unknown_field") == 0);
        FUZZ_CHECK(err.message[0] != '\0');
        FUZZ_CHECK(b.user_id == NULL && b.metadata == NULL);
        return 0;
    }
    if (mode == API_BODY_DELTA)
        FUZZ_CHECK(b.value >= 1);
    else
        FUZZ_CHECK(b.has_value);
    FUZZ_CHECK(b.has_value || b.value == 1);
    FUZZ_CHECK(b.ts_ms >= 0);
    if (b.user_id)
        FUZZ_CHECK(ctr_user_id_valid(b.user_id, strlen(b.user_id)));
    if (b.metadata)
        FUZZ_CHECK(strlen(b.metadata) < size - 1);

    /* Round trip: the fields written out as JSON read back the same. */
    struct json_object *o = to_json(&b);
    const char *text =
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    FUZZ_CHECK(api_body_parse_write(text, strlen(text), mode, &again, &err) ==
               0);
    FUZZ_CHECK(again.value == b.value && again.has_value == b.has_value);
    FUZZ_CHECK(again.ts_ms == b.ts_ms);
    FUZZ_CHECK(streq_or_null(again.user_id, b.user_id));
    FUZZ_CHECK(streq_or_null(again.metadata, b.metadata));
    json_object_put(o);
    api_write_body_clear(&again);
    api_write_body_clear(&b);
    return 0;
}
