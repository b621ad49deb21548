/* The memory truth: per-VM figures from /proc/PID/smaps, fstat and mincore; host figures from
 * /proc/meminfo and KSM's sysfs counters. The one idea: each figure comes from the kernel's
 * own accounting of one thing (the RAM mapping's VMAs, the file's blocks, the page cache), so
 * the numbers can be checked with ls -ls, du, free and smaps by anyone who doubts them. */
#include "core/vm/memtruth.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define KIB 1024ULL

/* Sums the smaps fields of every VMA of PID that overlaps [start, end). Returns 0 if at least
 * one VMA was found, -ENOENT if none, or -errno. */
static int smaps_sum(struct memtruth_vm *out, pid_t pid, uintptr_t start, uintptr_t end)
{
    char path[64];
    if (pid)
        snprintf(path, sizeof(path), "/proc/%ld/smaps", (long)pid);
    else
        snprintf(path, sizeof(path), "/proc/self/smaps");
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    char *line = NULL;
    size_t cap = 0;
    bool in_range = false, found = false;
    uint64_t rss = 0, sc = 0, sd = 0, pc = 0, pd = 0, swap = 0, huge = 0;
    while (getline(&line, &cap, f) > 0) {
        uintptr_t a, b;
        char c;
        /* A VMA header: "START-END perms offset dev inode [path]". Field lines start with a
         * capitalised name and a colon, never with "hex-hex ". */
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR "%c", &a, &b, &c) == 3 && c == ' ') {
            in_range = a < end && b > start;
            found |= in_range;
            continue;
        }
        if (!in_range)
            continue;
        char key[64];
        unsigned long long kb;
        if (sscanf(line, "%63[^:]: %llu kB", key, &kb) != 2)
            continue;
        uint64_t bytes = kb * KIB;
        if (strcmp(key, "Rss") == 0)
            rss += bytes;
        else if (strcmp(key, "Shared_Clean") == 0)
            sc += bytes;
        else if (strcmp(key, "Shared_Dirty") == 0)
            sd += bytes;
        else if (strcmp(key, "Private_Clean") == 0)
            pc += bytes;
        else if (strcmp(key, "Private_Dirty") == 0)
            pd += bytes;
        else if (strcmp(key, "Swap") == 0)
            swap += bytes;
        else if (!strcmp(key, "AnonHugePages") || !strcmp(key, "ShmemPmdMapped") ||
                 !strcmp(key, "FilePmdMapped"))
            huge += bytes;
    }
    free(line);
    fclose(f);
    if (!found)
        return -ENOENT;
    out->resident = rss;
    out->dirty = sd + pd;
    out->shared = sc + sd;
    out->private_ = pc + pd;
    out->swapped = swap;
    out->huge = huge;
    out->from_mapping = true;
    return 0;
}

/* Bytes of PID's pages KSM merged (only guest RAM is mergeable in a VMM); 0 without KSM. */
static uint64_t ksm_merged(pid_t pid)
{
    char path[64];
    if (pid)
        snprintf(path, sizeof(path), "/proc/%ld/ksm_merging_pages", (long)pid);
    else
        snprintf(path, sizeof(path), "/proc/self/ksm_merging_pages");
    FILE *f = fopen(path, "re");
    unsigned long long pages = 0;
    if (f && fscanf(f, "%llu", &pages) != 1)
        pages = 0;
    if (f)
        fclose(f);
    return pages * (uint64_t)sysconf(_SC_PAGESIZE);
}

int memtruth_vm_measure(struct memtruth_vm *out, pid_t pid, const void *map, uint64_t len, int fd,
                        uint64_t configured)
{
    memset(out, 0, sizeof(*out));
    out->configured = configured;
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) < 0)
            return -errno;
        out->apparent = (uint64_t)st.st_size;
        out->allocated = (uint64_t)st.st_blocks * 512;
    }
    uintptr_t start = (uintptr_t)map;
    int rc = smaps_sum(out, pid, start, start + len);
    if (rc < 0)
        return rc;
    out->ksm_merged = ksm_merged(pid);
    if (fd < 0)
        out->allocated = out->resident + out->swapped;
    return 0;
}

