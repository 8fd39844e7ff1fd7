/* libcurl, loaded with the first client instead of linked. Loading Debian's
 * libcurl and its ~30 dependencies costs ~10 ms (even in an empty C
 * program), which a script that only decodes, validates or reports from a
 * cache, or an editor starting up, need not pay at require time. Include
 * this instead of <curl/curl.h>: the curl_* names below then call through
 * the table. */
#ifndef OU_CURL_API_H
#define OU_CURL_API_H

#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <time.h>

struct ou_curl_api {
    CURLcode (*global_init)(long flags);
    CURLcode (*global_init_mem)(long flags, curl_malloc_callback m, curl_free_callback f,
                                curl_realloc_callback r, curl_strdup_callback s, curl_calloc_callback c);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *curl, CURLoption option, ...);
    CURLcode (*easy_getinfo)(CURL *curl, CURLINFO info, ...);
    void (*easy_cleanup)(CURL *curl);
    void (*easy_reset)(CURL *curl);
    const char *(*easy_strerror)(CURLcode code);
    struct curl_slist *(*slist_append)(struct curl_slist *list, const char *string);
    void (*slist_free_all)(struct curl_slist *list);
    curl_version_info_data *(*version_info)(CURLversion stamp);
    time_t (*getdate)(const char *p, const time_t *unused);
    /* a transfer runs in a multi handle of its own, so that another thread
     * can wake it to stop at once (curl_multi_wakeup, libcurl 7.68) */
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_add_handle)(CURLM *multi, CURL *easy);
    CURLMcode (*multi_remove_handle)(CURLM *multi, CURL *easy);
    CURLMcode (*multi_perform)(CURLM *multi, int *running);
    CURLMcode (*multi_poll)(CURLM *multi, struct curl_waitfd extra[], unsigned int n, int timeout_ms,
                            int *ret);
    CURLMcode (*multi_wakeup)(CURLM *multi);
    CURLMsg *(*multi_info_read)(CURLM *multi, int *queued);
    CURLMcode (*multi_cleanup)(CURLM *multi);
};

extern struct ou_curl_api ou_curl;

/* Loads libcurl and runs curl_global_init once. Returns 1, or 0 with a
 * reason in err. Safe to call again and from any thread (pthread_once): the
 * first call does the work, a failed load stays failed. */
int ou_curl_load(char *err, size_t size);

/* curl.h wraps these two in argument-count macros of its own */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_global_init (*ou_curl.global_init)
#define curl_easy_init (*ou_curl.easy_init)
#define curl_easy_setopt (*ou_curl.easy_setopt)
#define curl_easy_getinfo (*ou_curl.easy_getinfo)
#define curl_easy_cleanup (*ou_curl.easy_cleanup)
#define curl_easy_reset (*ou_curl.easy_reset)
#define curl_easy_strerror (*ou_curl.easy_strerror)
#define curl_slist_append (*ou_curl.slist_append)
#define curl_slist_free_all (*ou_curl.slist_free_all)
#define curl_version_info (*ou_curl.version_info)
#define curl_getdate (*ou_curl.getdate)
#define curl_multi_init (*ou_curl.multi_init)
#define curl_multi_add_handle (*ou_curl.multi_add_handle)
#define curl_multi_remove_handle (*ou_curl.multi_remove_handle)
#define curl_multi_perform (*ou_curl.multi_perform)
#define curl_multi_poll (*ou_curl.multi_poll)
#define curl_multi_wakeup (*ou_curl.multi_wakeup)
#define curl_multi_info_read (*ou_curl.multi_info_read)
#define curl_multi_cleanup (*ou_curl.multi_cleanup)

#endif
