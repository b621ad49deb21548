/* virtio-pci + virtio-blk without KVM: a machine whose RAM is a buffer, the device driven the
 * way a guest driver would through PCI config ports and BAR 0 MMIO, requests put in a split
 * queue in that RAM. Notifies take the MMIO fallback path (no VM fd, so no ioeventfd); the
 * I/O thread serves them. Checks feature negotiation, every request type against the image
 * file, dirty marking, malformed chains (NEEDS_RESET, recovery by reset), quiesce, and the
 * transport state surviving save/load. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/devices/devices.h"
#include "core/storage/disk.h"
#include "core/virtio/virtio_blk.h"
#include "core/virtio/virtio_pci.h"
#include "tests/vpci_driver.h"

#define RAM_SIZE (16u << 20)
#define DISK_SIZE (4u << 20)
#define QSZ 8
#define DESC 0x10000
#define AVAIL 0x11000
#define USED 0x12000
#define HDR 0x20000
#define DATA 0x30000
#define STATUS 0x50000
#define SLOT VIRTIO_BLK_PCI_SLOT

static struct guest_mem gm;
static uint8_t *ram;
static struct machine m;
static struct pci_bus *bus;
static struct virtio_blk *blk;
static uint64_t bar;
static char image[] = "/tmp/vmws-vblk-XXXXXX";
static uint16_t avail_idx, used_seen;

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

/* Offset in BAR 0 of the capability of TYPE, from the vendor capability list. */
static unsigned cap_offset(unsigned type)
{
    int o = vpci_cap_offset(&m, SLOT, type);
    ck_assert_msg(o >= 0, "no virtio capability of type %u", type);
    return (unsigned)o;
}

static unsigned common, isr, devcfg, notify;

static bool driver_init_features(uint32_t features_lo, uint32_t features_hi)
{
    wr(common + 0x14, 1, 0);
    wr(common + 0x14, 1, 1 | 2);
    wr(common + 0x08, 4, 0);
    wr(common + 0x0c, 4, features_lo);
    wr(common + 0x08, 4, 1);
    wr(common + 0x0c, 4, features_hi);
    wr(common + 0x14, 1, 1 | 2 | 8);
    if (!(rd(common + 0x14, 1) & 8))
        return false;
    memset(ram + DESC, 0, USED + 4096 - DESC); /* fresh rings, as a driver sets up */
    wr(common + 0x16, 2, 0);
    wr(common + 0x18, 2, QSZ);
    wr(common + 0x20, 4, DESC);
    wr(common + 0x24, 4, 0);
    wr(common + 0x28, 8, AVAIL);
    wr(common + 0x30, 4, USED);
    wr(common + 0x34, 4, 0);
    wr(common + 0x1c, 2, 1);
    wr(common + 0x14, 1, 1 | 2 | 4 | 8);
    avail_idx = used_seen = 0;
    return true;
}

static bool driver_init(uint32_t features_hi)
{
    return driver_init_features(1u << 9 /* FLUSH */, features_hi);
}

static void setup(void)
{
    ram = calloc(1, RAM_SIZE);
    ck_assert_int_eq(guest_mem_init_buffer(&gm, ram, RAM_SIZE), 0);
    memset(&m, 0, sizeof(m));
    m.mem = &gm;
    m.vm_fd = -1;
    pthread_mutex_init(&m.lock, NULL);
    iobus_init(&m.pio, "port");
    iobus_init(&m.mmio, "mmio");
    bus = pci_create(&m);
    ck_assert_ptr_nonnull(bus);
    strcpy(image, "/tmp/vmws-vblk-XXXXXX");
    int fd = mkstemp(image);
    ck_assert_int_ge(fd, 0);
    close(fd);
    unlink(image);
    ck_assert_int_eq(disk_create_raw(image, DISK_SIZE), 0);
    char err[256];
    blk = virtio_blk_create(&m, bus, SLOT, image, "raw", image, err, sizeof(err));
    ck_assert_msg(blk != NULL, "%s", err);
    ck_assert_uint_eq(cfg_read(0), 0x10421af4);
    bar = (cfg_read(0x10) & ~0xfu) | (uint64_t)cfg_read(0x14) << 32;
    ck_assert_uint_ne(bar, 0);
    common = cap_offset(1);
    notify = cap_offset(2);
    isr = cap_offset(3);
    devcfg = cap_offset(4);
    ck_assert(driver_init(1));
}

