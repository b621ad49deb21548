/* Guest RAM backends and guest-physical address translation.
 * The whole RAM is one host mapping; the part beyond GUEST_LOW_RAM_MAX appears to the guest at
 * GUEST_HIGH_RAM_BASE (above the 32-bit PCI hole). The default backend is a sparse file mapped
 * MAP_SHARED, like VMware's .vmem: ftruncate only, so `ls -ls` shows what the guest touched. */
#include "core/vm/guestmem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "core/util/errfmt.h"

#ifndef MFD_HUGETLB
#define MFD_HUGETLB 0x0004U
#endif

static int dirty_bitmap_alloc(struct guest_mem *m)
{
    uint64_t pages = m->size / GUEST_PAGE_SIZE;
    m->vmm_dirty = calloc((pages + 63) / 64, sizeof(uint64_t));
    return m->vmm_dirty ? 0 : -ENOMEM;
}

static void layout(struct guest_mem *m, uint64_t size)
{
    m->size = size;
    m->low_size = size < GUEST_LOW_RAM_MAX ? size : GUEST_LOW_RAM_MAX;
}

static int open_backing_file(const char *path, uint64_t size, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return err_set_errno(err, errlen, "cannot open memory file %s%s", path,
                             errno == ELOOP ? " (it is a symbolic link: vmws writes no file "
                                              "through one)"
                                            : "");
    struct stat st;
    if (fstat(fd, &st) < 0 || (fchmod(fd, 0600) < 0)) {
        int e = err_set_errno(err, errlen, "cannot stat memory file %s", path);
        close(fd);
        return e;
    }
    if ((uint64_t)st.st_size != size && ftruncate(fd, (off_t)size) < 0) {
        int e = err_set_errno(err, errlen, "cannot size memory file %s to %llu bytes", path,
                              (unsigned long long)size);
        close(fd);
        return e;
    }
    return fd;
}

int guest_mem_open(struct guest_mem *m, uint64_t size, enum mem_backend backend, const char *path,
                   char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->fd = -1;
    m->backend = backend;
    if (size == 0 || size % (2ULL << 20)) {
        snprintf(err, errlen, "guest memory size %llu is not a non-zero multiple of 2 MiB",
                 (unsigned long long)size);
        return -EINVAL;
    }
    layout(m, size);

    int flags = MAP_SHARED;
    switch (backend) {
    case MEM_BACKEND_FILE:
        m->fd = open_backing_file(path, size, err, errlen);
        if (m->fd < 0)
            return m->fd;
        break;
    case MEM_BACKEND_SHM:
    case MEM_BACKEND_HUGETLBFS: {
        unsigned mfd_flags = MFD_CLOEXEC | (backend == MEM_BACKEND_HUGETLBFS ? MFD_HUGETLB : 0);
        m->fd = memfd_create("vmws-guest-ram", mfd_flags);
        if (m->fd < 0 || ftruncate(m->fd, (off_t)size) < 0) {
            int e = err_set_errno(err, errlen, "cannot create %s guest memory of %llu bytes",
                                  mem_backend_name(backend), (unsigned long long)size);
            if (m->fd >= 0)
                close(m->fd);
            m->fd = -1;
            return e;
        }
        break;
    }
    case MEM_BACKEND_ANON:
        flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
        break;
    }

    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, m->fd, 0);
    if (p == MAP_FAILED) {
        int e = err_set_errno(err, errlen, "cannot map %llu bytes of guest memory",
                              (unsigned long long)size);
        if (m->fd >= 0)
            close(m->fd);
        m->fd = -1;
        return e;
    }
    m->host = p;
    m->owns_mapping = true;
    if (dirty_bitmap_alloc(m) < 0) {
        snprintf(err, errlen, "out of memory for the dirty bitmap");
        guest_mem_close(m);
        return -ENOMEM;
    }
    return 0;
}

int guest_mem_advise(struct guest_mem *m, bool mergeable, bool huge)
{
    bool anon = m->backend == MEM_BACKEND_ANON;
    if (huge && (anon || m->backend == MEM_BACKEND_SHM) &&
        madvise(m->host, m->size, MADV_HUGEPAGE) < 0)
        return -errno;
    if (mergeable && !anon)
        return -EINVAL; /* KSM merges private anonymous pages only */
    if (mergeable && madvise(m->host, m->size, MADV_MERGEABLE) < 0)
        return -errno;
    return 0;
}

int guest_mem_init_buffer(struct guest_mem *m, void *buf, uint64_t size)
{
    memset(m, 0, sizeof(*m));
    m->fd = -1;
    m->backend = MEM_BACKEND_ANON;
    layout(m, size);
    m->host = buf;
    return dirty_bitmap_alloc(m);
}

void guest_mem_close(struct guest_mem *m)
{
    if (m->owns_mapping && m->host)
        munmap(m->host, m->size);
    if (m->fd >= 0)
        close(m->fd);
    free(m->vmm_dirty);
    memset(m, 0, sizeof(*m));
    m->fd = -1;
}

