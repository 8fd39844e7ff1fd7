/* The Lua-facing module openai_usage.core: the module table, the offline
 * functions (decode, encode_query, rules) and client construction. */
#include "curl_api.h"
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "compat.h"
#include "decode.h"
#include "error.h"
#include "fs.h"
#include "lua_transport.h"
#include "query.h"
#include "retry.h"
#include "rules.h"
#include "secret.h"

/* core.decode(text [, max_depth]) -> value | nil, err */
static int core_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    int64_t depth = OU_DECODE_MAX_DEPTH;
    struct ou_decode_limits limits = {0, 0, 0}; /* any JSON: nulls are holes, no value budget */
    struct ou_decode_error derr = {0, {0}, 0};
    if (!lua_isnoneornil(L, 2) &&
        (!ou_toint64(L, 2, &depth) || depth < 1 || depth > OU_DECODE_DEPTH_CEILING)) {
        ou_query_fail(L, "max_depth", "max_depth: expected an integer from 1 to %d", OU_DECODE_DEPTH_CEILING);
        return ou_error_return(L);
    }
    limits.max_depth = (int)depth;
    if (ou_decode(L, text, len, &limits, &derr))
        return 1;
    ou_error_push(L, "decode", derr.message);
    ou_error_setint(L, "offset", (int64_t)derr.offset);
    return ou_error_return(L);
}

/* The query buffer of core.encode_query lives in a userdata so that a Lua
 * error raised midway still frees it. */
static int query_box_gc(lua_State *L)
{
    ou_buf_free(lua_touserdata(L, 1));
    return 0;
}

/* core.encode_query(endpoint, params [, "brackets"|"repeat"]) -> query | nil, err */
static int core_encode_query(lua_State *L)
{
    static const char *const formats[] = {"brackets", "repeat", NULL};
    const struct ou_endpoint_rule *ep;
    struct ou_buf *box;
    int format;
    lua_settop(L, 3);
    format = luaL_checkoption(L, 3, "brackets", formats);
    if (!(ep = ou_query_endpoint(L, 1)))
        return ou_error_return(L);
    box = lua_newuserdata(L, sizeof *box);
    memset(box, 0, sizeof *box);
    if (luaL_newmetatable(L, "openai_usage.query_box")) {
        lua_pushcfunction(L, query_box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    if (!ou_query_encode(L, 2, ep, format == 1 ? OU_ARRAY_REPEAT : OU_ARRAY_BRACKETS, box))
        return ou_error_return(L);
    lua_pushlstring(L, box->data ? box->data : "", box->len);
    ou_buf_free(box);
    return 1;
}

static const char *const type_names[] = {"time", "bucket_width", "limit", "cursor",
                                         "list", "boolean",      "path",  "string"};
static const char *const shape_names[] = {"usage", "list", "object"};

static void push_string_list(lua_State *L, const char *const *values)
{
    int n = 0;
    lua_newtable(L);
    for (; values && values[n]; n++) {
        lua_pushstring(L, values[n]);
        lua_rawseti(L, -2, n + 1);
    }
}

/* core.rules(endpoint) -> the rule table as Lua data, for help text and the
 * report layer; core.rules() -> the list of usage endpoint names;
 * core.rules("directory") -> the directory's (when no endpoint has that name). */
static int core_rules(lua_State *L)
{
    const struct ou_endpoint_rule *ep;
    int directory = lua_type(L, 1) == LUA_TSTRING && strcmp(lua_tostring(L, 1), "directory") == 0;
    if (lua_isnoneornil(L, 1) || directory) {
        const struct ou_endpoint_rule *table = directory ? ou_directory : ou_endpoints;
        size_t n = directory ? ou_ndirectory : ou_nendpoints;
        lua_createtable(L, (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            lua_pushstring(L, table[i].name);
            lua_rawseti(L, -2, (int)i + 1);
        }
        return 1;
    }
    if (!(ep = ou_query_endpoint(L, 1)))
        return ou_error_return(L);
    lua_createtable(L, 0, 9);
    lua_pushstring(L, shape_names[ep->shape]);
    lua_setfield(L, -2, "shape");
    if (ep->shape == OU_SHAPE_LIST) {
        ou_pushint64(L, ep->max_limit);
        lua_setfield(L, -2, "max_limit");
    }
    if (ep->object) {
        lua_pushstring(L, ep->object);
        lua_setfield(L, -2, "object");
    }
    lua_pushstring(L, ep->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, ep->path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, ep->default_width);
    lua_setfield(L, -2, "default_width");
    lua_createtable(L, (int)ep->nparams, 0);
    for (size_t i = 0; i < ep->nparams; i++) {
        const struct ou_param_rule *p = &ep->params[i];
        lua_createtable(L, 0, 5);
        lua_pushstring(L, p->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, type_names[p->type]);
        lua_setfield(L, -2, "type");
        lua_pushboolean(L, p->required);
        lua_setfield(L, -2, "required");
        lua_pushstring(L, p->doc);
        lua_setfield(L, -2, "doc");
        if (p->values) {
            push_string_list(L, p->values);
            lua_setfield(L, -2, "values");
            lua_pushboolean(L, p->open);
            lua_setfield(L, -2, "open");
        }
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "params");
    lua_createtable(L, (int)ep->nwidths, 0);
    for (size_t i = 0; i < ep->nwidths; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, ep->widths[i].width);
        lua_setfield(L, -2, "width");
        ou_pushint64(L, ep->widths[i].default_limit);
        lua_setfield(L, -2, "default_limit");
        ou_pushint64(L, ep->widths[i].max_limit);
        lua_setfield(L, -2, "max_limit");
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "widths");
    lua_createtable(L, (int)ep->nfields, 0);
    for (size_t i = 0; i < ep->nfields; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, ep->fields[i].name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, ep->fields[i].type);
        lua_setfield(L, -2, "type");
        lua_pushboolean(L, ep->fields[i].nullable);
        lua_setfield(L, -2, "nullable");
        lua_rawseti(L, -2, (int)i + 1);
    }
    lua_setfield(L, -2, "fields");
    return 1;
}

/* core.clock() -> monotonic seconds, for timing walks and progress lines. */
static int core_clock(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)ou_monotonic());
    return 1;
}

