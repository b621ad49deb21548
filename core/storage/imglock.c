/* QEMU's image locking protocol (block/file-posix.c), so vmws and QEMU keep each other off an
 * image the other is writing. Each permission bit i (consistent read, write, write unchanged,
 * resize) has two bytes in the file: 100+i, read-locked by every opener that holds the
 * permission, and 200+i, read-locked by every opener that does not let others have it. Locks
 * are open-file-description (OFD) locks, so two opens in one process are two lockers, exactly
 * as two processes would be. Like QEMU we lock our bytes first and then test, so of two racing
 * openers at least one sees the other. */
#include "core/storage/imglock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

/* QEMU's BLK_PERM_* (include/block/block-common.h). Bit 4 was BLK_PERM_GRAPH_MOD until QEMU
 * 6.1; newer QEMU neither locks nor tests its bytes, and neither do we. */
enum {
    PERM_CONSISTENT_READ = 0x01,
    PERM_WRITE = 0x02,
    PERM_WRITE_UNCHANGED = 0x04,
    PERM_RESIZE = 0x08,
    PERM_BITS = 4,
    PERM_ALL = 0x0f,
};

#define LOCK_PERM_BASE 100   /* 100+i: "I hold permission i" */
#define LOCK_SHARED_BASE 200 /* 200+i: "nobody else may have permission i" */

/* What each permission is, for messages: "does not let others <verb> it", "is <doing> it". */
static const struct {
    const char *verb, *doing;
} perm_words[PERM_BITS] = {
    {"read", "reading"},
    {"write", "writing"},
    {"write", "writing"}, /* unchanged data: a distinction only QEMU's jobs make */
    {"resize", "resizing"},
};

/* What an opener holds and what it lets others have, as a QEMU process would for the same open:
 * a writable image is a QEMU VM's qcow2 drive (its format layer writes metadata and grows the
 * file, so it holds resize too, and shares neither write nor resize); a read-only one is a
 * backing file (consistent reads; nobody may write or resize it under us). Two read-only opens
 * never conflict: neither holds what the other refuses to share. */
static void perms_for(bool writable, unsigned *held, unsigned *shared)
{
    *held = writable ? PERM_CONSISTENT_READ | PERM_WRITE | PERM_RESIZE : PERM_CONSISTENT_READ;
    *shared = PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED;
}

static int set_byte(int fd, short type, unsigned off)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = off, .l_len = 1};
    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1 if some other open file description holds any lock on the byte, 0 if not, or -errno. */
static int byte_locked_elsewhere(int fd, unsigned off)
{
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1};
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return -errno;
    return fl.l_type != F_UNLCK;
}

static void unlock_bytes(int fd, unsigned held, unsigned unshared)
{
    for (unsigned i = 0; i < PERM_BITS; i++) {
        if (held & (1u << i))
            set_byte(fd, F_UNLCK, LOCK_PERM_BASE + i);
        if (unshared & (1u << i))
            set_byte(fd, F_UNLCK, LOCK_SHARED_BASE + i);
    }
}

static int lock_byte(int fd, const char *path, unsigned off, char *err, size_t errlen)
{
    int r = set_byte(fd, F_RDLCK, off);
    if (r == -EAGAIN || r == -EACCES) { /* a write lock: not QEMU's, but someone's */
        snprintf(err, errlen, "disk image %s is locked by another process; stop it first", path);
        return -EAGAIN;
    }
    if (r < 0)
        snprintf(err, errlen,
                 "cannot lock disk image %s (byte %u): %s; vmws locks the images it uses, as "
                 "QEMU does, and this file system refused",
                 path, off, strerror(-r));
    return r;
}

static int lock_bytes(int fd, const char *path, unsigned held, unsigned unshared, char *err,
                      size_t errlen)
{
    int r = 0;
    for (unsigned i = 0; i < PERM_BITS && r == 0; i++) {
        if (held & (1u << i))
            r = lock_byte(fd, path, LOCK_PERM_BASE + i, err, errlen);
        if (r == 0 && (unshared & (1u << i)))
            r = lock_byte(fd, path, LOCK_SHARED_BASE + i, err, errlen);
    }
    return r;
}

/* -EAGAIN, saying who is in the way ("that <relation> <word> it"), if another opener has
 * locked byte OFF. */
static int test_byte(int fd, const char *path, unsigned off, const char *relation, const char *word,
                     char *err, size_t errlen)
{
    int r = byte_locked_elsewhere(fd, off);
    if (r < 0) {
        snprintf(err, errlen, "cannot test the lock of disk image %s (byte %u): %s", path, off,
                 strerror(-r));
        return r;
    }
    if (r == 0)
        return 0;
    snprintf(err, errlen,
             "disk image %s is in use by another process (QEMU or another vmws VM) that %s %s "
             "it; stop that process or close the image there first",
             path, relation, word);
    return -EAGAIN;
}

/* QEMU's raw_check_lock_bytes: first whoever forbids a permission we hold, then whoever holds
 * a permission we forbid. */
static int check_conflicts(int fd, const char *path, unsigned held, unsigned unshared, char *err,
                           size_t errlen)
{
    int r = 0;
    for (unsigned i = 0; i < PERM_BITS && r == 0; i++)
        if (held & (1u << i))
            r = test_byte(fd, path, LOCK_SHARED_BASE + i, "does not let others", perm_words[i].verb,
                          err, errlen);
    for (unsigned i = 0; i < PERM_BITS && r == 0; i++)
        if (unshared & (1u << i))
            r = test_byte(fd, path, LOCK_PERM_BASE + i, "is", perm_words[i].doing, err, errlen);
    return r;
}

int imglock_acquire(int fd, const char *path, bool writable, char *err, size_t errlen)
{
    char scratch[1];
    if (!err || !errlen) {
        err = scratch;
        errlen = sizeof(scratch);
    }
    unsigned held, shared;
    perms_for(writable, &held, &shared);
    unsigned unshared = PERM_ALL & ~shared;
    int r = lock_bytes(fd, path, held, unshared, err, errlen);
    if (r == 0)
        r = check_conflicts(fd, path, held, unshared, err, errlen);
    if (r < 0)
        unlock_bytes(fd, held, unshared);
    return r;
}