static void teardown(void)
{
    virtio_blk_destroy(blk);
    pci_destroy(bus);
    iobus_destroy(&m.pio);
    iobus_destroy(&m.mmio);
    guest_mem_close(&gm);
    free(ram);
    unlink(image);
}

static void put_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    uint8_t *d = ram + DESC + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

static uint16_t used_idx(void)
{
    return __atomic_load_n((uint16_t *)(ram + USED + 2), __ATOMIC_ACQUIRE);
}

/* Makes chain HEAD available and notifies; true if used within WAIT_MS. */
static bool kick(uint16_t head, int wait_ms)
{
    memcpy(ram + AVAIL + 4 + 2 * (avail_idx % QSZ), &head, 2);
    avail_idx++;
    __atomic_store_n((uint16_t *)(ram + AVAIL + 2), avail_idx, __ATOMIC_RELEASE);
    wr(notify, 2, 0);
    for (int i = 0; i < wait_ms * 10; i++) {
        if (used_idx() != used_seen) {
            used_seen++;
            return true;
        }
        usleep(100);
    }
    return false;
}

/* A three-descriptor request; returns the status byte (0xee if not completed). */
static uint8_t request(uint32_t type, uint64_t sector, uint32_t len, bool data_in)
{
    memcpy(ram + HDR, &type, 4);
    memset(ram + HDR + 4, 0, 4);
    memcpy(ram + HDR + 8, &sector, 8);
    ram[STATUS] = 0xee;
    if (len) {
        put_desc(0, HDR, 16, 1, 1);
        put_desc(1, DATA, len, (uint16_t)(1 | (data_in ? 2 : 0)), 2);
    } else {
        put_desc(0, HDR, 16, 1, 2);
    }
    put_desc(2, STATUS, 1, 2, 0);
    if (!kick(0, 2000))
        return 0xee;
    return ram[STATUS];
}

static uint8_t device_status(void)
{
    return (uint8_t)rd(common + 0x14, 1);
}

START_TEST(negotiation_and_config)
{
    ck_assert(!driver_init(0)); /* without VERSION_1: FEATURES_OK does not stick */
    ck_assert(driver_init(1));
    ck_assert_uint_eq(rd(devcfg, 4) | rd(devcfg + 4, 4) << 32, DISK_SIZE / 512);
    ck_assert_uint_eq(rd(devcfg + 12, 4), VIRTQ_MAX_SIZE - 2); /* seg_max */
    ck_assert_uint_eq(rd(devcfg + 20, 4), 512);                /* blk_size */
    ck_assert_uint_ne(rd(devcfg + 36, 4), 0);                  /* max_discard_sectors */
    wr(common + 0x00, 4, 1);
    ck_assert_uint_eq(rd(common + 0x04, 4) & 1, 1); /* VERSION_1 offered */
    ck_assert_uint_eq(rd(common + 0x12, 2), 1);     /* one queue */
    wr(common + 0x16, 2, 0);
    ck_assert_uint_eq(rd(common + 0x28, 8), AVAIL); /* queue addresses read back */
    ck_assert_uint_eq(rd(common + 0x20, 4), DESC);
    ck_assert_uint_eq(rd(common + 0x24, 4), 0);
    ck_assert_uint_eq(rd(common + 0x18, 2), QSZ);
    wr(common + 0x14, 1, 0); /* after a reset the upper halves are writable and read back */
    wr(common + 0x16, 2, 0);
    wr(common + 0x24, 4, 7);
    ck_assert_uint_eq(rd(common + 0x24, 4), 7);
    ck_assert_uint_eq(rd(common + 0x20, 8), 7ull << 32);
}
END_TEST

