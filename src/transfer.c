#include "transfer.h"

#include "retry.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
    struct ou_transfer *t = userdata;
    struct ou_request *r = t->req;
    size_t n = size * nmemb;
    /* the cap counts decompressed bytes: libcurl hands us decoded data */
    if (r->resp.body.len + n > t->opts.max_body) {
        r->too_large = 1;
        return 0;
    }
    if (!ou_buf_add(&r->resp.body, data, n)) {
        r->out_of_memory = 1;
        return 0;
    }
    return n;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *userdata)
{
    struct ou_response *resp = &((struct ou_transfer *)userdata)->req->resp;
    size_t n = size * nmemb;
    const char *colon = memchr(line, ':', n);
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0)
        ou_response_reset(resp); /* a new response (after a 100, say) */
    else if (colon)
        ou_response_header(resp, line, (size_t)(colon - line), colon + 1, n - (size_t)(colon - line) - 1);
    return n;
}

void ou_transfer_setup(struct ou_transfer *t, const struct ou_transfer_opts *opts)
{
    memset(t, 0, sizeof *t);
    atomic_init(&t->abort_requested, 0);
    t->opts = *opts;
    for (int i = 0; i < OU_MAX_SOCKETS; i++)
        t->sockets[i] = -1;
    t->rng = ou_retry_seed(t);
}

/* libcurl opens and closes every socket through these, so the transfer
 * knows which descriptors are its own (see ou_transfer_after_fork). */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct ou_transfer *t = clientp;
    int fd = socket(addr->family, addr->socktype, addr->protocol);
    (void)purpose;
    for (int i = 0; fd >= 0 && i < OU_MAX_SOCKETS; i++)
        if (t->sockets[i] < 0) {
            t->sockets[i] = fd;
            break;
        }
    return fd >= 0 ? fd : CURL_SOCKET_BAD;
}

static int close_socket(void *clientp, curl_socket_t fd)
{
    struct ou_transfer *t = clientp;
    for (int i = 0; i < OU_MAX_SOCKETS; i++)
        if (t->sockets[i] == fd)
            t->sockets[i] = -1;
    return close(fd);
}

static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Every option the handle carries, set on a fresh or a reset handle. */
static void apply_options(struct ou_transfer *t)
{
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, t->user_agent);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "gzip");
    /* never follow a redirect: it would carry the key to another place */
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (t->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, t->ca_file);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, t->opts.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, t->opts.connect_timeout_ms);
    if (t->opts.low_speed_limit > 0 && t->opts.low_speed_time > 0) {
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, t->opts.low_speed_limit);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, t->opts.low_speed_time);
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, t);
}

int ou_transfer_init(struct ou_transfer *t, const struct ou_transfer_opts *opts, struct curl_slist *headers,
                     const char *user_agent, const char *ca_file)
{
    ou_transfer_setup(t, opts);
    t->headers = headers;
    t->user_agent = dup_string(user_agent);
    t->ca_file = ca_file ? dup_string(ca_file) : NULL;
    t->easy = curl_easy_init();
    t->multi = curl_multi_init();
    if (!t->easy || !t->multi || !t->user_agent || (ca_file && !t->ca_file)) {
        snprintf(t->errbuf, sizeof t->errbuf, "could not create a libcurl handle");
        return 0;
    }
    apply_options(t);
    return 1;
}

static int retryable_code(CURLcode code)
{
    switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

/* Whether a transfer must stop now: cancelled, or the process interrupted. */
static int stop_requested(struct ou_transfer *t)
{
    return atomic_load(&t->abort_requested) || ou_interrupted();
}

/* The longest a transfer loop waits in curl_multi_poll before it looks at
 * the flags again: a handler cannot wake the poll (curl_multi_wakeup is not
 * documented as async-signal-safe, and the signal may land on any thread),
 * so with SIGINT caught the loop looks ten times a second. */
static int poll_slice_ms(int wanted)
{
    int most = ou_catching_sigint() ? 100 : 1000;
    return wanted < most ? wanted : most;
}

/* Sleeps between attempts in the multi handle, which holds no transfer
 * then: only ou_transfer_abort's wakeup ends the wait early. */
static void pause_between_attempts(struct ou_transfer *t, double seconds)
{
    double end = ou_monotonic() + seconds;
    while (!stop_requested(t)) {
        double left = end - ou_monotonic();
        if (left <= 0)
            break;
        if (curl_multi_poll(t->multi, NULL, 0, poll_slice_ms((int)(left * 1000.0) + 1), NULL) != CURLM_OK) {
            ou_sleep(left, &t->abort_requested);
            break;
        }
    }
}

void ou_transfer_abort(struct ou_transfer *t)
{
    atomic_store(&t->abort_requested, 1);
    if (t->multi)
        curl_multi_wakeup(t->multi);
}

static CURLcode aborted(struct ou_transfer *t)
{
    if (ou_interrupted())
        snprintf(t->errbuf, sizeof t->errbuf, "interrupted: the request was stopped by SIGINT");
    else
        snprintf(t->errbuf, sizeof t->errbuf, "aborted: the request was cancelled");
    return CURLE_ABORTED_BY_CALLBACK;
}

/* Runs the easy handle to its end in t->multi, waking at least once a
 * second, and at once on ou_transfer_abort, to see whether it must stop.
 * Removing the handle keeps a finished connection in the multi's cache for
 * the next attempt or request; one cut short is closed. */
static CURLcode perform(struct ou_transfer *t)
{
    CURLcode code = CURLE_OK;
    int running = 1, done = 0;
    CURLMcode mc;
    if (stop_requested(t)) /* cancelled before it began (in a wait between attempts) */
        return aborted(t);
    mc = curl_multi_add_handle(t->multi, t->easy);
    if (mc != CURLM_OK) {
        snprintf(t->errbuf, sizeof t->errbuf, "libcurl could not start the transfer (multi error %d)",
                 (int)mc);
        return CURLE_FAILED_INIT;
    }
    while (!done) {
        CURLMsg *msg;
        int queued;
        mc = curl_multi_perform(t->multi, &running);
        while (mc == CURLM_OK && (msg = curl_multi_info_read(t->multi, &queued)) != NULL)
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == t->easy)
                code = msg->data.result, done = 1;
        if (done)
            break;
        if (mc == CURLM_OK && !running) /* gone without a word: not seen, but never loop on it */
            mc = CURLM_INTERNAL_ERROR;
        if (mc == CURLM_OK && stop_requested(t))
            code = aborted(t), done = 1;
        else if (mc == CURLM_OK)
            mc = curl_multi_poll(t->multi, NULL, 0, poll_slice_ms(1000), NULL);
        if (mc != CURLM_OK) {
            if (mc == CURLM_OUT_OF_MEMORY)
                t->req->out_of_memory = 1;
            snprintf(t->errbuf, sizeof t->errbuf, "libcurl failed during the transfer (multi error %d)",
                     (int)mc);
            code = CURLE_FAILED_INIT, done = 1;
        }
    }
    curl_multi_remove_handle(t->multi, t->easy);
    return code;
}

