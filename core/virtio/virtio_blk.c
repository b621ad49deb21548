/* virtio-blk (see virtio_blk.h). The transport hands handle_chain() a chain already checked
 * to be guest RAM in the right order; this file reads the 16-byte request header from the
 * readable part, checks the request against the image, moves data straight between the
 * guest's buffers and the image, and writes the status byte as the chain's last writable
 * byte. The image is anything core/storage/disk.h opens: qcow2 (with backing files) or raw. */
#include "core/virtio/virtio_blk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/storage/disk.h"
#include "core/util/log.h"
#include "core/virtio/virtio_pci.h"

#define SECTOR 512u
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20

#define SIZE_MAX_BYTES (1u << 20) /* per segment */
#define MAX_DISCARD_SECTORS (1u << 22)
#define MAX_DISCARD_SEG 32

/* ---- the device ---- */

struct virtio_blk {
    struct virtio_pci *vp;
    struct machine *m;
    struct disk *disk;
    uint64_t size; /* bytes, a whole number of sectors */
    char path[4096];
    uint8_t config[60]; /* struct virtio_blk_config, little endian */
    char id[VIRTIO_BLK_ID_BYTES + 1];
    uint64_t reads, writes, flushes, discards, errors; /* atomics: status reads them unlocked */
};

static void count(uint64_t *c)
{
    __atomic_add_fetch(c, 1, __ATOMIC_RELAXED);
}

static json_int_t counted(uint64_t *c)
{
    return (json_int_t)__atomic_load_n(c, __ATOMIC_RELAXED);
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void build_config(struct virtio_blk *b)
{
    uint64_t sectors = b->size / SECTOR;
    memset(b->config, 0, sizeof(b->config));
    memcpy(&b->config[0], &sectors, 8);
    put32(&b->config[8], SIZE_MAX_BYTES);      /* size_max */
    put32(&b->config[12], VIRTQ_MAX_SIZE - 2); /* seg_max: header and status take two */
    put32(&b->config[20], SECTOR);             /* blk_size */
    put32(&b->config[36], MAX_DISCARD_SECTORS);
    put32(&b->config[40], MAX_DISCARD_SEG);
    put32(&b->config[44], 8); /* discard_sector_alignment: 4 KiB */
    put32(&b->config[48], MAX_DISCARD_SECTORS);
    put32(&b->config[52], MAX_DISCARD_SEG);
    b->config[56] = 1; /* write_zeroes_may_unmap */
}

static void blk_config_read(void *opaque, unsigned off, uint8_t *data, unsigned len)
{
    struct virtio_blk *b = opaque;
    for (unsigned i = 0; i < len; i++)
        data[i] = off + i < sizeof(b->config) ? b->config[off + i] : 0;
}

/* Data of a read or write: the chain's readable bytes after the header (OUT) or its writable
 * bytes before the status byte (IN), moved segment by segment at image offset POS. */
static int blk_data(struct virtio_blk *b, struct virtq_chain *c, bool in, uint64_t pos,
                    uint64_t len)
{
    uint64_t skip = in ? 0 : 16;
    unsigned first = in ? c->nreadable : 0, end = in ? c->nseg : c->nreadable;
    for (unsigned s = first; s < end && len; s++) {
        struct virtq_seg *sg = &c->seg[s];
        if (skip >= sg->len) {
            skip -= sg->len;
            continue;
        }
        uint64_t n = sg->len - skip < len ? sg->len - skip : len;
        int r = in ? disk_read(b->disk, pos, sg->host + skip, n)
                   : disk_write(b->disk, pos, sg->host + skip, n);
        if (in)
            guest_mem_mark_dirty(b->m->mem, sg->gpa + skip, n);
        if (r < 0)
            return r;
        pos += n;
        len -= n;
        skip = 0;
    }
    return 0;
}

static bool range_ok(const struct virtio_blk *b, uint64_t sector, uint64_t bytes)
{
    uint64_t sectors = b->size / SECTOR;
    return sector <= sectors && bytes / SECTOR <= sectors - sector;
}

/* Discard / write-zeroes: an array of {u64 sector, u32 num_sectors, u32 flags}. Both leave
 * the range reading as zeros (disk.h), so the unmap flag needs no different handling. */
static uint8_t blk_zero_ranges(struct virtio_blk *b, struct virtq_chain *c, uint64_t len,
                               bool discard)
{
    if (len % 16 || len / 16 > MAX_DISCARD_SEG)
        return VIRTIO_BLK_S_UNSUPP;
    for (uint64_t off = 16; off < 16 + len; off += 16) {
        uint8_t seg[16];
        uint64_t sector;
        uint32_t n, flags;
        virtq_chain_read(c, off, seg, 16);
        memcpy(&sector, seg, 8);
        memcpy(&n, seg + 8, 4);
        memcpy(&flags, seg + 12, 4);
        if (n > MAX_DISCARD_SECTORS || flags & ~1u || !range_ok(b, sector, (uint64_t)n * SECTOR))
            return VIRTIO_BLK_S_IOERR;
        int r = discard ? disk_discard(b->disk, sector * SECTOR, (uint64_t)n * SECTOR)
                        : disk_write_zeroes(b->disk, sector * SECTOR, (uint64_t)n * SECTOR);
        if (r < 0)
            return VIRTIO_BLK_S_IOERR;
    }
    return VIRTIO_BLK_S_OK;
}

static int blk_handle_chain(void *opaque, unsigned queue, struct virtq_chain *c, char *reason,
                            size_t rlen)
{
    struct virtio_blk *b = opaque;
    (void)queue;
    uint8_t hdr[16];
    if (virtq_chain_read(c, 0, hdr, sizeof(hdr)) < 0 || c->writable_len < 1) {
        snprintf(reason, rlen,
                 "request at head %u has %llu readable bytes (16-byte header needed) and %llu "
                 "writable (status byte needed)",
                 c->head, (unsigned long long)c->readable_len, (unsigned long long)c->writable_len);
        return -1;
    }
    uint32_t type;
    uint64_t sector;
    memcpy(&type, hdr, 4);
    memcpy(&sector, hdr + 8, 8);
    uint64_t data_out = c->readable_len - 16, data_in = c->writable_len - 1;
    uint8_t status = VIRTIO_BLK_S_OK;
    uint32_t written = 0;
    if (!b->disk) { /* its image could not be reopened after a snapshot operation */
        status = VIRTIO_BLK_S_IOERR;
        count(&b->errors);
        virtq_chain_write(b->m->mem, c, c->writable_len - 1, &status, 1);
        return 1;
    }
    switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool in = type == VIRTIO_BLK_T_IN;
        uint64_t len = in ? data_in : data_out;
        /* Bounded by what config space promises (seg_max segments of size_max), which also
         * keeps the used length inside an int. */
        if (len % SECTOR || len > (uint64_t)SIZE_MAX_BYTES * (VIRTQ_MAX_SIZE - 2) ||
            !range_ok(b, sector, len))
            status = VIRTIO_BLK_S_IOERR;
        else if (blk_data(b, c, in, sector * SECTOR, len) < 0)
            status = VIRTIO_BLK_S_IOERR;
        if (in && status == VIRTIO_BLK_S_OK)
            written = (uint32_t)len;
        if (in)
            count(&b->reads);
        else
            count(&b->writes);
        break;
    }
    case VIRTIO_BLK_T_FLUSH:
        status = disk_flush(b->disk) < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
        count(&b->flushes);
        break;
    case VIRTIO_BLK_T_GET_ID: {
        size_t n = data_in < VIRTIO_BLK_ID_BYTES ? (size_t)data_in : VIRTIO_BLK_ID_BYTES;
        uint8_t id[VIRTIO_BLK_ID_BYTES] = {0};
        memcpy(id, b->id, strlen(b->id));
        virtq_chain_write(b->m->mem, c, 0, id, n);
        written = (uint32_t)n;
        break;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        status = blk_zero_ranges(b, c, data_out, type == VIRTIO_BLK_T_DISCARD);
        count(&b->discards);
        break;
    default:
        status = VIRTIO_BLK_S_UNSUPP;
    }
    if (status != VIRTIO_BLK_S_OK)
        count(&b->errors);
    virtq_chain_write(b->m->mem, c, c->writable_len - 1, &status, 1);
    return (int)(written + 1);
}

