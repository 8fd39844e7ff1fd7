/* One request's record: the URL it GETs, the answer that came back and
 * what it cost (attempts, the delays between them, connections, bytes).
 * Each request owns its record from its start to its end, whichever
 * transport runs it (libcurl on a thread, or a Lua transport in a
 * coroutine). Plain C: no Lua, no libcurl. */
#ifndef OU_REQUEST_H
#define OU_REQUEST_H

#include <stddef.h>

#include "buf.h"
#include "response.h"

#define OU_MAX_RETRIES 10
/* a failed attempt's reason; the size of libcurl's error buffer */
#define OU_REASON_SIZE 256

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

struct ou_request {
    struct ou_buf url;
    int shape;               /* the enum ou_shape of the endpoint asked: what a 2xx body must be */
    struct ou_response resp; /* the last attempt's */
    int attempts;
    double delays[OU_MAX_RETRIES];
    long connects;        /* new TCP connections opened (libcurl only) */
    long long wire_bytes; /* body bytes as received, before decompression */
    char reason[OU_REASON_SIZE];
    int too_large, out_of_memory;
};

/* What last_transfer reports of a finished request: a copy, so that it
 * outlives the record (reused by the next request, or collected). */
struct ou_request_stats {
    int attempts;
    double delays[OU_MAX_RETRIES];
    long connects;
    long long wire_bytes;
    size_t body_bytes, buffer_bytes;
    long status;
    char request_id[128];
};

/* A record with nothing in it. */
void ou_request_init(struct ou_request *r);

/* start zeroes the counters of a new request; begin_attempt forgets the
 * previous attempt's answer. */
void ou_request_start(struct ou_request *r);
void ou_request_begin_attempt(struct ou_request *r);

/* OU_OK for a 2xx status, else OU_FAIL_HTTP. */
enum ou_outcome ou_request_status_outcome(const struct ou_request *r);

/* A message for a failed outcome (never contains request headers). */
const char *ou_request_message(const struct ou_request *r, const struct ou_transfer_opts *opts,
                               enum ou_outcome outcome, char *out, size_t size);

void ou_request_stats(const struct ou_request *r, struct ou_request_stats *s);

/* Frees the URL and the body; safe to call twice. */
void ou_request_free(struct ou_request *r);

#endif
