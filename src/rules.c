#include "rules.h"

#include <string.h>

/* Enumerations from the seed document (GET /organization/usage/images). */
static const char *const image_sources[] = {"image.generation", "image.edit", "image.variation", NULL};
static const char *const image_sizes[] = {"256x256", "512x512", "1024x1024", "1792x1792", "1024x1792", NULL};
static const char *const image_group_by[] = {"project_id", "user_id", "api_key_id", "model",
                                             "size",       "source",  NULL};

/* The per-width limits are stated only in prose in the API description. */
static const struct ou_width_rule usage_widths[] = {
    {"1m", 60, 1440},
    {"1h", 24, 168},
    {"1d", 7, 31},
};

/* Order here is the order of the encoded query string. */
static const struct ou_param_rule images_params[] = {
    {"start_time", OU_PARAM_TIME, 1, NULL, "Start time (Unix seconds) of the query time range, inclusive"},
    {"end_time", OU_PARAM_TIME, 0, NULL, "End time (Unix seconds) of the query time range, exclusive"},
    {"bucket_width", OU_PARAM_WIDTH, 0, NULL, "Width of each time bucket in the response"},
    {"sources", OU_PARAM_LIST, 0, image_sources, "Only usage for these sources"},
    {"sizes", OU_PARAM_LIST, 0, image_sizes, "Only usage for these image sizes"},
    {"project_ids", OU_PARAM_LIST, 0, NULL, "Only usage for these projects"},
    {"user_ids", OU_PARAM_LIST, 0, NULL, "Only usage for these users"},
    {"api_key_ids", OU_PARAM_LIST, 0, NULL, "Only usage for these API keys"},
    {"models", OU_PARAM_LIST, 0, NULL, "Only usage for these models"},
    {"group_by", OU_PARAM_LIST, 0, image_group_by, "Group the usage data by these fields"},
    {"limit", OU_PARAM_LIMIT, 0, NULL, "Number of buckets to return"},
    {"page", OU_PARAM_CURSOR, 0, NULL, "Cursor: next_page of the previous response"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const struct ou_endpoint_rule ou_endpoints[] = {
    {"images", "/organization/usage/images", images_params, COUNT(images_params), usage_widths,
     COUNT(usage_widths), "1d"},
};
const size_t ou_nendpoints = COUNT(ou_endpoints);

const struct ou_endpoint_rule *ou_endpoint_find(const char *name)
{
    for (size_t i = 0; i < ou_nendpoints; i++)
        if (strcmp(ou_endpoints[i].name, name) == 0)
            return &ou_endpoints[i];
    return NULL;
}

const struct ou_width_rule *ou_width_find(const struct ou_endpoint_rule *ep, const char *width)
{
    for (size_t i = 0; i < ep->nwidths; i++)
        if (strcmp(ep->widths[i].width, width) == 0)
            return &ep->widths[i];
    return NULL;
}

/* Optimal string alignment distance (a transposition counts as one edit),
 * on names of at most 63 bytes. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t d[64][64];
    if (la > 63 || lb > 63)
        return (size_t)-1;
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

const char *ou_suggest(const char *word, const char *const *candidates, size_t n)
{
    const char *best = NULL;
    size_t best_distance = (size_t)-1, wl = strlen(word);
    /* a typo is at most a third of the word, and always at least one edit */
    size_t allowed = wl / 3 > 1 ? wl / 3 : 1;
    for (size_t i = 0; i < n; i++) {
        size_t dist = edit_distance(word, candidates[i]);
        size_t cl = strlen(candidates[i]);
        /* "group" for "group_by", "project" for "project_ids": a clear prefix */
        if (dist > allowed && wl >= 4 && cl > wl && strncmp(word, candidates[i], wl) == 0)
            dist = allowed;
        if (dist <= allowed && dist < best_distance) {
            best = candidates[i];
            best_distance = dist;
        }
    }
    return best;
}
