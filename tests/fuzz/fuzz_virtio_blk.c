/* virtio-blk as a guest drives it: 64 KiB of guest RAM in a buffer (no KVM), the device set up
 * through PCI config ports and BAR 0 MMIO as a driver does, the input as guest RAM (rings,
 * descriptors, request headers, data) served synchronously (virtio_blk_serve_pending); then,
 * as byte 0 asks (with queue size, indirect descriptors, raw or qcow2, ring places), the input's
 * first bytes loaded as the transport's state, and its last as register accesses, each followed
 * by serving the queue again. A broken device is fine; a crash or a stray write is not. */
#include <pthread.h>

#include "core/devices/devices.h"
#include "core/storage/disk.h"
#include "core/storage/qcow2.h"
#include "core/util/state.h"
#include "core/virtio/virtio_blk.h"
#include "core/virtio/virtio_pci.h"
#include "core/vm/iobus.h"
#include "core/vm/machine.h"
#include "tests/fuzz/fuzz.h"
#include "tests/vpci_driver.h"

#define RAM_SIZE (64u << 10)
#define DISK_SIZE (64u << 10)
#define SLOT VIRTIO_BLK_PCI_SLOT
#define VIOP_BYTES 160 /* sizeof(struct vp_regs) in virtio_pci.c, the 'VIOP' record */

static struct machine m;
static uint64_t bar;

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

/* BAR 0 offset of the virtio capability of TYPE, as a driver finds it (0 if none). */
static unsigned cap_offset(unsigned type)
{
    int o = vpci_cap_offset(&m, SLOT, type);
    return o < 0 ? 0 : (unsigned)o;
}

