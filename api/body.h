/*
 * body.h - parses and validates the JSON body of a write. Pure function:
 * the unit and fuzz tests call it directly.
 */
#ifndef COUNTER_API_BODY_H
#define COUNTER_API_BODY_H

#include <stddef.h>
#include <stdint.h>

typedef struct api_write_body {
    int64_t value;  /* > 0 (any integer for a set); 1 when absent */
    int has_value;  /* "value" was given */
    int64_t ts_ms;  /* "timestamp" as ms since the epoch; 0 when absent */
    char *user_id;  /* owned; NULL when absent */
    char *metadata; /* owned compact JSON object text; NULL when absent */
} api_write_body;

enum api_body_mode {
    API_BODY_DELTA, /* increment/decrement: value is a positive amount */
    API_BODY_SET,   /* set: value is the new value, any integer, required */
};

typedef struct api_body_error {
    const char *code;  /* "invalid_json", "invalid_field", "unknown_field" */
    const char *field; /* the offending field, or NULL for the whole body */
    char message[160];
} api_body_error;

/*
 * Parses buf[0..len). An empty or all-whitespace body means all defaults.
 * Accepted fields: "value" (integer >= 1; for a set, any integer and
 * required), "timestamp" (RFC 3339 string with an offset), "user_id"
 * (string, see ctr_user_id_valid), "metadata" (object). Any other field is
 * refused so a misspelt "vaule" cannot silently count as 1. An object
 * with a repeated key anywhere in the body is invalid_json naming the key
 * (field: the field it is or is in); an integer beyond 64 bits anywhere is
 * invalid_field naming the field. metadata is kept as compact JSON
 * without escaping '/', so it is never longer than it came.
 * Returns 0 with *out filled (caller calls api_write_body_clear), or -1
 * with *err filled and nothing to free.
 */
int api_body_parse_write(const char *buf, size_t len, enum api_body_mode mode,
                         api_write_body *out, api_body_error *err)
    __attribute__((warn_unused_result));

void api_write_body_clear(api_write_body *body);

#endif
