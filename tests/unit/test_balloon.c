/* Giving guest pages back, without KVM: the balloon's checks on the guest's PFNs and statistics;
 * guest_mem_discard() on each backend, judged by what a user sees (the memory file's allocated
 * blocks, the pages reading as zeroes); a snapshot of a memory file with punched pages stores
 * them as zero entries (its file is small) and a revert to it punches them again, while a
 * revert to the snapshot before brings their data back. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/snapshot/snapshot.h"
#include "core/virtio/virtio_balloon.h"
#include "core/vm/guestmem.h"

#define MIB (1ull << 20)

/* ---- the PFNs and statistics a guest sends ---- */

START_TEST(pfns_outside_ram_are_skipped_and_runs_merged)
{
    struct guest_mem gm;
    /* 3.5 GiB: 3 GiB below the PCI hole, 512 MiB from 4 GiB; nothing is touched. */
    static uint8_t dummy;
    ck_assert_int_eq(guest_mem_init_buffer(&gm, &dummy, 3584 * MIB), 0);
    uint32_t pfns[] = {
        12,         11,       10, /* one run of 3, given backwards */
        11,                       /* twice: given back once */
        0xbffff,    0x100000,     /* last page below the hole, first above: adjacent */
        0xc0000,    0xfffff,      /* in the PCI hole: not RAM */
        0x120000,                 /* 4 GiB + 512 MiB: past the end of RAM */
        0xffffffff, 0x11ffff,     /* far out; the last page of RAM */
    };
    struct balloon_range r[16];
    uint64_t bad = 0;
    size_t n = virtio_balloon_pfn_ranges(&gm, pfns, sizeof(pfns) / 4, r, &bad);
    ck_assert_uint_eq(bad, 4);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(r[0].off, 10 * 4096);
    ck_assert_uint_eq(r[0].len, 3 * 4096);
    ck_assert_uint_eq(r[1].off, 3072 * MIB - 4096); /* RAM offsets: the hole is not there */
    ck_assert_uint_eq(r[1].len, 2 * 4096);
    ck_assert_uint_eq(r[2].off, 3584 * MIB - 4096);
    ck_assert_uint_eq(r[2].len, 4096);
    guest_mem_close(&gm);
}
END_TEST

START_TEST(stats_parse)
{
    uint8_t buf[30];
    uint16_t tags[] = {4, 99, 6};
    uint64_t vals[] = {123456789, 7, 0x1122334455667788ull};
    for (int i = 0; i < 3; i++) {
        memcpy(buf + 10 * i, &tags[i], 2);
        memcpy(buf + 10 * i + 2, &vals[i], 8);
    }
    struct balloon_stats s;
    memset(&s, 0, sizeof(s));
    ck_assert_int_eq(virtio_balloon_parse_stats(buf, 30, &s), 0);
    ck_assert_uint_eq(s.present, 1u << BALLOON_S_MEMFREE | 1u << BALLOON_S_AVAIL);
    ck_assert_uint_eq(s.value[BALLOON_S_MEMFREE], 123456789);
    ck_assert_uint_eq(s.value[BALLOON_S_AVAIL], 0x1122334455667788ull);
    ck_assert_int_eq(virtio_balloon_parse_stats(buf, 29, &s), -EINVAL);
}
END_TEST

/* ---- guest_mem_discard on each backend ---- */

static char dir[] = "/tmp/vmws-balloon-XXXXXX";
static char vmem[300];

