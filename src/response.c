#include "response.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void copy_value(char *out, size_t size, const char *value, size_t n)
{
    while (n && (*value == ' ' || *value == '\t'))
        value++, n--;
    while (n && (value[n - 1] == '\r' || value[n - 1] == '\n' || value[n - 1] == ' ' || value[n - 1] == '\t'))
        n--;
    if (n >= size)
        n = size - 1;
    memcpy(out, value, n);
    out[n] = '\0';
}

static int name_is(const char *name, size_t nlen, const char *wanted)
{
    return nlen == strlen(wanted) && strncasecmp(name, wanted, nlen) == 0;
}

void ou_response_reset(struct ou_response *r)
{
    r->request_id[0] = r->content_type[0] = '\0';
    r->retry_after = -1;
    r->retry_after_from_ms = 0;
    r->should_retry = -1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil). */
static long long days_from_civil(long long y, unsigned m, unsigned d)
{
    long long era;
    unsigned yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static int month_number(const char *name)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (size_t i = 0; i < 12; i++)
        if (strncmp(name, months + 3 * i, 3) == 0)
            return (int)i + 1;
    return 0;
}

int ou_http_date(const char *text, time_t *out)
{
    char wday[16], mon[4], zone[4], tail;
    int d, y, h, mi, s, m, n = 0;
    const char *comma = strchr(text, ',');
    if (comma && comma - text == 3 &&
        sscanf(text, "%3[A-Za-z], %2d %3s %4d %2d:%2d:%2d %3s%n", wday, &d, mon, &y, &h, &mi, &s, zone, &n) ==
            8) {
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    } else if (comma &&
               sscanf(comma + 1, " %2d-%3s-%2d %2d:%2d:%2d %3s%n", &d, mon, &y, &h, &mi, &s, zone, &n) == 7) {
        /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT (two-digit years, RFC 9110's rule) */
        n += (int)(comma + 1 - text);
        y += y < 70 ? 2000 : 1900;
    } else if (!comma &&
               sscanf(text, "%3s %3s %2d %2d:%2d:%2d %4d%n", wday, mon, &d, &h, &mi, &s, &y, &n) == 7) {
        /* asctime: Sun Nov  6 08:49:37 1994 */
        memcpy(zone, "GMT", 4);
    } else {
        return 0;
    }
    if (sscanf(text + n, " %c", &tail) == 1 || strcmp(zone, "GMT") != 0)
        return 0;
    m = month_number(mon);
    if (!m || d < 1 || d > 31 || y < 1970 || h > 23 || mi > 59 || s > 60 || h < 0 || mi < 0 || s < 0)
        return 0;
    *out = (time_t)(days_from_civil(y, (unsigned)m, (unsigned)d) * 86400 + (long long)h * 3600 +
                    (long long)mi * 60 + s);
    return 1;
}

/* Parses a Retry-After value: seconds, or an HTTP date. */
static double parse_retry_after(const char *v)
{
    char *end;
    double seconds;
    time_t when;
    errno = 0;
    seconds = strtod(v, &end);
    if (end != v && *end == '\0' && errno == 0 && seconds >= 0 && isfinite(seconds))
        return seconds;
    if (!ou_http_date(v, &when))
        return -1;
    seconds = difftime(when, time(NULL));
    return seconds > 0 ? seconds : 0;
}

void ou_response_header(struct ou_response *r, const char *name, size_t nlen, const char *value, size_t vlen)
{
    char text[64];
    if (name_is(name, nlen, "x-request-id")) {
        copy_value(r->request_id, sizeof r->request_id, value, vlen);
    } else if (name_is(name, nlen, "content-type")) {
        copy_value(r->content_type, sizeof r->content_type, value, vlen);
    } else if (name_is(name, nlen, "retry-after-ms")) {
        /* the millisecond form wins over Retry-After, as in the SDKs */
        char *end;
        double ms;
        copy_value(text, sizeof text, value, vlen);
        ms = strtod(text, &end);
        if (end != text && *end == '\0' && ms >= 0 && isfinite(ms)) {
            r->retry_after = ms / 1000.0;
            r->retry_after_from_ms = 1;
        }
    } else if (name_is(name, nlen, "retry-after")) {
        copy_value(text, sizeof text, value, vlen);
        if (!r->retry_after_from_ms)
            r->retry_after = parse_retry_after(text);
    } else if (name_is(name, nlen, "x-should-retry")) {
        copy_value(text, sizeof text, value, vlen);
        if (strcmp(text, "true") == 0)
            r->should_retry = 1;
        else if (strcmp(text, "false") == 0)
            r->should_retry = 0;
    }
}
