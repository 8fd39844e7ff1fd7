#include "client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "outcome.h"
#include "retry.h"

static void *prefetch_main(void *arg)
{
    struct ou_client *c = arg;
    c->outcome = ou_transfer_get(&c->transfer, &c->rec);
    atomic_store(&c->finished, 1);
    return NULL;
}

/* Waits for a background transfer (stopping it first when abort is set).
 * After this, the calling thread owns transfer and rec again. */
static void join_prefetch(struct ou_client *c, int abort)
{
    if (!c->running)
        return;
    if (abort)
        ou_transfer_abort(&c->transfer); /* wakes it: the join takes milliseconds */
    pthread_join(c->thread, NULL);
    atomic_store(&c->transfer.abort_requested, 0);
    c->running = 0;
}

/* A client used in a child of fork() (nginx's workers forked from a master
 * that made it, a script or an editor that forks): the prefetch thread does
 * not exist in this process, so it is never joined, and its unclaimed page
 * is gone; the transfer drops the inherited libcurl handles, whose socket
 * is the parent's too, and opens its own (ou_transfer_after_fork). Returns
 * 0, with the client closed, when no new handle could be made. */
static int adopt_after_fork(struct ou_client *c)
{
    int was_running = c->running;
    if (c->pid == getpid())
        return 1;
    c->pid = getpid();
    c->running = c->ready = 0;
    if (c->lua_transport || !c->transfer.easy)
        return 1;
    if (!ou_transfer_after_fork(&c->transfer, was_running ? &c->rec : NULL)) {
        c->open = 0;
        return 0;
    }
    return 1;
}

void ou_client_release(lua_State *L, struct ou_client *c)
{
    if (c->open && c->pid != getpid())
        adopt_after_fork(c); /* never joins a thread of another process */
    join_prefetch(c, 1);
    c->ready = 0;
    ou_transfer_release(&c->transfer);
    ou_request_free(&c->rec);
    ou_buf_free(&c->scratch);
    luaL_unref(L, LUA_REGISTRYINDEX, c->stats_ref);
    c->stats_ref = LUA_NOREF;
    if (c->bearer) {
        ou_wipe(c->bearer, strlen(c->bearer));
        free(c->bearer);
    }
    free(c->base_url);
    free(c->user_agent);
    free(c->organization);
    free(c->project);
    c->bearer = c->base_url = c->user_agent = c->organization = c->project = NULL;
    c->api_key = NULL;
    c->open = 0;
}

static int client_gc(lua_State *L)
{
    ou_client_release(L, luaL_checkudata(L, 1, OU_CLIENT_MT));
    return 0;
}

/* The client at 1, open, its handles this process's; a prefetch may still
 * be on the wire (for what needs neither the handle nor its record). */
struct ou_client *ou_client_check_usable(lua_State *L)
{
    struct ou_client *c = luaL_checkudata(L, 1, OU_CLIENT_MT);
    if (c->open && !adopt_after_fork(c))
        luaL_error(L, "openai_usage: could not make new libcurl handles after fork()");
    if (!c->open)
        luaL_error(L, "openai_usage: the client is closed");
    return c;
}

/* The same, with the handle and its record free: a prefetch is joined. */
struct ou_client *ou_client_check_open(lua_State *L)
{
    struct ou_client *c = ou_client_check_usable(L);
    join_prefetch(c, 0);
    return c;
}

/* --- requests ----------------------------------------------------------- */

int ou_client_build_url(lua_State *L, const struct ou_client *c, int idx, struct ou_buf *url, int *shape)
{
    const struct ou_endpoint_rule *ep = ou_query_endpoint(L, idx);
    if (!ep)
        return 0;
    ou_buf_clear(url);
    if (!ou_buf_addstr(url, c->base_url))
        luaL_error(L, "openai_usage: out of memory");
    if (!ou_query_path(L, idx + 1, ep, url))
        return 0;
    if (!ou_buf_addchar(url, '?'))
        luaL_error(L, "openai_usage: out of memory");
    if (!ou_query_encode(L, idx + 1, ep, c->array_format, url))
        return 0;
    if (shape)
        *shape = (int)ep->shape;
    if (url->data[url->len - 1] == '?')
        url->len--;
    if (!ou_buf_cstr(url))
        luaL_error(L, "openai_usage: out of memory");
    return 1;
}

