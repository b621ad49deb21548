/* Disk images behind one interface: a raw file or a qcow2 image (core/storage/qcow2.c), picked by
 * the qcow2 magic in the first bytes unless the caller names the format (a backing file's format
 * extension does). Each disk has one mutex, taken around every call; raw discard and
 * write-zeroes punch holes so the range reads as zeroes either way. */
#include "core/storage/disk.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/storage/imglock.h"
#include "core/storage/qcow2.h"
#include "core/util/bytes.h"
#include "core/util/crashpoint.h"
#include "core/util/errfmt.h"
#include "core/util/fsutil.h"

#define RAW_SECTOR_SIZE 512u /* a raw image is a whole number of sectors */
#define PROBE_BYTES 4u       /* what probing reads: qcow2's magic */

struct disk {
    pthread_mutex_t lock;
    bool read_only;
    struct qcow2 *qcow2; /* NULL: raw */
    int fd;              /* raw only */
    bool probed_raw;     /* raw by probing: the guest must not make it look like qcow2 */
    uint64_t size;
};

struct disk *disk_open_format(const char *path, const char *format, bool read_only, unsigned depth,
                              char *err, size_t errlen)
{
    if (depth >= QCOW2_MAX_CHAIN_DEPTH) {
        err_set(err, errlen, -ELOOP, "%s: backing chain deeper than %d images (a loop?)", path,
                QCOW2_MAX_CHAIN_DEPTH);
        return NULL;
    }
    if (format && strcmp(format, "raw") && strcmp(format, "qcow2")) {
        err_set(err, errlen, -EINVAL, "%s: unknown disk format '%s' (raw or qcow2)", path, format);
        return NULL;
    }
    int fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
        err_set_errno(err, errlen, "%s", path);
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        err_set_errno(err, errlen, "%s", path);
        close(fd);
        return NULL;
    }
    bool probed = !format;
    if (!format) {
        unsigned char magic[4] = {0};
        ssize_t n = pread(fd, magic, sizeof(magic), 0);
        format = n == (ssize_t)sizeof(magic) && qcow2_probe(magic, sizeof(magic)) ? "qcow2" : "raw";
    }
    struct disk *d = calloc(1, sizeof(*d));
    if (!d) {
        err_set(err, errlen, -ENOMEM, "%s: out of memory", path);
        close(fd);
        return NULL;
    }
    d->read_only = read_only;
    d->fd = -1;
    d->probed_raw = probed && strcmp(format, "raw") == 0;
    if (!strcmp(format, "qcow2")) {
        close(fd);
        d->qcow2 = qcow2_open(path, read_only, depth, err, errlen);
        if (!d->qcow2) {
            free(d);
            return NULL;
        }
        d->size = qcow2_size(d->qcow2);
    } else {
        if (imglock_acquire(fd, path, !read_only, err, errlen) < 0) { /* qcow2 locks its own fd */
            close(fd);
            free(d);
            return NULL;
        }
        d->fd = fd;
        off_t end = lseek(fd, 0, SEEK_END); /* block devices too */
        d->size = end < 0 ? (uint64_t)st.st_size : (uint64_t)end;
    }
    pthread_mutex_init(&d->lock, NULL);
    return d;
}

struct disk *disk_open(const char *path, bool read_only, char *err, size_t errlen)
{
    return disk_open_format(path, NULL, read_only, 0, err, errlen);
}

static int check_range(const struct disk *d, uint64_t offset, uint64_t len)
{
    if (offset > d->size || len > d->size - offset)
        return -EINVAL;
    return 0;
}

/* Raw: punch a hole, else zero the range, else write zeroes. */
static int raw_zero(int fd, uint64_t offset, uint64_t len)
{
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) == 0)
        return 0;
    if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) == 0)
        return 0;
    static const uint8_t zeros[65536];
    while (len) {
        size_t n = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);
        int r = fs_pwrite_all(fd, zeros, n, offset);
        if (r < 0)
            return r;
        offset += n;
        len -= n;
    }
    return 0;
}