static const struct virtio_device_ops blk_ops = {
    .device_id = 2,
    .class_code = 0x018000, /* mass storage, other */
    .features = 1ull << VIRTIO_BLK_F_SIZE_MAX | 1ull << VIRTIO_BLK_F_SEG_MAX |
                1ull << VIRTIO_BLK_F_BLK_SIZE | 1ull << VIRTIO_BLK_F_FLUSH |
                1ull << VIRTIO_BLK_F_DISCARD | 1ull << VIRTIO_BLK_F_WRITE_ZEROES,
    .num_queues = 1,
    .config_len = 60,
    .name = "virtio-blk",
    .config_read = blk_config_read,
    .handle_chain = blk_handle_chain,
};

struct virtio_blk *virtio_blk_create(struct machine *m, struct pci_bus *bus, unsigned slot,
                                     const char *path, const char *format, const char *serial,
                                     char *err, size_t errlen)
{
    struct virtio_blk *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(err, errlen, "out of memory creating virtio-blk");
        return NULL;
    }
    b->m = m;
    snprintf(b->path, sizeof(b->path), "%s", path);
    b->disk = disk_open_format(path, format, false, 0, err, errlen);
    if (!b->disk) {
        free(b);
        return NULL;
    }
    b->size = disk_size(b->disk);
    if (b->size < SECTOR || b->size % SECTOR) {
        snprintf(err, errlen, "disk image %s is %llu bytes, not a whole number of 512-byte sectors",
                 path, (unsigned long long)b->size);
        disk_close(b->disk);
        free(b);
        return NULL;
    }
    const char *base = strrchr(serial, '/');
    snprintf(b->id, sizeof(b->id), "vmws-%.15s", base ? base + 1 : serial);
    build_config(b);
    b->vp = virtio_pci_create(m, bus, slot, &blk_ops, b);
    if (!b->vp) {
        snprintf(err, errlen, "cannot create the virtio-blk device for %s at PCI slot %u", path,
                 slot);
        disk_close(b->disk);
        free(b);
        return NULL;
    }
    vmm_log("virtio-blk: %s (%s), %llu sectors, PCI slot %u", path, disk_format(b->disk),
            (unsigned long long)(b->size / SECTOR), slot);
    return b;
}

