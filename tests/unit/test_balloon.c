/* Giving guest pages back, without KVM: the balloon's checks on the guest's PFNs and statistics;
 * guest_mem_discard() on each backend, judged by what a user sees (the memory file's allocated
 * blocks, the pages reading as zeroes); a snapshot of a memory file with punched pages stores
 * them as zero entries (its file is small) and a revert to it punches them again, while a
 * revert to the snapshot before brings their data back; and the device itself, driven through
 * PCI and its queues as Linux drives it: inflate, report, statistics, target, bad input. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/devices/devices.h"
#include "core/snapshot/snapshot.h"
#include "core/virtio/virtio_balloon.h"
#include "core/virtio/virtio_pci.h"
#include "core/vm/guestmem.h"
#include "tests/vpci_driver.h"

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

/* ---- the device, driven as Linux's driver drives it (no KVM: RAM is a .vmem, notifies take
 * the MMIO path to the I/O thread) ---- */

#define SLOT VIRTIO_BALLOON_PCI_SLOT
#define RAM (16 * MIB)
#define QSZ 8
#define RINGS 0x10000 /* queue Q's rings at RINGS + Q * 0x1000: desc, avail +0x400, used +0x800 */
#define BUF 0x20000   /* the buffer a request points at */

static struct guest_mem gm;
static struct machine m;
static struct pci_bus *bus;
static struct virtio_balloon *bal;
static uint64_t bar;
static unsigned common, isr, devcfg, notify;
static uint16_t avail_idx[4], used_seen[4];

static uint32_t cfg_read(unsigned off)
{
    return vpci_cfg_read(&m, SLOT, off);
}

static uint64_t rd(unsigned off, unsigned len)
{
    return vpci_bar_read(&m, bar + off, len);
}

static void wr(unsigned off, unsigned len, uint64_t v)
{
    vpci_bar_write(&m, bar + off, len, v);
}

static unsigned cap_offset(unsigned type)
{
    int o = vpci_cap_offset(&m, SLOT, type);
    ck_assert_msg(o >= 0, "no virtio capability of type %u", type);
    return (unsigned)o;
}

/* Linux's probe: features (statistics, deflate on OOM, reporting; VERSION_1), four queues. */
static void driver_init(void)
{
    memset(gm.host + RINGS, 0, 4 * 0x1000);
    uint8_t status = vpci_driver_probe(&m, bar + common, 1u << 1 | 1u << 2 | 1u << 5, 4, QSZ, RINGS);
    ck_assert_uint_eq(status & 8, 8);
    for (unsigned q = 0; q < 4; q++)
        avail_idx[q] = used_seen[q] = 0;
}

static void device_setup(void)
{
    char err[256];
    make_dir();
    ck_assert_msg(guest_mem_open(&gm, RAM, MEM_BACKEND_FILE, vmem, err, sizeof(err)) == 0, "%s",
                  err);
    memset(&m, 0, sizeof(m));
    m.mem = &gm;
    m.vm_fd = -1;
    pthread_mutex_init(&m.lock, NULL);
    iobus_init(&m.pio, "port");
    iobus_init(&m.mmio, "mmio");
    bus = pci_create(&m);
    bal = virtio_balloon_create(&m, bus, SLOT, 0, true);
    ck_assert_ptr_nonnull(bal);
    ck_assert_uint_eq(cfg_read(0), 0x10451af4); /* virtio 1.x balloon */
    bar = (cfg_read(0x10) & ~0xfu) | (uint64_t)cfg_read(0x14) << 32;
    common = cap_offset(1);
    notify = cap_offset(2);
    isr = cap_offset(3);
    devcfg = cap_offset(4);
    driver_init();
}

static void device_teardown(void)
{
    virtio_balloon_destroy(bal);
    pci_destroy(bus);
    iobus_destroy(&m.pio);
    iobus_destroy(&m.mmio);
    guest_mem_close(&gm);
    remove_dir();
}

/* One buffer of LEN bytes at BUF on queue Q (WRITABLE: device-writable); true if used within
 * WAIT_MS. */
static bool submit(unsigned q, uint32_t len, bool writable, int wait_ms)
{
    uint8_t *ring = gm.host + RINGS + q * 0x1000;
    uint64_t addr = BUF;
    uint16_t flags = writable ? 2 : 0, next = 0, head = 0;
    memcpy(ring, &addr, 8);
    memcpy(ring + 8, &len, 4);
    memcpy(ring + 12, &flags, 2);
    memcpy(ring + 14, &next, 2);
    memcpy(ring + 0x400 + 4 + 2 * (avail_idx[q] % QSZ), &head, 2);
    avail_idx[q]++;
    __atomic_store_n((uint16_t *)(ring + 0x400 + 2), avail_idx[q], __ATOMIC_RELEASE);
    wr(notify + 4 * q, 2, q);
    for (int i = 0; i < wait_ms * 10; i++, usleep(100))
        if (__atomic_load_n((uint16_t *)(ring + 0x800 + 2), __ATOMIC_ACQUIRE) != used_seen[q]) {
            used_seen[q]++;
            return true;
        }
    return false;
}

static json_int_t status_field(const char *key)
{
    json_t *j = virtio_balloon_status_json(bal, 0);
    json_int_t v = json_integer_value(json_object_get(j, key));
    json_decref(j);
    return v;
}

