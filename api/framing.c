/*
 * framing.c - see framing.h.
 *
 * How the input is kept. The bufferevent reads into its input buffer and
 * then (evbuffer callbacks first) calls on_input() with the count of bytes
 * it added; only then does evhttp's read callback look at the buffer. The
 * bytes before the new ones have been passed already. on_input() walks the
 * new ones: body bytes of a passed head stay; a whole header block that
 * passes stays; an unfinished block is copied out to `held` and cut from
 * the buffer, so evhttp sees nothing of it, and is put back whole, where
 * it was, once its end has come and it passed; a refused request and
 * everything after it are cut and the stand-in is added in their place.
 * The end of an input buffer is writable only while the bufferevent reads
 * into it, which is when on_input() runs. The stand-in is a GET whose path
 * starts "/\x01": no client's can (request_line() takes visible ASCII
 * only), and evhttp closes the connection after it (Connection: close).
 * Everything is cut and put back by moving evbuffer chains; a header block that
 * arrives in one read is read where it lies, with no copy.
 */
#include "api/framing.h"

#include "common/log.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MAX_SKIPPED_LINES = 4,     /* empty lines tolerated before a request */
    PREFLIGHT_PATH_MAX = 1024, /* longer paths route nowhere anyway */
    PREFLIGHT_AUTH_MAX = 512,  /* "Bearer " and a token of at most 256 */
};

enum phase {
    PH_HEAD,    /* reading a request line and header block */
    PH_BODY,    /* passing body_left bytes of a passed request */
    PH_DISCARD, /* cutting body_left bytes evhttp would not read */
    PH_REFUSED, /* a stand-in was passed; cutting everything */
};

struct api_framing {
    const api_framing_limits *lim;
    struct bufferevent *bev;
    struct evbuffer *in; /* the bufferevent's input: what evhttp reads */
    struct evbuffer_cb_entry *cb;
    struct evbuffer *tmp; /* scratch for cutting and splicing; lazily */
    enum phase phase;
    uint64_t body_left;
    api_framing_head head;
    char *held; /* the unfinished block, when it came in pieces */
    size_t held_len, held_cap;
    int busy;        /* in on_input(): our own changes are not new input */
    int watermarked; /* the read watermark is on */
};

/* ----------------------------------------------------------- the head --- */

/* RFC 9110 tchar: the characters of a method and a field name (ALPHA,
 * DIGIT and !#$%&'*+-.^_`|~), one bit per ASCII character. */
static int is_tchar(unsigned char c)
{
    static const uint64_t lo = 0x03ff6cfa00000000ULL; /* 0-63 */
    static const uint64_t hi = 0x57ffffffc7fffffeULL; /* 64-127 */
    return c < 64 ? (lo >> c) & 1 : c < 128 ? (hi >> (c - 64)) & 1 : 0;
}

/* A field value's bytes: HTAB, SP, VCHAR, obs-text; no CR, LF, NUL, DEL. */
static int is_field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int ci_equal(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && evutil_ascii_strncasecmp(p, lit, n) == 0;
}

static enum api_framing_method method_of(const char *p, size_t n)
{
#define IS(lit) (memcmp(p, lit, n) == 0)
    switch (n) {
    case 3: return IS("GET") ? API_FM_GET : IS("PUT") ? API_FM_PUT : 0;
    case 4: return IS("POST") ? API_FM_POST : IS("HEAD") ? API_FM_HEAD : 0;
    case 5: return IS("PATCH") ? API_FM_PATCH : IS("TRACE") ? API_FM_TRACE : 0;
    case 6: return IS("DELETE") ? API_FM_DELETE : 0;
    case 7:
        return IS("OPTIONS")   ? API_FM_OPTIONS
               : IS("CONNECT") ? API_FM_CONNECT
                               : 0;
    default: return API_FM_UNKNOWN;
    }
#undef IS
}

/*
 * Whether evhttp will take the request target p[0..n) (visible ASCII): a
 * path that starts with one '/' always; anything else (an absolute URI,
 * "*", a path starting "//") as evhttp's own parser says.
 */
static int target_ok(const char *p, size_t n)
{
    if (p[0] == '/' && (n == 1 || p[1] != '/'))
        return 1;
    char *copy = malloc(n + 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, p, n);
    copy[n] = '\0';
    struct evhttp_uri *u =
        evhttp_uri_parse_with_flags(copy, EVHTTP_URI_NONCONFORMANT);
    free(copy);
    if (u == NULL)
        return 0;
    evhttp_uri_free(u);
    return 1;
}