struct disk *disk_open_layer(const char *path, char *err, size_t errlen)
{
    struct disk *d = calloc(1, sizeof(*d));
    if (!d) {
        err_set(err, errlen, -ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    d->read_only = true;
    d->fd = -1;
    d->qcow2 = qcow2_open(path, true, QCOW2_ALONE, err, errlen);
    if (!d->qcow2) {
        free(d);
        return NULL;
    }
    d->size = qcow2_size(d->qcow2);
    pthread_mutex_init(&d->lock, NULL);
    return d;
}

int disk_read(struct disk *d, uint64_t offset, void *buf, size_t len)
{
    int r = check_range(d, offset, len);
    if (r < 0)
        return r;
    pthread_mutex_lock(&d->lock);
    stall_point("disk-read"); /* storage that hangs, holding the image as a real one would */
    /* A raw file that shrank under us reads as zeroes past its end. */
    r = d->qcow2 ? qcow2_read(d->qcow2, offset, buf, len) : fs_pread_all(d->fd, buf, len, offset);
    pthread_mutex_unlock(&d->lock);
    return r;
}

/* As QEMU does: a raw image whose format was probed would be opened as qcow2 next time if the
 * guest wrote qcow2's magic at its start, and then name any host file as backing. So a write
 * that touches the first PROBE_BYTES is judged by what they would hold after it - the image's
 * bytes with the write laid over them, however the guest split its request - and it is made
 * from a private copy, so a guest that changes its buffer after the check writes nothing else. */
static int write_probed_head(struct disk *d, uint64_t offset, const void *buf, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, buf, len);
    uint8_t head[PROBE_BYTES] = {0};
    pthread_mutex_lock(&d->lock);
    int r = fs_pread_all(d->fd, head, sizeof(head), 0);
    if (r == 0) {
        size_t n = len < sizeof(head) - offset ? len : sizeof(head) - offset;
        memcpy(head + offset, copy, n);
        r = qcow2_probe(head, sizeof(head)) ? -EPERM : fs_pwrite_all(d->fd, copy, len, offset);
    }
    pthread_mutex_unlock(&d->lock);
    free(copy);
    return r;
}

int disk_write(struct disk *d, uint64_t offset, const void *buf, size_t len)
{
    int r = check_range(d, offset, len);
    if (r < 0)
        return r;
    if (d->read_only)
        return -EROFS;
    if (d->probed_raw && offset < PROBE_BYTES)
        return write_probed_head(d, offset, buf, len);
    pthread_mutex_lock(&d->lock);
    stall_point("disk-write");
    r = d->qcow2 ? qcow2_write(d->qcow2, offset, buf, len) : fs_pwrite_all(d->fd, buf, len, offset);
    pthread_mutex_unlock(&d->lock);
    return r;
}

int disk_flush(struct disk *d)
{
    if (d->read_only)
        return 0;
    pthread_mutex_lock(&d->lock);
    int r = d->qcow2 ? qcow2_flush(d->qcow2) : (fdatasync(d->fd) < 0 ? -errno : 0);
    pthread_mutex_unlock(&d->lock);
    return r;
}

int disk_write_zeroes(struct disk *d, uint64_t offset, uint64_t len)
{
    int r = check_range(d, offset, len);
    if (r < 0)
        return r;
    if (d->read_only)
        return -EROFS;
    pthread_mutex_lock(&d->lock);
    r = d->qcow2 ? qcow2_write_zeroes(d->qcow2, offset, len) : raw_zero(d->fd, offset, len);
    pthread_mutex_unlock(&d->lock);
    return r;
}

int disk_copy(struct disk *from, struct disk *to)
{
    enum { CHUNK = 64 << 10 }; /* a qcow2 cluster */
    uint64_t size = disk_size(from);
    if (disk_size(to) < size)
        return -ENOSPC;
    uint8_t *buf = malloc(CHUNK);
    /* A raw source's holes are skipped unread (its data extents); qcow2 reads what it has. */
    uint64_t chunks = (size + CHUNK - 1) / CHUNK;
    uint64_t *data = from->qcow2 ? NULL : calloc((chunks + 63) / 64, 8);
    if (!buf || (!from->qcow2 && !data)) {
        free(buf);
        free(data);
        return -ENOMEM;
    }
    int r = data ? disk_layer_map(from, CHUNK, data) : 0;
    for (uint64_t off = 0; off < size && r == 0; off += CHUNK) {
        size_t n = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
        uint64_t c = off / CHUNK;
        if (data && !(data[c / 64] >> (c % 64) & 1))
            continue;
        r = disk_read(from, off, buf, n);
        if (r == 0 && !bytes_all_zero(buf, n))
            r = disk_write(to, off, buf, n);
    }
    free(buf);
    free(data);
    return r < 0 ? r : disk_flush(to);
}

int disk_discard(struct disk *d, uint64_t offset, uint64_t len)
{
    return disk_write_zeroes(d, offset, len); /* discarded ranges read as zeroes (disk.h) */
}

uint64_t disk_size(const struct disk *d)
{
    return d->size;
}

const char *disk_format(const struct disk *d)
{
    return d->qcow2 ? "qcow2" : "raw";
}

int disk_virtual_size(const char *path, uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t hdr[32];
    struct stat st;
    int r = fstat(fd, &st) < 0 ? -errno : 0;
    if (r == 0 && pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) &&
        qcow2_probe(hdr, sizeof(hdr))) {
        uint64_t be;
        memcpy(&be, hdr + 24, sizeof(be)); /* qcow2's header: the size at byte 24, big-endian */
        *size = be64toh(be);
    } else if (r == 0)
        *size = (uint64_t)st.st_size;
    close(fd);
    return r;
}

