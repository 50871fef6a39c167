/*
 * auth.h - optional bearer tokens of counter-api.
 *
 * Tokens come from `auth.tokens` in the config and from the file named by
 * `auth.tokens_file` (COUNTER_AUTH_TOKENS_FILE). When neither holds a token,
 * auth is off and every request passes. A read token may read (GET, and
 * /metrics); a write token may also write. The presented token is compared
 * with every configured one in time that depends only on its own length,
 * so timing tells neither how much of a token matched nor which one did.
 * Token text never reaches a log line or an error message.
 *
 * The tokens file holds one token per line, after its access:
 *
 *     # who uses it, since when
 *     read  3q2+7w...      # a trailing comment after whitespace is fine
 *     write Zx9...
 *
 * Blank lines and lines starting with '#' are skipped. A token is 16 to 256
 * characters of the RFC 6750 token alphabet: A-Z a-z 0-9 - . _ ~ + / and
 * trailing '='.
 */
#ifndef COUNTER_API_AUTH_H
#define COUNTER_API_AUTH_H

#include "common/config.h"

#include <stddef.h>

enum { API_AUTH_TOKEN_MIN = 16, API_AUTH_TOKEN_MAX = 256 };

/* What a request may do. WRITE includes READ (bits: READ=1, WRITE=3). */
enum api_access {
    API_ACCESS_NONE = 0,
    API_ACCESS_READ = 1,
    API_ACCESS_WRITE = 3,
};

typedef struct api_auth api_auth;

/*
 * The tokens of cfg (auth.tokens, then the tokens file, read now). Returns
 * a new table the caller frees with api_auth_free(), or NULL with a
 * one-line reason in errbuf (naming the file and line, never the token).
 * Main thread, at startup.
 */
api_auth *api_auth_new(const ctr_config *cfg, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

void api_auth_free(api_auth *a);

/* How many tokens are configured; 0 means auth is off. */
size_t api_auth_count(const api_auth *a);

/*
 * Adds the tokens of a tokens file's text (format above). source names it
 * in errors ("tokens.txt"). Returns 0, or -1 with errbuf filled; on -1 the
 * table may hold some of the file's tokens and should be freed.
 */
int api_auth_add_text(api_auth *a, const char *text, const char *source,
                      char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/*
 * The access that an Authorization header value grants: the access of the
 * configured token it carries as "Bearer <token>", or API_ACCESS_NONE when
 * the value is NULL, malformed or carries an unknown token. Compares with
 * every token, whatever matched. Loop thread; no allocation.
 */
enum api_access api_auth_check(const api_auth *a, const char *authorization);

/*
 * 1 if the n bytes at x and y are equal, else 0, in time that depends on
 * n only (no exit at the first difference).
 */
int api_auth_equal_ct(const void *x, const void *y, size_t n);

#endif
