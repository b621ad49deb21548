/* The state container (see state.h). Layout, little endian:
 *   header: "VMWSSTAT", u32 version, u32 reserved, u64 payload length, u32 crc32(payload), u32 0
 *   payload: records of u32 tag, u32 instance, u64 length, bytes, zero padding to 8.
 * The CRC (zlib's crc32) covers the whole payload, so any corruption refuses the whole file. */
#include "core/state.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define MAGIC "VMWSSTAT"
#define HEADER_SIZE 32
#define RECORD_HEADER 16

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

void state_writer_init(struct state_writer *w)
{
    memset(w, 0, sizeof(*w));
}

static int reserve(struct state_writer *w, size_t more)
{
    if (w->len + more <= w->cap)
        return 0;
    size_t cap = w->cap ? w->cap : 4096;
    while (cap < w->len + more)
        cap *= 2;
    uint8_t *b = realloc(w->buf, cap);
    if (!b)
        return -ENOMEM;
    w->buf = b;
    w->cap = cap;
    return 0;
}

void state_put(struct state_writer *w, uint32_t tag, uint32_t instance, const void *data,
               size_t len)
{
    size_t padded = (len + 7) & ~(size_t)7;
    if (w->error || (w->error = reserve(w, RECORD_HEADER + padded)))
        return;
    uint8_t *p = w->buf + w->len;
    put_u32(p, tag);
    put_u32(p + 4, instance);
    put_u64(p + 8, len);
    if (len)
        memcpy(p + RECORD_HEADER, data, len);
    memset(p + RECORD_HEADER + len, 0, padded - len);
    w->len += RECORD_HEADER + padded;
}

int state_writer_finish(struct state_writer *w, uint8_t **out, size_t *outlen)
{
    if (w->error)
        return w->error;
    uint8_t *b = malloc(HEADER_SIZE + w->len);
    if (!b)
        return -ENOMEM;
    memset(b, 0, HEADER_SIZE);
    memcpy(b, MAGIC, 8);
    put_u32(b + 8, STATE_FORMAT_VERSION);
    put_u64(b + 16, w->len);
    put_u32(b + 24, (uint32_t)crc32(0L, w->buf, (uInt)w->len));
    if (w->len)
        memcpy(b + HEADER_SIZE, w->buf, w->len);
    *out = b;
    *outlen = HEADER_SIZE + w->len;
    return 0;
}

int state_writer_save(struct state_writer *w, const char *path)
{
    uint8_t *img;
    size_t len;
    int r = state_writer_finish(w, &img, &len);
    if (r < 0)
        return r;
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        free(img);
        return -ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = -errno;
        free(img);
        return r;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, img + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            break;
        }
        done += (size_t)n;
    }
    free(img);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    close(fd);
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return r;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

void state_writer_free(struct state_writer *w)
{
    free(w->buf);
    memset(w, 0, sizeof(*w));
}

static int bad(char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "%s", what);
    return -EINVAL;
}

int state_reader_parse(struct state_reader *r, uint8_t *buf, size_t len, char *err,
                       size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->buf = buf;
    r->len = len;
    if (len < HEADER_SIZE || memcmp(buf, MAGIC, 8) != 0)
        return bad(err, errlen, "not a vmws state file (bad magic)");
    uint32_t version = get_u32(buf + 8);
    if (version != STATE_FORMAT_VERSION) {
        snprintf(err, errlen, "state format version %u is not supported (this vmws reads %u)",
                 version, STATE_FORMAT_VERSION);
        return -EINVAL;
    }
    uint64_t plen = get_u64(buf + 16);
    if (plen != len - HEADER_SIZE)
        return bad(err, errlen, "state file is truncated or has trailing bytes");
    const uint8_t *p = buf + HEADER_SIZE;
    if ((uint32_t)crc32(0L, p, (uInt)plen) != get_u32(buf + 24))
        return bad(err, errlen, "state file checksum mismatch (corrupt)");
    size_t cap = 0;
    for (uint64_t off = 0; off < plen;) {
        if (plen - off < RECORD_HEADER)
            return bad(err, errlen, "state file has a truncated record header");
        uint64_t rlen = get_u64(p + off + 8);
        uint64_t padded = (rlen + 7) & ~7ULL;
        if (rlen > plen || padded > plen - off - RECORD_HEADER)
            return bad(err, errlen, "state file has a record longer than the file");
        if (r->nrecords == cap) {
            cap = cap ? cap * 2 : 64;
            struct state_record *n = realloc(r->records, cap * sizeof(*n));
            if (!n)
                return -ENOMEM;
            r->records = n;
        }
        r->records[r->nrecords++] = (struct state_record){
            get_u32(p + off), get_u32(p + off + 4), p + off + RECORD_HEADER, rlen};
        off += RECORD_HEADER + padded;
    }
    return 0;
}

int state_reader_load(struct state_reader *r, const char *path, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open state file %s: %s", path, strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    if (st.st_size > (1LL << 32)) {
        close(fd);
        return bad(err, errlen, "state file is implausibly large");
    }
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    size_t done = 0;
    while (buf && done < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    close(fd);
    if (!buf)
        return -ENOMEM;
    int rc = state_reader_parse(r, buf, done, err, errlen);
    if (rc < 0) {
        char what[256];
        snprintf(what, sizeof(what), "%s", err);
        snprintf(err, errlen, "%s: %s", path, what);
    }
    return rc;
}

const struct state_record *state_get(const struct state_reader *r, uint32_t tag,
                                     uint32_t instance)
{
    for (size_t i = 0; i < r->nrecords; i++)
        if (r->records[i].tag == tag && r->records[i].instance == instance)
            return &r->records[i];
    return NULL;
}

int state_get_exact(const struct state_reader *r, uint32_t tag, uint32_t instance, void *dst,
                    size_t len)
{
    const struct state_record *rec = state_get(r, tag, instance);
    if (!rec)
        return -ENOENT;
    if (rec->len != len)
        return -EINVAL;
    memcpy(dst, rec->data, len);
    return 0;
}

void state_reader_free(struct state_reader *r)
{
    free(r->buf);
    free(r->records);
    memset(r, 0, sizeof(*r));
}
