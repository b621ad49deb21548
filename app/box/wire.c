/* Frames of the box's exec protocol (see wire.h): a type byte, a big-endian length, a payload. */
#include "app/box/wire.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) { /* a non-blocking socket: wait until it drains */
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                return -errno;
            continue;
        }
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int box_frame_write(int fd, uint8_t type, const void *data, size_t len)
{
    if (len > BOX_FRAME_MAX)
        return -EMSGSIZE;
    uint8_t hdr[5] = {type, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    int rc = write_all(fd, hdr, sizeof(hdr));
    return rc < 0 || len == 0 ? rc : write_all(fd, data, len);
}

int box_frame_write_json(int fd, uint8_t type, const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s)
        return -ENOMEM;
    int rc = box_frame_write(fd, type, s, strlen(s));
    free(s);
    return rc;
}

int box_reader_step(struct box_reader *r, int fd, uint8_t *type)
{
    if (r->hdr_len == 5 && r->got == r->len) { /* the previous frame was consumed */
        r->hdr_len = 0;
        r->len = r->got = 0;
    }
    while (r->hdr_len < 5) {
        ssize_t n = read(fd, r->hdr + r->hdr_len, 5 - r->hdr_len);
        if (n == 0)
            return -EPIPE;
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        r->hdr_len += (size_t)n;
        if (r->hdr_len < 5)
            continue;
        r->len = (size_t)r->hdr[1] << 24 | (size_t)r->hdr[2] << 16 | (size_t)r->hdr[3] << 8 |
                 r->hdr[4];
        if (r->len > BOX_FRAME_MAX)
            return -EPROTO;
        if (!r->data && !(r->data = malloc(BOX_FRAME_MAX + 1)))
            return -ENOMEM;
    }
    while (r->got < r->len) {
        ssize_t n = read(fd, r->data + r->got, r->len - r->got);
        if (n == 0)
            return -EPIPE;
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        r->got += (size_t)n;
    }
    r->data[r->len] = '\0';
    *type = r->hdr[0];
    return 1;
}

int box_reader_next(struct box_reader *r, int fd, uint8_t *type, int timeout_ms)
{
    int rc;
    while ((rc = box_reader_step(r, fd, type)) == 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, timeout_ms);
        if (n == 0)
            return -ETIMEDOUT;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
    return rc;
}

json_t *box_reader_json(const struct box_reader *r)
{
    json_t *j = json_loadb((const char *)r->data, r->len, 0, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

void box_reader_free(struct box_reader *r)
{
    free(r->data);
    memset(r, 0, sizeof(*r));
}
