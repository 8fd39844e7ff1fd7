/* The Lua-facing module openai_usage.sqlite: the few calls of the SQLite C
 * API the history store needs (open, exec, prepare, bind, step, reset,
 * finalize, close), built as its own module beside core.so and linked with
 * -lsqlite3, so a host that never opens a store never loads SQLite.
 * A database and each statement are userdata that own their handle: __gc
 * and __close (5.4) call the same release function, and releasing twice is
 * safe. A statement holds a registry reference to its database, so the
 * database outlives every statement prepared on it. Failures return nil,
 * message, code (SQLite's extended result code); openai_usage.store turns
 * them into the library's error values. */
#include <sqlite3.h>
#include <string.h>

#include "compat.h"

#define DB_TYPE "openai_usage.sqlite.db"
#define STMT_TYPE "openai_usage.sqlite.stmt"

struct ou_db {
    sqlite3 *handle;
};

struct ou_stmt {
    sqlite3_stmt *handle;
    struct ou_db *db;
    int db_ref; /* LUA_NOREF once finalized */
};

static int push_failure(lua_State *L, const char *message, int code)
{
    lua_pushnil(L);
    lua_pushstring(L, message);
    lua_pushinteger(L, code);
    return 3;
}

static int db_failure(lua_State *L, sqlite3 *handle)
{
    return push_failure(L, sqlite3_errmsg(handle), sqlite3_extended_errcode(handle));
}

static struct ou_db *check_db(lua_State *L)
{
    struct ou_db *db = luaL_checkudata(L, 1, DB_TYPE);
    if (!db->handle)
        luaL_error(L, "sqlite: the database is closed");
    return db;
}

static struct ou_stmt *check_stmt(lua_State *L)
{
    struct ou_stmt *stmt = luaL_checkudata(L, 1, STMT_TYPE);
    if (!stmt->handle)
        luaL_error(L, "sqlite: the statement is finalized");
    if (!stmt->db->handle)
        luaL_error(L, "sqlite: the database is closed");
    return stmt;
}

/* sqlite.open(path [, "ro"|"rw"|"rwc"]) -> db | nil, message, code
 * rwc (default) creates a missing file; ro opens read-only. */
static int ou_sqlite_open(lua_State *L)
{
    static const char *const modes[] = {"rwc", "rw", "ro", NULL};
    static const int flags[] = {SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, SQLITE_OPEN_READWRITE,
                                SQLITE_OPEN_READONLY};
    const char *path = luaL_checkstring(L, 1);
    int mode = luaL_checkoption(L, 2, "rwc", modes);
    struct ou_db *db = lua_newuserdata(L, sizeof *db);
    int rc;
    db->handle = NULL;
    luaL_getmetatable(L, DB_TYPE);
    lua_setmetatable(L, -2);
    rc = sqlite3_open_v2(path, &db->handle, flags[mode] | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int ret = db->handle ? db_failure(L, db->handle) : push_failure(L, sqlite3_errstr(rc), rc);
        sqlite3_close_v2(db->handle);
        db->handle = NULL;
        return ret;
    }
    sqlite3_extended_result_codes(db->handle, 1);
    return 1;
}

/* close_v2: statements still open keep the connection until they are
 * finalized, so the order in which the collector releases them is free. */
static int db_release(lua_State *L)
{
    struct ou_db *db = luaL_checkudata(L, 1, DB_TYPE);
    if (db->handle) {
        sqlite3_close_v2(db->handle);
        db->handle = NULL;
    }
    return 0;
}

static int db_close(lua_State *L)
{
    db_release(L);
    lua_pushboolean(L, 1);
    return 1;
}

