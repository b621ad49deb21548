/* virtio-blk driver of the built-in guest, all at CPL 3: finds the modern virtio-pci device
 * (1af4:1042) on bus 0, maps its capability structures (user/virtio.c), negotiates VERSION_1 +
 * FLUSH (+ SIZE_MAX/SEG_MAX when offered, so a request never exceeds what the device promises
 * to take) and runs one 16-entry split queue in static memory. One request
 * at a time: header, data (one segment) through a 64 KiB bounce buffer, status byte. After
 * notifying, it spins briefly on the used index, then sleeps in SYS_WAIT_SOUND, which counts
 * PCI INTx (IRQ 10 and 11) in a four-instruction kernel handler, and reads the ISR to lower
 * the line; on any other line (the kernel keeps it masked) it polls the used index instead.
 * The `disk` shell command (info, stress, test-garbage, bench) lives at the end. */
#include "assets/guest/user/disk.h"
#include "assets/guest/user/sound.h"
#include "assets/guest/user/virtio.h"

#define F_BLK_SIZE_MAX (1u << 1)
#define F_BLK_SEG_MAX (1u << 2)
#define F_BLK_FLUSH (1u << 9)

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8

#define QSIZE 16
struct ring {
    struct virtq_desc desc[QSIZE];
    uint16_t avail_flags, avail_idx, avail_ring[QSIZE], used_event;
    uint8_t pad[4096 - 16 * QSIZE - 6 - 2 * QSIZE];
    uint16_t used_flags, used_idx;
    struct {
        uint32_t id, len;
    } used_ring[QSIZE];
} __attribute__((aligned(4096)));

static struct ring ring;
static uint8_t bounce[DISK_MAX_IO] __attribute__((aligned(4096)));
static struct {
    uint32_t type, reserved;
    uint64_t sector;
} req_hdr __attribute__((aligned(16)));
static volatile uint8_t req_status;

static struct {
    bool probed, found, ready, irq_usable;
    unsigned slot, irq;
    struct vpci pci;
    uint64_t common, notify, isr, devcfg; /* pci's, for short */
    uint16_t last_used, qsize;
    uint64_t sectors;
    uint32_t max_io; /* bytes per request: the bounce buffer, or less if size_max says so */
    uint64_t requests, irq_waits;
} dev;

static bool device_init(void)
{
    uint32_t accepted;
    if (!vpci_negotiate(&dev.pci, F_BLK_FLUSH | F_BLK_SIZE_MAX | F_BLK_SEG_MAX, &accepted, "disk"))
        return false;
    memset(&ring, 0, sizeof(ring));
    dev.notify =
        vpci_queue(&dev.pci, 0, QSIZE, &dev.qsize, ring.desc, &ring.avail_flags, &ring.used_flags);
    if (!dev.notify || dev.qsize < 4) {
        printf("disk: queue 0 has only %u entries\n", dev.qsize);
        return false;
    }
    vpci_driver_ok(&dev.pci);
    dev.last_used = 0;
    dev.sectors = (uint64_t)mmio_read32(dev.devcfg) | (uint64_t)mmio_read32(dev.devcfg + 4) << 32;
    /* Our data is always one segment, so seg_max (>= 1 by definition) never limits us; a
     * size_max below the bounce buffer splits reads and writes into smaller requests. */
    dev.max_io = DISK_MAX_IO;
    if (accepted & F_BLK_SIZE_MAX) {
        uint32_t size_max = mmio_read32(dev.devcfg + 8);
        if (size_max < DISK_SECTOR) {
            printf("disk: the device's size_max (%u bytes) is below one sector\n", size_max);
            return false;
        }
        if (size_max < dev.max_io)
            dev.max_io = size_max / DISK_SECTOR * DISK_SECTOR;
    }
    (void)vpci_rd8(dev.isr);
    return true;
}

bool vblk_ready(void)
{
    if (!dev.probed) {
        dev.probed = true;
        dev.found = pci_find(0x1af4, 0x1042, &dev.slot);
        if (dev.found) {
            pci_write32(dev.slot, 0x04, pci_read32(dev.slot, 0x04) | 0x06); /* memory, master */
            dev.irq_usable = vpci_intx_edge(dev.slot, &dev.irq);
            dev.found = vpci_map(dev.slot, &dev.pci);
            dev.common = dev.pci.common, dev.isr = dev.pci.isr, dev.devcfg = dev.pci.devcfg;
        }
    }
    if (!dev.found) {
        printf("disk: no virtio-blk device (give the VM one: vmws create --disk SIZE)\n");
        return false;
    }
    if (dev.ready && (vpci_rd8(dev.common + CC_STATUS) & VIRTIO_STATUS_NEEDS_RESET)) {
        printf("disk: the device needed a reset; reinitialising it\n");
        dev.ready = false;
    }
    if (!dev.ready)
        dev.ready = device_init();
    return dev.ready;
}