void ou_client_publish(lua_State *L, struct ou_client *c, const struct ou_request *rec)
{
    struct ou_request_stats *mine;
    ou_request_stats(rec, &c->last);
    if (lua_pushthread(L)) { /* the main thread: no Lua allocation */
        lua_pop(L, 1);
        c->main_last = c->last;
        c->main_has_last = 1;
        return;
    }
    lua_pop(L, 1);
    if (c->stats_ref == LUA_NOREF) {
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        c->stats_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->stats_ref);
    lua_pushthread(L);
    lua_rawget(L, -2);
    mine = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!mine) {
        lua_pushthread(L);
        mine = lua_newuserdata(L, sizeof *mine);
        lua_rawset(L, -3);
    }
    *mine = c->last;
    lua_pop(L, 1);
}

/* The stats last_transfer reports to the calling coroutine: its own
 * latest request's, or the client's when it has made none. */
static const struct ou_request_stats *stats_for_caller(lua_State *L, const struct ou_client *c)
{
    const struct ou_request_stats *mine = NULL;
    if (lua_pushthread(L)) {
        lua_pop(L, 1);
        return c->main_has_last ? &c->main_last : &c->last;
    }
    lua_pop(L, 1);
    if (c->stats_ref == LUA_NOREF)
        return &c->last;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->stats_ref);
    lua_pushthread(L);
    lua_rawget(L, -2);
    mine = lua_touserdata(L, -1);
    lua_pop(L, 2); /* the table holds the userdata: mine stays valid until the next Lua call */
    return mine ? mine : &c->last;
}

/* A client with a Lua transport is driven from Lua (openai_usage.transport):
 * libcurl's entry points refuse it with this. */
static int needs_libcurl(lua_State *L, const char *what)
{
    ou_error_push(L, "invalid_argument", "");
    lua_pushfstring(L,
                    "%s: this client has a Lua transport, which cannot run on a background thread or from C; "
                    "use client:usage() and the iterators, which fetch sequentially",
                    what);
    lua_setfield(L, -2, "message");
    return ou_error_return(L);
}

/* client:request(endpoint, params) -> page | nil, err */
static int client_request(lua_State *L)
{
    struct ou_client *c = ou_client_check_open(L);
    enum ou_outcome outcome;
    lua_settop(L, 3);
    if (c->lua_transport)
        return needs_libcurl(L, "request");
    c->ready = 0;
    if (!ou_client_build_url(L, c, 2, &c->rec.url, &c->rec.shape))
        return ou_error_return(L);
    outcome = ou_transfer_get(&c->transfer, &c->rec);
    ou_client_publish(L, c, &c->rec);
    if (outcome != OU_OK)
        return ou_outcome_fail(L, c->api_key, &c->transfer.opts, &c->rec, outcome);
    return ou_outcome_page(L, c->api_key, &c->transfer.opts, &c->rec);
}

/* client:prefetch(endpoint, params) -> token | nil, err: validates now,
 * then starts the transfer on a thread and returns at once. */
static int client_prefetch(lua_State *L)
{
    struct ou_client *c = ou_client_check_open(L);
    lua_settop(L, 3);
    if (c->lua_transport)
        return needs_libcurl(L, "prefetch");
    c->ready = 0;
    if (!ou_client_build_url(L, c, 2, &c->rec.url, &c->rec.shape))
        return ou_error_return(L);
    c->token++;
    c->ready = 1;
    atomic_store(&c->finished, 0);
    if (pthread_create(&c->thread, NULL, prefetch_main, c) == 0)
        c->running = 1;
    else
        prefetch_main(c); /* no thread to be had: fetch now, still correct */
    lua_pushnumber(L, (lua_Number)c->token);
    return 1;
}

/* client:poll(token) -> true when that prefetch has finished (collect will
 * not wait), false while it is still on the wire. Never blocks: an event
 * loop (Neovim's vim.loop, say) calls it from a timer. A token that is no
 * longer current reads as finished, so collect can report it as gone. */
static int client_poll(lua_State *L)
{
    struct ou_client *c = luaL_checkudata(L, 1, OU_CLIENT_MT);
    lua_Number token = luaL_checknumber(L, 2);
    if (c->open)
        adopt_after_fork(c);
    if (!c->open || !c->ready || (lua_Number)c->token != token || !c->running)
        lua_pushboolean(L, 1);
    else
        lua_pushboolean(L, atomic_load(&c->finished) != 0);
    return 1;
}

