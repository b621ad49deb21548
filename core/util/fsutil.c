/* Whole-buffer file I/O and atomic file replacement (see fsutil.h). */
#include "core/util/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fs_tmp_create(const char *path, char *tmp, size_t tmplen)
{
    /* A name of its own (O_EXCL): two writers never share one, and a symlink planted at a
     * fixed name cannot redirect the write. */
    if (snprintf(tmp, tmplen, "%s.tmp-XXXXXX", path) >= (int)tmplen)
        return -ENAMETOOLONG;
    int fd = mkostemp(tmp, O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int fs_fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

int fs_tmp_commit(int fd, const char *tmp, const char *path, int error)
{
    int r = error;
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return r;
    }
    return fs_fsync_dir_of(path);
}

int fs_pwrite_all(int fd, const void *buf, size_t len, unsigned long long offset)
{
    const char *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        offset += (unsigned long long)n;
        len -= (size_t)n;
    }
    return 0;
}

int fs_pread_all(int fd, void *buf, size_t len, unsigned long long offset)
{
    char *p = buf;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) { /* past the end of the file */
            memset(p, 0, len);
            return 0;
        }
        p += n;
        offset += (unsigned long long)n;
        len -= (size_t)n;
    }
    return 0;
}

int fs_write_atomic(const char *path, const void *buf, size_t len)
{
    char tmp[PATH_MAX];
    int fd = fs_tmp_create(path, tmp, sizeof(tmp));
    if (fd < 0)
        return fd;
    return fs_tmp_commit(fd, tmp, path, fs_pwrite_all(fd, buf, len, 0));
}
