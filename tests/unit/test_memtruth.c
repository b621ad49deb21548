/* Unit tests for the memory truth (core/vm/memtruth.c), on real memory: a 256 MiB sparse file
 * mapped MAP_SHARED like a VM's .vmem, checked before and after the "guest" writes 8 MiB -
 * the figures `vmws mem` prints, which ls -s, smaps and mincore would confirm - plus a
 * /proc/meminfo fixture for what `free` calls used, and the real `free` on this machine. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/vm/memtruth.h"

#define MIB (1ULL << 20)

static char tmpdir[64];
static char vmem[128];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/vmws-test-memtruth.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(vmem, sizeof(vmem), "%s/vm1.vmem", tmpdir);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_sparse_shared_file)
{
    const uint64_t size = 256 * MIB;
    int fd = open(vmem, O_RDWR | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(map, MAP_FAILED);

    struct memtruth_vm v;
    ck_assert_int_eq(memtruth_vm_measure(&v, 0, map, size, fd, size), 0);
    ck_assert(v.from_mapping);
    ck_assert_uint_eq(v.configured, size);
    ck_assert_uint_eq(v.apparent, size);
    ck_assert_msg(v.allocated < MIB, "untouched sparse file has %llu bytes allocated",
                  (unsigned long long)v.allocated);
    ck_assert_uint_eq(v.resident, 0);
    ck_assert_uint_eq(v.dirty, 0);

    /* The guest writes 8 MiB. */
    memset(map + 16 * MIB, 0xa5, 8 * MIB);
    ck_assert_int_eq(memtruth_vm_measure(&v, 0, map, size, fd, size), 0);
    ck_assert_uint_eq(v.apparent, size);
    ck_assert_msg(v.allocated >= 8 * MIB && v.allocated < 16 * MIB, "allocated %llu",
                  (unsigned long long)v.allocated);
    ck_assert_msg(v.resident >= 8 * MIB, "resident %llu", (unsigned long long)v.resident);
    ck_assert_msg(v.resident < 32 * MIB, "resident %llu", (unsigned long long)v.resident);
    ck_assert_msg(v.dirty >= 8 * MIB, "dirty %llu before msync", (unsigned long long)v.dirty);
    ck_assert_uint_eq(v.shared + v.private_, v.resident);
    ck_assert_uint_eq(v.swapped, 0);

    /* The same file measured from outside, as `vmws mem` does for a VM that is off. */
    struct memtruth_vm f;
    ck_assert_int_eq(memtruth_file_measure(&f, vmem, size), 0);
    ck_assert(!f.from_mapping);
    ck_assert_uint_eq(f.apparent, size);
    ck_assert_uint_eq(f.allocated, v.allocated);
    ck_assert_msg(f.resident >= 8 * MIB, "page cache %llu", (unsigned long long)f.resident);

    /* Written back: no longer dirty, still resident and allocated. */
    ck_assert_int_eq(msync(map, size, MS_SYNC), 0);
    ck_assert_int_eq(memtruth_vm_measure(&v, 0, map, size, fd, size), 0);
    ck_assert_msg(v.dirty < MIB, "dirty %llu after msync", (unsigned long long)v.dirty);
    ck_assert_msg(v.resident >= 8 * MIB, "resident %llu", (unsigned long long)v.resident);
    ck_assert_msg(v.allocated >= 8 * MIB && v.allocated < 16 * MIB, "allocated %llu",
                  (unsigned long long)v.allocated);

    json_t *j = memtruth_vm_json(&v);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "apparent")), (json_int_t)size);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "private")), (json_int_t)v.private_);
    ck_assert(json_is_true(json_object_get(j, "from_mapping")));
    json_decref(j);

    /* An address that is not the start of any mapping is reported, not guessed. */
    munmap(map, size);
    ck_assert_int_eq(memtruth_vm_measure(&v, 0, map, size, fd, size), -ENOENT);
    close(fd);
    ck_assert_int_eq(memtruth_file_measure(&f, "/nonexistent/vm.vmem", size), -ENOENT);
}
END_TEST

START_TEST(test_anonymous)
{
    const uint64_t size = 64 * MIB;
    unsigned char *map =
        mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(map, MAP_FAILED);
    madvise(map, size, MADV_NOHUGEPAGE); /* count what we touch, not a 2 MiB rounding */
    memset(map, 1, 4 * MIB);
    struct memtruth_vm v;
    ck_assert_int_eq(memtruth_vm_measure(&v, 0, map, size, -1, size), 0);
    ck_assert_uint_eq(v.apparent, 0);
    ck_assert_msg(v.resident >= 4 * MIB && v.resident < 8 * MIB, "resident %llu",
                  (unsigned long long)v.resident);
    ck_assert_uint_eq(v.allocated, v.resident + v.swapped);
    ck_assert_uint_eq(v.private_, v.resident);
    munmap(map, size);
}
END_TEST