static enum ou_outcome attempt(struct ou_transfer *t)
{
    struct ou_request *r = t->req;
    long connects = 0;
    curl_off_t bytes = 0;
    ou_request_begin_attempt(r);
    t->errbuf[0] = '\0';
    curl_easy_setopt(t->easy, CURLOPT_URL, r->url.data);
    t->code = perform(t);
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &r->resp.status);
    curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &connects);
    curl_easy_getinfo(t->easy, CURLINFO_SIZE_DOWNLOAD_T, &bytes);
    r->connects += connects;
    r->wire_bytes += (long long)bytes;
    snprintf(r->reason, sizeof r->reason, "%s", t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->code));
    if (r->too_large)
        return OU_FAIL_TOO_LARGE;
    if (r->out_of_memory)
        return OU_FAIL_NOMEM;
    if (t->code == CURLE_OPERATION_TIMEDOUT)
        return OU_FAIL_TIMEOUT;
    if (t->code != CURLE_OK)
        return OU_FAIL_NETWORK;
    return ou_request_status_outcome(r);
}

enum ou_outcome ou_transfer_get(struct ou_transfer *t, struct ou_request *req)
{
    enum ou_outcome outcome;
    double delay = 0;
    t->req = req;
    ou_request_start(req);
    /* libcurl 7.88 counts the reused connections that died under a request
     * over the handle's whole life, not per request (curl PR #19066): the
     * sixth a server's idle timeout closed failed a request, whatever
     * max_retries said. A reset zeroes that count; the connection stays in
     * the multi handle's cache, so reuse is not lost. */
    curl_easy_reset(t->easy);
    apply_options(t);
    for (;;) {
        outcome = attempt(t);
        req->attempts++;
        if (stop_requested(t) || !ou_retry(&t->opts, &t->rng, req, &outcome, retryable_code(t->code), &delay))
            break;
        pause_between_attempts(t, delay);
    }
    t->req = NULL;
    return outcome;
}

/* What children of fork() abandoned: kept reachable, never freed. */
struct abandoned {
    CURL *easy;
    CURLM *multi;
    char *body;
    struct abandoned *next;
};
static struct abandoned *abandoned;
static pthread_mutex_t abandoned_lock = PTHREAD_MUTEX_INITIALIZER;

int ou_transfer_after_fork(struct ou_transfer *t, struct ou_request *running)
{
    struct abandoned *a = malloc(sizeof *a);
    for (int i = 0; i < OU_MAX_SOCKETS; i++) {
        if (t->sockets[i] >= 0)
            close(t->sockets[i]);
        t->sockets[i] = -1;
    }
    if (a) {
        a->easy = t->easy;
        a->multi = t->multi;
        a->body = running ? running->resp.body.data : NULL;
        pthread_mutex_lock(&abandoned_lock);
        a->next = abandoned;
        abandoned = a;
        pthread_mutex_unlock(&abandoned_lock);
    }
    if (running) /* the thread may have been growing it */
        memset(&running->resp.body, 0, sizeof running->resp.body);
    atomic_store(&t->abort_requested, 0);
    t->easy = curl_easy_init();
    t->multi = curl_multi_init();
    if (!t->easy || !t->multi) {
        snprintf(t->errbuf, sizeof t->errbuf, "could not create a libcurl handle after fork()");
        return 0;
    }
    apply_options(t);
    return 1;
}

void ou_transfer_release(struct ou_transfer *t)
{
    if (t->easy) {
        curl_easy_cleanup(t->easy); /* never left in the multi: perform removes it */
        t->easy = NULL;
    }
    if (t->multi) {
        curl_multi_cleanup(t->multi); /* closes the kept connection */
        t->multi = NULL;
    }
    if (t->headers) {
        /* the Authorization line holds the key: no copy outlives the client */
        for (struct curl_slist *h = t->headers; h; h = h->next)
            ou_wipe(h->data, strlen(h->data));
        curl_slist_free_all(t->headers);
        t->headers = NULL;
    }
    free(t->user_agent);
    free(t->ca_file);
    t->user_agent = t->ca_file = NULL;
}
