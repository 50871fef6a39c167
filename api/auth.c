/*
 * auth.c - see auth.h. Tokens are kept zero-padded to API_AUTH_TOKEN_MAX
 * bytes so that every comparison reads the same number of bytes whatever
 * the lengths; the presented token is compared with all of them and the
 * results are OR-ed together without a branch on any of them.
 */
#include "api/auth.h"
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

enum { TOKENS_FILE_MAX_BYTES = 1 << 20 };

typedef struct auth_token {
    unsigned char text[API_AUTH_TOKEN_MAX]; /* zero-padded */
    size_t len;
    enum api_access access;
} auth_token;

struct api_auth {
    auth_token *tokens;
    size_t n;
};

int api_auth_equal_ct(const void *x, const void *y, size_t n)
{
    /* volatile: keeps the compiler from turning this into an early exit */
    const volatile unsigned char *a = x, *b = y;
    unsigned diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)(a[i] ^ b[i]);
    return (int)(1u & ((diff - 1u) >> 8)); /* diff is 0..255 */
}

/* RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
 * "/" ) *"=" */
static int token_syntax_ok(const char *s, size_t len)
{
    size_t i = 0;
    if (len < API_AUTH_TOKEN_MIN || len > API_AUTH_TOKEN_MAX)
        return 0;
    for (; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
              c == '~' || c == '+' || c == '/'))
            break;
    }
    if (i == 0)
        return 0;
    while (i < len && s[i] == '=')
        i++;
    return i == len;
}

static int access_parse(const char *s, size_t len, enum api_access *out)
{
    if (len == 4 && memcmp(s, "read", 4) == 0)
        *out = API_ACCESS_READ;
    else if (len == 5 && memcmp(s, "write", 5) == 0)
        *out = API_ACCESS_WRITE;
    else
        return -1;
    return 0;
}

/* Adds one token; where names it in errors ("tokens.txt line 3"). */
static int add_token(api_auth *a, const char *token, size_t len,
                     enum api_access access, const char *where, char *errbuf,
                     size_t errlen)
{
    if (!token_syntax_ok(token, len)) {
        snprintf(errbuf, errlen,
                 "%s: a token is %d to %d characters of A-Z a-z 0-9 - . _ "
                 "~ + / with optional trailing '='",
                 where, API_AUTH_TOKEN_MIN, API_AUTH_TOKEN_MAX);
        return -1;
    }
    for (size_t i = 0; i < a->n; i++)
        if (a->tokens[i].len == len &&
            memcmp(a->tokens[i].text, token, len) == 0) {
            snprintf(errbuf, errlen, "%s: this token is listed twice", where);
            return -1;
        }
    auth_token *grown = realloc(a->tokens, (a->n + 1) * sizeof(*grown));
    if (grown == NULL) {
        snprintf(errbuf, errlen, "%s: out of memory", where);
        return -1;
    }
    a->tokens = grown;
    auth_token *t = &grown[a->n++];
    memset(t, 0, sizeof(*t));
    memcpy(t->text, token, len);
    t->len = len;
    t->access = access;
    return 0;
}

/* Clears secrets before free; volatile so that the stores are kept. */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

int api_auth_add_text(api_auth *a, const char *text, const char *source,
                      char *errbuf, size_t errlen)
{
    char where[300];
    size_t line = 0;
    const char *p = text;

    while (*p) {
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol : p + strlen(p);
        const char *next = eol ? eol + 1 : end;
        line++;
        snprintf(where, sizeof(where), "%s line %zu", source, line);
        if (end > p && end[-1] == '\r')
            end--;
        while (p < end && is_space(*p))
            p++;
        if (p == end || *p == '#') {
            p = next;
            continue;
        }
        const char *word = p;
        while (p < end && !is_space(*p))
            p++;
        enum api_access access;
        if (access_parse(word, (size_t)(p - word), &access) != 0) {
            snprintf(errbuf, errlen,
                     "%s: expected \"read TOKEN\" or \"write TOKEN\"", where);
            return -1;
        }
        while (p < end && is_space(*p))
            p++;
        const char *token = p;
        while (p < end && !is_space(*p))
            p++;
        size_t token_len = (size_t)(p - token);
        while (p < end && is_space(*p))
            p++;
        if (token_len == 0 || (p < end && *p != '#')) {
            snprintf(errbuf, errlen,
                     "%s: expected \"read TOKEN\" or \"write TOKEN\" (and "
                     "at most a # comment after it)",
                     where);
            return -1;
        }
        if (add_token(a, token, token_len, access, where, errbuf, errlen))
            return -1;
        p = next;
    }
    return 0;
}