/* METHOD SP request-target SP HTTP/d.d, nothing else. */
static enum api_framing_refusal request_line(api_framing_head *h, const char *p,
                                             size_t a, size_t b)
{
    size_t i = a;
    while (i < b && is_tchar((unsigned char)p[i]))
        i++;
    size_t method_len = i - a;
    if (method_len == 0 || i >= b || p[i] != ' ')
        return API_REFUSE_BAD_REQUEST_LINE;
    size_t t = ++i;
    while (i < b && p[i] > 0x20 && p[i] < 0x7f)
        i++;
    if (i == t || i >= b || p[i] != ' ')
        return API_REFUSE_BAD_REQUEST_LINE;
    size_t v = i + 1;
    if (b - v != 8 || memcmp(p + v, "HTTP/", 5) != 0 || p[v + 5] < '0' ||
        p[v + 5] > '9' || p[v + 6] != '.' || p[v + 7] < '0' || p[v + 7] > '9')
        return API_REFUSE_BAD_REQUEST_LINE;
    if (p[v + 5] != '1')
        return API_REFUSE_VERSION;
    h->minor = p[v + 7] - '0';
    h->method = method_of(p + a, method_len);
    if (h->method == API_FM_UNKNOWN || h->method == API_FM_CONNECT)
        return API_REFUSE_NOT_IMPLEMENTED;
    if (!target_ok(p + t, i - t))
        return API_REFUSE_BAD_REQUEST_LINE;
    h->target = t;
    h->target_len = i - t;
    return API_REFUSE_NONE;
}

/* Digits only, once; a value beyond int64 is kept as INT64_MAX. */
static enum api_framing_refusal content_length(api_framing_head *h,
                                               const char *p, size_t n)
{
    int64_t v = 0;
    if (h->content_length != -1 || n == 0)
        return API_REFUSE_BAD_CONTENT_LENGTH;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return API_REFUSE_BAD_CONTENT_LENGTH;
        if (v > (INT64_MAX - 9) / 10)
            v = INT64_MAX;
        else
            v = v * 10 + (p[i] - '0');
    }
    h->content_length = v;
    return API_REFUSE_NONE;
}

/* name ":" OWS value OWS, no folding; notes the headers that matter. */
static enum api_framing_refusal header_line(api_framing_head *h, const char *p,
                                            size_t a, size_t b)
{
    size_t i = a;
    while (i < b && is_tchar((unsigned char)p[i]))
        i++;
    if (i == a || i >= b || p[i] != ':')
        return API_REFUSE_BAD_HEADER; /* also a folded line, or "Name :" */
    const char *name = p + a;
    size_t name_len = i - a, v = i + 1;
    for (size_t j = v; j < b; j++)
        if (!is_field_byte((unsigned char)p[j]))
            return API_REFUSE_BAD_HEADER;
    while (v < b && (p[v] == ' ' || p[v] == '\t'))
        v++;
    while (b > v && (p[b - 1] == ' ' || p[b - 1] == '\t'))
        b--;
    switch (name_len) { /* the lengths of the four names that matter */
    case 14:
        if (ci_equal(name, name_len, "Content-Length"))
            return content_length(h, p + v, b - v);
        break;
    case 17:
        if (ci_equal(name, name_len, "Transfer-Encoding"))
            h->transfer_encoding = 1;
        break;
    case 6:
        if (ci_equal(name, name_len, "Expect") &&
            !ci_equal(p + v, b - v, "100-continue"))
            h->expect_other = 1;
        break;
    case 13:
        if (ci_equal(name, name_len, "Authorization") && h->auth_count++ == 0) {
            h->auth = v;
            h->auth_len = b - v;
        }
        break;
    default: break;
    }
    return API_REFUSE_NONE;
}

/* The whole block is read: what its framing headers say together. */
static enum api_framing_refusal head_end(const api_framing_head *h)
{
    if (h->transfer_encoding && h->content_length != -1)
        return API_REFUSE_AMBIGUOUS_LENGTH; /* RFC 9112 6.3: smuggling */
    if (h->transfer_encoding)
        return API_REFUSE_LENGTH_REQUIRED;
    if (h->expect_other && h->minor >= 1)
        return API_REFUSE_EXPECTATION;
    return API_REFUSE_NONE;
}

void api_framing_head_init(api_framing_head *h)
{
    memset(h, 0, sizeof(*h));
    h->minor = 1;
    h->content_length = -1;
}

