/* One pass from JSON text to Lua values, with no intermediate tree. The
 * UsageResponse path (page -> data -> bucket -> results) gets the API's two
 * quirks: "result" read as "results", and results sent as JSON strings. */
#include "decode.h"

#include <float.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Where a value sits, for the quirks of the usage schema (a directory
 * list's objects sit in ITEMS, with none of them). */
enum place { ANYWHERE, PAGE, DATA, BUCKET, RESULTS, RESULT, ITEMS, ITEM };

/* Free Lua stack slots made sure of at every level: the container, a key, a
 * value and what a luaL_Buffer may push (lauxlib keeps within LUA_MINSTACK). */
#define STACK_SLOTS (LUA_MINSTACK + 4)

/* The last long string pushed (held in a stack slot): the API repeats long
 * values in every result ("organization.usage.web_search_calls.result" is
 * 42 bytes), and Lua 5.4 interns only strings up to 40 bytes, so each copy
 * would be a new allocation. A run of equal long strings shares one. */
#define LONG_STRING 40
struct long_string {
    int slot;
    const char *bytes;
    size_t len;
};

/* An open container: its table is on the Lua stack, this is the rest. */
struct frame {
    unsigned char place;       /* an enum place */
    unsigned char object;      /* 1 for an object, 0 for an array */
    unsigned char saw_results; /* a bucket's "results" key has come */
    int n;                     /* elements stored (the last index), or members read */
    int presized;              /* the slots its table was created with */
};

/* The open containers, at[depth - 1] the innermost: the first few in C
 * locals, deeper ones in a Lua userdata held in a stack slot. */
struct frames {
    struct frame *at;
    int cap, slot;
    struct frame first[32];
};

struct parser {
    lua_State *L;
    const char *start, *p, *end;
    int depth, max_depth;
    int page;           /* strict page checks (holes) */
    int result_members; /* members of the last result object: sizes the next */
    int results_length; /* elements of the last results array: sizes the next */
    int64_t budget;     /* values the text may still create */
    int64_t max_values;
    struct ou_decode_error *err;
    struct long_string *last;
    struct frames *frames;
};

/* Big frames (buffers, an inner error) stay out of the parser's loop;
 * error paths also stay out of the hot code. */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#define COLD __attribute__((cold, noinline))
#else
#define NOINLINE
#define COLD
#endif