/* A fresh image in the run's folder: raw, or qcow2 with 512-byte clusters (more metadata). */
static const char *make_image(bool qcow2)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/disk.%s", fuzz_dir(), qcow2 ? "qcow2" : "raw");
    unlink(path);
    int r =
        qcow2 ? qcow2_create(path, DISK_SIZE, 512, NULL, NULL) : disk_create_raw(path, DISK_SIZE);
    if (r < 0)
        abort();
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static uint8_t *ram;
    static struct guest_mem gm;
    if (!ram) {
        ram = calloc(1, RAM_SIZE);
        if (!ram || guest_mem_init_buffer(&gm, ram, RAM_SIZE) < 0)
            abort();
    }
    uint8_t mode = data[0];
    data++;
    size--;
    memset(ram, 0, RAM_SIZE);
    memcpy(ram, data, size < RAM_SIZE ? size : RAM_SIZE);

    memset(&m, 0, sizeof(m));
    m.mem = &gm;
    m.vm_fd = -1; /* interrupts go nowhere; notifies take the MMIO path */
    pthread_mutex_init(&m.lock, NULL);
    iobus_init(&m.pio, "port");
    iobus_init(&m.mmio, "mmio");
    struct pci_bus *bus = pci_create(&m);
    bool qcow2 = mode & 0x10;
    const char *image = make_image(qcow2);
    char err[512];
    struct virtio_blk *blk = bus ? virtio_blk_create(&m, bus, SLOT, image, qcow2 ? "qcow2" : "raw",
                                                     image, err, sizeof(err))
                                 : NULL;
    if (!blk)
        abort();
    bar = (cfg_read(0x10) & ~0xfu) | (uint64_t)cfg_read(0x14) << 32;
    unsigned common = cap_offset(1), devcfg = cap_offset(4), isr = cap_offset(3);

    /* The driver: reset, acknowledge, features (all offered, indirect descriptors only if the
     * input says so), the queue, DRIVER_OK. */
    wr(common + 0x14, 1, 0);
    wr(common + 0x14, 1, 1 | 2);
    wr(common + 0x00, 4, 0);
    uint32_t lo = (uint32_t)rd(common + 0x04, 4);
    if (!(mode & 0x08))
        lo &= ~(1u << VIRTIO_F_INDIRECT_DESC);
    wr(common + 0x08, 4, 0);
    wr(common + 0x0c, 4, lo);
    wr(common + 0x08, 4, 1);
    wr(common + 0x0c, 4, 1); /* VERSION_1 */
    wr(common + 0x14, 1, 1 | 2 | 8);
    uint64_t desc = 0x0000, avail = 0x0800, used = 0x1000;
    if (mode & 0x20 && size >= 3) { /* rings where the input's first bytes say */
        desc = (uint64_t)data[0] << 8 | (data[2] & 0x0f);
        avail = (uint64_t)data[1] << 8 | (data[2] >> 4 & 1);
        used = (uint64_t)(data[2] >> 5) << 13 | (data[2] >> 4 & 2);
    }
    wr(common + 0x16, 2, 0);
    wr(common + 0x18, 2, 1u << (mode & 7)); /* 1-128 entries */
    wr(common + 0x20, 8, desc);
    wr(common + 0x28, 4, avail);
    wr(common + 0x2c, 4, 0);
    wr(common + 0x30, 8, used);
    wr(common + 0x1c, 2, 1);
    wr(common + 0x14, 1, 1 | 2 | 4 | 8);
    virtio_blk_serve_pending(blk);
    rd(isr, 1);
    for (unsigned off = 0; off < 60; off += 4)
        rd(devcfg + off, 4);
    json_decref(virtio_blk_status_json(blk));

    /* Its state saved, then the input's first bytes loaded as the transport's record (what a
     * corrupt snapshot state would hold), and whatever that makes available served. */
    if (mode & 0x40) {
        struct state_writer w;
        state_writer_init(&w);
        virtio_blk_save(blk, &w);
        uint8_t *buf = NULL;
        size_t len = 0;
        struct state_reader r;
        if (state_writer_finish(&w, &buf, &len) == 0 &&
            state_reader_parse(&r, buf, len, err, sizeof(err)) == 0) { /* r owns buf */
            virtio_blk_load(blk, &r);
            state_reader_free(&r);
        }
        state_writer_free(&w);
        uint8_t viop[VIOP_BYTES] = {0};
        memcpy(viop, data, size < sizeof(viop) ? size : sizeof(viop));
        state_writer_init(&w);
        uint64_t blk_rec[2] = {1, DISK_SIZE}; /* 'VBLK': version 1, the image's size */
        state_put(&w, STATE_TAG('V', 'B', 'L', 'K'), 0, blk_rec, sizeof(blk_rec));
        state_put(&w, STATE_TAG('V', 'I', 'O', 'P'), 0, viop, sizeof(viop));
        if (state_writer_finish(&w, &buf, &len) == 0 &&
            state_reader_parse(&r, buf, len, err, sizeof(err)) == 0) {
            virtio_blk_load(blk, &r);
            state_reader_free(&r);
        }
        state_writer_free(&w);
        virtio_blk_serve_pending(blk);
        json_decref(virtio_blk_status_json(blk));
    }
    /* A guest that goes on poking the registers: the input's last bytes (up to 512) as 8-byte
     * operations - a BAR 0 access of 1, 2, 4 or 8 bytes anywhere in it (common config, ISR,
     * device config, notify), a PCI configuration space write, or serving the queue. */
    if (mode & 0x80) {
        size_t nops = (size < 512 ? size : 512) / 8;
        for (const uint8_t *op = data + size - 8 * nops; op < data + size; op += 8) {
            unsigned off = (op[1] | (unsigned)op[2] << 8) & 0x3fff, len = 1u << (op[0] >> 6);
            uint64_t v = (uint64_t)op[3] | (uint64_t)op[4] << 8 | (uint64_t)op[5] << 16 |
                         (uint64_t)op[6] << 24 | (uint64_t)op[7] << 32;
            switch (op[0] % 4) {
            case 0:
                wr(off, len, v);
                break;
            case 1:
                rd(off, len);
                break;
            case 2: { /* config space: BARs, command register, capabilities' fields */
                uint8_t d[4];
                io_data_put(d, 4, 0x80000000u | SLOT << 11 | (op[1] & 0xfc));
                iobus_access(&m.pio, 0xcf8, d, 4, true);
                io_data_put(d, 4, (uint32_t)v);
                iobus_access(&m.pio, 0xcfc + (op[1] & 3), d, len > 4 ? 4 : len, true);
                break;
            }
            default:
                virtio_blk_serve_pending(blk);
                break;
            }
        }
        virtio_blk_serve_pending(blk);
        json_decref(virtio_blk_status_json(blk));
    }
    virtio_blk_destroy(blk);
    pci_destroy(bus);
    iobus_destroy(&m.pio);
    iobus_destroy(&m.mmio);
    pthread_mutex_destroy(&m.lock);
    return 0;
}
