#include "error.h"

#include <stdio.h>
#include <string.h>

/* Length of the well-formed UTF-8 sequence at p (n bytes left), or 0. */
static size_t utf8_length(const unsigned char *p, size_t n)
{
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (p[0] >= 0xC2 && p[0] <= 0xDF)
        len = 2;
    else if (p[0] >= 0xE0 && p[0] <= 0xEF)
        len = 3, lo = p[0] == 0xE0 ? 0xA0 : 0x80, hi = p[0] == 0xED ? 0x9F : 0xBF;
    else if (p[0] >= 0xF0 && p[0] <= 0xF4)
        len = 4, lo = p[0] == 0xF0 ? 0x90 : 0x80, hi = p[0] == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return len;
}

void ou_add_printable(luaL_Buffer *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    char hex[8];
    while (p < end) {
        size_t len = *p < 0x80 ? 1 : utf8_length(p, (size_t)(end - p));
        if (len == 1 && *p >= 0x20 && *p != 0x7F) {
            luaL_addchar(b, (char)*p);
        } else if (len == 2 && p[0] == 0xC2 && p[1] <= 0x9F) {
            /* U+0080..U+009F: the C1 controls, CSI and OSC among them */
            snprintf(hex, sizeof hex, "\\u%04x", (unsigned)p[1]);
            luaL_addstring(b, hex);
        } else if (len > 1) {
            luaL_addlstring(b, (const char *)p, len);
        } else {
            /* a C0 control, DEL, or a byte that is not UTF-8 (a lone 0x9B is CSI too) */
            snprintf(hex, sizeof hex, "\\x%02x", (unsigned)*p);
            luaL_addstring(b, hex);
            len = 1;
        }
        p += len;
    }
}

int ou_printable_lua(lua_State *L)
{
    luaL_Buffer b;
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_buffinit(L, &b);
    ou_add_printable(&b, s, n);
    luaL_pushresult(&b);
    return 1;
}

/* The string (or number) at idx, absolute, and its length; else NULL. */
static const char *field_text(lua_State *L, int idx, size_t *n)
{
    int type = lua_type(L, idx);
    return type == LUA_TSTRING || type == LUA_TNUMBER ? lua_tolstring(L, idx, n) : NULL;
}

static int error_tostring(lua_State *L)
{
    luaL_Buffer b;
    const char *kind, *message, *code, *request_id;
    size_t kind_n = 0, message_n = 0, code_n = 0, id_n = 0;
    int64_t status = 0;
    int has_status;
    char num[32];
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    /* every field is read before the buffer starts, which may use the stack */
    lua_getfield(L, 1, "kind");
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "code");
    lua_getfield(L, 1, "request_id");
    lua_getfield(L, 1, "status");
    kind = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &kind_n) : NULL;
    message = field_text(L, 3, &message_n);
    code = lua_type(L, 4) == LUA_TSTRING ? lua_tolstring(L, 4, &code_n) : NULL;
    request_id = lua_type(L, 5) == LUA_TSTRING ? lua_tolstring(L, 5, &id_n) : NULL;
    has_status = lua_type(L, 6) == LUA_TNUMBER && ou_toint64(L, 6, &status);
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "openai_usage: ");
    if (kind)
        ou_add_printable(&b, kind, kind_n);
    else
        luaL_addstring(&b, "error");
    if (has_status) {
        snprintf(num, sizeof num, " %lld", (long long)status);
        luaL_addstring(&b, num);
    }
    if (code) {
        luaL_addstring(&b, " (");
        ou_add_printable(&b, code, code_n);
        luaL_addstring(&b, ")");
    }
    luaL_addstring(&b, ": ");
    /* one line, and nothing a terminal would obey: a server's message may
     * carry CR/LF or escape sequences */
    if (message)
        ou_add_printable(&b, message, message_n);
    else
        luaL_addstring(&b, "unknown error");
    if (request_id) {
        luaL_addstring(&b, " [request_id ");
        ou_add_printable(&b, request_id, id_n);
        luaL_addstring(&b, "]");
    }
    luaL_pushresult(&b);
    return 1;
}

void ou_error_push(lua_State *L, const char *kind, const char *message)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    luaL_getmetatable(L, OU_ERROR_MT);
    lua_setmetatable(L, -2);
}

void ou_error_setstring(lua_State *L, const char *key, const char *value)
{
    if (!value)
        return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

void ou_error_setint(lua_State *L, const char *key, int64_t value)
{
    ou_pushint64(L, value);
    lua_setfield(L, -2, key);
}

void ou_error_setnumber(lua_State *L, const char *key, double value)
{
    lua_pushnumber(L, (lua_Number)value);
    lua_setfield(L, -2, key);
}

int ou_error_return(lua_State *L)
{
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* core.error{kind=..., message=..., ...}: lets the Lua layer raise errors of
 * the same shape (a repeated cursor, a page with has_more and no cursor). */
int ou_error_new_lua(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "kind");
    if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_argerror(L, 1, "error needs a string kind");
    lua_pop(L, 1);
    lua_settop(L, 1);
    luaL_getmetatable(L, OU_ERROR_MT);
    lua_setmetatable(L, 1);
    return 1;
}

void ou_error_open(lua_State *L)
{
    if (luaL_newmetatable(L, OU_ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "openai_usage.error");
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
}
