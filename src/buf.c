#include "buf.h"

#include <stdlib.h>
#include <string.h>

int ou_buf_reserve(struct ou_buf *b, size_t extra)
{
    size_t need, cap;
    char *data;
    if (extra > (size_t)-1 - b->len - 1)
        return 0;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 1;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > (size_t)-1 / 2 ? need : cap * 2;
    data = realloc(b->data, cap);
    if (!data)
        return 0;
    b->data = data;
    b->cap = cap;
    return 1;
}

int ou_buf_add(struct ou_buf *b, const char *bytes, size_t n)
{
    if (!ou_buf_reserve(b, n))
        return 0;
    if (n)
        memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 1;
}

int ou_buf_addstr(struct ou_buf *b, const char *s)
{
    return ou_buf_add(b, s, strlen(s));
}

int ou_buf_addchar(struct ou_buf *b, char c)
{
    return ou_buf_add(b, &c, 1);
}

void ou_buf_clear(struct ou_buf *b)
{
    b->len = 0;
}

void ou_buf_free(struct ou_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void ou_wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

const char *ou_buf_cstr(struct ou_buf *b)
{
    if (!ou_buf_reserve(b, 0))
        return NULL;
    b->data[b->len] = '\0';
    return b->data;
}

char *ou_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