uint64_t vblk_sectors(void)
{
    return dev.sectors;
}

static bool used_moved(void)
{
    return *(volatile uint16_t *)&ring.used_idx != dev.last_used;
}

/* Makes descriptor HEAD available, notifies, and waits for the device to use it. Before each
 * sleep the ISR is read, which lowers INTx: a device may set the ISR after the used index
 * (QEMU does), so a line left high by a completion we saw while spinning would otherwise
 * give the next completion no edge, and the wait no wakeup. */
static int submit_and_wait(uint16_t head, const char *what)
{
    uint16_t slot = ring.avail_idx % dev.qsize;
    ring.avail_ring[slot] = head;
    vpci_barrier();
    ring.avail_idx++;
    vpci_barrier();
    vpci_wr16(dev.notify, 0);
    uint64_t tsc_us = timer_tsc_per_us();
    uint64_t start = rdtsc(), spin_end = start + 50 * tsc_us, deadline = start + 5000000 * tsc_us;
    while (!used_moved()) {
        uint64_t now = rdtsc();
        if (now < spin_end) {
            cpu_relax();
            continue;
        }
        if (now > deadline) {
            printf("disk: %s: no completion after 5 s\n", what);
            return -1;
        }
        /* Count, lower the line, then look at the used ring and the status: whatever the
         * device does after this look raises a new interrupt that ends the wait below. */
        uint32_t seen = irq_sound_count;
        (void)vpci_rd8(dev.isr); /* INTx low: the next completion is a new edge */
        if (used_moved())
            break;
        if (vpci_rd8(dev.common + CC_STATUS) & VIRTIO_STATUS_NEEDS_RESET) {
            printf("disk: %s: the device needs a reset (it found a request malformed)\n", what);
            return -1;
        }
        if (!dev.irq_usable) { /* a line the kernel keeps masked: poll */
            delay_us(20);
            continue;
        }
        dev.irq_waits++;
        sys_wait_sound(seen); /* returns at once if an interrupt came since SEEN */
    }
    vpci_barrier();
    dev.last_used++;
    dev.requests++;
    return 0;
}

/* One request: header, optional data (LEN bytes of the bounce buffer), status. */
static int request(uint32_t type, uint64_t sector, uint32_t len, const char *what)
{
    req_hdr.type = type;
    req_hdr.reserved = 0;
    req_hdr.sector = sector;
    req_status = 0xff;
    bool in = type == T_IN || type == T_GET_ID;
    unsigned n = 0;
    ring.desc[n] = (struct virtq_desc){(uintptr_t)&req_hdr, 16, VIRTQ_DESC_NEXT, (uint16_t)(n + 1)};
    n++;
    if (len) {
        ring.desc[n] = (struct virtq_desc){
            (uintptr_t)bounce, len, (uint16_t)(VIRTQ_DESC_NEXT | (in ? VIRTQ_DESC_WRITE : 0)),
            (uint16_t)(n + 1)};
        n++;
    }
    ring.desc[n] = (struct virtq_desc){(uintptr_t)&req_status, 1, VIRTQ_DESC_WRITE, 0};
    if (submit_and_wait(0, what) < 0)
        return -1;
    if (req_status != 0) {
        printf("disk: %s: device status %u (%s)\n", what, req_status,
               req_status == 1   ? "I/O error"
               : req_status == 2 ? "unsupported"
                                 : "?");
        return -1;
    }
    return 0;
}

static bool range_ok(uint64_t sector, uint32_t bytes)
{
    if (bytes > DISK_MAX_IO || bytes % DISK_SECTOR || sector > dev.sectors ||
        bytes / DISK_SECTOR > dev.sectors - sector) {
        printf("disk: %u bytes at sector %lu is outside the disk or too big\n", bytes, sector);
        return false;
    }
    return true;
}

int vblk_read(uint64_t sector, void *buf, uint32_t bytes)
{
    if (!vblk_ready() || !range_ok(sector, bytes))
        return -1;
    for (uint32_t done = 0; done < bytes; done += dev.max_io) {
        uint32_t n = bytes - done < dev.max_io ? bytes - done : dev.max_io;
        if (request(T_IN, sector + done / DISK_SECTOR, n, "read") < 0)
            return -1;
        memcpy((uint8_t *)buf + done, bounce, n);
    }
    return 0;
}

