/* The retry policy, one for every transport (libcurl's loop and a Lua
 * transport's), the waits between attempts and the process's SIGINT flag.
 * Plain C over plain structs: no Lua, no libcurl. */
#ifndef OU_RETRY_H
#define OU_RETRY_H

#include <stdatomic.h>

#include "request.h"

/* A seed for the backoff's jitter (salt: any address of the caller's). */
unsigned long long ou_retry_seed(const void *salt);

/* After attempt number r->attempts ended in *outcome: returns 1 and the
 * delay to sleep before the next (recorded in r->delays), or 0 when
 * *outcome is final. transient says whether a network failure may pass
 * (libcurl: the kind of error). A retryable status asking to wait past
 * retry_after_max ends as OU_FAIL_WAIT_LONG. 408, 409, 429, 5xx;
 * x-should-retry overrides; waits by retry-after-ms, Retry-After, else
 * jittered doubling backoff (rng: the caller's jitter state). Never retries
 * once SIGINT came. */
int ou_retry(const struct ou_transfer_opts *opts, unsigned long long *rng, struct ou_request *r,
             enum ou_outcome *outcome, int transient, double *delay);

/* Installs a SIGINT handler (the CLI's choice, never the library's) that
 * only sets a flag: every transfer of the process then stops within 0.1 s
 * as a network failure ("interrupted"), and no retry or sleep follows.
 * Returns 1, or 0 when sigaction failed. ou_interrupted tells whether it
 * came; ou_catching_sigint whether the handler is installed. */
int ou_catch_sigint(void);
int ou_interrupted(void);
int ou_catching_sigint(void);

/* Sleeps, in 50 ms slices so that a set *abort (may be NULL) cuts it short. */
void ou_sleep(double seconds, _Atomic int *abort);

/* Seconds on the monotonic clock (usage.clock, and waits between attempts). */
double ou_monotonic(void);

#endif