int disk_stamp(const char *path, char *out, size_t len)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    snprintf(out, len, "%llu:%lld.%09ld", (unsigned long long)st.st_size,
             (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
    return 0;
}

int disk_base_check(const char *path, const char *stamp, char *err, size_t errlen)
{
    char now[64];
    int r = disk_stamp(path, now, sizeof(now));
    if (r < 0)
        return err_set(err, errlen, r,
                       "the disk is a linked clone of %s, which is %s: the VM cannot run "
                       "without it (put it back, or make the VM again)",
                       path, r == -ENOENT ? "missing" : strerror(-r));
    if (stamp[0] && strcmp(now, stamp) != 0)
        return err_set(err, errlen, -ESTALE,
                       "the disk is a linked clone of %s, which changed since the VM was made "
                       "(size:mtime %s, now %s): booting would read another system under the "
                       "VM's own changes; put the original back, or make the VM again",
                       path, stamp, now);
    return 0;
}

int disk_close(struct disk *d)
{
    if (!d)
        return 0;
    int r;
    if (d->qcow2) {
        r = qcow2_close(d->qcow2);
    } else {
        r = (!d->read_only && fdatasync(d->fd) < 0) ? -errno : 0;
        close(d->fd);
    }
    pthread_mutex_destroy(&d->lock);
    free(d);
    return r;
}

int disk_create_qcow2(const char *path, uint64_t size, const char *backing,
                      const char *backing_format)
{
    return qcow2_create(path, size, QCOW2_DEFAULT_CLUSTER_SIZE, backing, backing_format);
}

int disk_create_raw(const char *path, uint64_t size)
{
    if (size < RAW_SECTOR_SIZE || size % RAW_SECTOR_SIZE)
        return -EINVAL;
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int r = ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    close(fd);
    if (r < 0)
        unlink(path);
    return r;
}

uint32_t disk_granule(const struct disk *d)
{
    return d->qcow2 ? qcow2_cluster_size(d->qcow2) : 0;
}

/* Raw: the file's data extents (holes read as zeroes and there is no backing file). */
static int raw_layer_map(int fd, uint64_t size, uint32_t granule, uint64_t *bitmap)
{
    off_t at = 0;
    while ((uint64_t)at < size) {
        off_t data = lseek(fd, at, SEEK_DATA);
        if (data < 0)
            return errno == ENXIO ? 0 : -errno;
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0)
            return -errno;
        if ((uint64_t)hole > size)
            hole = (off_t)size;
        for (uint64_t b = (uint64_t)data / granule; b * granule < (uint64_t)hole; b++)
            bitmap[b / 64] |= 1ull << (b % 64);
        at = hole;
    }
    return 0;
}

int disk_layer_map(struct disk *d, uint32_t granule, uint64_t *bitmap)
{
    if (!granule || (granule & (granule - 1)))
        return -EINVAL;
    /* The control plane's way into a running disk (snapshot list and delete plans): a request
     * stuck on hanging storage holds the lock, and the caller must not wait for it. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += DISK_LOCK_WAIT_MS / 1000;
    if (pthread_mutex_timedlock(&d->lock, &deadline) != 0)
        return -EBUSY;
    int r = d->qcow2 ? qcow2_layer_map(d->qcow2, granule, bitmap)
                     : raw_layer_map(d->fd, d->size, granule, bitmap);
    pthread_mutex_unlock(&d->lock);
    return r;
}

int disk_backing_name(const char *path, char *out, size_t len)
{
    unsigned char magic[4];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    bool qcow2 = pread(fd, magic, sizeof(magic), 0) == 4 && qcow2_probe(magic, 4);
    close(fd);
    if (!qcow2) {
        out[0] = 0;
        return 0;
    }
    return qcow2_backing_name(path, out, len);
}

int disk_set_backing(const char *path, const char *backing, const char *backing_format)
{
    return qcow2_set_backing(path, backing, backing_format);
}