void virtio_blk_destroy(struct virtio_blk *b)
{
    if (!b)
        return;
    if (virtio_pci_destroy(b->vp) < 0) /* joins the I/O thread, or it is stuck in a request */
        return; /* ... on the image: both are left to the process's exit (logged) */
    int r = disk_close(b->disk); /* flushes; NULL (no image) is fine */
    if (r < 0)
        vmm_log("virtio-blk: closing %s: %s", b->path, strerror(-r));
    free(b);
}

int virtio_blk_quiesce(struct virtio_blk *b, unsigned timeout_ms, char *err, size_t errlen)
{
    int r = virtio_pci_quiesce(b->vp, timeout_ms, err, errlen);
    if (r < 0)
        return r;
    r = b->disk ? disk_flush(b->disk) : 0; /* none after an image failed to reopen */
    if (r < 0) {
        snprintf(err, errlen, "virtio-blk: cannot flush disk image %s: %s", b->path, strerror(-r));
        virtio_pci_unquiesce(b->vp);
    }
    return r;
}

void virtio_blk_resume(struct virtio_blk *b)
{
    virtio_pci_unquiesce(b->vp);
}

void virtio_blk_detach_image(struct virtio_blk *b)
{
    int r = disk_close(b->disk); /* quiesced: flushed already, nothing in flight */
    if (r < 0)
        vmm_log("virtio-blk: closing %s: %s", b->path, strerror(-r));
    b->disk = NULL;
}

int virtio_blk_attach_image(struct virtio_blk *b, const char *path, const char *format, char *err,
                            size_t errlen)
{
    struct disk *d = disk_open_format(path, format, false, 0, err, errlen);
    if (!d)
        return -EIO;
    if (disk_size(d) != b->size) {
        snprintf(err, errlen, "disk image %s is %llu bytes, the device's is %llu", path,
                 (unsigned long long)disk_size(d), (unsigned long long)b->size);
        disk_close(d);
        return -EINVAL;
    }
    b->disk = d;
    snprintf(b->path, sizeof(b->path), "%s", path);
    vmm_log("virtio-blk: now on %s (%s)", path, disk_format(d));
    return 0;
}

void virtio_blk_serve_pending(struct virtio_blk *b)
{
    virtio_pci_serve_pending(b->vp);
}

struct disk *virtio_blk_image(struct virtio_blk *b)
{
    return b->disk;
}

json_t *virtio_blk_status_json(struct virtio_blk *b)
{
    bool needs_reset;
    char why[200];
    uint8_t status = virtio_pci_status(b->vp, &needs_reset, why, sizeof(why));
    uint64_t requests, kicks;
    virtio_pci_counters(b->vp, &requests, &kicks);
    json_t *j = json_pack(
        "{s:s, s:s, s:I, s:i, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "path", b->path, "format",
        b->disk ? disk_format(b->disk) : "none", "capacity", (json_int_t)b->size, "status",
        (int)status, "needs_reset", needs_reset, "requests", (json_int_t)requests, "notifies",
        (json_int_t)kicks, "reads", counted(&b->reads), "writes", counted(&b->writes), "flushes",
        counted(&b->flushes), "discards", counted(&b->discards), "errors", counted(&b->errors));
    if (j && needs_reset)
        json_object_set_new(j, "broken", json_string(why));
    return j;
}

struct blk_saved {
    uint32_t version, pad;
    uint64_t size;
};

int virtio_blk_save(struct virtio_blk *b, struct state_writer *w)
{
    struct blk_saved s = {.version = 1, .size = b->size};
    state_put(w, STATE_TAG('V', 'B', 'L', 'K'), 0, &s, sizeof(s));
    return virtio_pci_save(b->vp, w, 0);
}

int virtio_blk_load(struct virtio_blk *b, const struct state_reader *r)
{
    struct blk_saved s;
    if (state_get_exact(r, STATE_TAG('V', 'B', 'L', 'K'), 0, &s, sizeof(s)) < 0 || s.version != 1 ||
        s.size != b->size)
        return -EINVAL;
    return virtio_pci_load(b->vp, r, 0);
}
