/*
 * body.c - see body.h.
 */
#include "api/body.h"

#include "common/jsonparse.h"
#include "common/name.h"
#include "common/timeutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(api_body_error *err, const char *code, const char *field,
                const char *message)
{
    err->code = code;
    err->field = field;
    if (field)
        snprintf(err->message, sizeof(err->message), "%s: %s", field, message);
    else
        snprintf(err->message, sizeof(err->message), "%s", message);
    return -1;
}

/* The fields, as static strings for api_body_error.field. */
static const char *const FIELDS[] = {"value", "timestamp", "user_id",
                                     "metadata"};

static const char *known_field(const char *name)
{
    for (size_t i = 0; i < sizeof(FIELDS) / sizeof(FIELDS[0]); i++)
        if (strcmp(name, FIELDS[i]) == 0)
            return FIELDS[i];
    return NULL;
}

/* A body ctr_json_parse_ex refused: which field, when one is at fault. */
static int refuse_json(api_body_error *err, const ctr_json_error *jerr)
{
    const char *field = known_field(jerr->member);
    char msg[sizeof(err->message)];

    switch (jerr->fault) {
    case CTR_JSON_DUPLICATE_KEY:
        /* A top-level repeat is named by the key itself, a nested one by
         * the member it is in. The key is shown JSON-escaped in the
         * answer, cut to 71 bytes. */
        if (jerr->member[0] == '\0')
            field = known_field(jerr->key);
        snprintf(msg, sizeof(msg), "duplicate key \"%s\"%s%s", jerr->key,
                 field && jerr->member[0] ? " in " : "",
                 field && jerr->member[0] ? field : "");
        err->code = "invalid_json";
        err->field = field;
        snprintf(err->message, sizeof(err->message), "%s", msg);
        return -1;
    case CTR_JSON_INT_RANGE:
        if (field == FIELDS[0])
            return fail(err, "invalid_field", field,
                        "must be an integer from -9223372036854775808 to "
                        "9223372036854775807");
        if (field != NULL)
            return fail(err, "invalid_field", field,
                        "holds an integer beyond 64 bits (from "
                        "-9223372036854775808 to 18446744073709551615)");
        return fail(err, "invalid_json", NULL,
                    "request body holds an integer beyond 64 bits");
    case CTR_JSON_TOO_DEEP: {
        /* short enough that "<field>: " fits before it in err->message
         * (gcc -O2 checks the truncation) */
        char deep[80];
        snprintf(deep, sizeof(deep),
                 "%s arrays and objects deeper than %d levels",
                 field ? "nests" : "request body nests", CTR_JSON_MAX_DEPTH);
        return fail(err, "invalid_json", field, deep);
    }
    default: break;
    }
    return fail(err, "invalid_json", NULL, "request body is not valid JSON");
}

void api_write_body_clear(api_write_body *body)
{
    if (body == NULL)
        return;
    free(body->user_id);
    free(body->metadata);
    memset(body, 0, sizeof(*body));
}

/* Long on purpose: one pass over the fields, each checked where it is
 * read, so that a refusal names the first field at fault. */
