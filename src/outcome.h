/* What a finished request gives Lua: its page, checked to be a usage
 * page, or nil and an error shaped from its record (what the server said,
 * the attempts); every string on its way out scrubbed of the key. */
#ifndef OU_OUTCOME_H
#define OU_OUTCOME_H

#include "compat.h"
#include "request.h"

/* Replaces, in the string at the top, the key and every long run of it
 * with [redacted]. */
void ou_scrub_key(lua_State *L, const char *api_key);

/* Returns nil, err for the error table at the top, scrubbed. */
int ou_outcome_error(lua_State *L, const char *api_key);

/* nil, err for a failed outcome of rec. */
int ou_outcome_fail(lua_State *L, const char *api_key, const struct ou_transfer_opts *opts,
                    const struct ou_request *rec, enum ou_outcome outcome);

/* The page decoded from rec's 2xx body (a usage page, a directory list or
 * one object, as rec->shape says), or nil, err. */
int ou_outcome_page(lua_State *L, const char *api_key, const struct ou_transfer_opts *opts,
                    const struct ou_request *rec);

#endif
