/*
 * api_client.h - counterctl's calls to counter-api: where the api is
 * (--api URL, else COUNTER_API_URL, else http://127.0.0.1:<server.port>),
 * its bearer token (COUNTER_API_TOKEN, when auth is on), reads, and
 * writes that carry an Idempotency-Key and are sent again, with the same
 * key and the same body bytes, while their outcome is unsure.
 *
 * Each answer is turned into counterctl's exit status: 2xx ok, 4xx the api
 * refused (CTL_EXIT_FAILED), anything else - no connection, no answer,
 * 5xx - CTL_EXIT_UNREACHABLE.
 */
#ifndef COUNTER_CTL_API_CLIENT_H
#define COUNTER_CTL_API_CLIENT_H

#include "common/config.h"
#include "ctl/http_client.h"

#include <json-c/json.h>
#include <stddef.h>

/* Idempotency-Key: 1-128 printable ASCII characters, no spaces. */
enum { CTL_API_KEY_MAX = 128 };

typedef struct ctl_api {
    ctl_url url;
    char display[600]; /* http://host:port/base, for messages */
    char auth[400];    /* "Authorization: Bearer ...\r\n", or "" */
    int timeout_ms;    /* per request */
} ctl_api;

/*
 * Finds the api: url_opt (from --api; may be NULL), else COUNTER_API_URL,
 * else http://127.0.0.1:<cfg's server.port>; and COUNTER_API_TOKEN.
 * Returns 0, or -1 with the reason in errbuf (a usage error).
 */
int ctl_api_init(ctl_api *api, const ctr_config *cfg, const char *url_opt,
                 char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

typedef struct ctl_api_result {
    int exit_code;     /* CTL_EXIT_OK, CTL_EXIT_FAILED, CTL_EXIT_UNREACHABLE */
    int status;        /* the HTTP status, 0 without an answer */
    int replayed;      /* the api replayed the answer to an earlier try */
    int attempts;      /* requests sent */
    int retry_after_s; /* the answer's Retry-After, -1 when absent */
    json_object *doc;  /* the answer's JSON; NULL if none; owned */
    /* the answer's body as sent (NUL-terminated), for numbers json-c
     * would clamp to int64; NULL if none; owned */
    char *body;
    char code[64];      /* on failure: the api's error code, or ours
                         * (api_unreachable, no_answer, bad_answer) */
    char message[1024]; /* on failure: one line saying what happened */
} ctl_api_result;

/* GET target (starting with '/', escaped by the caller). Fills res;
 * returns res->exit_code. Free res with ctl_api_result_free. */
int ctl_api_get(const ctl_api *api, const char *target, ctl_api_result *res);

/*
 * POST body to target with the Idempotency-Key `key`. When the outcome
 * is unsure (no answer, 503 indeterminate or overloaded, 409
 * request_in_progress) sends it again, up to 4 times in all, after
 * Retry-After (else 1 s): the api applies a key's request once and
 * replays its answer. Fills res; returns res->exit_code.
 */
int ctl_api_write(const ctl_api *api, const char *target, const char *body,
                  const char *key, ctl_api_result *res);

void ctl_api_result_free(ctl_api_result *res);

/* A fresh random key, "counterctl-" and 32 hex digits. */
void ctl_api_new_key(char key[CTL_API_KEY_MAX + 1]);

/* 1 if key is usable as an Idempotency-Key. */
int ctl_api_key_valid(const char *key);

#endif
