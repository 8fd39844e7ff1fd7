#include "curl_api.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__) || defined(__linux__)
#include <malloc.h>
#define OU_WIPING_ALLOCATOR 1
#endif

#include "buf.h"

struct ou_curl_api ou_curl;

/* The sonames to try, most specific first. */
static const char *const libraries[] = {"libcurl.so.4", "libcurl.so", "libcurl.4.dylib", "libcurl.dylib",
                                        NULL};

#ifdef OU_WIPING_ALLOCATOR
/* libcurl's memory, wiped before it is freed: its request buffer holds the
 * Authorization header, and a freed block keeps its bytes until reused. */
static void wiping_free(void *p)
{
    if (p) {
        ou_wipe(p, malloc_usable_size(p));
        free(p);
    }
}

static void *wiping_realloc(void *p, size_t n)
{
    size_t have;
    void *grown;
    if (!p)
        return malloc(n);
    have = malloc_usable_size(p);
    if (n <= have && n > 0)
        return p;
    grown = malloc(n ? n : 1);
    if (!grown)
        return NULL;
    memcpy(grown, p, n < have ? n : have);
    wiping_free(p);
    return grown;
}

/* curl_global_init, with the allocator above when this is the first init
 * in the process (libcurl keeps the first caller's functions). */
static CURLcode global_init(void)
{
    return ou_curl.global_init_mem(CURL_GLOBAL_DEFAULT, malloc, wiping_free, wiping_realloc, strdup, calloc);
}
#else
static CURLcode global_init(void)
{
    return ou_curl.global_init(CURL_GLOBAL_DEFAULT);
}
#endif

/* The outcome of the one load: two Lua states on two threads may create
 * their first clients at once, and curl_global_init is not thread-safe. */
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static int load_ok;
static char load_error[256];

static void load(void)
{
    void *lib = NULL;
    struct {
        const char *name;
        void **slot;
    } symbols[] = {
        {"curl_global_init", (void **)&ou_curl.global_init},
        {"curl_global_init_mem", (void **)&ou_curl.global_init_mem},
        {"curl_easy_init", (void **)&ou_curl.easy_init},
        {"curl_easy_setopt", (void **)&ou_curl.easy_setopt},
        {"curl_easy_getinfo", (void **)&ou_curl.easy_getinfo},
        {"curl_easy_cleanup", (void **)&ou_curl.easy_cleanup},
        {"curl_easy_reset", (void **)&ou_curl.easy_reset},
        {"curl_easy_strerror", (void **)&ou_curl.easy_strerror},
        {"curl_slist_append", (void **)&ou_curl.slist_append},
        {"curl_slist_free_all", (void **)&ou_curl.slist_free_all},
        {"curl_version_info", (void **)&ou_curl.version_info},
        {"curl_getdate", (void **)&ou_curl.getdate},
        {"curl_multi_init", (void **)&ou_curl.multi_init},
        {"curl_multi_add_handle", (void **)&ou_curl.multi_add_handle},
        {"curl_multi_remove_handle", (void **)&ou_curl.multi_remove_handle},
        {"curl_multi_perform", (void **)&ou_curl.multi_perform},
        {"curl_multi_poll", (void **)&ou_curl.multi_poll},
        {"curl_multi_wakeup", (void **)&ou_curl.multi_wakeup},
        {"curl_multi_info_read", (void **)&ou_curl.multi_info_read},
        {"curl_multi_cleanup", (void **)&ou_curl.multi_cleanup},
    };
    for (size_t i = 0; libraries[i] && !lib; i++)
        lib = dlopen(libraries[i], RTLD_LAZY | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error, "could not load libcurl (%s)", dlerror());
        return;
    }
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        /* POSIX: a data pointer from dlsym converts to a function pointer */
        *symbols[i].slot = dlsym(lib, symbols[i].name);
        if (!*symbols[i].slot) {
            snprintf(load_error, sizeof load_error, "libcurl lacks %s", symbols[i].name);
            return;
        }
    }
    if (global_init() != CURLE_OK) {
        snprintf(load_error, sizeof load_error, "libcurl failed to initialise");
        return;
    }
    /* the library stays loaded for the life of the process, like a linked one */
    load_ok = 1;
}

int ou_curl_load(char *err, size_t size)
{
    pthread_once(&load_once, load);
    if (!load_ok)
        snprintf(err, size, "%s", load_error);
    return load_ok;
}