/* client:collect(token) -> page | nil, err, or false when that prefetch is
 * gone (another request reused the handle): the caller then requests. */
static int client_collect(lua_State *L)
{
    struct ou_client *c = ou_client_check_open(L);
    if (!c->ready || (lua_Number)c->token != luaL_checknumber(L, 2)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    c->ready = 0;
    ou_client_publish(L, c, &c->rec);
    if (c->outcome != OU_OK)
        return ou_outcome_fail(L, c->api_key, &c->transfer.opts, &c->rec, c->outcome);
    return ou_outcome_page(L, c->api_key, &c->transfer.opts, &c->rec);
}

/* client:cancel() stops a prefetch nobody will collect (a loop left early). */
static int client_cancel(lua_State *L)
{
    struct ou_client *c = luaL_checkudata(L, 1, OU_CLIENT_MT);
    if (c->open)
        adopt_after_fork(c);
    join_prefetch(c, 1);
    c->ready = 0;
    return 0;
}

/* client:url(endpoint, params) -> the URL a request would GET | nil, err.
 * Pure computation: it never waits for a prefetch on the wire. */
static int client_url(lua_State *L)
{
    struct ou_client *c = ou_client_check_usable(L);
    lua_settop(L, 3);
    if (!ou_client_build_url(L, c, 2, &c->scratch, NULL))
        return ou_error_return(L);
    lua_pushlstring(L, c->scratch.data, c->scratch.len);
    return 1;
}

/* client:last_transfer() -> what the last request the calling coroutine
 * finished did (the client's last, if that coroutine finished none):
 * attempts, the delays slept between them, connections opened, bytes on
 * the wire. Never waits for a prefetch on the wire. */
static int client_last_transfer(lua_State *L)
{
    struct ou_client *c = ou_client_check_usable(L);
    struct ou_request_stats stats = *stats_for_caller(L, c);
    const struct ou_request_stats *t = &stats;
    lua_createtable(L, 0, 8);
    ou_pushint64(L, t->attempts);
    lua_setfield(L, -2, "attempts");
    lua_createtable(L, t->attempts > 0 ? t->attempts - 1 : 0, 0);
    for (int i = 0; i + 1 < t->attempts && i < OU_MAX_RETRIES; i++) {
        lua_pushnumber(L, (lua_Number)t->delays[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "delays");
    if (!c->lua_transport) { /* a transport does not tell */
        ou_pushint64(L, t->connects);
        lua_setfield(L, -2, "connections");
    }
    ou_pushint64(L, t->wire_bytes);
    lua_setfield(L, -2, "wire_bytes");
    ou_pushint64(L, (int64_t)t->body_bytes);
    lua_setfield(L, -2, "body_bytes");
    /* what the request held in C: its body and URL buffers */
    ou_pushint64(L, (int64_t)t->buffer_bytes);
    lua_setfield(L, -2, "buffer_bytes");
    ou_pushint64(L, t->status);
    lua_setfield(L, -2, "status");
    if (t->request_id[0]) {
        lua_pushstring(L, t->request_id);
        ou_scrub_key(L, c->api_key);
        lua_setfield(L, -2, "request_id");
    }
    return 1;
}

static int client_close(lua_State *L)
{
    ou_client_release(L, luaL_checkudata(L, 1, OU_CLIENT_MT));
    return 0;
}

static int client_tostring(lua_State *L)
{
    struct ou_client *c = luaL_checkudata(L, 1, OU_CLIENT_MT);
    if (!c->open)
        lua_pushliteral(L, "openai_usage.client (closed)");
    else
        lua_pushfstring(L, "openai_usage.client (%s, api_key=<redacted>)", c->base_url);
    return 1;
}

static const luaL_Reg client_methods[] = {
    {"request", client_request},
    {"prefetch", client_prefetch},
    {"collect", client_collect},
    {"cancel", client_cancel},
    {"poll", client_poll},
    {"url", client_url},
    {"last_transfer", client_last_transfer},
    {"close", client_close},
    {NULL, NULL},
};

void ou_client_open(lua_State *L)
{
    luaL_newmetatable(L, OU_CLIENT_MT);
    lua_pushcfunction(L, client_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, client_gc);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, client_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, OU_CLIENT_MT);
    lua_setfield(L, -2, "__name");
    ou_newlib(L, client_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