/* The cheap measure agrees with the full one: a shared file by cachestat (Linux 6.5+; an older
 * kernel says "smaps" and measures fully), anonymous memory by mincore; the smaps-only figures
 * come from the cache until it is older than the age asked for. */
START_TEST(test_cheap_measure)
{
    const uint64_t size = 256 * MIB;
    int fd = open(vmem, O_RDWR | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    unsigned char *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(map, MAP_FAILED);
    memset(map + 32 * MIB, 0x5a, 8 * MIB);
    struct memtruth_cache c = {0};
    struct memtruth_vm full, cheap;
    const char *method = NULL;
    ck_assert_int_eq(memtruth_vm_measure(&full, 0, map, size, fd, size), 0);
    ck_assert_int_eq(
        memtruth_vm_measure_cached(&cheap, &c, map, size, fd, false, size, 60000, &method), 0);
    ck_assert_msg(!strcmp(method, "cachestat") || !strcmp(method, "smaps"), "%s", method);
    ck_assert_uint_eq(cheap.allocated, full.allocated);
    /* The file's page cache may hold more than the mapping (readahead of holes around a
     * fault): host RAM all the same. */
    ck_assert_uint_ge(cheap.resident, full.resident);
    ck_assert_uint_le(cheap.resident, full.resident + 32 * MIB);
    ck_assert_uint_eq(cheap.dirty, full.dirty);
    /* 8 MiB more: allocated, resident and dirty follow at once; a smaps-only figure (private:
     * one process maps the file) is the cached one while it is younger than 60 s. */
    memset(map + 64 * MIB, 0x5a, 8 * MIB);
    ck_assert_int_eq(
        memtruth_vm_measure_cached(&cheap, &c, map, size, fd, false, size, 60000, &method), 0);
    ck_assert_uint_ge(cheap.allocated, full.allocated + 8 * MIB);
    ck_assert_uint_ge(cheap.resident, full.resident + 8 * MIB);
    ck_assert_uint_ge(cheap.dirty, full.dirty + 8 * MIB);
    if (!strcmp(method, "cachestat"))
        ck_assert_uint_eq(cheap.private_, full.private_);
    ck_assert_int_eq(memtruth_vm_measure_cached(&cheap, &c, map, size, fd, false, size, 0, &method),
                     0);
    ck_assert_uint_ge(cheap.private_, full.private_ + 8 * MIB);
    munmap(map, size);
    close(fd);
    memtruth_cache_free(&c); /* a cache belongs to one mapping */

    unsigned char *anon =
        mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(anon, MAP_FAILED);
    madvise(anon, size, MADV_NOHUGEPAGE);
    memset(anon + 8 * MIB, 1, 12 * MIB);
    ck_assert_int_eq(
        memtruth_vm_measure_cached(&cheap, &c, anon, size, -1, false, size, 60000, &method), 0);
    ck_assert_str_eq(method, "mincore");
    ck_assert_uint_eq(cheap.resident, 12 * MIB);
    ck_assert_uint_eq(cheap.allocated, 12 * MIB);
    munmap(anon, size);
    memtruth_cache_free(&c);
}
END_TEST

/* Transparent huge pages of the mapping are counted as "huge", as smaps shows them: with THP
 * on (always or madvise), a 2 MiB-aligned MADV_HUGEPAGE region touched whole is huge; with THP
 * off, nothing is. */
START_TEST(test_huge_pages)
{
    const uint64_t size = 16 * MIB;
    unsigned char *raw =
        mmap(NULL, size + 2 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(raw, MAP_FAILED);
    unsigned char *map = (unsigned char *)(((uintptr_t)raw + 2 * MIB - 1) & ~(2 * MIB - 1));
    madvise(map, size, MADV_HUGEPAGE);
    memset(map, 1, size);
    char mode[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f && !fgets(mode, sizeof(mode), f))
        mode[0] = '\0';
    if (f)
        fclose(f);
    bool thp = strstr(mode, "[always]") || strstr(mode, "[madvise]");
    struct memtruth_vm v;
    ck_assert_int_eq(memtruth_vm_measure(&v, 0, map, size, -1, size), 0);
    if (thp)
        ck_assert_msg(v.huge >= 2 * MIB && v.huge <= size, "THP %s but huge %llu", mode,
                      (unsigned long long)v.huge);
    else
        ck_assert_uint_eq(v.huge, 0);
    json_t *j = memtruth_vm_json(&v);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "huge")), (json_int_t)v.huge);
    ck_assert_ptr_nonnull(json_object_get(j, "ksm_merged"));
    json_decref(j);
    munmap(raw, size + 2 * MIB);
}
END_TEST

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

