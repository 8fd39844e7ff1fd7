/* One HTTP GET with libcurl, retried by the policy of retry.c into a
 * request's record (request.c, response.c). The only file that calls
 * libcurl for a transfer. Pure C: no Lua call ever happens here, so no Lua
 * error can unwind through libcurl. Callbacks only copy bytes. */
#ifndef OU_TRANSFER_H
#define OU_TRANSFER_H

#include "curl_api.h"
#include <stdatomic.h>
#include <stddef.h>

#include "request.h"

#define OU_MAX_SOCKETS 8
/* A stalled server ends an attempt: fewer than 1 byte/s for 60 s (unless
 * the client sets low_speed_limit/low_speed_time; 0 turns it off). */
#define OU_LOW_SPEED_LIMIT 1
#define OU_LOW_SPEED_TIME 60

struct ou_transfer {
    CURL *easy;
    /* the easy handle's home while it transfers (and the kept connection's):
     * ou_transfer_abort wakes it from another thread */
    CURLM *multi;
    /* set from another thread to stop a transfer running in the background */
    _Atomic int abort_requested;
    struct curl_slist *headers; /* owned */
    char *user_agent, *ca_file; /* owned: reapplied after each curl_easy_reset */
    /* the sockets libcurl opened for us and has not closed (-1: a free
     * slot), so that a child of fork() can drop its copies of them */
    int sockets[OU_MAX_SOCKETS];
    struct ou_transfer_opts opts;
    /* the request running now: its record, which the callbacks fill; the
     * handle runs one at a time */
    struct ou_request *req;
    char errbuf[CURL_ERROR_SIZE];
    unsigned long long rng;
    CURLcode code;
};

/* Prepares t without a libcurl handle, for a client whose requests go
 * through a Lua transport: it keeps the options and the jitter state. */
void ou_transfer_setup(struct ou_transfer *t, const struct ou_transfer_opts *opts);

/* Prepares t; takes ownership of headers (freed by ou_transfer_release even
 * on failure). Returns 1, or 0 with a reason in t->errbuf. */
int ou_transfer_init(struct ou_transfer *t, const struct ou_transfer_opts *opts, struct curl_slist *headers,
                     const char *user_agent, const char *ca_file);

/* GETs req->url, retrying as configured, into req (its counters, delays
 * and final response). */
enum ou_outcome ou_transfer_get(struct ou_transfer *t, struct ou_request *req);

/* From another thread: stops ou_transfer_get at once, whether it waits on
 * the network or between attempts; it then fails as a network failure
 * ("aborted"). Clear t->abort_requested once that thread is joined. */
void ou_transfer_abort(struct ou_transfer *t);

/* In a child of fork(): the inherited handles share their connection's
 * socket with the parent, and a prefetch thread may have been inside them
 * at the fork, so they are never called again: the child closes its copies
 * of the sockets (close() sends nothing; the parent's connection lives on),
 * abandons the easy and multi handles (and, when a thread was running, the
 * body buffer it was filling) on a process-wide list, never freed, and
 * creates handles of its own. curl_easy_cleanup/curl_multi_cleanup would
 * close the connection on the shared socket, over TLS sending close_notify
 * into the parent's session. running is the record a thread was filling at
 * the fork (its body is abandoned too), or NULL. Returns 1, or 0 with a
 * reason in t->errbuf. */
int ou_transfer_after_fork(struct ou_transfer *t, struct ou_request *running);

/* Frees the handles and the header list; safe to call twice. */
void ou_transfer_release(struct ou_transfer *t);

#endif