uint64_t guest_mem_offset(const struct guest_mem *m, uint64_t gpa)
{
    if (gpa < m->low_size)
        return gpa;
    if (gpa >= GUEST_HIGH_RAM_BASE && gpa - GUEST_HIGH_RAM_BASE < m->size - m->low_size)
        return m->low_size + (gpa - GUEST_HIGH_RAM_BASE);
    return UINT64_MAX;
}

void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
    uint64_t off = guest_mem_offset(m, gpa);
    if (off == UINT64_MAX)
        return NULL;
    /* The range must not run past the end of the region it starts in (no wrap, no hole). */
    uint64_t region_end = off < m->low_size ? m->low_size : m->size;
    if (len > region_end - off)
        return NULL;
    return m->host + off;
}

/* Sets the VMM's dirty bits of RAM pages FIRST..LAST (inclusive). */
static void mark_pages_dirty(struct guest_mem *m, uint64_t first, uint64_t last)
{
    for (uint64_t p = first; p <= last; p++)
        __atomic_fetch_or(&m->vmm_dirty[p / 64], 1ULL << (p % 64), __ATOMIC_RELAXED);
}

void guest_mem_mark_dirty(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
    if (len == 0)
        return;
    uint64_t off = guest_mem_offset(m, gpa);
    if (off == UINT64_MAX)
        return;
    uint64_t first = off / GUEST_PAGE_SIZE;
    uint64_t last = (off + len - 1) / GUEST_PAGE_SIZE;
    uint64_t pages = m->size / GUEST_PAGE_SIZE;
    mark_pages_dirty(m, first, last < pages ? last : pages - 1);
}

int guest_mem_write(struct guest_mem *m, uint64_t gpa, const void *src, size_t len)
{
    void *dst = guest_mem_ptr(m, gpa, len);
    if (!dst)
        return -EFAULT;
    memcpy(dst, src, len);
    guest_mem_mark_dirty(m, gpa, len);
    return 0;
}

int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *dst, size_t len)
{
    const void *src = guest_mem_ptr(m, gpa, len);
    if (!src)
        return -EFAULT;
    memcpy(dst, src, len);
    return 0;
}

uint64_t guest_mem_vmm_dirty_pages(const struct guest_mem *m)
{
    uint64_t n = 0, words = (m->size / GUEST_PAGE_SIZE + 63) / 64;
    for (uint64_t i = 0; i < words; i++)
        n += (uint64_t)__builtin_popcountll(
            __atomic_load_n(&m->vmm_dirty[i], __ATOMIC_RELAXED)); /* I/O threads set bits */
    return n;
}

/* ---- giving pages back ---- */

static uint64_t huge_page_size(const struct guest_mem *m)
{
    struct statfs sfs;
    return fstatfs(m->fd, &sfs) == 0 && sfs.f_bsize > 0 ? (uint64_t)sfs.f_bsize : 2ULL << 20;
}

int guest_mem_discard(struct guest_mem *m, uint64_t off, uint64_t len, uint64_t *freed)
{
    if (freed)
        *freed = 0;
    if (off > m->size || len > m->size - off)
        return -EINVAL;
    uint64_t unit = m->backend == MEM_BACKEND_HUGETLBFS ? huge_page_size(m) : GUEST_PAGE_SIZE;
    uint64_t start = (off + unit - 1) / unit * unit, end = (off + len) / unit * unit;
    if (end <= start)
        return 0;
    int r = 0;
    switch (m->backend) {
    case MEM_BACKEND_FILE:
    case MEM_BACKEND_HUGETLBFS:
        r = fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)start,
                      (off_t)(end - start));
        break;
    case MEM_BACKEND_SHM:
        r = madvise(m->host + start, end - start, MADV_REMOVE);
        break;
    case MEM_BACKEND_ANON:
        r = madvise(m->host + start, end - start, MADV_DONTNEED);
        break;
    }
    if (r < 0)
        return -errno;
    /* Changed to zero: the next snapshot must store that (snapshot.c stores it as a zero page). */
    mark_pages_dirty(m, start / GUEST_PAGE_SIZE, end / GUEST_PAGE_SIZE - 1);
    if (freed)
        *freed = end - start;
    return 0;
}

bool guest_mem_page_is_hole(const struct guest_mem *m, uint64_t page, struct guest_mem_extent *cur)
{
    uint64_t off = page * GUEST_PAGE_SIZE;
    if (m->fd < 0 || m->backend == MEM_BACKEND_HUGETLBFS || off >= m->size)
        return false;
    if (cur->end && off >= cur->start && off < cur->end)
        return cur->hole;
    off_t data = lseek(m->fd, (off_t)off, SEEK_DATA);
    if (data < 0 && errno != ENXIO) /* no SEEK_DATA here: every page may hold data */
        return false;
    if (data < 0 || (uint64_t)data > off) { /* a hole up to the next data (or the end) */
        *cur = (struct guest_mem_extent){off, data < 0 ? m->size : (uint64_t)data, true};
    } else {
        off_t hole = lseek(m->fd, (off_t)off, SEEK_HOLE);
        uint64_t end = hole < 0 ? off + GUEST_PAGE_SIZE : (uint64_t)hole;
        *cur = (struct guest_mem_extent){off, end > off ? end : off + GUEST_PAGE_SIZE, false};
    }
    return cur->hole;
}