static int fail_at(struct parser *P, const char *where, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int fail_at(struct parser *P, const char *where, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(P->err->message, sizeof P->err->message, fmt, ap); // NOLINT
    va_end(ap);
    P->err->offset = (size_t)(where - P->start);
    return 0;
}

static int truncated(struct parser *P)
{
    return fail_at(P, P->end, "unexpected end of input (truncated?)");
}

/* 1 for the four bytes JSON takes as whitespace. */
static const unsigned char space_byte[256] = {['\t'] = 1, ['\n'] = 1, ['\r'] = 1, [' '] = 1};

/* Pretty-printed JSON indents every line: runs of spaces go eight bytes at
 * a time. P->p is on a whitespace byte. */
static NOINLINE void skip_space_run(struct parser *P)
{
    const char *p = P->p, *end = P->end;
    do {
        p++;
        while (end - p >= 8) {
            uint64_t word;
            memcpy(&word, p, 8);
            if (word != 0x2020202020202020u)
                break;
            p += 8;
        }
    } while (p < end && space_byte[(unsigned char)*p]);
    P->p = p;
}

/* Compact JSON has nothing to skip: one look at a byte, inline. */
static inline void skip_space(struct parser *P)
{
    if (P->p < P->end && space_byte[(unsigned char)*P->p])
        skip_space_run(P);
}

static int parse_value(struct parser *P, enum place place);

/* 1 for bytes a string can hold as they are: ASCII from space up, except
 * '"' and '\\'. One load a byte in the scanning loops. */
static const unsigned char plain_byte[256] = {
#define ROW16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
    ROW16(0), ROW16(0), 1,        1,        0,        1,        1,        1,        1,        1,
    1,        1,        1,        1,        1,        1,        1,        1, /* 0x20..0x2F: '"' is 0x22 */
    ROW16(1), ROW16(1), 1,        1,        1,        1,        1,        1,        1,        1,
    1,        1,        1,        1,        0,        1,        1,        1, /* 0x50..0x5F: '\\' is 0x5C */
    ROW16(1), ROW16(1), ROW16(0), ROW16(0), ROW16(0), ROW16(0), ROW16(0), ROW16(0), ROW16(0), ROW16(0),
#undef ROW16
};

/* The sequence a lead byte >= 0x80 starts: its length (0 for a byte no
 * sequence starts with) and the range its second byte must fall in, which
 * excludes overlongs, encoded surrogates and code points past U+10FFFF. */
static size_t utf8_lead(unsigned c, unsigned *lo, unsigned *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF) {
        *lo = c == 0xE0 ? 0xA0 : 0x80;
        *hi = c == 0xED ? 0x9F : 0xBF;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        *lo = c == 0xF0 ? 0x90 : 0x80;
        *hi = c == 0xF4 ? 0x8F : 0xBF;
        return 4;
    }
    return 0;
}

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0. */
static size_t utf8_length(const unsigned char *p, const unsigned char *end)
{
    unsigned lo, hi;
    size_t n = utf8_lead(p[0], &lo, &hi);
    if (!n || (size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* The sequence at p is not valid: say whether it is only cut short by the
 * end of the input, or wrong. */
static COLD int bad_utf8(struct parser *P, const char *at)
{
    const unsigned char *p = (const unsigned char *)at, *end = (const unsigned char *)P->end;
    unsigned lo, hi;
    size_t n = utf8_lead(p[0], &lo, &hi);
    if (n && (size_t)(end - p) < n) {
        size_t i = 1;
        while (p + i < end && (i == 1 ? p[i] >= lo && p[i] <= hi : (p[i] & 0xC0) == 0x80))
            i++;
        if (p + i == end)
            return truncated(P);
    }
    return fail_at(P, at, "invalid UTF-8 in string");
}

static int hex_digit(char c, unsigned *v)
{
    if (c >= '0' && c <= '9')
        *v = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
        *v = (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
        *v = (unsigned)(c - 'A' + 10);
    else
        return 0;
    return 1;
}

/* Reads up to four hex digits at p, stopping at end: the number of hex
 * digits read (4 when complete). */
static int hex4(const char *p, const char *end, unsigned *out)
{
    unsigned v = 0, d;
    int i;
    for (i = 0; i < 4 && p + i < end && hex_digit(p[i], &d); i++)
        v = v << 4 | d;
    *out = v;
    return i;
}

static size_t utf8_encode(unsigned cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads one \uXXXX (or a surrogate pair) at P->p (on the 'u'). An escape
 * the input ends in the middle of is truncation, not a bad escape. */
static int read_unicode_escape(struct parser *P, const char *backslash, unsigned *cp)
{
    const char *p = P->p + 1, *end = P->end;
    unsigned hi, lo;
    int n = hex4(p, end, &hi);
    if (n < 4)
        return p + n == end ? truncated(P)
                            : fail_at(P, backslash, "invalid \\u escape (four hex digits expected)");
    p += 4;
    if (hi >= 0xDC00 && hi <= 0xDFFF)
        return fail_at(P, backslash, "lone low surrogate \\u%04X", hi);
    if (hi >= 0xD800 && hi <= 0xDBFF) {
        int m = 0;
        if (end - p >= 2 && p[0] == '\\' && p[1] == 'u')
            m = hex4(p + 2, end, &lo);
        if (m < 4) {
            /* the input ends where the low half could still follow */
            if (p == end || (*p == '\\' && (p + 1 == end || (p[1] == 'u' && p + 2 + m == end))))
                return truncated(P);
            return fail_at(P, backslash, "lone high surrogate \\u%04X", hi);
        }
        if (lo < 0xDC00 || lo > 0xDFFF)
            return fail_at(P, backslash, "lone high surrogate \\u%04X", hi);
        p += 6;
        hi = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
    }
    *cp = hi;
    P->p = p;
    return 1;
}

/* Where unescaped bytes go: a stack buffer, spilling into a luaL_Buffer
 * only for strings longer than it. Most escaped strings are short. */
struct sink {
    lua_State *L;
    int spilled;
    size_t n;
    luaL_Buffer b;
    char buf[512];
};

static void sink_add(struct sink *s, const char *bytes, size_t n)
{
    /* only n and spilled need be set: cppcheck takes the unset buffers for a bug */
    // cppcheck-suppress ctuuninitvar
    if (s->n + n > sizeof s->buf) {
        if (!s->spilled) {
            luaL_buffinit(s->L, &s->b);
            s->spilled = 1;
        }
        luaL_addlstring(&s->b, s->buf, s->n);
        s->n = 0;
        if (n > sizeof s->buf) {
            luaL_addlstring(&s->b, bytes, n);
            return;
        }
    }
    memcpy(s->buf + s->n, bytes, n);
    s->n += n;
}

static void sink_push(struct sink *s)
{
    if (!s->spilled) {
        lua_pushlstring(s->L, s->buf, s->n);
        return;
    }
    luaL_addlstring(&s->b, s->buf, s->n);
    luaL_pushresult(&s->b);
}

/* Fails with the stack as it was: a spilled buffer is finished and dropped. */
static int sink_fail(struct sink *s, int result)
{
    if (s->spilled) {
        luaL_pushresult(&s->b);
        lua_pop(s->L, 1);
    }
    return result;
}

/* The slow path: the string from first (just after the quote) has an
 * escape at P->p. */
static NOINLINE int parse_escaped_string(struct parser *P, const char *first)
{
    struct sink s;
    const char *p = P->p, *end = P->end;
    s.L = P->L;
    s.spilled = 0;
    s.n = 0;
    sink_add(&s, first, (size_t)(p - first));
    for (;;) {
        const char *run = p;
        const char *backslash;
        char c, out[4];
        unsigned cp = 0;
        while (p < end && plain_byte[(unsigned char)*p])
            p++;
        if (p > run)
            sink_add(&s, run, (size_t)(p - run));
        if (p >= end)
            return sink_fail(&s, truncated(P));
        if (*p == '"') {
            sink_push(&s);
            P->p = p + 1;
            return 1;
        }
        if ((unsigned char)*p >= 0x80) {
            size_t n = utf8_length((const unsigned char *)p, (const unsigned char *)end);
            if (!n)
                return sink_fail(&s, bad_utf8(P, p));
            sink_add(&s, p, n);
            p += n;
            continue;
        }
        if (*p != '\\')
            return sink_fail(
                &s, fail_at(P, p, "control character 0x%02X in string (must be escaped)", (unsigned char)*p));
        if (p + 1 >= end)
            return sink_fail(&s, truncated(P));
        backslash = p;
        c = p[1];
        p += 2;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            out[0] = c;
            break;
        case 'b':
            out[0] = '\b';
            break;
        case 'f':
            out[0] = '\f';
            break;
        case 'n':
            out[0] = '\n';
            break;
        case 'r':
            out[0] = '\r';
            break;
        case 't':
            out[0] = '\t';
            break;
        case 'u':
            P->p = backslash + 1;
            if (!read_unicode_escape(P, backslash, &cp))
                return sink_fail(&s, 0);
            p = P->p;
            sink_add(&s, out, utf8_encode(cp, out));
            continue;
        default:
            if ((unsigned char)c < 0x20 || (unsigned char)c >= 0x7F)
                return sink_fail(&s, fail_at(P, backslash, "invalid escape (byte 0x%02X after a backslash)",
                                             (unsigned char)c));
            return sink_fail(&s, fail_at(P, backslash, "invalid escape \\%c", c));
        }
        sink_add(&s, out, 1);
    }
}

/* P->p is just after the opening quote. Pushes the string. Plain runs are
 * pushed straight from the input. */
static int parse_string(struct parser *P)
{
    const char *first = P->p, *p = first, *end = P->end;
    for (;;) {
        while (p < end && plain_byte[(unsigned char)*p])
            p++;
        if (p >= end)
            return truncated(P);
        if (*p == '"') {
            size_t n = (size_t)(p - first);
            struct long_string *last = P->last;
            P->p = p + 1;
            if (n <= LONG_STRING) {
                lua_pushlstring(P->L, first, n);
            } else if (n == last->len && memcmp(first, last->bytes, n) == 0) {
                lua_pushvalue(P->L, last->slot);
            } else {
                lua_pushlstring(P->L, first, n); /* (returns nothing on 5.1) */
                last->bytes = lua_tostring(P->L, -1);
                last->len = n;
                lua_pushvalue(P->L, -1);
                lua_replace(P->L, last->slot);
            }
            return 1;
        }
        if ((unsigned char)*p >= 0x80) {
            size_t n = utf8_length((const unsigned char *)p, (const unsigned char *)end);
            if (!n)
                return bad_utf8(P, p);
            p += n;
            continue;
        }
        if (*p == '\\') {
            P->p = p;
            return parse_escaped_string(P, first);
        }
        return fail_at(P, p, "control character 0x%02X in string (must be escaped)", (unsigned char)*p);
    }
}

/* strtod must not follow a locale a script may have set (os.setlocale):
 * the "C" locale is created once per process, for every thread. */
static locale_t c_locale_value;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_create(void)
{
    c_locale_value = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

/* Reads the float at s..s+n the slow, always correctly rounded way. */
static COLD int parse_float_text(struct parser *P, const char *s, size_t n, double *out)
{
    char small[128];
    pthread_once(&c_locale_once, c_locale_create);
    if (!c_locale_value)
        return fail_at(P, s, "cannot read a number: no C locale (out of memory?)");
    if (n < sizeof small) {
        memcpy(small, s, n);
        small[n] = '\0';
        *out = strtod_l(small, NULL, c_locale_value);
    } else {
        /* a long run of digits: let Lua own the copy */
        lua_pushlstring(P->L, s, n);
        *out = strtod_l(lua_tostring(P->L, -1), NULL, c_locale_value);
        lua_pop(P->L, 1);
    }
    return 1;
}

/* Powers of ten a double holds exactly: a mantissa below 2^53 times or over
 * one of them is one correctly rounded operation (Clinger's fast path). */
static const double exact_power10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int parse_number(struct parser *P)
{
    const char *s = P->p, *p = s, *end = P->end;
    uint64_t u = 0; /* every digit read, integer and fraction, while it fits */
    int negative = 0, overflow = 0, is_float = 0;
    long scale = 0, exponent = 0;
    if (*p == '-') {
        negative = 1;
        p++;
    }
    if (p >= end)
        return truncated(P);
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9')
            return fail_at(P, s, "invalid number (leading zero)");
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            unsigned d = (unsigned)(*p - '0');
            if (u > (UINT64_MAX - d) / 10)
                overflow = 1;
            else
                u = u * 10 + d;
            p++;
        }
    } else {
        return fail_at(P, s, "invalid number");
    }
    if (p < end && *p == '.') {
        is_float = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return p >= end ? truncated(P) : fail_at(P, p, "invalid number (digit expected after '.')");
        while (p < end && *p >= '0' && *p <= '9') {
            unsigned d = (unsigned)(*p - '0');
            if (u > (UINT64_MAX - d) / 10) {
                overflow = 1;
            } else if (!overflow) {
                u = u * 10 + d;
                scale++;
            }
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        int exponent_negative = 0;
        is_float = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            exponent_negative = *p++ == '-';
        if (p >= end || *p < '0' || *p > '9')
            return p >= end ? truncated(P) : fail_at(P, p, "invalid number (digit expected in exponent)");
        while (p < end && *p >= '0' && *p <= '9') {
            if (exponent < 100000)
                exponent = exponent * 10 + (*p - '0');
            p++;
        }
        if (exponent_negative)
            exponent = -exponent;
    }
    P->p = p;
    if (!is_float && !overflow) {
        if (!negative && u <= (uint64_t)INT64_MAX) {
            ou_pushint64(P->L, (int64_t)u);
            return 1;
        }
        if (negative && u <= (uint64_t)INT64_MAX + 1) {
            /* -0 is the integer 0 */
            ou_pushint64(P->L, u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u);
            return 1;
        }
    }
    {
        double v = 0;
        long e10 = exponent - scale;
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
        /* double arithmetic is done in double, so the fast path rounds once */
        if (!overflow && u <= ((uint64_t)1 << 53) && e10 >= -22 && e10 <= 22) {
            v = e10 < 0 ? (double)u / exact_power10[-e10] : (double)u * exact_power10[e10];
            lua_pushnumber(P->L, (lua_Number)(negative ? -v : v));
            return 1;
        }
#endif
        if (!parse_float_text(P, s, (size_t)(p - s), &v))
            return 0;
        if (isinf(v))
            return fail_at(P, s, "number out of range");
        lua_pushnumber(P->L, (lua_Number)v);
        return 1;
    }
}

/* The parser is out of values to spend: the page decodes to more than the
 * caller's budget allows. */
static COLD int over_budget(struct parser *P, const char *at)
{
    return fail_at(P, at, "more than %lld values (the decoder's budget for one page; a table counts as %d)",
                   (long long)P->max_values, OU_DECODE_TABLE_VALUES);
}

/* Spends n of the values the text may create. */
static inline int spend(struct parser *P, int64_t n, const char *at)
{
    P->budget -= n;
    return P->budget >= 0 || over_budget(P, at);
}

/* Past the first few levels the frames move to a Lua-owned block as deep
 * as the depth limit (kept in a stack slot: no C memory across Lua calls). */
static NOINLINE void grow_frames(struct parser *P)
{
    struct frames *fs = P->frames;
    struct frame *bigger = lua_newuserdata(P->L, sizeof *bigger * (size_t)P->max_depth);
    memcpy(bigger, fs->at, sizeof *bigger * (size_t)fs->cap);
    lua_replace(P->L, fs->slot);
    fs->at = bigger;
    fs->cap = P->max_depth;
}

static inline struct frame *frame_at(struct parser *P, int depth)
{
    return &P->frames->at[depth - 1];
}

/* What a JSON value at at is, for a message. */
static const char *value_kind(const char *at)
{
    switch (*at) {
    case '[':
        return "an array";
    case '{':
        return "an object";
    case '"':
        return "a string";
    case 't':
    case 'f':
        return "a boolean";
    case 'n':
        return "null";
    default:
        return "a number";
    }
}

/* A result sent as a JSON string holding the object: decode the string's
 * contents in place of it (the string is at the top of the stack; the
 * depth limit and the budget go on counting inside it). */
static NOINLINE int decode_result_string(struct parser *P, const char *at)
{
    size_t len;
    const char *text = lua_tolstring(P->L, -1, &len);
    struct ou_decode_error inner = {0, {0}, 0};
    struct parser sub = *P;
    int ok = 0;
    sub.start = sub.p = text;
    sub.end = text + len;
    sub.err = &inner;
    skip_space(&sub);
    if (sub.p >= sub.end) {
        fail_at(&sub, sub.p, len ? "no JSON value, only whitespace" : "empty string");
    } else if (P->page && *sub.p != '{') {
        /* a string holding anything but an object is not a result either */
        lua_pop(P->L, 1);
        P->err->page_error = 1;
        return fail_at(
            P, at,
            "data[%d].results[%d] is a string holding %s; a bucket holds a result object at every index",
            frame_at(P, P->depth - 2)->n, frame_at(P, P->depth)->n, value_kind(sub.p));
    } else if (parse_value(&sub, RESULT)) {
        skip_space(&sub);
        if (sub.p == sub.end) {
            lua_remove(P->L, -2);
            ok = 1;
        } else {
            lua_pop(P->L, 1);
            fail_at(&sub, sub.p, "unexpected data after the JSON value");
        }
    }
    P->budget = sub.budget;
    if (ok)
        return 1;
    lua_pop(P->L, 1);
    return fail_at(P, at, "a result sent as a string is not JSON: %s at byte %zu of the string",
                   inner.message, inner.offset);
}

/* After an element or member: ',' goes on (1), the closing byte ends the
 * container (2), anything else fails (0, err set). */
static int next_or_close(struct parser *P, char close, const char *what)
{
    skip_space(P);
    if (P->p >= P->end)
        return truncated(P);
    if (*P->p == ',') {
        P->p++;
        return 1;
    }
    if (*P->p == close) {
        P->p++;
        return 2;
    }
    return fail_at(P, P->p, "expected ',' or '%c' after %s", close, what);
}

/* The most slots a table is presized with from an earlier one: beyond it
 * Lua's doubling costs little, and a presize that turns out wrong wastes
 * at most this much. */
#define PRESIZE_MAX 64

/* Opens the container at P->p ('{' or '[') for place: a level deeper, its
 * frame set, its table pushed, P->p past the opening byte and the space
 * after it. The table is presized for where it sits, only from what this
 * page has already shown (never from a count the text claims), and not at
 * all when it is empty: a page holds many buckets; a bucket's results as
 * many as the last one's (up to PRESIZE_MAX); a result has as many members
 * as the one before it (every result of a page has the same schema: images
 * 9, completions 22), about ten for the first. Slots left empty are charged
 * to the budget when the container closes. */
static int open_container(struct parser *P, enum place place)
{
    lua_State *L = P->L;
    struct frame *f;
    const char *opening = P->p;
    int object = *P->p == '{', empty, size;
    if (++P->depth > P->max_depth)
        return fail_at(P, P->p, "nesting deeper than %d", P->max_depth);
    if (!lua_checkstack(L, STACK_SLOTS))
        return fail_at(P, P->p, "Lua stack exhausted");
    if (P->depth > P->frames->cap)
        grow_frames(P);
    if (!object && place == PAGE)
        place = ANYWHERE;
    /* past the opening byte and the whitespace after it: an empty one shows */
    P->p++;
    skip_space(P);
    empty = P->p < P->end && *P->p == (object ? '}' : ']');
    if (object) {
        size = empty ? 0 : place == RESULT ? P->result_members : 4;
        lua_createtable(L, 0, size);
    } else {
        size = empty ? 0 : place == DATA ? PRESIZE_MAX : place == RESULTS ? P->results_length : 0;
        lua_createtable(L, size, 0);
    }
    f = frame_at(P, P->depth);
    f->place = (unsigned char)place;
    f->object = (unsigned char)object;
    f->saw_results = 0;
    f->n = 0;
    f->presized = size;
    return spend(P, OU_DECODE_TABLE_VALUES, opening);
}

static int key_is(lua_State *L, const char *name, size_t n)
{
    size_t len;
    const char *k = lua_tolstring(L, -1, &len);
    return len == n && memcmp(k, name, n) == 0;
}

/* A null where a bucket or a result belongs: ipairs would stop at the hole
 * and a report would silently miss what follows, so a page with one is not
 * a page. f is the array's frame (DATA or RESULTS). */
static COLD int hole(struct parser *P, const char *at, const struct frame *f)
{
    P->err->page_error = 1;
    if (f->place == DATA)
        return fail_at(P, at, "data[%d] is null; a usage page holds a bucket object at every index", f->n);
    if (f->place == ITEMS)
        return fail_at(P, at, "data[%d] is null; a list holds an object at every index", f->n);
    /* the bucket is stored at its index (DATA's n + 1) when it closes */
    return fail_at(P, at, "data[%d].results[%d] is null; a bucket holds a result object at every index",
                   frame_at(P, P->depth - 2)->n, f->n);
}

/* Something other than an object where a bucket or a result belongs (f is
 * the array's frame), or other than an array under "data" or "results" (f
 * is the object's frame, key the member's name): as with a hole, the rows
 * a report would add up are not there, so it is not a page. */
static COLD int misplaced(struct parser *P, const char *at, const struct frame *f, const char *key)
{
    P->err->page_error = 1;
    if (key && f->place == PAGE)
        return fail_at(P, at, "data is %s; a %s", value_kind(at),
                       P->page == OU_DECODE_LIST ? "list holds a list of objects"
                                                 : "usage page holds a list of buckets");
    if (f->place == ITEMS)
        return fail_at(P, at, "data[%d] is %s; a list holds an object at every index", f->n, value_kind(at));
    if (key)
        return fail_at(P, at, "data[%d].%s is %s; a bucket holds a list of results",
                       frame_at(P, P->depth - 1)->n, key, value_kind(at));
    if (f->place == DATA)
        return fail_at(P, at, "data[%d] is %s; a usage page holds a bucket object at every index", f->n,
                       value_kind(at));
    return fail_at(P, at, "data[%d].results[%d] is %s; a bucket holds a result object at every index",
                   frame_at(P, P->depth - 2)->n, f->n, value_kind(at));
}

static int literal(struct parser *P, const char *word, size_t n)
{
    if ((size_t)(P->end - P->p) < n) {
        if (memcmp(P->p, word, (size_t)(P->end - P->p)) == 0)
            return truncated(P);
        return fail_at(P, P->p, "invalid literal (expected %s)", word);
    }
    if (memcmp(P->p, word, n) != 0)
        return fail_at(P, P->p, "invalid literal (expected %s)", word);
    P->p += n;
    return 1;
}

/* P->p is on the first byte of a value that is not a container (not
 * whitespace, not the end). */
static int parse_scalar(struct parser *P)
{
    if (!spend(P, 1, P->p))
        return 0;
    switch (*P->p) {
    case '"':
        P->p++;
        return parse_string(P);
    case 't':
        if (!literal(P, "true", 4))
            return 0;
        lua_pushboolean(P->L, 1);
        return 1;
    case 'f':
        if (!literal(P, "false", 5))
            return 0;
        lua_pushboolean(P->L, 0);
        return 1;
    case 'n':
        if (!literal(P, "null", 4))
            return 0;
        lua_pushnil(P->L);
        return 1;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        return parse_number(P);
    default:
        if ((unsigned char)*P->p == 0xEF && P->end - P->p >= 3 && (unsigned char)P->p[1] == 0xBB &&
            (unsigned char)P->p[2] == 0xBF)
            return fail_at(P, P->p, "unexpected byte order mark (JSON text must not start with one)");
        return fail_at(P, P->p, "expected a JSON value");
    }
}

static int is_null(const struct parser *P)
{
    return *P->p == 'n' && P->end - P->p >= 4 && memcmp(P->p, "null", 4) == 0;
}

/* P->p is on the first byte of a value (not whitespace, not the end).
 * Pushes the value, or nothing on failure. Containers are filled in a loop,
 * not by recursion: each open one has its table on the Lua stack (one slot
 * a level) and its frame in P->frames, so the C stack stays flat however
 * deep the text nests. An object's member container is stored under its
 * key when it opens (so the key leaves the stack: one slot a level) and
 * popped when it closes; an array's is stored at its index when it closes.
 * Duplicate keys: the last one wins, as in most decoders; when the last is
 * null the key ends up absent, as a lone null would leave it. */
static int parse_value(struct parser *P, enum place place)
{
    lua_State *L = P->L;
    const int top = lua_gettop(L), base = P->depth;
    struct frame *f;
    const char *at;
    enum place child;
    int drop;

    if (*P->p != '{' && *P->p != '[')
        return parse_scalar(P);
    if (!open_container(P, place))
        goto failed;

opened: /* the table of a new container at the top, P->p past its '{' or '['
         * and the whitespace after it */
    f = frame_at(P, P->depth);
    if (P->p < P->end && *P->p == (f->object ? '}' : ']')) {
        P->p++;
        goto closed;
    }
    if (f->object)
        goto member;

element: /* in an array, P->p after its '[' or a ',' */
    f = frame_at(P, P->depth);
    skip_space(P);
    if (P->p >= P->end)
        goto truncated;
    at = P->p;
    child = f->place == DATA ? BUCKET : f->place == RESULTS ? RESULT : f->place == ITEMS ? ITEM : ANYWHERE;
    if (is_null(P)) {
        if (P->page && child != ANYWHERE) {
            hole(P, at, f);
            goto failed;
        }
        /* the index is kept: later elements stay at their JSON position */
        P->p += 4;
        f->n++;
    } else if (P->page && child != ANYWHERE && *at != '{' && !(child == RESULT && *at == '"')) {
        misplaced(P, at, f, NULL);
        goto failed;
    } else if (*at == '{' || *at == '[') {
        if (!open_container(P, child))
            goto failed;
        goto opened; /* stored at its index when it closes */
    } else {
        if (!parse_scalar(P))
            goto failed;
        if (child == RESULT && lua_type(L, -1) == LUA_TSTRING && !decode_result_string(P, at))
            goto failed;
        lua_rawseti(L, -2, ++frame_at(P, P->depth)->n);
    }
after_element:
    switch (next_or_close(P, ']', "array element")) {
    case 1:
        goto element;
    case 2:
        goto closed;
    default:
        goto failed;
    }

member: /* in an object, P->p after its '{' or a ',' */
    f = frame_at(P, P->depth);
    skip_space(P);
    if (P->p >= P->end)
        goto truncated;
    if (*P->p != '"') {
        fail_at(P, P->p, "expected a string key in object");
        goto failed;
    }
    P->p++;
    if (!parse_string(P))
        goto failed;
    child = ANYWHERE;
    drop = 0;
    if (f->place == PAGE && key_is(L, "data", 4)) {
        child = P->page == OU_DECODE_LIST ? ITEMS : DATA;
    } else if (f->place == BUCKET) {
        if (key_is(L, "results", 7)) {
            child = RESULTS;
            f->saw_results = 1;
        } else if (key_is(L, "result", 6)) {
            /* the old schema's name; "results" wins when both come */
            child = RESULTS;
            lua_pop(L, 1);
            lua_pushliteral(L, "results");
            drop = f->saw_results;
        }
    }
    skip_space(P);
    if (P->p >= P->end)
        goto truncated;
    if (*P->p != ':') {
        fail_at(P, P->p, "expected ':' after object key");
        goto failed;
    }
    P->p++;
    skip_space(P);
    if (P->p >= P->end)
        goto truncated;
    if (P->page && (child == DATA || child == RESULTS || child == ITEMS) && *P->p != '[') {
        misplaced(P, P->p, f, child == RESULTS ? "results" : "data");
        goto failed;
    }
    if (is_null(P)) {
        /* null leaves the key absent (and takes back an earlier duplicate) */
        P->p += 4;
        if (drop) {
            lua_pop(L, 1);
        } else {
            lua_pushnil(L);
            lua_rawset(L, -3);
        }
    } else {
        if (drop)
            lua_pop(L, 1); /* the value is read, then dropped */
        if (*P->p == '{' || *P->p == '[') {
            if (!open_container(P, child))
                goto failed;
            if (!drop) {
                /* the key leaves the stack: a level of nesting holds one slot */
                lua_pushvalue(L, -1);
                lua_insert(L, -3);
                lua_rawset(L, -4);
            }
            goto opened;
        }
        if (!parse_scalar(P))
            goto failed;
        if (drop)
            lua_pop(L, 1);
        else
            lua_rawset(L, -3);
    }
after_member:
    frame_at(P, P->depth)->n++;
    switch (next_or_close(P, '}', "object member")) {
    case 1:
        goto member;
    case 2:
        goto closed;
    default:
        goto failed;
    }

closed: /* the container at the top is complete, P->p past its closing byte */
    f = frame_at(P, P->depth);
    if (f->n > 0) {
        if (f->place == RESULT && f->object)
            P->result_members = f->n < PRESIZE_MAX ? f->n : PRESIZE_MAX;
        else if (f->place == RESULTS && !f->object)
            P->results_length = f->n < PRESIZE_MAX ? f->n : PRESIZE_MAX;
    }
    if (f->presized > f->n && !spend(P, f->presized - f->n, P->p - 1))
        goto failed;
    if (--P->depth == base)
        return 1;
    f = frame_at(P, P->depth);
    if (f->object) {
        lua_pop(L, 1); /* stored under its key when it opened */
        goto after_member;
    }
    lua_rawseti(L, -2, ++f->n);
    goto after_element;

truncated:
    truncated(P);
failed:
    lua_settop(L, top);
    P->depth = base;
    return 0;
}

int ou_decode(lua_State *L, const char *text, size_t len, const struct ou_decode_limits *limits,
              struct ou_decode_error *err)
{
    struct long_string last = {0, NULL, 0};
    struct frames frames;
    struct parser P;
    int top = lua_gettop(L);
    memset(&P, 0, sizeof P);
    P.L = L;
    P.start = P.p = text;
    P.end = text + len;
    P.max_depth = OU_DECODE_MAX_DEPTH;
    if (limits->max_depth > 0)
        P.max_depth =
            limits->max_depth < OU_DECODE_DEPTH_CEILING ? limits->max_depth : OU_DECODE_DEPTH_CEILING;
    P.max_values = limits->max_values > 0 ? limits->max_values : INT64_MAX;
    P.budget = P.max_values;
    P.page = limits->page;
    P.result_members = 10;
    P.results_length = 4;
    P.err = err;
    P.last = &last;
    P.frames = &frames;
    frames.at = frames.first;
    frames.cap = (int)(sizeof frames.first / sizeof frames.first[0]);
    err->page_error = 0;
    if (!lua_checkstack(L, STACK_SLOTS + 2)) {
        err->offset = 0;
        snprintf(err->message, sizeof err->message, "Lua stack exhausted");
        return 0;
    }
    lua_pushnil(L); /* the slot of the last long string */
    last.slot = lua_gettop(L);
    lua_pushnil(L); /* the slot of the frames, once they outgrow frames.first */
    frames.slot = lua_gettop(L);
    skip_space(&P);
    if (P.p >= P.end) {
        lua_settop(L, top);
        fail_at(&P, P.p, len ? "no JSON value, only whitespace" : "empty input");
        return 0;
    }
    /* the top-level object is the page */
    if (!parse_value(&P, *P.p == '{' ? PAGE : ANYWHERE)) {
        lua_settop(L, top);
        return 0;
    }
    skip_space(&P);
    if (P.p != P.end) {
        lua_settop(L, top);
        fail_at(&P, P.p, "unexpected data after the JSON value");
        return 0;
    }
    lua_remove(L, frames.slot);
    lua_remove(L, last.slot);
    return 1;
}
