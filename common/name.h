/*
 * name.h - the rules for counter names and user ids, in one place.
 *
 * A counter name is 1-128 characters of [A-Za-z0-9_.-]. The set excludes
 * '{', '}' and ':' so that no name can reach another counter's Redis keys
 * ("{c:<name>}" hash tags) and needs no quoting anywhere.
 */
#ifndef COUNTER_COMMON_NAME_H
#define COUNTER_COMMON_NAME_H

#include <stdbool.h>
#include <stddef.h>

#define CTR_NAME_MAX    128
#define CTR_USER_ID_MAX 256

/* True if s[0..len) is a valid counter name. */
bool ctr_name_valid(const char *s, size_t len);

/*
 * True if s[0..len) is a valid user id: 1-256 bytes of valid UTF-8 with no
 * control characters. User ids are stored verbatim, never interpreted.
 */
bool ctr_user_id_valid(const char *s, size_t len);

#endif