START_TEST(requests_reach_the_image)
{
    for (unsigned i = 0; i < 4096; i++)
        ram[DATA + i] = (uint8_t)(i * 7 + 1);
    ck_assert_uint_eq(request(1, 8, 4096, false), 0); /* write 8 sectors at sector 8 */
    ck_assert_uint_eq(request(4, 0, 0, false), 0);    /* flush */
    FILE *f = fopen(image, "rb");
    uint8_t back[4096];
    fseek(f, 8 * 512, SEEK_SET);
    ck_assert_uint_eq(fread(back, 1, sizeof(back), f), sizeof(back));
    fclose(f);
    ck_assert(memcmp(back, ram + DATA, 4096) == 0);

    memset(ram + DATA, 0, 4096);
    uint64_t dirty_before = guest_mem_vmm_dirty_pages(&gm);
    ck_assert_uint_eq(request(0, 8, 4096, true), 0); /* read it back */
    ck_assert(memcmp(back, ram + DATA, 4096) == 0);
    ck_assert_uint_gt(guest_mem_vmm_dirty_pages(&gm), dirty_before);
    uint32_t used_len;
    memcpy(&used_len, ram + USED + 4 + 8 * ((used_seen - 1) % QSZ) + 4, 4);
    ck_assert_uint_eq(used_len, 4096 + 1);

    ck_assert_uint_eq(request(8, 0, 20, true), 0); /* get-id */
    ck_assert(memcmp(ram + DATA, "vmws-", 5) == 0);

    uint8_t seg[16] = {0};
    uint64_t s = 8;
    uint32_t n = 4;
    memcpy(seg, &s, 8);
    memcpy(seg + 8, &n, 4);
    memcpy(ram + DATA, seg, 16);
    ck_assert_uint_eq(request(13, 0, 16, false), 0); /* write-zeroes sectors 8-11 */
    ck_assert_uint_eq(request(0, 8, 4096, true), 0);
    for (unsigned i = 0; i < 2048; i++)
        ck_assert_uint_eq(ram[DATA + i], 0);
    ck_assert(memcmp(ram + DATA + 2048, back + 2048, 2048) == 0);
    memcpy(ram + DATA, seg, 16);
    ck_assert_uint_eq(request(11, 0, 16, false), 0); /* discard */

    ck_assert_uint_eq(request(0, DISK_SIZE / 512 - 1, 1024, true), 1); /* past the end */
    ck_assert_uint_eq(request(0, 0, 100, true), 1);                    /* not whole sectors */
    ck_assert_uint_eq(request(99, 0, 0, false), 2);                    /* unknown type */
    ck_assert_uint_eq(device_status() & VIRTIO_STATUS_NEEDS_RESET, 0);
    ck_assert_uint_eq(rd(isr, 1) & 1, 1); /* used buffer interrupt, cleared by the read */
    ck_assert_uint_eq(rd(isr, 1), 0);
}
END_TEST

static void expect_broken(const char *what)
{
    for (int i = 0; i < 2000 && !(device_status() & VIRTIO_STATUS_NEEDS_RESET); i++)
        usleep(1000);
    ck_assert_msg(device_status() & VIRTIO_STATUS_NEEDS_RESET, "%s: no NEEDS_RESET", what);
    ck_assert_uint_eq(rd(isr, 1) & 2, 2); /* configuration change interrupt */
    ck_assert(driver_init(1));            /* a reset brings it back */
    ck_assert_uint_eq(device_status() & VIRTIO_STATUS_NEEDS_RESET, 0);
    ck_assert_uint_eq(request(4, 0, 0, false), 0);
}

