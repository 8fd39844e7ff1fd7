/* The client object: one libcurl handle, its headers and options. */
#ifndef OU_CLIENT_H
#define OU_CLIENT_H

#include "compat.h"

#define OU_CLIENT_MT "openai_usage.client"
/* The one statement of the version: core.version, the User-Agent and, through
 * tools/gen-rockspec.lua, the release rockspec read it. */
#define OU_VERSION "0.1.0"

/* core.new(options) -> client | nil, err */
int ou_client_new(lua_State *L);

/* Registers the client metatable; leaves its methods table on the stack. */
void ou_client_open(lua_State *L);

#endif