static void make_dir(void)
{
    strcpy(dir, "/tmp/vmws-balloon-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(vmem, sizeof(vmem), "%s/t.vmem", dir);
}

static void remove_dir(void)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static uint64_t allocated(int fd)
{
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

static bool all_bytes(const uint8_t *p, uint64_t len, uint8_t v)
{
    for (uint64_t i = 0; i < len; i++)
        if (p[i] != v)
            return false;
    return true;
}

static bool dirty(const struct guest_mem *m, uint64_t page)
{
    return m->vmm_dirty[page / 64] >> (page % 64) & 1;
}

static void discard_on(enum mem_backend backend)
{
    struct guest_mem gm;
    char err[256];
    make_dir();
    ck_assert_msg(guest_mem_open(&gm, 4 * MIB, backend, vmem, err, sizeof(err)) == 0, "%s", err);
    memset(gm.host, 0xab, 4 * MIB);
    memset(gm.vmm_dirty, 0, (4 * MIB / 4096 + 63) / 64 * 8);
    if (gm.fd >= 0) /* file and shm: the file's blocks are what the guest costs */
        ck_assert_uint_ge(allocated(gm.fd), 4 * MIB);
    uint64_t freed = 1;
    /* Not page aligned: only the whole pages inside go. */
    ck_assert_int_eq(guest_mem_discard(&gm, 4096 + 100, 2 * MIB, &freed), 0);
    ck_assert_uint_eq(freed, 2 * MIB - 4096);
    ck_assert(!dirty(&gm, 1) && dirty(&gm, 2) && dirty(&gm, 512) && !dirty(&gm, 513));
    if (gm.fd >= 0) { /* before reading them: a read of a shm hole allocates it again */
        ck_assert_uint_le(allocated(gm.fd), 2 * MIB + 4096 + 64 * 1024);
        struct guest_mem_extent ext = {0};
        ck_assert(!guest_mem_page_is_hole(&gm, 1, &ext));
        ck_assert(guest_mem_page_is_hole(&gm, 2, &ext));
        ck_assert(guest_mem_page_is_hole(&gm, 512, &ext));
        ck_assert(!guest_mem_page_is_hole(&gm, 513, &ext));
    }
    ck_assert(all_bytes(gm.host, 8192, 0xab));
    ck_assert(all_bytes(gm.host + 8192, 2 * MIB - 4096, 0));
    ck_assert(all_bytes(gm.host + 2 * MIB + 4096, 2 * MIB - 4096, 0xab));
    ck_assert_int_eq(guest_mem_discard(&gm, 4 * MIB - 4096, 8192, &freed), -EINVAL);
    ck_assert_int_eq(guest_mem_discard(&gm, 100, 200, &freed), 0); /* no whole page: nothing */
    ck_assert_uint_eq(freed, 0);
    ck_assert(all_bytes(gm.host, 4096, 0xab));
    guest_mem_close(&gm);
    remove_dir();
}

START_TEST(discard_file)
{
    discard_on(MEM_BACKEND_FILE);
}
END_TEST

START_TEST(discard_shm)
{
    discard_on(MEM_BACKEND_SHM);
}
END_TEST

START_TEST(discard_anon)
{
    discard_on(MEM_BACKEND_ANON);
}
END_TEST

/* ---- snapshots of punched pages ---- */

static struct guest_mem snap_mem;

/* All writes here go through guest_mem_write/discard: the VMM's bitmap is the whole log. */
static int collect(void *opaque, uint64_t *bitmap)
{
    (void)opaque;
    uint64_t words = (snap_mem.size / 4096 + 63) / 64;
    for (uint64_t i = 0; i < words; i++)
        bitmap[i] |= __atomic_exchange_n(&snap_mem.vmm_dirty[i], 0, __ATOMIC_RELAXED);
    return 0;
}
static int save_state(void *opaque, struct state_writer *w)
{
    (void)opaque;
    state_put(w, STATE_TAG('T', 'E', 'S', 'T'), 0, "x", 1);
    return 0;
}
static int load_state(void *opaque, const struct state_reader *r, char *err, size_t errlen)
{
    (void)opaque, (void)r, (void)err, (void)errlen;
    return 0;
}

static struct snap_node *take(struct snap_tree *t, struct snapshot_host *h, const char *label)
{
    struct snapshot_capture c;
    struct snap_node *n = NULL;
    char err[256];
    ck_assert_msg(snapshot_capture(h, &c, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(snapshot_commit(t, h, &c, label, false, "running", NULL, &n, err, sizeof(err)) ==
                      0,
                  "%s", err);
    snapshot_capture_free(&c);
    return n;
}

static void revert(struct snap_tree *t, struct snapshot_host *h, const char *label)
{
    char err[256];
    bool applied;
    ck_assert_msg(snapshot_revert(t, h, snap_find(t, label), NULL, &applied, err, sizeof(err)) == 0,
                  "%s", err);
}

static uint64_t file_bytes(const struct snap_tree *t, const char *id)
{
    char path[PATH_MAX];
    struct stat st;
    snap_path(t, id, "mem", path, sizeof(path));
    ck_assert_int_eq(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

START_TEST(snapshot_stores_punched_pages_as_zero_entries)
{
    char err[256];
    make_dir();
    ck_assert_msg(guest_mem_open(&snap_mem, 16 * MIB, MEM_BACKEND_FILE, vmem, err, sizeof(err)) ==
                      0,
                  "%s", err);
    uint64_t words = (16 * MIB / 4096 + 63) / 64;
    uint64_t *carry = calloc(words, 8);
    struct snapshot_host h = {.mem = &snap_mem,
                              .carry = carry,
                              .collect_dirty = collect,
                              .save_state = save_state,
                              .load_state = load_state};
    struct snap_tree t;
    ck_assert_int_eq(snap_tree_load(&t, dir, "", err, sizeof(err)), 0);

    uint8_t *pattern = malloc(8 * MIB);
    for (uint64_t i = 0; i < 8 * MIB; i++)
        pattern[i] = (uint8_t)(i * 7 + 1);
    ck_assert_int_eq(guest_mem_write(&snap_mem, 0, pattern, 8 * MIB), 0);
    struct snap_node *a = take(&t, &h, "a"); /* 8 MiB of data */
    ck_assert_uint_eq(a->pages, 2048);
    ck_assert_uint_ge(file_bytes(&t, a->id), 8 * MIB);

    /* The guest gives 6 MiB of it back, then changes one page of what it kept. */
    ck_assert_int_eq(guest_mem_discard(&snap_mem, 1 * MIB, 6 * MIB, NULL), 0);
    ck_assert_int_eq(guest_mem_write(&snap_mem, 0, "changed", 7), 0);
    uint64_t alloc_b = allocated(snap_mem.fd);
    ck_assert_uint_le(alloc_b, 2 * MIB + 64 * 1024);
    struct snap_node *b = take(&t, &h, "b");
    char b_id[SNAP_ID_MAX];
    snprintf(b_id, sizeof(b_id), "%s", b->id);
    ck_assert_uint_eq(b->pages, 1 + 1536); /* the changed page and the punched ones */
    /* Stored: the index and one page of data, not 6 MiB of zeroes. */
    ck_assert_uint_le(file_bytes(&t, b_id), 64 * 1024);
    ck_assert_uint_eq(snap_find(&t, "b")->mem_bytes, file_bytes(&t, b_id));

    revert(&t, &h, "a"); /* the punched pages' data comes back */
    ck_assert_int_eq(memcmp(snap_mem.host, pattern, 8 * MIB), 0);
    ck_assert_uint_ge(allocated(snap_mem.fd), 8 * MIB);

    revert(&t, &h, "b"); /* and goes again: zeroes, and a hole in the file */
    ck_assert_int_eq(memcmp(snap_mem.host, "changed", 7), 0);
    ck_assert(all_bytes(snap_mem.host + 1 * MIB, 6 * MIB, 0));
    ck_assert_int_eq(memcmp(snap_mem.host + 7 * MIB, pattern + 7 * MIB, MIB), 0);
    ck_assert_uint_le(allocated(snap_mem.fd), alloc_b + 64 * 1024);

    /* Deleting b's parent merges a's data under b's zero entries: b still reads the same. */
    uint64_t needs;
    ck_assert_int_eq(snapshot_delete_cost(&t, snap_find(&t, "a"), &needs, err, sizeof(err)), 0);
    ck_assert_uint_le(needs, 3 * MIB);
    ck_assert_msg(snapshot_delete(&t, snap_find(&t, "a"), NULL, carry, 16 * MIB / 4096, err,
                                  sizeof(err)) == 0,
                  "%s", err);
    ck_assert_uint_le(file_bytes(&t, b_id), 3 * MIB);
    memset(snap_mem.host + 1 * MIB, 0x55, 4096); /* a change the next revert undoes */
    guest_mem_mark_dirty(&snap_mem, 1 * MIB, 4096);
    revert(&t, &h, "b");
    ck_assert(all_bytes(snap_mem.host + 1 * MIB, 6 * MIB, 0));
    ck_assert_int_eq(memcmp(snap_mem.host + 8, pattern + 8, MIB - 8), 0);

    snap_tree_free(&t);
    free(pattern);
    free(carry);
    guest_mem_close(&snap_mem);
    remove_dir();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("balloon");
    TCase *t = tcase_create("balloon");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, pfns_outside_ram_are_skipped_and_runs_merged);
    tcase_add_test(t, stats_parse);
    tcase_add_test(t, discard_file);
    tcase_add_test(t, discard_shm);
    tcase_add_test(t, discard_anon);
    tcase_add_test(t, snapshot_stores_punched_pages_as_zero_entries);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