START_TEST(malformed_chains_need_reset)
{
    put_desc(0, HDR, 16, 1, 1); /* loop 1 -> 2 -> 1 */
    put_desc(1, DATA, 512, 3, 2);
    put_desc(2, STATUS, 1, 3, 1);
    ck_assert(!kick(0, 200));
    expect_broken("loop");
    put_desc(0, HDR, 16, 1, 1);
    put_desc(1, RAM_SIZE - 100, 512, 2, 0); /* runs past the end of RAM */
    ck_assert(!kick(0, 200));
    expect_broken("past RAM");
    put_desc(0, HDR, 16, 1, QSZ); /* next outside the table */
    ck_assert(!kick(0, 200));
    expect_broken("index");
    put_desc(0, HDR, 16, 4, 0); /* indirect: not offered */
    ck_assert(!kick(0, 200));
    expect_broken("indirect");
    put_desc(0, HDR, 8, 2, 0); /* no header */
    ck_assert(!kick(0, 200));
    expect_broken("short header");
    uint16_t bad = QSZ + 3; /* head outside the table */
    ck_assert(!kick(bad, 200));
    expect_broken("head");
    ram[HDR] = 4; /* a valid flush, but the available index jumps a whole queue ahead */
    put_desc(0, HDR, 16, 1, 2);
    put_desc(2, STATUS, 1, 2, 0);
    avail_idx += QSZ;
    ck_assert(!kick(0, 200));
    expect_broken("available index");
    wr(common + 0x14, 1, 0); /* rings outside RAM at enable */
    wr(common + 0x14, 1, 1 | 2);
    wr(common + 0x08, 4, 1);
    wr(common + 0x0c, 4, 1);
    wr(common + 0x14, 1, 1 | 2 | 8);
    wr(common + 0x20, 4, RAM_SIZE + 4096);
    wr(common + 0x1c, 2, 1);
    expect_broken("rings");
}
END_TEST

/* A guest that breaks the device and resets it over and over makes vmm.log (the VMM's stderr)
 * grow by a bounded number of lines: the first few in full, then only at powers of two. */
START_TEST(a_guest_cannot_flood_the_log)
{
    char path[] = "/tmp/vmws-test-log.XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    for (int i = 0; i < 1000; i++) {
        uint16_t bad = QSZ + 3; /* head outside the table */
        kick(bad, 0);
        for (int k = 0; k < 20000 && !(device_status() & VIRTIO_STATUS_NEEDS_RESET); k++)
            usleep(100);
        ck_assert(driver_init(1));
    }
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    FILE *f = fdopen(fd, "r");
    rewind(f);
    char line[1024], last[1024] = "";
    int lines = 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, "device needs reset")) {
            lines++;
            snprintf(last, sizeof(last), "%s", line);
        }
    fclose(f);
    unlink(path);
    /* 1000 breaks: the first 5, then the 8th, 16th, ... 512th: 5 + 7 lines. */
    ck_assert_msg(lines == 12, "1000 breaks logged %d lines", lines);
    ck_assert_msg(strstr(last, "[512 times so far"), "the last line: %s", last);
}
END_TEST

#define TABLE 0x60000

static void put_table_desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    uint8_t *d = ram + TABLE + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

/* The broken device's reason contains WHY; then a reset with indirect descriptors again. */
static void expect_broken_because(const char *what, const char *why)
{
    for (int i = 0; i < 2000 && !(device_status() & VIRTIO_STATUS_NEEDS_RESET); i++)
        usleep(1000);
    json_t *j = virtio_blk_status_json(blk);
    const char *broken = json_string_value(json_object_get(j, "broken"));
    ck_assert_msg(broken && strstr(broken, why), "%s: broken '%s', expected '%s'", what,
                  broken ? broken : "(not broken)", why);
    json_decref(j);
    ck_assert(driver_init_features(1u << 9 | 1u << VIRTIO_F_INDIRECT_DESC, 1));
}

/* VIRTIO_F_INDIRECT_DESC, as Linux uses it: a request whose descriptors sit in a table the one
 * ring descriptor points at; every way such a table can be wrong breaks the device, not the
 * VMM; without the feature negotiated an indirect descriptor is malformed. */