int vblk_write(uint64_t sector, const void *buf, uint32_t bytes)
{
    if (!vblk_ready() || !range_ok(sector, bytes))
        return -1;
    for (uint32_t done = 0; done < bytes; done += dev.max_io) {
        uint32_t n = bytes - done < dev.max_io ? bytes - done : dev.max_io;
        memcpy(bounce, (const uint8_t *)buf + done, n);
        if (request(T_OUT, sector + done / DISK_SECTOR, n, "write") < 0)
            return -1;
    }
    return 0;
}

int vblk_flush(void)
{
    return vblk_ready() ? request(T_FLUSH, 0, 0, "flush") : -1;
}

/* ---- disk info / stress / test-garbage ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* The stress region: 1 MiB from byte offset 1 MiB (the file store ends below it). */
#define STRESS_BASE 2048u
#define STRESS_SECTORS 2048u
static uint32_t stress_last[STRESS_SECTORS]; /* op number that last wrote each sector, 0 = none */
static uint8_t stress_buf[DISK_MAX_IO] __attribute__((aligned(4096)));

static void stress_fill(uint8_t *p, uint64_t seed, uint32_t sector, uint32_t op)
{
    uint64_t *w = (uint64_t *)p;
    for (unsigned i = 0; i < DISK_SECTOR / 8; i++)
        w[i] = mix64(seed ^ (uint64_t)sector << 32 ^ (uint64_t)op << 12 ^ i);
}

static void cmd_stress(uint64_t n, uint64_t seed)
{
    if (vblk_sectors() < STRESS_BASE + STRESS_SECTORS) {
        printf("disk stress: the disk needs at least 2 MiB\n");
        return;
    }
    memset(stress_last, 0, sizeof(stress_last));
    uint64_t rng = seed, flushes = 0;
    for (uint32_t op = 1; op <= n; op++) {
        rng = mix64(rng + op);
        uint32_t count = 1 + (uint32_t)(rng % 16);
        uint32_t first = (uint32_t)((rng >> 16) % (STRESS_SECTORS - count + 1));
        for (uint32_t s = 0; s < count; s++) {
            stress_fill(stress_buf + s * DISK_SECTOR, seed, first + s, op);
            stress_last[first + s] = op;
        }
        if (vblk_write(STRESS_BASE + first, stress_buf, count * DISK_SECTOR) < 0)
            return;
        if ((rng >> 40) % 8 == 0) {
            if (vblk_flush() < 0)
                return;
            flushes++;
        }
    }
    if (vblk_flush() < 0)
        return;
    /* Read the whole region back: each sector holds its last writer's pattern or zeros. */
    uint64_t hash = 0xcbf29ce484222325ull, bad = 0;
    uint8_t expect[DISK_SECTOR];
    for (uint32_t s = 0; s < STRESS_SECTORS; s += DISK_MAX_IO / DISK_SECTOR) {
        if (vblk_read(STRESS_BASE + s, stress_buf, DISK_MAX_IO) < 0)
            return;
        for (uint32_t k = 0; k < DISK_MAX_IO / DISK_SECTOR; k++) {
            const uint8_t *got = stress_buf + k * DISK_SECTOR;
            if (stress_last[s + k])
                stress_fill(expect, seed, s + k, stress_last[s + k]);
            else
                memset(expect, 0, sizeof(expect));
            if (memcmp(got, expect, DISK_SECTOR)) {
                if (!bad)
                    printf("disk stress: sector %u differs from what op %u wrote\n",
                           STRESS_BASE + s + k, stress_last[s + k]);
                bad++;
            }
            for (unsigned i = 0; i < DISK_SECTOR; i++)
                hash = (hash ^ got[i]) * 0x100000001b3ull;
        }
    }
    printf("disk stress: %lu writes, %lu flushes, %s, fnv1a %016lx\n", n, flushes + 1,
           bad ? "MISMATCH" : "verified", hash);
}

