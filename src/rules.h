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
    OU_PARAM_PATH,   /* a non-empty string put into the path ({project_id}), percent-encoded */
    OU_PARAM_STRING, /* one string; values, when given, is the whole set */
};

/* What a 2xx body of the endpoint is: a usage page (buckets under "data",
 * next_page), a directory list (objects under "data", has_more, last_id:
 * the next page is after=last_id) or one object (spend_limit). */
enum ou_shape {
    OU_SHAPE_USAGE, /* 0: the usage table's rows leave it out */
    OU_SHAPE_LIST,
    OU_SHAPE_OBJECT,
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
    enum ou_shape shape;
    int max_limit;      /* a list's page size: 1..max_limit (a usage page's is per width) */
    const char *object; /* the object constant of a list's items, or of the one object */
};

/* The usage endpoints (reports, the CLI's commands) and the directory's
 * (projects, users, their keys and service accounts, spend alerts and the
 * spend limit), each generated from its OpenAPI description. */
extern const struct ou_endpoint_rule ou_endpoints[];
extern const size_t ou_nendpoints;
extern const struct ou_endpoint_rule ou_directory[];
extern const size_t ou_ndirectory;

/* The endpoint of either table named name, or NULL. */
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