START_TEST(indirect_descriptors)
{
    wr(common + 0x00, 4, 0);
    ck_assert_uint_eq(rd(common + 0x04, 4) >> VIRTIO_F_INDIRECT_DESC & 1, 1); /* offered */
    ck_assert(driver_init_features(1u << 9 | 1u << VIRTIO_F_INDIRECT_DESC, 1));
    for (unsigned i = 0; i < 2048; i++)
        ram[DATA + i] = (uint8_t)(i * 3 + 5);
    ck_assert_uint_eq(request(1, 16, 2048, false), 0); /* written the direct way */
    memset(ram + DATA, 0, 2048);
    uint32_t type = 0;
    uint64_t sector = 16;
    memcpy(ram + HDR, &type, 4);
    memcpy(ram + HDR + 8, &sector, 8);
    ram[STATUS] = 0xee;
    put_table_desc(0, HDR, 16, 1, 1);
    put_table_desc(1, DATA, 1024, 1 | 2, 2); /* the data in two pieces */
    put_table_desc(2, DATA + 1024, 1024, 1 | 2, 3);
    put_table_desc(3, STATUS, 1, 2, 0);
    put_desc(0, TABLE, 64, 4, 0);
    ck_assert(kick(0, 2000));
    ck_assert_uint_eq(ram[STATUS], 0);
    for (unsigned i = 0; i < 2048; i++)
        ck_assert_uint_eq(ram[DATA + i], (uint8_t)(i * 3 + 5));

    put_desc(0, TABLE, 64, 4 | 1, 1); /* INDIRECT and NEXT */
    ck_assert(!kick(0, 200));
    expect_broken_because("indirect+next", "with NEXT set too");
    put_desc(0, TABLE, 40, 4, 0); /* not whole descriptors */
    ck_assert(!kick(0, 200));
    expect_broken_because("length", "not 1-128 whole descriptors");
    put_desc(0, RAM_SIZE - 32, 64, 4, 0); /* the table runs past RAM */
    ck_assert(!kick(0, 200));
    expect_broken_because("table past RAM", "table is not guest RAM");
    put_table_desc(1, TABLE, 64, 4, 0); /* an indirect descriptor inside the table */
    put_desc(0, TABLE, 64, 4, 0);
    ck_assert(!kick(0, 200));
    expect_broken_because("nested", "inside an indirect table");
    put_table_desc(1, DATA, 512, 1 | 2, 2); /* 1 -> 2 -> 1 ... inside the table */
    put_table_desc(2, DATA, 512, 1 | 2, 1);
    put_desc(0, TABLE, 64, 4, 0);
    ck_assert(!kick(0, 200));
    expect_broken_because("loop", "longer than the queue");
    put_table_desc(1, DATA, 512, 1 | 2, 9); /* next outside the table */
    put_desc(0, TABLE, 64, 4, 0);
    ck_assert(!kick(0, 200));
    expect_broken_because("index", "outside the indirect table");
    ck_assert(driver_init(1)); /* not negotiated */
    put_desc(0, TABLE, 64, 4, 0);
    ck_assert(!kick(0, 200));
    expect_broken_because("not negotiated", "not negotiated");
}
END_TEST

/* virtio_blk_serve_pending: a request made available without a notify is served on the
 * caller's thread, done when the call returns (what the fuzz harness relies on). */
START_TEST(serve_pending_serves_without_a_notify)
{
    for (unsigned i = 0; i < 512; i++)
        ram[DATA + i] = (uint8_t)(i ^ 0x5a);
    uint32_t type = 1; /* write sector 3 */
    uint64_t sector = 3;
    memcpy(ram + HDR, &type, 4);
    memset(ram + HDR + 4, 0, 4);
    memcpy(ram + HDR + 8, &sector, 8);
    ram[STATUS] = 0xee;
    put_desc(0, HDR, 16, 1, 1);
    put_desc(1, DATA, 512, 1, 2);
    put_desc(2, STATUS, 1, 2, 0);
    memset(ram + AVAIL + 4 + 2 * (avail_idx % QSZ), 0, 2);
    avail_idx++;
    __atomic_store_n((uint16_t *)(ram + AVAIL + 2), avail_idx, __ATOMIC_RELEASE);
    virtio_blk_serve_pending(blk);
    ck_assert_uint_eq(used_idx(), (uint16_t)(used_seen + 1));
    used_seen++;
    ck_assert_uint_eq(ram[STATUS], 0);
    uint8_t back[512];
    FILE *f = fopen(image, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, 3 * 512, SEEK_SET), 0);
    ck_assert_uint_eq(fread(back, 1, sizeof(back), f), sizeof(back));
    fclose(f);
    ck_assert(memcmp(back, ram + DATA, 512) == 0);
    virtio_blk_serve_pending(blk); /* nothing more available: nothing happens */
    ck_assert_uint_eq(used_idx(), used_seen);
}
END_TEST