START_TEST(inflated_pages_leave_the_memory_file)
{
    memset(gm.host + 4 * MIB, 0x5a, 2 * MIB); /* the guest used 2 MiB */
    uint64_t before = allocated(gm.fd);
    uint32_t pfns[514];
    for (unsigned i = 0; i < 512; i++)
        pfns[i] = (uint32_t)(4 * MIB / 4096 + 511 - i); /* given backwards, as they come */
    pfns[512] = (uint32_t)(RAM / 4096);                 /* just past the end of RAM */
    pfns[513] = 0xffffffffu;
    memcpy(gm.host + BUF, pfns, sizeof(pfns));
    ck_assert(submit(0, sizeof(pfns), false, 2000));
    ck_assert_uint_le(allocated(gm.fd), before - 2 * MIB + 64 * 1024);
    ck_assert(all_bytes(gm.host + 4 * MIB, 2 * MIB, 0));
    ck_assert_int_eq(status_field("inflated_pages"), 512);
    ck_assert_int_eq(status_field("bad_pfns"), 2); /* skipped: the device is not broken */
    ck_assert_int_eq(status_field("given_back_bytes"), 2 * MIB);
    ck_assert_uint_eq(rd(common + 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET, 0);
    memcpy(gm.host + BUF, pfns, 8);
    ck_assert(submit(1, 8, false, 2000)); /* deflate: nothing to do but count */
    ck_assert_int_eq(status_field("deflated_pages"), 2);
}
END_TEST

START_TEST(reported_ranges_leave_the_memory_file)
{
    memset(gm.host + 8 * MIB, 0x77, 2 * MIB);
    uint64_t before = allocated(gm.fd);
    uint32_t len = 2 * MIB;
    uint8_t *ring = gm.host + RINGS + 3 * 0x1000;
    uint64_t addr = 8 * MIB;
    uint16_t flags = 2, next = 0, head = 0;
    memcpy(ring, &addr, 8); /* the free range itself is the (device-writable) buffer */
    memcpy(ring + 8, &len, 4);
    memcpy(ring + 12, &flags, 2);
    memcpy(ring + 14, &next, 2);
    memcpy(ring + 0x400 + 4, &head, 2);
    __atomic_store_n((uint16_t *)(ring + 0x400 + 2), (uint16_t)1, __ATOMIC_RELEASE);
    wr(notify + 12, 2, 3);
    for (int i = 0;
         i < 20000 && __atomic_load_n((uint16_t *)(ring + 0x800 + 2), __ATOMIC_ACQUIRE) != 1; i++)
        usleep(100);
    ck_assert_uint_eq(__atomic_load_n((uint16_t *)(ring + 0x800 + 2), __ATOMIC_ACQUIRE), 1);
    ck_assert_uint_le(allocated(gm.fd), before - 2 * MIB + 64 * 1024);
    ck_assert_int_eq(status_field("reported_bytes"), 2 * MIB);
}
END_TEST

START_TEST(stats_are_held_until_asked_for)
{
    uint8_t st[20];
    uint16_t tags[] = {BALLOON_S_MEMFREE, BALLOON_S_MEMTOT};
    uint64_t vals[] = {5 * MIB, 15 * MIB};
    for (int i = 0; i < 2; i++) {
        memcpy(st + 10 * i, &tags[i], 2);
        memcpy(st + 10 * i + 2, &vals[i], 8);
    }
    memcpy(gm.host + BUF, st, sizeof(st));
    ck_assert(!submit(2, sizeof(st), false, 200)); /* held, not returned */
    json_t *j = virtio_balloon_status_json(bal, 0);
    json_t *g = json_object_get(j, "guest");
    ck_assert_int_eq(json_integer_value(json_object_get(g, "free")), 5 * MIB);
    ck_assert_int_eq(json_integer_value(json_object_get(g, "total")), 15 * MIB);
    json_decref(j);
    usleep(1100 * 1000); /* older than a second: a status asks for fresh ones */
    json_decref(virtio_balloon_status_json(bal, 0));
    uint16_t used =
        __atomic_load_n((uint16_t *)(gm.host + RINGS + 2 * 0x1000 + 0x800 + 2), __ATOMIC_ACQUIRE);
    ck_assert_uint_eq(used, 1);
    memcpy(gm.host + BUF, st, 7); /* not whole entries: the device needs a reset */
    submit(2, 7, false, 200);
    for (int i = 0; i < 2000 && !(rd(common + 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET); i++)
        usleep(1000);
    ck_assert_uint_eq(rd(common + 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET, VIRTIO_STATUS_NEEDS_RESET);
    j = virtio_balloon_status_json(bal, 0);
    ck_assert_ptr_nonnull(json_object_get(j, "broken"));
    json_decref(j);
    driver_init(); /* a reset brings it back */
    ck_assert_uint_eq(rd(common + 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET, 0);
}
END_TEST

START_TEST(target_reaches_the_driver)
{
    rd(isr, 1);
    ck_assert_uint_eq(rd(devcfg, 4), 0);
    virtio_balloon_set_target(bal, 4 * MIB + 100);
    ck_assert_uint_eq(rd(devcfg, 4), 1024); /* num_pages */
    ck_assert_uint_eq(rd(isr, 1) & 2, 2);   /* a configuration change interrupt */
    wr(devcfg + 4, 4, 1024);                /* the driver says what it holds */
    ck_assert_int_eq(status_field("actual"), 4 * MIB);
    virtio_balloon_set_target(bal, 1ull << 40); /* more than RAM: all of it */
    ck_assert_uint_eq(rd(devcfg, 4), RAM / 4096);
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
    TCase *dev = tcase_create("device");
    tcase_set_timeout(dev, 60);
    tcase_add_checked_fixture(dev, device_setup, device_teardown);
    tcase_add_test(dev, inflated_pages_leave_the_memory_file);
    tcase_add_test(dev, reported_ranges_leave_the_memory_file);
    tcase_add_test(dev, stats_are_held_until_asked_for);
    tcase_add_test(dev, target_reaches_the_driver);
    suite_add_tcase(s, dev);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
