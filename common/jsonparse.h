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

/* Stricter readings for ctr_json_parse_ex, or'ed. */
enum ctr_json_flags {
    /* An object that has a key twice (compared after decoding escapes,
     * so "a" and "\u0061" are one key) is refused: parsers differ on
     * which of the two counts, and json-c keeps the last. */
    CTR_JSON_UNIQUE_KEYS = 1 << 0,
    /* An integer json-c cannot hold exactly is refused: json-c clamps one
     * below -2^63 to -2^63 and one above 2^64-1 to 2^64-1, silently. */
    CTR_JSON_EXACT_INTS = 1 << 1,
};

enum ctr_json_fault {
    CTR_JSON_INVALID = 1,   /* not one RFC 8259 value, or too deep */
    CTR_JSON_DUPLICATE_KEY, /* key names it */
    CTR_JSON_INT_RANGE,     /* an integer outside [-2^63, 2^64-1] */
};

/* Why ctr_json_parse_ex refused a text. */
typedef struct ctr_json_error {
    enum ctr_json_fault fault;
    /* The member of the top-level object the fault lies in (its key,
     * decoded), "" when the fault is not inside one. Cut to fit, on a
     * UTF-8 boundary; control characters shown as '?'. */
    char member[40];
    /* CTR_JSON_DUPLICATE_KEY: the repeated key, shown likewise, "..."
     * marking a cut. */
    char key[72];
} ctr_json_error;

/*
 * ctr_json_parse with the checks of flags (enum ctr_json_flags). On NULL,
 * err (which may be NULL) says why. Any thread.
 */
struct json_object *ctr_json_parse_ex(const char *buf, size_t len,
                                      unsigned flags, ctr_json_error *err)
    __attribute__((warn_unused_result));

#endif