START_TEST(quiesce_holds_requests_until_resume)
{
    char err[256];
    ck_assert_int_eq(virtio_blk_quiesce(blk, 1000, err, sizeof(err)), 0);
    put_desc(0, HDR, 16, 1, 2);
    put_desc(2, STATUS, 1, 2, 0);
    memset(ram + HDR, 0, 16);
    ram[HDR] = 4;             /* flush */
    ck_assert(!kick(0, 200)); /* quiet while quiesced */
    virtio_blk_resume(blk);
    for (int i = 0; i < 2000 && used_idx() == used_seen; i++)
        usleep(1000);
    ck_assert_uint_eq(used_idx(), (uint16_t)(used_seen + 1));
    used_seen++;
}
END_TEST

START_TEST(state_survives_save_and_load)
{
    ck_assert_uint_eq(request(4, 0, 0, false), 0);
    ck_assert_uint_eq(request(4, 0, 0, false), 0);
    struct state_writer w;
    state_writer_init(&w);
    ck_assert_int_eq(virtio_blk_save(blk, &w), 0);
    uint8_t *buf;
    size_t len;
    ck_assert_int_eq(state_writer_finish(&w, &buf, &len), 0);
    state_writer_free(&w);
    wr(common + 0x14, 1, 0); /* the device forgets everything */
    ck_assert_uint_eq(device_status(), 0);
    struct state_reader r;
    char err[256];
    ck_assert_int_eq(state_reader_parse(&r, buf, len, err, sizeof(err)), 0);
    ck_assert_int_eq(virtio_blk_load(blk, &r), 0);
    state_reader_free(&r);
    ck_assert_uint_eq(device_status(), 1 | 2 | 4 | 8);
    ck_assert_uint_eq(request(4, 0, 0, false), 0); /* carries on from the saved indices */
    ck_assert_uint_eq(used_idx(), 3);
}
END_TEST

/* Config-space access of LEN bytes at OFF (within one dword), as a guest does through 0xCFC+n. */
static uint32_t cfg_access(unsigned off, unsigned len, uint32_t v, bool is_write)
{
    uint8_t d[4];
    io_data_put(d, 4, 0x80000000u | SLOT << 11 | (off & 0xfc));
    iobus_access(&m.pio, 0xcf8, d, 4, true);
    io_data_put(d, len, v);
    iobus_access(&m.pio, 0xcfc + (off & 3), d, len, is_write);
    return (uint32_t)io_data_get(d, len);
}

/* Config-space address of the virtio capability of TYPE, 0 if there is none. */
static unsigned cap_pointer(unsigned type)
{
    unsigned n = 0;
    for (unsigned p = cfg_read(0x34) & 0xff; p && n < 48; p = (cfg_read(p) >> 8) & 0xff, n++)
        if ((cfg_read(p) & 0xff) == 9 && cfg_read(p) >> 24 == type)
            return p;
    return 0;
}

/* Sets the PCI_CFG capability at CAP to LEN bytes at OFF in BAR, then accesses pci_cfg_data. */
static void window_aim(unsigned cap, unsigned bar_index, uint32_t off, uint32_t len)
{
    cfg_access(cap + 4, 1, bar_index, true);
    cfg_access(cap + 8, 4, off, true);
    cfg_access(cap + 12, 4, len, true);
}

static uint32_t window_read(unsigned cap, uint32_t off, uint32_t len)
{
    window_aim(cap, 0, off, len);
    return cfg_access(cap + 16, 4, 0, false);
}

static void window_write(unsigned cap, uint32_t off, uint32_t len, uint32_t v)
{
    window_aim(cap, 0, off, len);
    cfg_access(cap + 16, len, v, true);
}

