#include "rules.h"

#include <string.h>

/* The tables themselves, ou_endpoints and ou_directory, are generated from
 * the OpenAPI descriptions into rules_table.c (make rules); this file holds
 * what reads them. */

const struct ou_endpoint_rule *ou_endpoint_find(const char *name)
{
    for (size_t i = 0; i < ou_nendpoints; i++)
        if (strcmp(ou_endpoints[i].name, name) == 0)
            return &ou_endpoints[i];
    for (size_t i = 0; i < ou_ndirectory; i++)
        if (strcmp(ou_directory[i].name, name) == 0)
            return &ou_directory[i];
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

const char *ou_near_miss(const char *word, const char *const *values)
{
    const char *best = NULL;
    size_t best_distance = OU_NEAR_MISS + 1;
    for (size_t i = 0; values[i]; i++) {
        size_t dist = edit_distance(word, values[i]);
        if (dist > 0 && dist < best_distance) {
            best = values[i];
            best_distance = dist;
        }
    }
    return best;
}