/* Submits one malformed chain of KIND and reports what the device did. */
static void cmd_garbage(const char *kind)
{
    if (!vblk_ready())
        return;
    req_hdr.type = T_IN;
    req_hdr.sector = 0;
    if (!strcmp(kind, "loop")) { /* 0 -> 1 -> 2 -> 1 -> 2 ... */
        ring.desc[0] = (struct virtq_desc){(uintptr_t)&req_hdr, 16, VIRTQ_DESC_NEXT, 1};
        ring.desc[1] =
            (struct virtq_desc){(uintptr_t)bounce, 512, VIRTQ_DESC_NEXT | VIRTQ_DESC_WRITE, 2};
        ring.desc[2] =
            (struct virtq_desc){(uintptr_t)&req_status, 1, VIRTQ_DESC_NEXT | VIRTQ_DESC_WRITE, 1};
    } else if (!strcmp(kind, "addr")) { /* a buffer in the PCI hole, not RAM */
        ring.desc[0] = (struct virtq_desc){(uintptr_t)&req_hdr, 16, VIRTQ_DESC_NEXT, 1};
        ring.desc[1] = (struct virtq_desc){0xfd000000ull, 4096, VIRTQ_DESC_WRITE, 0};
    } else if (!strcmp(kind, "index")) { /* next beyond the table */
        ring.desc[0] = (struct virtq_desc){(uintptr_t)&req_hdr, 16, VIRTQ_DESC_NEXT, 999};
    } else if (!strcmp(kind, "order")) { /* readable after writable */
        ring.desc[0] =
            (struct virtq_desc){(uintptr_t)&req_status, 1, VIRTQ_DESC_NEXT | VIRTQ_DESC_WRITE, 1};
        ring.desc[1] = (struct virtq_desc){(uintptr_t)&req_hdr, 16, 0, 0};
    } else if (!strcmp(kind, "nostatus")) { /* header only */
        ring.desc[0] = (struct virtq_desc){(uintptr_t)&req_hdr, 16, 0, 0};
    } else {
        printf("disk test-garbage: KIND is loop, addr, index, order or nostatus\n");
        return;
    }
    submit_and_wait(0, "test-garbage");
    uint8_t st = vpci_rd8(dev.common + CC_STATUS);
    printf("disk test-garbage %s: device status 0x%x%s\n", kind, st,
           st & VIRTIO_STATUS_NEEDS_RESET ? " (NEEDS_RESET)" : "");
}

/* ---- disk bench ---- */

/* `disk bench MODE MIB [START_MIB [SPAN_MIB]]` moves MIB MiB within [START_MIB, START_MIB +
 * SPAN_MIB) of the disk (START 4 MiB, SPAN = MIB by default; sequential modes cover it once,
 * random ones pick 4 KiB blocks in it): past the file store (sectors 0-575) and the stress
 * region (1-2 MiB), which it never touches. Write modes overwrite the region. */
#define BENCH_START_MIB 4u
#define BENCH_MAX_MIB 65536u
#define BENCH_RAND_IO 4096u
#define PM_TIMER_HZ 3579545ull
#define BENCH_CALIBRATION_US 50000u

static const char *const bench_modes[] = {"seq-write", "seq-read", "rand-write", "rand-read"};

/* TSC ticks per millisecond against the ACPI PM timer over 50 ms (timer.c's rate is rounded
 * up by 1/16 so delays never run short: fine for a delay, 6% off for a throughput). 0 if
 * the machine has no PM timer. */
static uint64_t bench_tsc_per_ms(void)
{
    if (!acpi.pm_tmr)
        return 0;
    uint32_t mask = acpi.pm_tmr_32bit ? 0xffffffffu : 0xffffffu;
    uint32_t p0 = inl(acpi.pm_tmr) & mask;
    uint64_t t0 = rdtsc();
    delay_us(BENCH_CALIBRATION_US);
    uint32_t p1 = inl(acpi.pm_tmr) & mask;
    uint64_t t1 = rdtsc();
    uint64_t ticks = (p1 - p0) & mask;
    return ticks ? (t1 - t0) * PM_TIMER_HZ / ticks / 1000 : 0;
}

/* Moves MIB MiB in MODE's pattern, one request in flight (the driver is synchronous), straight
 * from/to the bounce buffer; write modes end with a FLUSH, inside the timed part. Prints one
 * line: "disk bench MODE: N MiB in T ms, R.r MiB/s, K requests of S KiB (I/s)...". */
