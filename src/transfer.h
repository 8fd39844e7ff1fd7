/* One HTTP GET with libcurl, retried the way the official SDKs retry; the
 * same retry policy and response bookkeeping serve a Lua transport, whose
 * attempts client.c drives. Pure C: no Lua call ever happens here, so no Lua
 * error can unwind through libcurl. Callbacks only copy bytes. */
#ifndef OU_TRANSFER_H
#define OU_TRANSFER_H

#include "curl_api.h"
#include <stdatomic.h>
#include <stddef.h>

#include "buf.h"

#define OU_MAX_RETRIES 10
#define OU_MAX_SOCKETS 8
/* A stalled server ends an attempt: fewer than 1 byte/s for 60 s (unless
 * the client sets low_speed_limit/low_speed_time; 0 turns it off). */
#define OU_LOW_SPEED_LIMIT 1
#define OU_LOW_SPEED_TIME 60

struct ou_transfer_opts {
    long timeout_ms;         /* total, per attempt */
    long connect_timeout_ms; /* per attempt */
    long low_speed_limit;    /* bytes/s; with low_speed_time, 0 = off */
    long low_speed_time;     /* seconds */
    int max_retries;         /* 0..OU_MAX_RETRIES */
    double backoff_initial;  /* seconds: 0.5 */
    double backoff_max;      /* seconds: 8 */
    double retry_after_max;  /* seconds: 120; a longer wait gives up at once */
    size_t max_body;         /* decompressed bytes */
};

struct ou_response {
    long status;
    struct ou_buf body;
    char request_id[128];
    char content_type[128];
    double retry_after;      /* seconds, < 0 when the server gave none */
    int retry_after_from_ms; /* retry-after-ms was seen: it wins over Retry-After */
    int should_retry;        /* x-should-retry: -1 absent, 0 false, 1 true */
};

enum ou_outcome {
    OU_OK,             /* a 2xx status with its body */
    OU_FAIL_HTTP,      /* any other status (resp holds it) */
    OU_FAIL_WAIT_LONG, /* a retryable status whose Retry-After exceeds retry_after_max */
    OU_FAIL_NETWORK,   /* connection, TLS or transfer failure */
    OU_FAIL_TIMEOUT,   /* connect or total timeout */
    OU_FAIL_TOO_LARGE, /* body over max_body */
    OU_FAIL_NOMEM,     /* out of memory */
    OU_FAIL_TRANSPORT, /* a Lua transport raised an error or returned something unusable */
};

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
    struct ou_response resp;
    char errbuf[CURL_ERROR_SIZE];
    int too_large, out_of_memory;
    unsigned long long rng;
    /* what the last ou_transfer_get did */
    int attempts;
    double delays[OU_MAX_RETRIES];
    long connects;        /* new TCP connections opened */
    long long wire_bytes; /* body bytes as received, before decompression */
    CURLcode code;
};

/* Prepares t without a libcurl handle, for a client whose requests go
 * through a Lua transport: same options, retry policy and counters. */
void ou_transfer_setup(struct ou_transfer *t, const struct ou_transfer_opts *opts);

/* Prepares t; takes ownership of headers (freed by ou_transfer_release even
 * on failure). Returns 1, or 0 with a reason in t->errbuf. */
int ou_transfer_init(struct ou_transfer *t, const struct ou_transfer_opts *opts, struct curl_slist *headers,
                     const char *user_agent, const char *ca_file);

/* GETs url, retrying as configured. The final response stays in t->resp. */
enum ou_outcome ou_transfer_get(struct ou_transfer *t, const char *url);

/* From another thread: stops ou_transfer_get at once, whether it waits on
 * the network or between attempts; it then fails as a network failure
 * ("aborted"). Clear t->abort_requested once that thread is joined. */
void ou_transfer_abort(struct ou_transfer *t);

/* The steps of ou_transfer_get, for a caller that makes the attempts itself
 * (a Lua transport): start zeroes the counters of a request; begin_attempt
 * forgets the previous answer; status_outcome judges the status. */
void ou_transfer_start(struct ou_transfer *t);
void ou_transfer_begin_attempt(struct ou_transfer *t);
enum ou_outcome ou_transfer_status_outcome(const struct ou_transfer *t);

/* The retry policy, one for every transport. After attempt number
 * t->attempts ended in *outcome: returns 1 and the delay to sleep before the
 * next (recorded in t->delays), or 0 when *outcome is final. transient says
 * whether a network failure may pass (libcurl: the kind of error). A
 * retryable status asking to wait past retry_after_max ends as
 * OU_FAIL_WAIT_LONG. 408, 409, 429, 5xx; x-should-retry overrides; waits by
 * retry-after-ms, Retry-After, else jittered doubling backoff. */
int ou_transfer_retry(struct ou_transfer *t, enum ou_outcome *outcome, int transient, double *delay);

/* Clears r's header fields before a new response. */
void ou_response_reset(struct ou_response *r);

/* Records one response header (name without the colon; value untrimmed)
 * that the retry policy or the errors read, whoever received it. */
void ou_response_header(struct ou_response *r, const char *name, size_t nlen, const char *value, size_t vlen);

/* Installs a SIGINT handler (the CLI's choice, never the library's) that
 * only sets a flag: every transfer of the process then stops within 0.1 s
 * as a network failure ("interrupted"), and no retry or sleep follows.
 * Returns 1, or 0 when sigaction failed. ou_interrupted tells whether it came. */
int ou_catch_sigint(void);
int ou_interrupted(void);

/* Sleeps, in 50 ms slices so that a set *abort (may be NULL) cuts it short. */
void ou_sleep(double seconds, _Atomic int *abort);

/* Seconds on the monotonic clock (usage.clock, and waits between attempts). */
double ou_monotonic(void);

/* A message for a failed outcome (never contains request headers). */
const char *ou_transfer_message(const struct ou_transfer *t, enum ou_outcome outcome, char *out, size_t size);

/* In a child of fork(): the inherited handles share their connection's
 * socket with the parent, and a prefetch thread may have been inside them
 * at the fork, so they are never called again: the child closes its copies
 * of the sockets (close() sends nothing; the parent's connection lives on),
 * abandons the easy and multi handles (and, when a thread was running, the
 * body buffer it was filling) on a process-wide list, never freed, and
 * creates handles of its own. curl_easy_cleanup/curl_multi_cleanup would
 * close the connection on the shared socket, over TLS sending close_notify
 * into the parent's session. Returns 1, or 0 with a reason in t->errbuf. */
int ou_transfer_after_fork(struct ou_transfer *t, int thread_was_running);

/* Frees the handle, the header list and the body; safe to call twice. */
void ou_transfer_release(struct ou_transfer *t);

#endif
