/*
 * jsonparse.h - strict whole-buffer JSON parsing for outside input.
 */
#ifndef COUNTER_COMMON_JSONPARSE_H
#define COUNTER_COMMON_JSONPARSE_H

#include <json-c/json.h>
#include <stddef.h>

/*
 * Parses buf[0..len) as exactly one JSON value, allowing only whitespace
 * around it (no trailing garbage, no second document). Returns a new
 * reference the caller puts, or NULL if the text is not valid JSON.
 */
struct json_object *ctr_json_parse(const char *buf, size_t len)
    __attribute__((warn_unused_result));

#endif
