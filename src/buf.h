/* A growable byte buffer owned by exactly one C object (client or box). */
#ifndef OU_BUF_H
#define OU_BUF_H

#include <stddef.h>

struct ou_buf {
    char *data;
    size_t len;
    size_t cap;
};

/* Each returns 1, or 0 when memory ran out (the buffer is unchanged). */
int ou_buf_reserve(struct ou_buf *b, size_t extra);
int ou_buf_add(struct ou_buf *b, const char *bytes, size_t n);
int ou_buf_addstr(struct ou_buf *b, const char *s);
int ou_buf_addchar(struct ou_buf *b, char c);
/* Keeps the allocation, forgets the contents. */
void ou_buf_clear(struct ou_buf *b);
/* Frees the allocation; safe to call twice. */
void ou_buf_free(struct ou_buf *b);
/* Zeroes n bytes at p in a way the compiler cannot drop as a dead store
 * (before a free): for copies of the key. */
void ou_wipe(void *p, size_t n);
/* A malloc'd copy of s, or NULL when memory ran out (the caller frees it). */
char *ou_strdup(const char *s);
/* NUL-terminates without counting the NUL in len; returns data or NULL. */
const char *ou_buf_cstr(struct ou_buf *b);

#endif
