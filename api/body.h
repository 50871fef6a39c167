/*
 * body.h - parses and validates the JSON body of a write. Pure function:
 * the unit and fuzz tests call it directly.
 */
#ifndef COUNTER_API_BODY_H
#define COUNTER_API_BODY_H

#include <stddef.h>
#include <stdint.h>

typedef struct api_write_body {
    int64_t value;  /* > 0; 1 when absent */
    char *user_id;  /* owned; NULL when absent */
    char *metadata; /* owned compact JSON object text; NULL when absent */
} api_write_body;

typedef struct api_body_error {
    const char *code;  /* "invalid_json", "invalid_field", "unknown_field" */
    const char *field; /* the offending field, or NULL for the whole body */
    char message[160];
} api_body_error;

/*
 * Parses buf[0..len). An empty or all-whitespace body means all defaults.
 * Accepted fields: "value" (integer >= 1), "user_id" (string, see
 * ctr_user_id_valid), "metadata" (object). Any other field is refused so a
 * misspelt "vaule" cannot silently count as 1.
 * Returns 0 with *out filled (caller calls api_write_body_clear), or -1
 * with *err filled and nothing to free.
 */
int api_body_parse_write(const char *buf, size_t len, api_write_body *out,
                         api_body_error *err)
    __attribute__((warn_unused_result));

void api_write_body_clear(api_write_body *body);

#endif
