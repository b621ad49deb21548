/* A growable byte buffer, always NUL-terminated, for the line-oriented socket protocols
 * (control and console sockets, server and client side): append what arrived, consume what
 * was handled. */
#ifndef VMWS_LINEBUF_H
#define VMWS_LINEBUF_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct buf {
    char *data;
    size_t len, cap;
};

static inline int buf_append(struct buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return -ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static inline void buf_consume(struct buf *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

static inline void buf_free(struct buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

#endif