START_TEST(test_meminfo_fixture)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/meminfo", tmpdir);
    write_file(path, "MemTotal:       16268680 kB\n"
                     "MemFree:          349408 kB\n"
                     "MemAvailable:    8366284 kB\n"
                     "Buffers:          534320 kB\n"
                     "Cached:          7107356 kB\n"
                     "SwapCached:            0 kB\n"
                     "SwapTotal:        999420 kB\n"
                     "SwapFree:         999000 kB\n"
                     "Dirty:             27808 kB\n"
                     "Writeback:            16 kB\n"
                     "AnonPages:       7417360 kB\n"
                     "Mapped:           158928 kB\n"
                     "Shmem:             14116 kB\n"
                     "SReclaimable:     642740 kB\n"
                     "HugePages_Total:       0\n"
                     "Hugepagesize:       2048 kB\n");
    struct memtruth_host h;
    ck_assert_int_eq(memtruth_host_measure(&h, path), 0);
    const uint64_t k = 1024;
    ck_assert_uint_eq(h.total, 16268680 * k);
    ck_assert_uint_eq(h.free, 349408 * k);
    ck_assert_uint_eq(h.available, 8366284 * k);
    ck_assert_uint_eq(h.mapped, 158928 * k);
    ck_assert_uint_eq(h.shmem, 14116 * k);
    ck_assert_uint_eq(h.dirty, 27808 * k);
    ck_assert_uint_eq(h.writeback, 16 * k);
    ck_assert_uint_eq(h.anon, 7417360 * k);
    ck_assert_uint_eq(h.swap_free, 999000 * k);
    /* free (procps-ng 4): used = total - available = 7902396 kB */
    ck_assert_uint_eq(h.free_used, 7902396 * k);
    /* procps-ng 3.3.10..3.3.17: total - free - buffers - cached - sreclaimable = 7634856 kB */
    ck_assert_uint_eq(h.free_used_legacy, 7634856 * k);
    ck_assert_uint_eq(h.free_buff_cache, (534320 + 7107356 + 642740) * k);

    /* A kernel without MemAvailable (before 3.14): free falls back to the legacy figure. */
    write_file(path, "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 300 kB\n"
                     "SReclaimable: 40 kB\n");
    ck_assert_int_eq(memtruth_host_measure(&h, path), 0);
    ck_assert_uint_eq(h.free_used, 550 * k);

    json_t *j = memtruth_host_json(&h);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "free_used")), 550 * 1024);
    ck_assert_ptr_nonnull(json_object_get(j, "ksm_sharing"));
    json_decref(j);

    write_file(path, "garbage\n");
    ck_assert_int_eq(memtruth_host_measure(&h, path), -EINVAL);
    ck_assert_int_eq(memtruth_host_measure(&h, "/nonexistent/meminfo"), -ENOENT);
}
END_TEST

/* Our "free says used" is what the real `free` prints here (within the drift between the
 * two reads). Skipped without procps. */
START_TEST(test_matches_real_free)
{
    FILE *p = popen("free -b 2>/dev/null", "r");
    ck_assert_ptr_nonnull(p);
    char line[512];
    unsigned long long total = 0, used = 0;
    while (fgets(line, sizeof(line), p))
        if (sscanf(line, "Mem: %llu %llu", &total, &used) == 2)
            break;
    pclose(p);
    if (!total)
        return; /* no free(1) on this machine */
    struct memtruth_host h;
    ck_assert_int_eq(memtruth_host_measure(&h, NULL), 0);
    ck_assert_uint_eq(h.total, total);
    long long diff = (long long)h.free_used - (long long)used;
    ck_assert_msg(llabs(diff) < (long long)(64 * MIB), "free says used %llu, we say %llu", used,
                  (unsigned long long)h.free_used);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("memtruth");
    TCase *tc = tcase_create("memtruth");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_sparse_shared_file);
    tcase_add_test(tc, test_anonymous);
    tcase_add_test(tc, test_cheap_measure);
    tcase_add_test(tc, test_huge_pages);
    tcase_add_test(tc, test_meminfo_fixture);
    tcase_add_test(tc, test_matches_real_free);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
