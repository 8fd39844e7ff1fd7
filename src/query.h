/* Request parameters: validated against the rule table, then encoded as a
 * URL query string. Nothing is sent when validation fails. */
#ifndef OU_QUERY_H
#define OU_QUERY_H

#include "buf.h"
#include "compat.h"
#include "rules.h"

enum ou_array_format {
    OU_ARRAY_BRACKETS, /* group_by[]=model&group_by[]=size (the official SDKs) */
    OU_ARRAY_REPEAT,   /* group_by=model&group_by=size */
};

/* Validates the params table at params_idx (nil counts as empty) against ep
 * and appends the encoded query (no leading '?') to out. Returns 1; or pushes
 * an error table (kind "invalid_argument", with param) and returns 0. Raises
 * a Lua error only when memory runs out; out then holds a partial query,
 * which its owner frees as usual. */
int ou_query_encode(lua_State *L, int params_idx, const struct ou_endpoint_rule *ep, enum ou_array_format fmt,
                    struct ou_buf *out);

/* Appends ep's path with its path parameters (project_id) from the params
 * table at params_idx, checked and percent-encoded. Returns 1; or pushes an
 * invalid_argument error and returns 0. */
int ou_query_path(lua_State *L, int params_idx, const struct ou_endpoint_rule *ep, struct ou_buf *out);

/* The endpoint named by the string at idx (a usage or a directory one), or
 * NULL with an error pushed. */
const struct ou_endpoint_rule *ou_query_endpoint(lua_State *L, int idx);

/* Appends s percent-encoded (RFC 3986: unreserved characters kept). */
int ou_query_escape(struct ou_buf *out, const char *s, size_t n);

/* Pushes an invalid_argument error naming param, for a message in printf form. */
int ou_query_fail(lua_State *L, const char *param, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif
