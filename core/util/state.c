/* The state container (see state.h). Layout, little endian:
 *   header: "VMWSSTAT", u32 version, u32 reserved, u64 payload length, u32 crc32(payload), u32 0
 *   payload: records of u32 tag, u32 instance, u64 length, bytes, zero padding to 8.
 * The CRC (zlib's crc32) covers the whole payload, so any corruption refuses the whole file. */
#include "core/util/state.h"

#include "core/util/bytes.h"
#include "core/util/fsutil.h"

#include <errno.h>
#include <fcntl.h>
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
    le_put32(p, 0, tag);
    le_put32(p + 4, 0, instance);
    le_put64(p + 8, 0, len);
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
    le_put32(b + 8, 0, STATE_FORMAT_VERSION);
    le_put64(b + 16, 0, w->len);
    le_put32(b + 24, 0, (uint32_t)crc32(0L, w->buf, (uInt)w->len));
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
    r = fs_write_atomic(path, img, len);
    free(img);
    return r;
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

static int parse(struct state_reader *r, uint8_t *buf, size_t len, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->buf = buf;
    r->len = len;
    if (len < HEADER_SIZE || memcmp(buf, MAGIC, 8) != 0)
        return bad(err, errlen, "not a vmws state file (bad magic)");
    uint32_t version = le_get32(buf + 8, 0);
    if (version != STATE_FORMAT_VERSION) {
        snprintf(err, errlen, "state format version %u is not supported (this vmws reads %u)",
                 version, STATE_FORMAT_VERSION);
        return -EINVAL;
    }
    uint64_t plen = le_get64(buf + 16, 0);
    if (plen != len - HEADER_SIZE)
        return bad(err, errlen, "state file is truncated or has trailing bytes");
    const uint8_t *p = buf + HEADER_SIZE;
    if ((uint32_t)crc32(0L, p, (uInt)plen) != le_get32(buf + 24, 0))
        return bad(err, errlen, "state file checksum mismatch (corrupt)");
    size_t cap = 0;
    for (uint64_t off = 0; off < plen;) {
        if (plen - off < RECORD_HEADER)
            return bad(err, errlen, "state file has a truncated record header");
        uint64_t rlen = le_get64(p + off + 8, 0);
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
            le_get32(p + off, 0), le_get32(p + off + 4, 0), p + off + RECORD_HEADER, rlen};
        off += RECORD_HEADER + padded;
    }
    return 0;
}

/* R owns BUF from here on, failure or not: a refused file is freed here (it leaked before, at
 * every corrupt state a resume or revert refused; found by tests/fuzz/fuzz_state.c). */
int state_reader_parse(struct state_reader *r, uint8_t *buf, size_t len, char *err, size_t errlen)
{
    int rc = parse(r, buf, len, err, errlen);
    if (rc < 0)
        state_reader_free(r);
    return rc;
}

int state_reader_load(struct state_reader *r, const char *path, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r)); /* state_reader_free is safe after any failure */
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

const struct state_record *state_get(const struct state_reader *r, uint32_t tag, uint32_t instance)
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

void state_put_version(struct state_writer *w, uint32_t tag, uint32_t version)
{
    uint8_t v[4];
    le_put32(v, 0, version);
    state_put(w, STATE_TAG_VERSION, tag, v, sizeof(v));
}

uint32_t state_version(const struct state_reader *r, uint32_t tag)
{
    const struct state_record *rec = state_get(r, STATE_TAG_VERSION, tag);
    return rec && rec->len == 4 ? le_get32(rec->data, 0) : 1;
}

void state_reader_free(struct state_reader *r)
{
    free(r->buf);
    free(r->records);
    memset(r, 0, sizeof(*r));
}