static int head_refuse(api_framing_head *h, enum api_framing_refusal r)
{
    h->refusal = r;
    return -1;
}

int api_framing_head_feed(api_framing_head *h, const char *p, size_t n,
                          size_t max_header_bytes)
{
    for (;;) {
        const char *lf =
            h->scan < n ? memchr(p + h->scan, '\n', n - h->scan) : NULL;
        if (lf == NULL) {
            h->scan = n;
            if (!h->in_headers && n - h->line > max_header_bytes)
                return head_refuse(h, API_REFUSE_URI_TOO_LONG);
            if (n - h->skip > max_header_bytes)
                return head_refuse(h, API_REFUSE_HEADERS_TOO_LARGE);
            return 0;
        }
        size_t next = (size_t)(lf - p) + 1, end = next - 1;
        if (end > h->line && p[end - 1] == '\r')
            end--; /* CRLF; a lone LF ends a line too, as in evhttp */
        enum api_framing_refusal r = API_REFUSE_NONE;
        if (!h->in_headers) {
            if (end - h->line > max_header_bytes)
                return head_refuse(h, API_REFUSE_URI_TOO_LONG);
            if (end == h->line) {
                /* RFC 9112 2.2: empty lines before a request */
                if (++h->skipped > MAX_SKIPPED_LINES)
                    return head_refuse(h, API_REFUSE_BAD_REQUEST_LINE);
                h->skip = next;
            } else {
                r = request_line(h, p, h->line, end);
                h->in_headers = 1;
            }
        } else if (end == h->line) {
            r = head_end(h);
            if (r == API_REFUSE_NONE && next - h->skip > max_header_bytes)
                r = API_REFUSE_HEADERS_TOO_LARGE;
            if (r == API_REFUSE_NONE) {
                h->len = next;
                return 1;
            }
        } else {
            r = header_line(h, p, h->line, end);
        }
        if (r != API_REFUSE_NONE)
            return head_refuse(h, r);
        if (next - h->skip > max_header_bytes)
            return head_refuse(h, API_REFUSE_HEADERS_TOO_LARGE);
        h->line = h->scan = next;
    }
}

/* ----------------------------------------------------- the connection --- */

static struct evbuffer *scratch(api_framing *f)
{
    if (f->tmp == NULL)
        f->tmp = evbuffer_new();
    return f->tmp;
}

/* Removes in[at, at + n). */
static int cut(api_framing *f, size_t at, size_t n)
{
    struct evbuffer *tmp;
    if (n == 0)
        return 0;
    if (at == 0)
        return evbuffer_drain(f->in, n);
    if ((tmp = scratch(f)) == NULL ||
        evbuffer_remove_buffer(f->in, tmp, at) != (int)at ||
        evbuffer_drain(f->in, n) != 0 || evbuffer_prepend_buffer(f->in, tmp))
        return -1;
    return 0;
}

static int cut_from(api_framing *f, size_t at)
{
    return cut(f, at, evbuffer_get_length(f->in) - at);
}

/* Puts data[0..n) in at offset at. */
static int insert(api_framing *f, size_t at, const char *data, size_t n)
{
    struct evbuffer *tmp;
    if (at == 0)
        return evbuffer_prepend(f->in, data, n);
    if ((tmp = scratch(f)) == NULL ||
        evbuffer_remove_buffer(f->in, tmp, at) != (int)at ||
        evbuffer_prepend(f->in, data, n) != 0 ||
        evbuffer_prepend_buffer(f->in, tmp) != 0)
        return -1;
    return 0;
}

static void drop_held(api_framing *f)
{
    free(f->held);
    f->held = NULL;
    f->held_len = f->held_cap = 0;
}

/* Everything from at on is cut, and the stand-in takes its place. */
static void refuse(api_framing *f, size_t at, enum api_framing_refusal r)
{
    char line[80];
    int n = snprintf(line, sizeof(line),
                     "GET " API_FRAMING_STAND_IN "%d HTTP/1.%d\r\n"
                     "Connection: close\r\n\r\n",
                     (int)r, f->head.minor);
    drop_held(f);
    f->phase = PH_REFUSED;
    if (cut_from(f, at) != 0 || evbuffer_add(f->in, line, (size_t)n) != 0) {
        /* evhttp gets nothing, and its timeout closes the connection */
        ctr_warn("could not refuse a request: out of memory");
        evbuffer_drain(f->in, evbuffer_get_length(f->in));
    }
}

