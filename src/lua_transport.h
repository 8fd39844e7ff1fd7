/* A client's Lua transport, the C half. openai_usage.transport drives one
 * request: transport_request builds what the transport sends and the
 * request's own record, the transport makes an attempt (Lua, so it may
 * yield: cosockets, coroutines), transport_answer judges it here with the
 * same retry policy as libcurl's loop (retry.c), and the driver sleeps with
 * the transport's sleep when told to try again. */
#ifndef OU_LUA_TRANSPORT_H
#define OU_LUA_TRANSPORT_H

#include "compat.h"

/* one request's record through a Lua transport (struct ou_request) */
#define OU_REQUEST_MT "openai_usage.request"

/* Adds transport_request and transport_answer to the client's methods
 * (after ou_client_open). */
void ou_lua_transport_open(lua_State *L);

#endif
