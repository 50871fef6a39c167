/*
 * framing.h - every byte a client sends passes here before evhttp reads it.
 *
 * libevent 2.1's evhttp answers some requests itself, with an HTML page
 * and no hook to change it (an over-long request line or header block, a
 * malformed one, a bad Content-Length, an unknown method, a body over its
 * own cap, an Expect it does not know), and it reads a whole body before
 * any handler runs. So each connection's input is framed first: the
 * request line and header block are read whole and checked strictly
 * (stricter than evhttp, so evhttp never refuses what passes), the body is
 * counted by its Content-Length, and only then are the bytes left where
 * evhttp reads them (the bufferevent's input buffer; evbuffer callbacks
 * run before the bufferevent's read callback).
 *
 * A request that is refused never reaches evhttp as it came: in its place
 * (so after the answers to the requests before it, in order) evhttp reads
 * a stand-in, "GET " API_FRAMING_STAND_IN "<refusal> HTTP/1.x" with
 * Connection: close, which only this module writes (its path holds a
 * control character, which no request line that passes here has), and
 * which the request handler answers with the refusal's JSON error. Nothing
 * the client sends after it is read by anyone; the listener lingers on the
 * socket after the answer (listener.h) so that a client still sending does
 * not get a reset instead of the answer.
 *
 * Bodies: a Content-Length over max_body_bytes is refused (413) before any
 * of the body is read; so is one whose Authorization the preflight
 * callback refuses (401/403). A Transfer-Encoding (chunked) request body is
 * refused with 411: send a Content-Length. The body of a HEAD or TRACE,
 * which evhttp would not read (it would take it for the next request), is
 * dropped here.
 *
 * Memory: besides the request evhttp is answering, a connection holds at
 * most one unfinished header block here and max_header_bytes +
 * max_body_bytes of passed bytes evhttp has not taken yet (pipelined
 * requests; the socket is not read past that until evhttp takes some). A
 * connection holds at most the request being answered plus what its input
 * watermark lets in (listener.c), and here at most one unfinished header block.
 *
 * Loop thread only.
 */
#ifndef COUNTER_API_FRAMING_H
#define COUNTER_API_FRAMING_H

#include <event2/bufferevent.h>
#include <event2/http.h>
#include <stddef.h>
#include <stdint.h>

/* Why a request is refused; a stand-in carries the number. */
enum api_framing_refusal {
    API_REFUSE_NONE = 0,
    API_REFUSE_BAD_REQUEST_LINE,   /* 400 bad_request */
    API_REFUSE_BAD_HEADER,         /* 400 bad_request */
    API_REFUSE_BAD_CONTENT_LENGTH, /* 400 bad_request, Content-Length */
    API_REFUSE_AMBIGUOUS_LENGTH,   /* 400: Content-Length and
                                      Transfer-Encoding */
    API_REFUSE_UNAUTHORIZED,       /* 401 unauthorized (preflight) */
    API_REFUSE_FORBIDDEN,          /* 403 forbidden (preflight) */
    API_REFUSE_LENGTH_REQUIRED,    /* 411: Transfer-Encoding */
    API_REFUSE_BODY_TOO_LARGE,     /* 413: Content-Length too large */
    API_REFUSE_URI_TOO_LONG,       /* 414: request line too long */
    API_REFUSE_EXPECTATION,        /* 417: Expect other than 100-continue */
    API_REFUSE_HEADERS_TOO_LARGE,  /* 431: header block too large */
    API_REFUSE_NOT_IMPLEMENTED,    /* 501: method unknown, or CONNECT */
    API_REFUSE_VERSION,            /* 505: not HTTP/1.x */
    API_REFUSE_COUNT
};

/* The methods evhttp knows; anything else is API_FM_UNKNOWN. */
enum api_framing_method {
    API_FM_UNKNOWN = 0,
    API_FM_GET,
    API_FM_HEAD,
    API_FM_POST,
    API_FM_PUT,
    API_FM_DELETE,
    API_FM_OPTIONS,
    API_FM_TRACE,
    API_FM_PATCH,
    API_FM_CONNECT,
};

/*
 * Asked for every request with a body, before any of the body is read:
 * API_REFUSE_NONE, API_REFUSE_UNAUTHORIZED or API_REFUSE_FORBIDDEN. path is
 * the request target's path (not decoded); authorization the first
 * Authorization value (trimmed) or NULL, of authorizations in all.
 */
typedef enum api_framing_refusal (*api_framing_preflight_fn)(
    void *arg, enum api_framing_method method, const char *path,
    const char *authorization, int authorizations);

typedef struct api_framing_limits {
    size_t max_header_bytes; /* request line plus headers, line ends too */
    size_t max_body_bytes;   /* a larger Content-Length is refused */
    api_framing_preflight_fn preflight; /* NULL: none */
    void *preflight_arg;
} api_framing_limits;

typedef struct api_framing api_framing;

/*
 * Frames everything read into bev's input buffer from now on; call it
 * before anything is read. limits must outlive the result. Returns NULL
 * when out of memory.
 */
api_framing *api_framing_new(const api_framing_limits *limits,
                             struct bufferevent *bev)
    __attribute__((warn_unused_result));

/* Stops framing (bev may be freed after) and frees f. NULL is a no-op. */
void api_framing_free(api_framing *f);

/* 1 once a request on the connection was refused: nothing after it is
 * read, and the connection ends after its answer. */
int api_framing_refused(const api_framing *f);

#define API_FRAMING_STAND_IN "/\x01refused/"

/*
 * For the request handler: the refusal a request with this (URI) path
 * stands in for, or API_REFUSE_NONE when it is an ordinary request.
 */
enum api_framing_refusal api_framing_refusal_of(const char *path);

/* What a refusal answers: status, error code, field (or NULL), and a
 * message; limits fills in the sizes. */
typedef struct api_framing_answer {
    int status;
    const char *code;
    const char *field;
    char message[160];
} api_framing_answer;

void api_framing_describe(enum api_framing_refusal r,
                          const api_framing_limits *limits,
                          api_framing_answer *out);

/*
 * The reader of one request line and header block, exposed for the unit
 * tests. Fed the block's bytes so far (each call the same bytes as before
 * and any that came since), it reads each line once.
 */
typedef struct api_framing_head {
    size_t line; /* offset of the line being read */
    size_t scan; /* no line end before this offset in it */
    size_t skip; /* empty lines before the request line (dropped) */
    int skipped; /* how many */
    int in_headers;
    enum api_framing_method method;
    size_t target, target_len; /* offsets into the block */
    int minor;                 /* HTTP/1.<minor>; 1 until known */
    int64_t content_length;    /* -1: none; INT64_MAX: at least that */
    int transfer_encoding;
    int expect_other; /* an Expect other than 100-continue */
    size_t auth, auth_len;
    int auth_count;
    size_t len; /* when whole: bytes through the empty line, skip included */
    enum api_framing_refusal refusal;
} api_framing_head;

void api_framing_head_init(api_framing_head *h);

/*
 * Reads p[0..n). Returns 1 when the block is whole and well formed (h->len
 * set; its Content-Length not yet compared with a limit), 0 when it needs
 * more bytes, -1 when it is refused (h->refusal).
 */
int api_framing_head_feed(api_framing_head *h, const char *p, size_t n,
                          size_t max_header_bytes)
    __attribute__((warn_unused_result));

#endif