/* evhttp 2.1 reads no body of a HEAD or a TRACE (and would read its bytes
 * as the next request): framing cuts it. */
static int body_unread(const api_framing_head *h)
{
    return h->method == API_FM_HEAD || h->method == API_FM_TRACE;
}

/*
 * A whole, well-formed head at block[0..]: what the preflight says of it
 * when it has a body, then its size.
 */
static enum api_framing_refusal admit(api_framing *f, const char *block)
{
    const api_framing_head *h = &f->head;
    if (h->content_length > 0 && f->lim->preflight && !body_unread(h)) {
        char path[PREFLIGHT_PATH_MAX], auth[PREFLIGHT_AUTH_MAX];
        const char *target = block + h->target;
        size_t n = 0;
        if (target[0] == '/') {
            while (n < h->target_len && target[n] != '?' && target[n] != '#')
                n++;
            if (n < sizeof(path))
                memcpy(path, target, n);
        } else {
            /* an absolute URI (or "*", "//..."): evhttp's own reading */
            char *copy = strndup(target, h->target_len);
            struct evhttp_uri *u = copy ? evhttp_uri_parse_with_flags(
                                              copy, EVHTTP_URI_NONCONFORMANT)
                                        : NULL;
            const char *up = u ? evhttp_uri_get_path(u) : NULL;
            n = up ? strlen(up) : 0;
            if (n < sizeof(path) && up)
                memcpy(path, up, n);
            if (u)
                evhttp_uri_free(u);
            free(copy);
        }
        /* a path this long routes nowhere: the handler answers 404 */
        if (n < sizeof(path)) {
            path[n] = '\0';
            const char *authorization = NULL;
            if (h->auth_count > 0) {
                /* too long for any token: presented, but malformed */
                size_t an = h->auth_len < sizeof(auth) ? h->auth_len : 0;
                memcpy(auth, block + h->auth, an);
                auth[an] = '\0';
                authorization = auth;
            }
            enum api_framing_refusal r =
                f->lim->preflight(f->lim->preflight_arg, h->method, path,
                                  authorization, h->auth_count);
            if (r != API_REFUSE_NONE)
                return r;
        }
    }
    if (h->content_length > 0 &&
        (uint64_t)h->content_length > f->lim->max_body_bytes)
        return API_REFUSE_BODY_TOO_LARGE;
    return API_REFUSE_NONE;
}

/* The head just passed: on to its body, then the next head. */
static void next_request(api_framing *f)
{
    f->body_left =
        f->head.content_length > 0 ? (uint64_t)f->head.content_length : 0;
    f->phase = f->body_left == 0       ? PH_HEAD
               : body_unread(&f->head) ? PH_DISCARD
                                       : PH_BODY;
    api_framing_head_init(&f->head);
}

/* in[at..) as one run of memory, in place when it is one chain. */
static const char *contiguous(api_framing *f, size_t at, size_t n)
{
    struct evbuffer_ptr ptr;
    struct evbuffer_iovec v;
    if (at == 0) /* the usual case: a pull-up of one chain is free */
        return (const char *)evbuffer_pullup(f->in, (ev_ssize_t)n);
    if (evbuffer_ptr_set(f->in, &ptr, at, EVBUFFER_PTR_SET) == 0 &&
        evbuffer_peek(f->in, (ev_ssize_t)n, &ptr, &v, 1) >= 1 && v.iov_len >= n)
        return v.iov_base;
    unsigned char *all = evbuffer_pullup(f->in, (ev_ssize_t)(at + n));
    return all ? (const char *)all + at : NULL;
}

/* Keeps in[at..) back as the start of a block, until its end comes. */
static void hold(api_framing *f, size_t at)
{
    size_t n = evbuffer_get_length(f->in) - at;
    struct evbuffer_ptr ptr;
    f->held_cap = f->lim->max_header_bytes + 2 * MAX_SKIPPED_LINES + 1;
    f->held = malloc(f->held_cap);
    if (f->held == NULL || n > f->held_cap ||
        evbuffer_ptr_set(f->in, &ptr, at, EVBUFFER_PTR_SET) != 0 ||
        evbuffer_copyout_from(f->in, &ptr, f->held, n) != (ev_ssize_t)n ||
        cut_from(f, at) != 0) {
        refuse(f, at, API_REFUSE_HEADERS_TOO_LARGE);
        return;
    }
    f->held_len = n;
}