int api_body_from_object(struct json_object *root, enum api_body_mode mode,
                         const char *const *skip, api_write_body *out,
                         api_body_error *err)
{
    int rc = -1;

    memset(out, 0, sizeof(*out));
    out->value = 1;
    if (!json_object_is_type(root, json_type_object))
        return fail(err, "invalid_json", NULL,
                    "request body must be a JSON object");

    json_object_object_foreach(root, key, val)
    {
        int skipped = 0;
        for (size_t k = 0; skip && skip[k]; k++)
            skipped |= strcmp(key, skip[k]) == 0;
        if (skipped)
            continue;
        if (strcmp(key, "value") == 0) {
            int64_t v;
            if (!json_object_is_type(val, json_type_int)) {
                fail(err, "invalid_field", "value",
                     mode == API_BODY_SET ? "must be an integer"
                                          : "must be a positive integer");
                goto out;
            }
            v = json_object_get_int64(val);
            if (v == INT64_MAX &&
                json_object_get_uint64(val) > (uint64_t)INT64_MAX) {
                fail(err, "invalid_field", "value",
                     "must be at most 9223372036854775807");
                goto out;
            }
            if (v < 1 && mode == API_BODY_DELTA) {
                fail(err, "invalid_field", "value",
                     "must be a positive integer");
                goto out;
            }
            out->value = v;
            out->has_value = 1;
        } else if (strcmp(key, "timestamp") == 0) {
            if (!json_object_is_type(val, json_type_string) ||
                ctr_time_parse_rfc3339(json_object_get_string(val),
                                       &out->ts_ms) != 0 ||
                out->ts_ms <= 0) {
                fail(err, "invalid_field", "timestamp",
                     "must be an RFC 3339 date-time with an offset, such as "
                     "2026-11-26T10:30:00Z");
                goto out;
            }
        } else if (strcmp(key, "user_id") == 0) {
            if (json_object_is_type(val, json_type_null))
                continue;
            if (!json_object_is_type(val, json_type_string) ||
                !ctr_user_id_valid(json_object_get_string(val),
                                   (size_t)json_object_get_string_len(val))) {
                fail(err, "invalid_field", "user_id",
                     "must be a string of 1-256 bytes of UTF-8 without "
                     "control characters");
                goto out;
            }
            free(out->user_id);
            out->user_id = strdup(json_object_get_string(val));
            if (out->user_id == NULL) {
                fail(err, "internal", NULL, "out of memory");
                goto out;
            }
        } else if (strcmp(key, "metadata") == 0) {
            if (json_object_is_type(val, json_type_null))
                continue;
            if (!json_object_is_type(val, json_type_object)) {
                fail(err, "invalid_field", "metadata", "must be an object");
                goto out;
            }
            free(out->metadata);
            /* '/' as is: json-c's "\/" would let the event outgrow the
             * body (ingest/event.c decodes metadata the same way). */
            out->metadata = strdup(json_object_to_json_string_ext(
                val, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
            if (out->metadata == NULL) {
                fail(err, "internal", NULL, "out of memory");
                goto out;
            }
        } else {
            /* The key may hold anything; never echo it into the message. */
            fail(err, "unknown_field", NULL,
                 skip ? "unknown field in a write (allowed: name, op, value, "
                        "timestamp, user_id, metadata)"
                      : "unknown field in request body (allowed: value, "
                        "timestamp, user_id, metadata)");
            goto out;
        }
    }
    rc = 0;
out:
    if (rc != 0)
        api_write_body_clear(out);
    if (rc == 0 && mode == API_BODY_SET && !out->has_value) {
        fail(err, "invalid_field", "value",
             "is required: the new value of the gauge");
        rc = -1;
        api_write_body_clear(out);
    }
    return rc;
}

int api_body_parse_write(const char *buf, size_t len, enum api_body_mode mode,
                         api_write_body *out, api_body_error *err)
{
    ctr_json_error jerr;
    size_t i;

    memset(out, 0, sizeof(*out));
    out->value = 1;
    for (i = 0; i < len; i++)
        if (buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\r' && buf[i] != '\n')
            break;
    if (i == len) {
        if (mode == API_BODY_SET)
            return fail(err, "invalid_field", "value",
                        "is required: the new value of the gauge");
        return 0;
    }
    struct json_object *root = ctr_json_parse_ex(
        buf, len, CTR_JSON_UNIQUE_KEYS | CTR_JSON_EXACT_INTS, &jerr);
    if (root == NULL)
        return refuse_json(err, &jerr);
    int rc = api_body_from_object(root, mode, NULL, out, err);
    json_object_put(root);
    return rc;
}

int api_body_refuse_json(api_body_error *err, const ctr_json_error *jerr)
{
    return refuse_json(err, jerr);
}
