/* The memory truth: what a VM's RAM really costs the host, next to what tools claim.
 * Per VM: configured size, the backing file's apparent size (st_size) and allocated size
 * (st_blocks*512, what `ls -ls` shows), resident and dirty pages of the RAM mapping (from the
 * VMA's entry in /proc/PID/smaps, or mincore when only the file is known), shared vs private,
 * swapped. Host: /proc/meminfo, and what `free` would print as used (which hides MAP_SHARED and
 * shmem pages inside buff/cache - seed 000's lesson). */
#ifndef VMWS_MEMTRUTH_H
#define VMWS_MEMTRUTH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct memtruth_vm {
    uint64_t configured; /* guest RAM size */
    uint64_t apparent;   /* st_size of the backing file (0 for anonymous) */
    uint64_t allocated;  /* st_blocks * 512 (anonymous: = resident + swapped) */
    uint64_t resident;   /* Rss of the mapping (or page-cache pages of the file) */
    uint64_t dirty;      /* Shared_Dirty + Private_Dirty of the mapping */
    uint64_t shared;     /* Shared_Clean + Shared_Dirty */
    uint64_t private_;   /* Private_Clean + Private_Dirty */
    uint64_t swapped;    /* Swap of the mapping */
    uint64_t huge; /* in transparent huge pages: AnonHugePages + ShmemPmdMapped + FilePmdMapped */
    uint64_t ksm_merged; /* pages KSM merged with identical ones (/proc/PID/ksm_merging_pages) */
    bool from_mapping;   /* resident/dirty/shared/private/swapped/huge come from smaps */
};

/* Measures a live RAM mapping [MAP, MAP+LEN) of process PID (0 = self) backed by FD (-1 for
 * anonymous memory). Returns 0 or -errno. */
int memtruth_vm_measure(struct memtruth_vm *out, pid_t pid, const void *map, uint64_t len, int fd,
                        uint64_t configured);
/* The cheap measure, for a VMM asked often (the dashboard, every second): allocated from fstat,
 * resident and dirty from the kernel's counters of the RAM file's page cache (cachestat(2),
 * Linux 6.5+) or, for anonymous memory, mincore of the mapping into a vector kept between
 * calls; hugetlbfs pages are resident once allocated. Its cost follows the pages in use, not
 * the VM's size. The figures only smaps knows (shared/private, swapped, huge, ksm) come from a
 * full memtruth_vm_measure at most MAX_AGE_MS old, kept in CACHE; where neither counter
 * exists (an older kernel's file backend) every call is the full measure. METHOD says which:
 * "cachestat", "mincore", "hugetlb" or "smaps". */
struct memtruth_cache {
    struct memtruth_vm detail; /* the last full measure */
    uint64_t detail_ms;        /* when (CLOCK_MONOTONIC, ms); 0 = never */
    unsigned char *vec;        /* mincore's vector */
    size_t veclen;
    bool no_cachestat; /* the kernel said ENOSYS once */
};
int memtruth_vm_measure_cached(struct memtruth_vm *out, struct memtruth_cache *cache,
                               const void *map, uint64_t len, int fd, bool hugetlb,
                               uint64_t configured, unsigned max_age_ms, const char **method);
void memtruth_cache_free(struct memtruth_cache *cache);

/* Measures a VM that is not running: from the file at PATH only (resident = its pages in the
 * page cache, by mincore). Returns 0 or -errno. */
int memtruth_file_measure(struct memtruth_vm *out, const char *path, uint64_t configured);

struct memtruth_host {
    uint64_t total, free, available, buffers, cached, sreclaimable, shmem, mapped, dirty, writeback,
        anon, swap_total, swap_free;
    uint64_t free_used; /* what `free` prints as used: procps-ng 4 (Debian 12) prints
                         * total-available; without MemAvailable, the legacy figure */
    uint64_t
        free_used_legacy;     /* procps-ng 3.3.10..3.3.17: total-free-buffers-cached-sreclaimable */
    uint64_t free_buff_cache; /* buffers + cached + sreclaimable */
    uint64_t ksm_shared, ksm_sharing; /* bytes, from /sys/kernel/mm/ksm (0 if absent) */
};

/* Reads MEMINFO (NULL = /proc/meminfo). Returns 0 or -errno. */
int memtruth_host_measure(struct memtruth_host *out, const char *meminfo);

/* JSON objects with the same field names as the structs, values in bytes. */
json_t *memtruth_vm_json(const struct memtruth_vm *v);
json_t *memtruth_host_json(const struct memtruth_host *h);

#endif