/* Frames in[at..), where at is the start of a head or inside a body. */
static void frame_from(api_framing *f, size_t at)
{
    for (;;) {
        size_t len = evbuffer_get_length(f->in);
        if (at >= len)
            return;
        if (f->phase == PH_BODY || f->phase == PH_DISCARD) {
            uint64_t k = len - at < f->body_left ? len - at : f->body_left;
            if (f->phase == PH_BODY)
                at += (size_t)k;
            else if (cut(f, at, (size_t)k) != 0)
                refuse(f, at, API_REFUSE_BAD_REQUEST_LINE);
            f->body_left -= k;
            if (f->body_left == 0 && f->phase != PH_REFUSED)
                f->phase = PH_HEAD;
            if (f->phase == PH_REFUSED)
                return;
            continue;
        }
        const char *p = contiguous(f, at, len - at);
        if (p == NULL) {
            refuse(f, at, API_REFUSE_HEADERS_TOO_LARGE);
            return;
        }
        int rc = api_framing_head_feed(&f->head, p, len - at,
                                       f->lim->max_header_bytes);
        if (rc == 0) {
            hold(f, at);
            return;
        }
        enum api_framing_refusal r = rc < 0 ? f->head.refusal : admit(f, p);
        if (r != API_REFUSE_NONE) {
            refuse(f, at, r);
            return;
        }
        size_t skip = f->head.skip, block = f->head.len - skip;
        if (cut(f, at, skip) != 0) {
            refuse(f, at, API_REFUSE_BAD_REQUEST_LINE);
            return;
        }
        at += block;
        next_request(f);
    }
}

/* New bytes in[at..) continue the held block. */
static void continue_held(api_framing *f, size_t at)
{
    size_t fresh = evbuffer_get_length(f->in) - at;
    size_t take = fresh < f->held_cap - f->held_len ? fresh
                                                    : f->held_cap - f->held_len,
           had = f->held_len;
    struct evbuffer_ptr ptr;
    if (evbuffer_ptr_set(f->in, &ptr, at, EVBUFFER_PTR_SET) != 0 ||
        evbuffer_copyout_from(f->in, &ptr, f->held + had, take) !=
            (ev_ssize_t)take) {
        refuse(f, at, API_REFUSE_HEADERS_TOO_LARGE);
        return;
    }
    f->held_len += take;
    int rc = api_framing_head_feed(&f->head, f->held, f->held_len,
                                   f->lim->max_header_bytes);
    if (rc == 0) {
        if (take < fresh || cut_from(f, at) != 0)
            refuse(f, at, API_REFUSE_HEADERS_TOO_LARGE);
        return;
    }
    enum api_framing_refusal r = rc < 0 ? f->head.refusal : admit(f, f->held);
    if (r != API_REFUSE_NONE) {
        refuse(f, at, r);
        return;
    }
    /* The block's start was held back, its end is at the front of the new
     * bytes: the whole block goes back where it began. */
    size_t skip = f->head.skip, block = f->head.len - skip;
    if (cut(f, at, f->head.len - had) != 0 ||
        insert(f, at, f->held + skip, block) != 0) {
        refuse(f, at, API_REFUSE_HEADERS_TOO_LARGE);
        return;
    }
    drop_held(f);
    next_request(f);
    frame_from(f, at + block);
}

/*
 * Passed bytes evhttp has not taken (pipelined requests, while it answers
 * one) are bounded with the bufferevent's read watermark. It is on only
 * while the input is past the bound: libevent's watermark callback re-adds
 * the read event at every change of the buffer, which costs a GET a few
 * percent, so it is set when the bound is passed and unset (a flag: it
 * may be done from within a callback of the buffer) once evhttp has taken
 * everything.
 */
static void bound_input(api_framing *f, size_t len)
{
    size_t bound = f->lim->max_header_bytes + f->lim->max_body_bytes;
    if (!f->watermarked && len > bound) {
        bufferevent_setwatermark(f->bev, EV_READ, 0, bound);
        f->watermarked = 1;
    } else if (f->watermarked && len == 0) {
        bufferevent_setwatermark(f->bev, EV_READ, 0, 0);
        f->watermarked = 0;
    }
}

static void on_input(struct evbuffer *in, const struct evbuffer_cb_info *info,
                     void *arg)
{
    api_framing *f = arg;
    size_t len = evbuffer_get_length(in);
    if (f->busy)
        return;
    if (info->n_added == 0 || info->n_added > len) {
        if (f->watermarked)
            bound_input(f, len);
        return;
    }
    f->busy = 1;
    size_t at = len - info->n_added; /* what came before was passed */
    if (f->phase == PH_REFUSED)
        cut_from(f, at);
    else if (f->held_len > 0)
        continue_held(f, at);
    else
        frame_from(f, at);
    bound_input(f, evbuffer_get_length(in));
    f->busy = 0;
}