/* core.sleep(seconds): blocks the thread; the retry sleep of a transport
 * that brings none (an event loop brings its own: ngx.sleep). */
static int core_sleep(lua_State *L)
{
    lua_Number seconds = luaL_checknumber(L, 1);
    luaL_argcheck(L, seconds >= 0 && seconds <= 86400, 1, "seconds from 0 to 86400");
    ou_sleep((double)seconds, NULL);
    return 0;
}

/* core.catch_sigint() -> true: Ctrl-C stops every transfer within 0.1 s
 * instead of the interpreter's default (for the CLI; no Lua runs in the
 * handler). core.interrupted() -> whether SIGINT came since. */
static int core_catch_sigint(lua_State *L)
{
    lua_pushboolean(L, ou_catch_sigint());
    return 1;
}

static int core_interrupted(lua_State *L)
{
    lua_pushboolean(L, ou_interrupted());
    return 1;
}

/* core.libcurl_version() -> "7.88.1" | nil, err (loads libcurl if needed) */
static int core_libcurl_version(lua_State *L)
{
    char reason[256];
    if (!ou_curl_load(reason, sizeof reason)) {
        ou_error_push(L, "network", reason);
        return ou_error_return(L);
    }
    lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
    return 1;
}

static int fs_result(lua_State *L, int ok, const char *err)
{
    if (!ok) {
        ou_error_push(L, "io", err);
        return ou_error_return(L);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* core.write_file(path, text [, "private"|"default" [, sync]]) -> true | nil, err:
 * a cache entry is private (0600); a report gets the mode `>` would give. */
static int core_write_file(lua_State *L)
{
    static const char *const modes[] = {"private", "default", NULL};
    char err[512];
    size_t len;
    const char *path = luaL_checkstring(L, 1);
    const char *text = luaL_checklstring(L, 2, &len);
    int access = luaL_checkoption(L, 3, "private", modes);
    int sync = lua_toboolean(L, 4);
    return fs_result(
        L, ou_fs_write(path, text, len, access == 0 ? OU_FS_PRIVATE : OU_FS_DEFAULT, sync, err, sizeof err),
        err);
}

/* core.mkdir_p(path [, mode]) -> true | nil, err: missing directories are
 * made with mode (less the umask), 0700 by default (the cache's). */
static int core_mkdir_p(lua_State *L)
{
    char err[512];
    const char *path = luaL_checkstring(L, 1);
    lua_Integer mode = luaL_optinteger(L, 2, 0700);
    luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "a mode from 0 to 07777");
    return fs_result(L, ou_fs_mkdir_p(path, (mode_t)mode, err, sizeof err), err);
}

/* core.probe_dir(dir) -> true | nil, err: whether a file can be created there. */
static int core_probe_dir(lua_State *L)
{
    char err[512];
    return fs_result(L, ou_fs_probe_dir(luaL_checkstring(L, 1), err, sizeof err), err);
}

/* The buffers of a secret (a profiles file, a key command's output) live in
 * a userdata whose __gc wipes and frees them, so a Lua error raised midway
 * (memory) still releases them. */
static int secret_box_gc(lua_State *L)
{
    ou_secret_run_free(lua_touserdata(L, 1));
    return 0;
}

static struct ou_secret_run *secret_box(lua_State *L)
{
    struct ou_secret_run *box = lua_newuserdata(L, sizeof *box);
    memset(box, 0, sizeof *box);
    if (luaL_newmetatable(L, "openai_usage.secret_box")) {
        lua_pushcfunction(L, secret_box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return box;
}

/* core.read_private(path [, max_bytes]) -> {text, mode, uid, euid, regular,
 * link} | nil, err: what the opened descriptor is (a symlink's target), and
 * its bytes when it is a regular file; profiles.lua decides what to accept. */
static int core_read_private(lua_State *L)
{
    char err[512];
    struct ou_secret_file file;
    const char *path = luaL_checkstring(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, 1 << 20);
    struct ou_secret_run *box;
    luaL_argcheck(L, max >= 0 && max <= (1 << 30), 2, "from 0 to 2^30 bytes");
    box = secret_box(L);
    if (!ou_secret_read_file(path, (size_t)max, &file, &box->out, err, sizeof err)) {
        ou_error_push(L, "io", err);
        return ou_error_return(L);
    }
    lua_createtable(L, 0, 6);
    if (file.regular) {
        lua_pushlstring(L, box->out.data ? box->out.data : "", box->out.len);
        lua_setfield(L, -2, "text");
    }
    ou_secret_run_free(box);
    lua_pushinteger(L, (lua_Integer)file.mode);
    lua_setfield(L, -2, "mode");
    lua_pushinteger(L, (lua_Integer)file.uid);
    lua_setfield(L, -2, "uid");
    lua_pushinteger(L, (lua_Integer)file.euid);
    lua_setfield(L, -2, "euid");
    lua_pushboolean(L, file.regular);
    lua_setfield(L, -2, "regular");
    lua_pushboolean(L, file.is_link);
    lua_setfield(L, -2, "link");
    return 1;
}

/* core.run_command(argv [, out_max [, err_max [, timeout]]]) -> {stdout,
 * stderr, status | signal, interrupted, timed_out} | nil, err: argv (a list
 * of strings) run without a shell, its output captured (a key command: the
 * key is on its stdout), killed after timeout seconds (default 0: never). */
static int core_run_command(lua_State *L)
{
    char err[512];
    const char **argv;
    struct ou_secret_run *box;
    size_t n;
    lua_Integer out_max = luaL_optinteger(L, 2, 65536), err_max = luaL_optinteger(L, 3, 4096);
    lua_Number timeout = luaL_optnumber(L, 4, 0);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argcheck(L, timeout >= 0 && timeout <= 1e9, 4, "seconds from 0 (never) to 1e9");
    luaL_argcheck(L, out_max > 0 && out_max <= (1 << 24), 2, "from 1 to 2^24 bytes");
    luaL_argcheck(L, err_max > 0 && err_max <= (1 << 24), 3, "from 1 to 2^24 bytes");
    n = ou_rawlen(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 4096, 1, "a list of 1 to 4096 strings");
    /* the strings stay in argv's table (argument 1) while the command runs */
    argv = lua_newuserdata(L, (n + 1) * sizeof *argv);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 1, (int)i + 1);
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 1, "a list of strings");
        argv[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    argv[n] = NULL;
    box = secret_box(L);
    if (!ou_secret_run((char *const *)argv, (size_t)out_max, (size_t)err_max, (double)timeout, box, err,
                       sizeof err)) {
        ou_error_push(L, "io", err);
        return ou_error_return(L);
    }
    lua_createtable(L, 0, 5);
    lua_pushlstring(L, box->out.data ? box->out.data : "", box->out.len);
    lua_setfield(L, -2, "stdout");
    lua_pushlstring(L, box->errs.data ? box->errs.data : "", box->errs.len);
    lua_setfield(L, -2, "stderr");
    if (box->exited) {
        lua_pushinteger(L, box->status);
        lua_setfield(L, -2, "status");
    }
    if (box->signal) {
        lua_pushinteger(L, box->signal);
        lua_setfield(L, -2, "signal");
    }
    lua_pushboolean(L, box->interrupted);
    lua_setfield(L, -2, "interrupted");
    lua_pushboolean(L, box->timed_out);
    lua_setfield(L, -2, "timed_out");
    ou_secret_run_free(box);
    return 1;
}

static const luaL_Reg core_functions[] = {
    {"clock", core_clock},
    {"libcurl_version", core_libcurl_version},
    {"decode", core_decode},
    {"encode_query", core_encode_query},
    {"rules", core_rules},
    {"new", ou_client_new},
    {"error", ou_error_new_lua},
    {"sleep", core_sleep},
    {"catch_sigint", core_catch_sigint},
    {"interrupted", core_interrupted},
    {NULL, NULL},
};

/* the file-safety stage (fs.c), for the cache and the CLI's --out */
static const luaL_Reg fs_functions[] = {
    {"write_file", core_write_file},
    {"mkdir_p", core_mkdir_p},
    {"probe_dir", core_probe_dir},
    {NULL, NULL},
};

/* the secrets stage (secret.c), for profiles.lua */
static const luaL_Reg secret_functions[] = {
    {"read_private", core_read_private},
    {"run_command", core_run_command},
    {NULL, NULL},
};

OU_EXPORT int luaopen_openai_usage_core(lua_State *L);
OU_EXPORT int luaopen_openai_usage_core(lua_State *L)
{
    ou_error_open(L);
    ou_newlib(L, core_functions);
    ou_setfuncs(L, fs_functions);
    ou_setfuncs(L, secret_functions);
    ou_client_open(L);
    ou_lua_transport_open(L);
    lua_pushliteral(L, OU_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