/* Reads the whole tokens file into a NUL-terminated buffer. */
static char *read_tokens_file(const char *path, char *errbuf, size_t errlen)
{
    FILE *fp = NULL;
    char *buf = NULL;
    size_t len = 0;
    struct stat st;

    fp = fopen(path, "r");
    if (fp == NULL) {
        snprintf(errbuf, errlen, "auth.tokens_file: could not open \"%s\": %s",
                 path, strerror(errno));
        goto err;
    }
    if (fstat(fileno(fp), &st) == 0 && (st.st_mode & 0077))
        ctr_warn("auth.tokens_file %s is readable by other users; "
                 "chmod 600 it",
                 path);
    buf = malloc(TOKENS_FILE_MAX_BYTES + 1);
    if (buf == NULL) {
        snprintf(errbuf, errlen, "auth.tokens_file: out of memory");
        goto err;
    }
    len = fread(buf, 1, TOKENS_FILE_MAX_BYTES + 1, fp);
    if (ferror(fp)) {
        snprintf(errbuf, errlen, "auth.tokens_file: could not read \"%s\"",
                 path);
        goto err;
    }
    if (len > TOKENS_FILE_MAX_BYTES) {
        snprintf(errbuf, errlen,
                 "auth.tokens_file: \"%s\" is larger than %d bytes", path,
                 TOKENS_FILE_MAX_BYTES);
        goto err;
    }
    if (memchr(buf, '\0', len) != NULL) {
        snprintf(errbuf, errlen, "auth.tokens_file: \"%s\" is not text", path);
        goto err;
    }
    buf[len] = '\0';
    fclose(fp);
    return buf;
err:
    if (buf) {
        wipe(buf, len);
        free(buf);
    }
    if (fp)
        fclose(fp);
    return NULL;
}

api_auth *api_auth_new(const ctr_config *cfg, char *errbuf, size_t errlen)
{
    char where[600];
    char *text = NULL;
    api_auth *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        snprintf(errbuf, errlen, "auth: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_auth_tokens; i++) {
        const ctr_config_token *t = &cfg->auth_tokens[i];
        enum api_access access;
        snprintf(where, sizeof(where), "config: auth.tokens (%s line %zu)",
                 cfg->source_path, t->line);
        if (access_parse(t->access, strlen(t->access), &access) != 0) {
            snprintf(errbuf, errlen, "%s: access must be read or write", where);
            goto err;
        }
        if (add_token(a, t->token, strlen(t->token), access, where, errbuf,
                      errlen))
            goto err;
    }
    if (cfg->auth_tokens_file[0]) {
        text = read_tokens_file(cfg->auth_tokens_file, errbuf, errlen);
        if (text == NULL)
            goto err;
        snprintf(where, sizeof(where), "auth.tokens_file %s",
                 cfg->auth_tokens_file);
        if (api_auth_add_text(a, text, where, errbuf, errlen))
            goto err;
        if (a->n == cfg->n_auth_tokens) {
            /* an empty file would silently turn auth off */
            snprintf(errbuf, errlen, "%s: holds no token", where);
            goto err;
        }
    }
    if (text) {
        wipe(text, strlen(text));
        free(text);
    }
    return a;
err:
    if (text) {
        wipe(text, strlen(text));
        free(text);
    }
    api_auth_free(a);
    return NULL;
}

void api_auth_free(api_auth *a)
{
    if (a == NULL)
        return;
    if (a->tokens)
        wipe(a->tokens, a->n * sizeof(*a->tokens));
    free(a->tokens);
    free(a);
}

size_t api_auth_count(const api_auth *a)
{
    return a ? a->n : 0;
}

enum api_access api_auth_check(const api_auth *a, const char *authorization)
{
    unsigned char presented[API_AUTH_TOKEN_MAX];
    unsigned granted = 0;
    const char *p = authorization;

    if (p == NULL || strncasecmp(p, "Bearer", 6) != 0 || !is_space(p[6]))
        return API_ACCESS_NONE;
    p += 6;
    while (is_space(*p))
        p++;
    size_t len = 0;
    while (p[len] && !is_space(p[len]))
        len++;
    for (const char *q = p + len; *q; q++)
        if (!is_space(*q))
            return API_ACCESS_NONE;
    /* the shape of what was sent is the sender's to know: no secret here */
    if (!token_syntax_ok(p, len))
        return API_ACCESS_NONE;

    memset(presented, 0, sizeof(presented));
    memcpy(presented, p, len);
    for (size_t i = 0; i < a->n; i++) {
        const auth_token *t = &a->tokens[i];
        unsigned same =
            (unsigned)api_auth_equal_ct(presented, t->text, sizeof(presented)) &
            (unsigned)(t->len == len);
        granted |= (0u - same) & (unsigned)t->access;
    }
    wipe(presented, sizeof(presented));
    return (enum api_access)granted;
}