#ifndef SYS_cachestat
#define SYS_cachestat 451 /* the same number on every architecture */
#endif
struct vmws_cachestat_range {
    uint64_t off, len; /* len 0: to the end of the file */
};
struct vmws_cachestat {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* Resident pages of an anonymous mapping by mincore, the vector kept in CACHE. */
static int mincore_resident(struct memtruth_cache *c, const void *map, uint64_t len,
                            uint64_t *resident)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), n = (size_t)((len + page - 1) / page);
    if (c->veclen < n) {
        unsigned char *v = realloc(c->vec, n);
        if (!v)
            return -ENOMEM;
        c->vec = v;
        c->veclen = n;
    }
    if (mincore((void *)map, (size_t)len, c->vec) < 0)
        return -errno;
    /* Eight vector bytes at a time: most of a sparse guest is zero bytes. */
    uint64_t count = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, c->vec + i, 8);
        if (w)
            count += (uint64_t)__builtin_popcountll(w & 0x0101010101010101ULL);
    }
    for (; i < n; i++)
        count += c->vec[i] & 1;
    *resident = count * page;
    return 0;
}

int memtruth_vm_measure_cached(struct memtruth_vm *out, struct memtruth_cache *c, const void *map,
                               uint64_t len, int fd, bool hugetlb, uint64_t configured,
                               unsigned max_age_ms, const char **method)
{
    uint64_t now = now_ms();
    bool stale = !c->detail_ms || now - c->detail_ms > max_age_ms;
    /* The fresh figures first: allocated, resident, dirty. */
    struct memtruth_vm fresh = {.configured = configured};
    const char *how = NULL;
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) < 0)
            return -errno;
        fresh.apparent = (uint64_t)st.st_size;
        fresh.allocated = (uint64_t)st.st_blocks * 512;
    }
    if (hugetlb && fd >= 0) {
        fresh.resident = fresh.allocated; /* a huge page is in RAM from its first touch */
        how = "hugetlb";
    } else if (fd >= 0 && !c->no_cachestat) {
        struct vmws_cachestat_range range = {0, 0};
        struct vmws_cachestat cs;
        if (syscall(SYS_cachestat, fd, &range, &cs, 0) == 0) {
            long page = sysconf(_SC_PAGESIZE);
            fresh.resident = cs.nr_cache * (uint64_t)page;
            fresh.dirty = (cs.nr_dirty + cs.nr_writeback) * (uint64_t)page;
            how = "cachestat";
        } else if (errno == ENOSYS) {
            c->no_cachestat = true;
        }
    } else if (fd < 0 && mincore_resident(c, map, len, &fresh.resident) == 0) {
        how = "mincore";
    }
    if (!how) { /* no cheap counter: the full measure, every time */
        int rc = memtruth_vm_measure(out, 0, map, len, fd, configured);
        if (rc == 0) {
            c->detail = *out;
            c->detail_ms = now;
        }
        *method = "smaps";
        return rc;
    }
    if (stale) {
        struct memtruth_vm d;
        if (memtruth_vm_measure(&d, 0, map, len, fd, configured) == 0) {
            c->detail = d;
            c->detail_ms = now;
        }
    }
    *out = c->detail;
    out->configured = configured;
    out->apparent = fresh.apparent;
    out->allocated = fd >= 0 ? fresh.allocated : fresh.resident + c->detail.swapped;
    out->resident = fresh.resident;
    if (!strcmp(how, "cachestat"))
        out->dirty = fresh.dirty;
    out->from_mapping = true;
    *method = how;
    return 0;
}

void memtruth_cache_free(struct memtruth_cache *c)
{
    free(c->vec);
    memset(c, 0, sizeof(*c));
}

int memtruth_file_measure(struct memtruth_vm *out, const char *path, uint64_t configured)
{
    memset(out, 0, sizeof(*out));
    out->configured = configured;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    out->apparent = (uint64_t)st.st_size;
    out->allocated = (uint64_t)st.st_blocks * 512;

    /* Page-cache residency: map read-only (this faults nothing in) and ask mincore, a window
     * at a time so the vector stays small even for a 1 TiB file. */
    long page = sysconf(_SC_PAGESIZE);
    const uint64_t window = 256ULL << 20;
    unsigned char *vec = malloc(window / (uint64_t)page);
    int rc = vec ? 0 : -ENOMEM;
    for (uint64_t off = 0; rc == 0 && off < out->apparent; off += window) {
        size_t len = (size_t)(out->apparent - off < window ? out->apparent - off : window);
        void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, (off_t)off);
        if (m == MAP_FAILED) {
            rc = -errno;
            break;
        }
        if (mincore(m, len, vec) < 0) {
            rc = -errno;
        } else {
            size_t pages = (len + (size_t)page - 1) / (size_t)page;
            for (size_t i = 0; i < pages; i++)
                out->resident += (vec[i] & 1) ? (uint64_t)page : 0;
        }
        munmap(m, len);
    }
    free(vec);
    close(fd);
    return rc;
}

