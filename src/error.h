/* Error values: a table {kind, message, status, ...} with a __tostring. */
#ifndef OU_ERROR_H
#define OU_ERROR_H

#include "compat.h"

#define OU_ERROR_MT "openai_usage.error"

/* Pushes a new error table of the given kind and message. Callers add the
 * other fields (status, type, code, param, request_id, retry_after, offset). */
void ou_error_push(lua_State *L, const char *kind, const char *message);

/* Sets t[key] = value on the error table at the top of the stack. */
void ou_error_setstring(lua_State *L, const char *key, const char *value);
void ou_error_setint(lua_State *L, const char *key, int64_t value);
void ou_error_setnumber(lua_State *L, const char *key, double value);

/* Returns nil, err (the error table at the top) to Lua: use as `return ou_error_return(L);`. */
int ou_error_return(lua_State *L);

/* Registers openai_usage.errors' metatable as the core's (requiring that
 * module; raises when it cannot be loaded); core.error(fields) makes one. */
void ou_error_open(lua_State *L);
int ou_error_new_lua(lua_State *L);

#endif
