/* The one table of request rules: endpoints, their parameters, enums and
 * the limits per bucket width. Validation, encoding, help text and error
 * messages all read it. */
#ifndef OU_RULES_H
#define OU_RULES_H

#include <stddef.h>

enum ou_param_type {
    OU_PARAM_TIME,   /* integer Unix seconds, >= 0 */
    OU_PARAM_WIDTH,  /* one of the endpoint's bucket widths */
    OU_PARAM_LIMIT,  /* integer 1..max of the bucket width in force */
    OU_PARAM_CURSOR, /* opaque, non-empty string (next_page of a previous page) */
    OU_PARAM_LIST,   /* one string or a sequence of them; values restricts them */
    OU_PARAM_BOOL,   /* true or false */
};

struct ou_param_rule {
    const char *name;
    enum ou_param_type type;
    int required;
    const char *const *values; /* NULL-terminated described values, or NULL for any */
    /* 0: values is the whole set (a set that shapes the request, group_by);
     * 1: values are the described ones of a filter whose vocabulary grows
     * faster than the description (sizes, sources): another value is sent as
     * given, unless it is a near miss of a described one (a typo) */
    int open;
    const char *doc; /* one line, for help text */
};

struct ou_width_rule {
    const char *width;
    int default_limit;
    int max_limit;
};

/* A field of the endpoint's result object, in the order the API writes it. */
struct ou_field_rule {
    const char *name; /* "images" */
    const char *type; /* the JSON type: "string", "integer", "number", "object", "boolean" */
    int nullable;
};

struct ou_endpoint_rule {
    const char *name; /* "images" */
    const char *path; /* "/organization/usage/images", appended to base_url */
    const struct ou_param_rule *params;
    size_t nparams;
    const struct ou_width_rule *widths;
    size_t nwidths;
    const char *default_width;
    const struct ou_field_rule *fields;
    size_t nfields;
};

extern const struct ou_endpoint_rule ou_endpoints[];
extern const size_t ou_nendpoints;

const struct ou_endpoint_rule *ou_endpoint_find(const char *name);
const struct ou_width_rule *ou_width_find(const struct ou_endpoint_rule *ep, const char *width);

/* The closest of n candidate names to word (for "did you mean"), or NULL
 * when none is close enough to be a plausible typo. */
const char *ou_suggest(const char *word, const char *const *candidates, size_t n);

/* The described value of a NULL-terminated list within OU_NEAR_MISS edits of
 * word (and not word itself), the closest first; NULL when none is. */
#define OU_NEAR_MISS 2
const char *ou_near_miss(const char *word, const char *const *values);

#endif