api_framing *api_framing_new(const api_framing_limits *limits,
                             struct bufferevent *bev)
{
    api_framing *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->lim = limits;
    f->bev = bev;
    f->in = bufferevent_get_input(bev);
    api_framing_head_init(&f->head);
    f->cb = evbuffer_add_cb(f->in, on_input, f);
    if (f->cb == NULL) {
        free(f);
        return NULL;
    }
    return f;
}

void api_framing_free(api_framing *f)
{
    if (f == NULL)
        return;
    evbuffer_remove_cb_entry(f->in, f->cb);
    if (f->tmp)
        evbuffer_free(f->tmp);
    free(f->held);
    free(f);
}

int api_framing_refused(const api_framing *f)
{
    return f != NULL && f->phase == PH_REFUSED;
}

enum api_framing_refusal api_framing_refusal_of(const char *path)
{
    static const size_t prefix = sizeof(API_FRAMING_STAND_IN) - 1;
    if (path == NULL || path[0] != '/' || path[1] != '\x01' ||
        strncmp(path, API_FRAMING_STAND_IN, prefix) != 0)
        return API_REFUSE_NONE;
    int r = atoi(path + prefix);
    return r > API_REFUSE_NONE && r < API_REFUSE_COUNT
               ? (enum api_framing_refusal)r
               : API_REFUSE_BAD_REQUEST_LINE;
}

void api_framing_describe(enum api_framing_refusal r,
                          const api_framing_limits *limits,
                          api_framing_answer *out)
{
    static const struct {
        int status;
        const char *code, *field, *message;
    } answers[API_REFUSE_COUNT] = {
        [API_REFUSE_BAD_REQUEST_LINE] =
            {400, "bad_request", NULL,
             "the request line must be METHOD SP request-target SP "
             "HTTP/1.x"},
        [API_REFUSE_BAD_HEADER] =
            {400, "bad_request", NULL,
             "a header line is malformed: a field name, ':' and a value "
             "without control characters; no folded lines"},
        [API_REFUSE_BAD_CONTENT_LENGTH] =
            {400, "bad_request", "Content-Length",
             "Content-Length: must be given once, as digits only"},
        [API_REFUSE_AMBIGUOUS_LENGTH] =
            {400, "bad_request", "Transfer-Encoding",
             "Transfer-Encoding: not allowed beside Content-Length"},
        [API_REFUSE_UNAUTHORIZED] = {401, "unauthorized", NULL,
                                     "a valid bearer token is required"},
        [API_REFUSE_FORBIDDEN] = {403, "forbidden", NULL,
                                  "this token may read but not write"},
        [API_REFUSE_LENGTH_REQUIRED] =
            {411, "length_required", "Transfer-Encoding",
             "Transfer-Encoding: request bodies are not taken chunked; send "
             "a Content-Length"},
        [API_REFUSE_BODY_TOO_LARGE] = {413, "body_too_large", NULL,
                                       "request body is larger than %zu "
                                       "bytes"},
        [API_REFUSE_URI_TOO_LONG] = {414, "uri_too_long", NULL,
                                     "the request line is longer than %zu "
                                     "bytes"},
        [API_REFUSE_EXPECTATION] = {417, "expectation_failed", "Expect",
                                    "Expect: only 100-continue is supported"},
        [API_REFUSE_HEADERS_TOO_LARGE] =
            {431, "headers_too_large", NULL,
             "the request line and headers are larger than %zu bytes"},
        [API_REFUSE_NOT_IMPLEMENTED] = {501, "not_implemented", NULL,
                                        "this method is not implemented"},
        [API_REFUSE_VERSION] = {505, "http_version_not_supported", NULL,
                                "only HTTP/1.0 and HTTP/1.1 are served"},
    };
    if (r <= API_REFUSE_NONE || r >= API_REFUSE_COUNT)
        r = API_REFUSE_BAD_REQUEST_LINE;
    out->status = answers[r].status;
    out->code = answers[r].code;
    out->field = answers[r].field;
    size_t limit = r == API_REFUSE_BODY_TOO_LARGE ? limits->max_body_bytes
                                                  : limits->max_header_bytes;
    snprintf(out->message, sizeof(out->message), answers[r].message, limit);
}