/* db:exec(sql) -> true | nil, message, code: statements without results */
static int db_exec(lua_State *L)
{
    struct ou_db *db = check_db(L);
    const char *sql = luaL_checkstring(L, 2);
    char *message = NULL;
    int rc = sqlite3_exec(db->handle, sql, NULL, NULL, &message);
    if (rc != SQLITE_OK) {
        lua_pushnil(L);
        lua_pushstring(L, message ? message : sqlite3_errstr(rc));
        lua_pushinteger(L, sqlite3_extended_errcode(db->handle));
        sqlite3_free(message);
        return 3;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* db:busy_timeout(ms): how long a write waits for another writer's lock */
static int db_busy_timeout(lua_State *L)
{
    struct ou_db *db = check_db(L);
    sqlite3_busy_timeout(db->handle, (int)luaL_checkinteger(L, 2));
    lua_pushboolean(L, 1);
    return 1;
}

static int db_changes(lua_State *L)
{
    lua_pushinteger(L, sqlite3_changes(check_db(L)->handle));
    return 1;
}

static int db_tostring(lua_State *L)
{
    struct ou_db *db = luaL_checkudata(L, 1, DB_TYPE);
    lua_pushfstring(L, "openai_usage.sqlite.db (%s)", db->handle ? "open" : "closed");
    return 1;
}

/* db:prepare(sql) -> stmt | nil, message, code */
static int db_prepare(lua_State *L)
{
    struct ou_db *db = check_db(L);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    struct ou_stmt *stmt = lua_newuserdata(L, sizeof *stmt);
    int rc;
    stmt->handle = NULL;
    stmt->db = db;
    stmt->db_ref = LUA_NOREF;
    luaL_getmetatable(L, STMT_TYPE);
    lua_setmetatable(L, -2);
    rc = sqlite3_prepare_v2(db->handle, sql, (int)len, &stmt->handle, NULL);
    if (rc != SQLITE_OK)
        return db_failure(L, db->handle);
    if (!stmt->handle)
        return push_failure(L, "sqlite: no statement in the text", SQLITE_MISUSE);
    lua_pushvalue(L, 1);
    stmt->db_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int stmt_release(lua_State *L)
{
    struct ou_stmt *stmt = luaL_checkudata(L, 1, STMT_TYPE);
    if (stmt->handle) {
        sqlite3_finalize(stmt->handle);
        stmt->handle = NULL;
    }
    if (stmt->db_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, stmt->db_ref);
        stmt->db_ref = LUA_NOREF;
    }
    return 0;
}

static int stmt_finalize(lua_State *L)
{
    stmt_release(L);
    lua_pushboolean(L, 1);
    return 1;
}

/* Binds the Lua value at index i to parameter n: nil is NULL, a boolean is
 * 0/1, an integer stays an integer (a whole float on 5.1 too). A string is
 * copied (SQLITE_TRANSIENT) unless copy is 0: then SQLite reads the Lua
 * string in place, which stmt_run allows because the string stays on the
 * stack until its bindings are cleared. */
static int bind_value(lua_State *L, struct ou_stmt *stmt, int n, int i, int copy)
{
    int64_t whole;
    size_t len;
    const char *text;
    switch (lua_type(L, i)) {
    case LUA_TNIL:
    case LUA_TNONE:
        return sqlite3_bind_null(stmt->handle, n);
    case LUA_TBOOLEAN:
        return sqlite3_bind_int(stmt->handle, n, lua_toboolean(L, i));
    case LUA_TNUMBER:
        if (ou_isinteger(L, i) && ou_toint64(L, i, &whole))
            return sqlite3_bind_int64(stmt->handle, n, (sqlite3_int64)whole);
        return sqlite3_bind_double(stmt->handle, n, (double)lua_tonumber(L, i));
    case LUA_TSTRING:
        text = lua_tolstring(L, i, &len);
        return sqlite3_bind_text64(stmt->handle, n, text, (sqlite3_uint64)len,
                                   copy ? SQLITE_TRANSIENT : SQLITE_STATIC, SQLITE_UTF8);
    default:
        /* no binding may outlive this call: strings bound in place are the caller's */
        sqlite3_clear_bindings(stmt->handle);
        return luaL_error(L, "sqlite: cannot bind a %s (parameter %d)", luaL_typename(L, i), n);
    }
}

/* Binds arguments from..top to parameters 1..n; raises on a count that
 * differs from the statement's, which is a programming error. */
static int bind_all(lua_State *L, struct ou_stmt *stmt, int from, int copy)
{
    int n = lua_gettop(L) - from + 1, i, rc;
    int want = sqlite3_bind_parameter_count(stmt->handle);
    if (n != want)
        return luaL_error(L, "sqlite: %d values for %d parameters", n, want);
    for (i = 1; i <= n; i++) {
        rc = bind_value(L, stmt, i, from + i - 1, copy);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* stmt:bind(v1, v2, ...) -> stmt | nil, message, code */
static int stmt_bind(lua_State *L)
{
    struct ou_stmt *stmt = check_stmt(L);
    sqlite3_reset(stmt->handle);
    if (bind_all(L, stmt, 2, 1) != SQLITE_OK)
        return db_failure(L, stmt->db->handle);
    lua_settop(L, 1);
    return 1;
}

/* stmt:step() -> true (a row) | false (done) | nil, message, code */
static int stmt_step(lua_State *L)
{
    struct ou_stmt *stmt = check_stmt(L);
    int rc = sqlite3_step(stmt->handle);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
        lua_pushboolean(L, rc == SQLITE_ROW);
        return 1;
    }
    rc = db_failure(L, stmt->db->handle);
    sqlite3_reset(stmt->handle);
    return rc;
}

/* stmt:run(v1, v2, ...) -> changes | nil, message, code: bind, step to the
 * end, reset; one call per row of an insert. */
static int stmt_run(lua_State *L)
{
    struct ou_stmt *stmt = check_stmt(L);
    int rc;
    sqlite3_reset(stmt->handle);
    if (bind_all(L, stmt, 2, 0) != SQLITE_OK) {
        rc = db_failure(L, stmt->db->handle);
        sqlite3_clear_bindings(stmt->handle);
        return rc;
    }
    while ((rc = sqlite3_step(stmt->handle)) == SQLITE_ROW)
        ;
    /* the strings bound in place are the arguments': unbind them before
     * they can go */
    if (rc != SQLITE_DONE) {
        rc = db_failure(L, stmt->db->handle);
        sqlite3_reset(stmt->handle);
        sqlite3_clear_bindings(stmt->handle);
        return rc;
    }
    sqlite3_reset(stmt->handle);
    sqlite3_clear_bindings(stmt->handle);
    lua_pushinteger(L, sqlite3_changes(stmt->db->handle));
    return 1;
}

static void push_column(lua_State *L, sqlite3_stmt *handle, int i)
{
    switch (sqlite3_column_type(handle, i)) {
    case SQLITE_INTEGER:
        ou_pushint64(L, (int64_t)sqlite3_column_int64(handle, i));
        break;
    case SQLITE_FLOAT:
        lua_pushnumber(L, (lua_Number)sqlite3_column_double(handle, i));
        break;
    case SQLITE_TEXT:
    case SQLITE_BLOB:
        lua_pushlstring(L, (const char *)sqlite3_column_blob(handle, i),
                        (size_t)sqlite3_column_bytes(handle, i));
        break;
    default:
        lua_pushnil(L);
    }
}

/* stmt:row() -> { column = value, ... } of the current row (NULL: absent) */
static int stmt_row(lua_State *L)
{
    struct ou_stmt *stmt = check_stmt(L);
    int n = sqlite3_column_count(stmt->handle), i;
    lua_createtable(L, 0, n);
    for (i = 0; i < n; i++) {
        push_column(L, stmt->handle, i);
        lua_setfield(L, -2, sqlite3_column_name(stmt->handle, i));
    }
    return 1;
}

/* stmt:values() -> v1, v2, ... of the current row, in column order */
static int stmt_values(lua_State *L)
{
    struct ou_stmt *stmt = check_stmt(L);
    int n = sqlite3_column_count(stmt->handle), i;
    luaL_checkstack(L, n, "sqlite: too many columns");
    for (i = 0; i < n; i++)
        push_column(L, stmt->handle, i);
    return n;
}

/* stmt:columns() -> { name1, name2, ... } */
static int stmt_columns(lua_State *L)
{
    struct ou_stmt *stmt = check_stmt(L);
    int n = sqlite3_column_count(stmt->handle), i;
    lua_createtable(L, n, 0);
    for (i = 0; i < n; i++) {
        lua_pushstring(L, sqlite3_column_name(stmt->handle, i));
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int stmt_reset(lua_State *L)
{
    struct ou_stmt *stmt = check_stmt(L);
    sqlite3_reset(stmt->handle);
    sqlite3_clear_bindings(stmt->handle);
    lua_settop(L, 1);
    return 1;
}

static int stmt_tostring(lua_State *L)
{
    struct ou_stmt *stmt = luaL_checkudata(L, 1, STMT_TYPE);
    lua_pushfstring(L, "openai_usage.sqlite.stmt (%s)", stmt->handle ? "prepared" : "finalized");
    return 1;
}

static int ou_sqlite_version(lua_State *L)
{
    lua_pushstring(L, sqlite3_libversion());
    return 1;
}

static const luaL_Reg db_methods[] = {
    {"exec", db_exec},       {"prepare", db_prepare}, {"busy_timeout", db_busy_timeout},
    {"changes", db_changes}, {"close", db_close},     {NULL, NULL},
};

static const luaL_Reg stmt_methods[] = {
    {"bind", stmt_bind},   {"step", stmt_step},         {"run", stmt_run},
    {"row", stmt_row},     {"values", stmt_values},     {"columns", stmt_columns},
    {"reset", stmt_reset}, {"finalize", stmt_finalize}, {NULL, NULL},
};

static void new_type(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction release,
                     lua_CFunction tostring)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    ou_setfuncs(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, release);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, release);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

OU_EXPORT int luaopen_openai_usage_sqlite(lua_State *L);

int luaopen_openai_usage_sqlite(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"open", ou_sqlite_open}, {"version", ou_sqlite_version}, {NULL, NULL}};
    new_type(L, DB_TYPE, db_methods, db_release, db_tostring);
    new_type(L, STMT_TYPE, stmt_methods, stmt_release, stmt_tostring);
    ou_newlib(L, functions);
    return 1;
}