/* VIRTIO_PCI_CAP_PCI_CFG: BAR 0 through config space reads and writes what MMIO does; a bad
 * BAR, length or offset is ignored and reads zero. */
START_TEST(pci_cfg_window_reaches_bar_0)
{
    unsigned cap = cap_pointer(5);
    ck_assert_msg(cap != 0, "no VIRTIO_PCI_CAP_PCI_CFG capability");
    ck_assert_uint_ge((cfg_read(cap) >> 16) & 0xff, 20); /* cap_len covers pci_cfg_data */
    window_aim(cap, 0, common + 0x04, 4);
    ck_assert_uint_eq(cfg_read(cap + 8), common + 0x04); /* the fields read back */
    ck_assert_uint_eq(cfg_read(cap + 12), 4);

    for (uint32_t sel = 0; sel < 2; sel++) { /* device_feature, selected through it too */
        window_write(cap, common + 0x00, 4, sel);
        ck_assert_uint_eq(rd(common + 0x00, 4), sel);
        ck_assert_uint_eq(window_read(cap, common + 0x04, 4), rd(common + 0x04, 4));
    }
    ck_assert_uint_eq(window_read(cap, common + 0x04, 4) & 1, 1); /* VERSION_1 (bit 32) */
    ck_assert_uint_eq(window_read(cap, common + 0x12, 2), 1);     /* num_queues */
    ck_assert_uint_eq(window_read(cap, common + 0x12, 2), rd(common + 0x12, 2));
    ck_assert_uint_eq(window_read(cap, devcfg, 4), DISK_SIZE / 512); /* capacity */
    window_aim(cap, 0, common + 0x04, 4); /* one byte of the window: that byte of the dword */
    ck_assert_uint_eq(cfg_access(cap + 17, 1, 0, false), (rd(common + 0x04, 4) >> 8) & 0xff);

    ck_assert_uint_eq(window_read(cap, common + 0x14, 1), 1 | 2 | 4 | 8); /* device_status */
    window_write(cap, common + 0x14, 1, 0);                               /* reset */
    ck_assert_uint_eq(device_status(), 0);
    window_write(cap, common + 0x14, 1, 1 | 2);
    ck_assert_uint_eq(device_status(), 1 | 2);
    ck_assert_uint_eq(window_read(cap, common + 0x14, 1), 1 | 2);

    const struct {
        uint32_t bar, off, len;
    } bad[] = {
        {1, common + 0x14, 1},           /* not BAR 0 */
        {0xff, common + 0x14, 1},        /* no such BAR */
        {0, common + 0x14, 0},           /* lengths other than 1, 2 and 4 */
        {0, common + 0x14, 3},           /* ... */
        {0, common + 0x14, 8},           /* ... (more than the window holds) */
        {0, common + 0x14, 0xffffffffu}, /* ... */
        {0, devcfg + 1, 2},              /* unaligned (capacity's bytes 1-2 are not 0) */
        {0, 0x4000, 4},                  /* past the BAR */
        {0, 0xfffffffcu, 4},             /* ... far past */
    };
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        window_aim(cap, bad[i].bar, bad[i].off, bad[i].len);
        ck_assert_msg(cfg_access(cap + 16, 4, 0, false) == 0, "bad access %u read non-zero", i);
        cfg_access(cap + 16, 4, 0, true); /* would reset the device */
        ck_assert_msg(device_status() == (1 | 2), "bad access %u reached the BAR", i);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("virtio_blk_unit");
    TCase *t = tcase_create("device");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, negotiation_and_config);
    tcase_add_test(t, requests_reach_the_image);
    tcase_add_test(t, malformed_chains_need_reset);
    tcase_add_test(t, a_guest_cannot_flood_the_log);
    tcase_add_test(t, indirect_descriptors);
    tcase_add_test(t, serve_pending_serves_without_a_notify);
    tcase_add_test(t, quiesce_holds_requests_until_resume);
    tcase_add_test(t, state_survives_save_and_load);
    tcase_add_test(t, pci_cfg_window_reaches_bar_0);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
