#include "retry.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

/* Set by the SIGINT handler of ou_catch_sigint (a lock-free atomic: safe
 * to store from a handler); every transfer loop of the process reads it. */
static _Atomic int interrupted, catching;

static int retryable_status(long status)
{
    return status == 408 || status == 409 || status == 429 || status >= 500;
}

unsigned long long ou_retry_seed(const void *salt)
{
    return (unsigned long long)time(NULL) ^ ((unsigned long long)(size_t)salt << 16) ^ 0x9E3779B97F4A7C15ULL;
}

/* xorshift64*: jitter needs no quality, only independence from Lua's RNG. */
static double random_unit(unsigned long long *rng)
{
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    return (double)((*rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

/* The SDKs' backoff: 0.5 s doubling to 8 s, times a random 0.75..1.0. */
static double backoff(const struct ou_transfer_opts *opts, unsigned long long *rng, int retry)
{
    double delay = opts->backoff_initial * pow(2.0, retry);
    if (delay > opts->backoff_max)
        delay = opts->backoff_max;
    return delay * (1.0 - 0.25 * random_unit(rng));
}

int ou_retry(const struct ou_transfer_opts *opts, unsigned long long *rng, struct ou_request *r,
             enum ou_outcome *outcome, int transient, double *delay)
{
    int retry;
    if (*outcome == OU_FAIL_HTTP)
        retry = r->resp.should_retry >= 0 ? r->resp.should_retry : retryable_status(r->resp.status);
    else
        retry = (*outcome == OU_FAIL_NETWORK || *outcome == OU_FAIL_TIMEOUT) && transient;
    if (!retry || r->attempts < 1 || r->attempts > opts->max_retries || ou_interrupted())
        return 0;
    if (*outcome == OU_FAIL_HTTP && r->resp.retry_after >= 0) {
        if (r->resp.retry_after > opts->retry_after_max) {
            *outcome = OU_FAIL_WAIT_LONG;
            return 0;
        }
        *delay = r->resp.retry_after;
    } else {
        *delay = backoff(opts, rng, r->attempts - 1);
    }
    r->delays[r->attempts - 1] = *delay;
    return 1;
}

void ou_sleep(double seconds, _Atomic int *abort)
{
    while (seconds > 0 && !(abort && atomic_load(abort)) && !atomic_load(&interrupted)) {
        double slice = seconds < 0.05 ? seconds : 0.05;
        struct timespec ts;
        ts.tv_sec = (time_t)slice;
        ts.tv_nsec = (long)((slice - (double)ts.tv_sec) * 1e9);
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
            ;
        seconds -= slice;
    }
}

double ou_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_sigint(int sig)
{
    (void)sig;
    atomic_store(&interrupted, 1);
}

int ou_catch_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0)
        return 0;
    atomic_store(&catching, 1);
    return 1;
}

int ou_interrupted(void)
{
    return atomic_load(&interrupted);
}

int ou_catching_sigint(void)
{
    return atomic_load(&catching);
}
