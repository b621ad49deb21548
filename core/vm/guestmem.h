/* Guest RAM: one host mapping of the whole RAM, placed in guest-physical space around the
 * 32-bit PCI hole (RAM below 3 GiB at GPA 0, the rest from 4 GiB up). Every write the VMM
 * itself makes into guest RAM goes through guest_mem_write()/guest_mem_mark_dirty() so that
 * snapshots can be O(dirty): KVM's dirty log covers the guest's writes, this bitmap ours. */
#ifndef VMWS_GUESTMEM_H
#define VMWS_GUESTMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config/vmconfig.h"

#define GUEST_PAGE_SIZE 4096ULL
#define GUEST_LOW_RAM_MAX (3ULL << 30) /* RAM below the PCI hole */
#define GUEST_HIGH_RAM_BASE (4ULL << 30)

struct guest_mem {
    uint64_t size;     /* total RAM bytes */
    uint64_t low_size; /* RAM at [0, low_size) */
    uint8_t *host;     /* mapping of all RAM: low part then high part */
    int fd;            /* backing file/memfd, -1 for anonymous */
    enum mem_backend backend;
    bool owns_mapping;   /* guest_mem_close() unmaps */
    uint64_t *vmm_dirty; /* one bit per 4 KiB page of RAM offset, set by VMM writes */
};

/* Creates RAM of SIZE bytes with BACKEND; for MEM_BACKEND_FILE, PATH is the sparse .vmem
 * (created 0600 with ftruncate, never preallocated; an existing file of the right size is
 * reused as it is). Returns 0 or -errno; ERR says what failed on what. */
int guest_mem_open(struct guest_mem *m, uint64_t size, enum mem_backend backend, const char *path,
                   char *err, size_t errlen);
/* Asks the kernel to merge identical pages (KSM: MADV_MERGEABLE, private anonymous memory
 * only) and to back RAM with transparent huge pages (MADV_HUGEPAGE: anonymous and shm). 0, or
 * -EINVAL if MERGEABLE was asked of a backend KSM cannot merge (nothing else is refused), or
 * -errno from madvise. */
int guest_mem_advise(struct guest_mem *m, bool mergeable, bool huge);
/* RAM over a caller-owned buffer (unit tests). */
int guest_mem_init_buffer(struct guest_mem *m, void *buf, uint64_t size);
void guest_mem_close(struct guest_mem *m);

/* Host pointer for [gpa, gpa+len) if the whole range is RAM, else NULL. len may be 0. */
void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len);
/* Offset into the RAM mapping of a GPA that is RAM, or UINT64_MAX. */
uint64_t guest_mem_offset(const struct guest_mem *m, uint64_t gpa);
/* Copy into guest RAM and mark the pages dirty. Returns 0 or -EFAULT if not all RAM. */
int guest_mem_write(struct guest_mem *m, uint64_t gpa, const void *src, size_t len);
int guest_mem_read(const struct guest_mem *m, uint64_t gpa, void *dst, size_t len);
void guest_mem_mark_dirty(struct guest_mem *m, uint64_t gpa, uint64_t len);
/* Number of pages the VMM has marked dirty. */
uint64_t guest_mem_vmm_dirty_pages(const struct guest_mem *m);

/* Gives the host back the whole pages inside RAM offsets [OFF, OFF+LEN) (a balloon's or a
 * free page report's pages, a revert's zero pages): file -> fallocate(PUNCH_HOLE), shm ->
 * MADV_REMOVE, anonymous -> MADV_DONTNEED, hugetlbfs -> only the huge pages the range covers
 * whole (a partly covered one keeps its contents). The pages read as zeroes afterwards and are
 * marked dirty (changed to zero, for the next snapshot). *FREED (may be NULL) gets the bytes
 * really given back. 0 or -errno; a range outside RAM is -EINVAL and nothing is done. */
int guest_mem_discard(struct guest_mem *m, uint64_t off, uint64_t len, uint64_t *freed);

/* Whether RAM page PAGE is a hole of the backing file or memfd (SEEK_DATA): it reads as zeroes
 * and can be known to without touching it. CUR caches the extent found last, so calls in
 * ascending order cost one lseek per extent; start it zeroed. Anonymous memory: false. */
struct guest_mem_extent {
    uint64_t start, end; /* RAM offsets; end 0 = nothing cached */
    bool hole;
};
bool guest_mem_page_is_hole(const struct guest_mem *m, uint64_t page, struct guest_mem_extent *cur);

#endif
