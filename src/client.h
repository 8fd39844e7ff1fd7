/* The client object: its settings, the libcurl handle and its record,
 * the prefetch thread, and the methods of the C handle. options.c builds
 * one (core.new); lua_transport.c adds a Lua transport's two methods. */
#ifndef OU_CLIENT_H
#define OU_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "compat.h"
#include "query.h"
#include "request.h"
#include "transfer.h"

#define OU_CLIENT_MT "openai_usage.client"
/* The one statement of the version: core.version, the User-Agent and, through
 * tools/gen-rockspec.lua, the release rockspec read it. */
#define OU_VERSION "0.1.0"

struct ou_client {
    struct ou_transfer transfer;
    char *base_url;
    /* "Bearer <key>", the one copy of the key the client keeps (to scrub it
     * from anything we report, and for a Lua transport's headers); api_key
     * points into it. Wiped before it is freed. */
    char *bearer;
    const char *api_key;
    /* A Lua transport (the Lua layer holds the function and drives the
     * attempts): no libcurl handle; the headers it is given are built from
     * these on each request. */
    int lua_transport;
    int transport_gzip; /* the transport decompresses gzip: ask for it */
    char *user_agent, *organization, *project;
    enum ou_array_format array_format;
    /* the libcurl handle's record: the blocking request's, or the
     * prefetch's (a Lua transport's requests each have their own) */
    struct ou_request rec;
    struct ou_buf scratch; /* client:url()'s, never the record's */
    /* what the latest finished request did, client-wide; per coroutine in
     * the weak table at stats_ref (thread -> struct ou_request_stats) */
    struct ou_request_stats last;
    struct ou_request_stats main_last; /* the main thread's own, kept without a table */
    int main_has_last;
    int stats_ref;
    int open;
    /* A prefetch: the next page's transfer running on its own thread while
     * Lua works. Only that thread touches transfer and rec until it is
     * joined; it makes no Lua call. */
    pthread_t thread;
    int running;         /* the thread exists and is not joined yet */
    int ready;           /* its outcome is unclaimed and still in transfer */
    unsigned long token; /* names the latest prefetch */
    enum ou_outcome outcome;
    atomic_int finished; /* set by the thread as its last act: poll reads it */
    pid_t pid;           /* the process the handles belong to (see adopt_after_fork) */
};

/* Registers the client metatable and its methods. */
void ou_client_open(lua_State *L);

/* core.new(options) -> client | nil, err (options.c) */
int ou_client_new(lua_State *L);

/* Frees everything the client owns, the key wiped; safe to call twice. */
void ou_client_release(lua_State *L, struct ou_client *c);

/* The client at 1, open, its handles this process's (raises otherwise).
 * check_open also joins a prefetch on the wire, so that the caller owns
 * the handle and its record; check_usable never waits. */
struct ou_client *ou_client_check_open(lua_State *L);
struct ou_client *ou_client_check_usable(lua_State *L);

/* Builds the full URL for endpoint (at idx) and params (at idx + 1) into
 * url, path parameters put in their place, and the endpoint's shape into
 * *shape (when not NULL). Returns 1, or 0 with an error pushed. */
int ou_client_build_url(lua_State *L, const struct ou_client *c, int idx, struct ou_buf *url, int *shape);

/* Keeps what the request of rec did, now over, for last_transfer: the
 * client's latest, and the calling coroutine's own. */
void ou_client_publish(lua_State *L, struct ou_client *c, const struct ou_request *rec);

#endif