static void cmd_bench(int argc, char **argv)
{
    const char *mode_name = argv[2];
    uint64_t mib, start_mib = BENCH_START_MIB, span_mib = 0;
    unsigned mode = 0;
    while (mode < 4 && strcmp(mode_name, bench_modes[mode]))
        mode++;
    bool write = mode == 0 || mode == 2, seq = mode < 2;
    if (mode == 4 || !parse_u64(argv[3], &mib) || mib == 0 || mib > BENCH_MAX_MIB ||
        (argc > 4 && (!parse_u64(argv[4], &start_mib) || start_mib < BENCH_START_MIB))) {
        printf("disk bench: MODE is seq-write, seq-read, rand-write or rand-read; MIB 1-%u; "
               "START_MIB at least %u\n",
               BENCH_MAX_MIB, BENCH_START_MIB);
        return;
    }
    if (argc <= 5)
        span_mib = mib;
    else if (!parse_u64(argv[5], &span_mib) || span_mib == 0 || span_mib > BENCH_MAX_MIB ||
             (seq && span_mib != mib)) {
        printf("disk bench: SPAN_MIB is 1-%u, and only random modes take one other than MIB\n",
               BENCH_MAX_MIB);
        return;
    }
    if (!vblk_ready())
        return;
    uint64_t disk_mib = dev.sectors * DISK_SECTOR / MIB;
    if (start_mib > disk_mib || span_mib > disk_mib - start_mib) {
        printf("disk bench: %lu MiB from %lu MiB do not fit on the %lu MiB disk\n", span_mib,
               start_mib, disk_mib);
        return;
    }
    uint32_t io = seq ? dev.max_io / BENCH_RAND_IO * BENCH_RAND_IO : BENCH_RAND_IO;
    if (!io || io > dev.max_io) {
        printf("disk bench: the device takes at most %u bytes per request, the bench needs %u\n",
               dev.max_io, BENCH_RAND_IO);
        return;
    }
    uint64_t tsc_per_ms = bench_tsc_per_ms();
    bool calibrated = tsc_per_ms != 0;
    if (!calibrated)
        tsc_per_ms = timer_tsc_per_us() * 1000;
    if (write) { /* incompressible-looking data; each request stamps its number in front */
        uint64_t *w = (uint64_t *)bounce;
        for (unsigned i = 0; i < DISK_MAX_IO / 8; i++)
            w[i] = mix64(i + 1);
    }
    uint64_t first = start_mib * MIB / DISK_SECTOR, total = mib * MIB, slots = span_mib * MIB / io;
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ mib ^ (uint64_t)mode << 32, requests = 0;
    uint64_t start = rdtsc();
    for (uint64_t done = 0; done < total; requests++) {
        uint32_t n = total - done < io ? (uint32_t)(total - done) : io;
        uint64_t offset = done;
        if (!seq) {
            rng = mix64(rng + requests);
            offset = rng % slots * io;
        }
        if (write)
            memcpy(bounce, &requests, sizeof(requests));
        if (request(write ? T_OUT : T_IN, first + offset / DISK_SECTOR, n, mode_name) < 0)
            return;
        done += n;
    }
    if (write && request(T_FLUSH, 0, 0, "flush") < 0)
        return;
    uint64_t us = (rdtsc() - start) * 1000 / tsc_per_ms;
    if (!us)
        us = 1;
    uint64_t tenths = total * 10000000 / MIB / us; /* MiB/s x 10 */
    printf("disk bench %s: %lu MiB in %lu ms, %lu.%lu MiB/s, %lu requests of %u KiB (%lu/s)%s, "
           "one in flight%s\n",
           mode_name, mib, us / 1000, tenths / 10, tenths % 10, requests, io / 1024,
           requests * 1000000 / us, write ? " and a flush" : "",
           calibrated ? "" : " (clock: uncalibrated TSC, no ACPI PM timer)");
}

void cmd_disk(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "info";
    uint64_t n, seed;
    if (!strcmp(sub, "info") && argc <= 2) {
        if (!vblk_ready())
            return;
        printf("disk: virtio-blk at 00:%02x.0, irq %u, %lu sectors (%lu MiB), %lu requests, "
               "%lu interrupt waits, status 0x%x\n",
               dev.slot, dev.irq, dev.sectors, dev.sectors * DISK_SECTOR / MIB, dev.requests,
               dev.irq_waits, vpci_rd8(dev.common + CC_STATUS));
    } else if (!strcmp(sub, "stress") && argc == 4 && parse_u64(argv[2], &n) &&
               parse_u64(argv[3], &seed) && n > 0 && n <= 1000000) {
        if (vblk_ready())
            cmd_stress(n, seed);
    } else if (!strcmp(sub, "bench") && argc >= 4 && argc <= 6) {
        cmd_bench(argc, argv);
    } else if (!strcmp(sub, "test-garbage") && argc <= 3) {
        cmd_garbage(argc == 3 ? argv[2] : "loop");
    } else {
        printf("usage: disk info | disk stress N SEED | disk test-garbage [KIND] | disk bench "
               "MODE MIB [START_MIB [SPAN_MIB]]\n");
    }
}