/* Sums the number of pages from a KSM sysfs counter, times the page size; 0 if absent. */
static uint64_t ksm_bytes(const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "/sys/kernel/mm/ksm/%s", name);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    unsigned long long pages = 0;
    if (fscanf(f, "%llu", &pages) != 1)
        pages = 0;
    fclose(f);
    return pages * (uint64_t)sysconf(_SC_PAGESIZE);
}

int memtruth_host_measure(struct memtruth_host *out, const char *meminfo)
{
    memset(out, 0, sizeof(*out));
    FILE *f = fopen(meminfo ? meminfo : "/proc/meminfo", "re");
    if (!f)
        return -errno;
    struct {
        const char *key;
        uint64_t *dst;
    } fields[] = {
        {"MemTotal", &out->total},
        {"MemFree", &out->free},
        {"MemAvailable", &out->available},
        {"Buffers", &out->buffers},
        {"Cached", &out->cached},
        {"SReclaimable", &out->sreclaimable},
        {"Shmem", &out->shmem},
        {"Mapped", &out->mapped},
        {"Dirty", &out->dirty},
        {"Writeback", &out->writeback},
        {"AnonPages", &out->anon},
        {"SwapTotal", &out->swap_total},
        {"SwapFree", &out->swap_free},
    };
    bool have_available = false, have_total = false;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        char key[64];
        unsigned long long kb;
        if (sscanf(line, "%63[^:]: %llu", key, &kb) != 2)
            continue;
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
            if (strcmp(key, fields[i].key) == 0) {
                *fields[i].dst = kb * KIB;
                have_available |= fields[i].dst == &out->available;
                have_total |= fields[i].dst == &out->total;
            }
        }
    }
    fclose(f);
    if (!have_total)
        return -EINVAL;

    out->free_buff_cache = out->buffers + out->cached + out->sreclaimable;
    /* procps-ng 4 (Debian 12's free 4.0.2, checked against its output and man page) prints
     * used = MemTotal - MemAvailable; 3.3.10 .. 3.3.17 printed total - free - buff/cache,
     * which is also what 4.x falls back to without MemAvailable (kernels before 3.14). */
    uint64_t not_used = out->free + out->free_buff_cache;
    out->free_used_legacy = out->total > not_used ? out->total - not_used : 0;
    if (have_available)
        out->free_used = out->total > out->available ? out->total - out->available : 0;
    else
        out->free_used = out->free_used_legacy;
    out->ksm_shared = ksm_bytes("pages_shared");
    out->ksm_sharing = ksm_bytes("pages_sharing");
    return 0;
}

json_t *memtruth_vm_json(const struct memtruth_vm *v)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b}", "configured",
                     (json_int_t)v->configured, "apparent", (json_int_t)v->apparent, "allocated",
                     (json_int_t)v->allocated, "resident", (json_int_t)v->resident, "dirty",
                     (json_int_t)v->dirty, "shared", (json_int_t)v->shared, "private",
                     (json_int_t)v->private_, "swapped", (json_int_t)v->swapped, "huge",
                     (json_int_t)v->huge, "ksm_merged", (json_int_t)v->ksm_merged, "from_mapping",
                     v->from_mapping);
}

json_t *memtruth_host_json(const struct memtruth_host *h)
{
    json_t *o = json_object();
    struct {
        const char *k;
        uint64_t v;
    } f[] = {
        {"total", h->total},
        {"free", h->free},
        {"available", h->available},
        {"buffers", h->buffers},
        {"cached", h->cached},
        {"sreclaimable", h->sreclaimable},
        {"shmem", h->shmem},
        {"mapped", h->mapped},
        {"dirty", h->dirty},
        {"writeback", h->writeback},
        {"anon", h->anon},
        {"swap_total", h->swap_total},
        {"swap_free", h->swap_free},
        {"free_used", h->free_used},
        {"free_used_legacy", h->free_used_legacy},
        {"free_buff_cache", h->free_buff_cache},
        {"ksm_shared", h->ksm_shared},
        {"ksm_sharing", h->ksm_sharing},
    };
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        json_object_set_new(o, f[i].k, json_integer((json_int_t)f[i].v));
    return o;
}
