/* qcow2 version 3 images (QEMU's docs/interop/qcow2.txt): guest clusters map through a
 * two-level table (L1 in memory, L2 tables in a small cache) to host clusters, whose use counts
 * live in refcount blocks listed by the refcount table. Metadata is written through (no dirty
 * cache), and the write order is what keeps crashes harmless: refcounts are raised and flushed
 * before any table points at a cluster (we reserve a few clusters at a time so one flush serves
 * many allocations), a new L2 table is flushed before L1 links it, and a pointer is removed and
 * flushed before its cluster's refcount drops. A crash leaks clusters at worst. Every number
 * read from the file is checked before use; a write never lands on the image's own metadata. */
#include "core/storage/qcow2.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/storage/disk.h"
#include "core/storage/imglock.h"
#include "core/util/errfmt.h"
#include "core/util/fsutil.h"

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */
#define HEADER_V3_LEN 104u

/* Header field offsets. */
#define H_VERSION 4
#define H_BACKING_OFFSET 8
#define H_BACKING_SIZE 16
#define H_CLUSTER_BITS 20
#define H_SIZE 24
#define H_CRYPT 32
#define H_L1_SIZE 36
#define H_L1_OFFSET 40
#define H_REFTABLE_OFFSET 48
#define H_REFTABLE_CLUSTERS 56
#define H_NB_SNAPSHOTS 60
#define H_SNAPSHOTS_OFFSET 64
#define H_INCOMPAT 72
#define H_COMPAT 80
#define H_AUTOCLEAR 88
#define H_REFCOUNT_ORDER 96
#define H_HEADER_LENGTH 100

#define INCOMPAT_DIRTY (1ull << 0)
#define INCOMPAT_CORRUPT (1ull << 1)
#define INCOMPAT_DATA_FILE (1ull << 2)
#define INCOMPAT_COMPRESSION (1ull << 3)
#define INCOMPAT_EXTL2 (1ull << 4)

#define EXT_END 0u
#define EXT_BACKING_FORMAT 0xe2792acau

/* Table entries. */
#define OFFSET_MASK 0x00fffffffffffe00ull /* bits 9-55 */
#define COPIED (1ull << 63)
#define COMPRESSED (1ull << 62)
#define ZERO_FLAG 1ull
#define L1_RESERVED 0x7f000000000001ffull
#define L2_RESERVED 0x3f000000000001feull
#define REFTABLE_RESERVED 0x1ffull

#define MAX_L1_BYTES (32u << 20)
#define MAX_REFTABLE_BYTES (8u << 20)
#define MAX_VIRTUAL_SIZE (1ull << 55) /* 32 PiB: what the offset fields can address */
#define MAX_BACKING_NAME 1023u
#define CACHE_SLOTS 16
#define CACHE_BYTES (4u << 20)
/* Clusters reserved per flush: at first 1 MiB worth (at least 32); each reservation used up
 * doubles the next, up to 32 MiB worth (at most 2048), so a stream of allocations pays one flush
 * per 32 MiB. A crash leaks at most one reservation. */
#define RESERVE_MIN 32u
#define RESERVE_MAX 2048u
#define RESERVE_BYTES (1u << 20)
#define RESERVE_BYTES_MAX (32u << 20)
#define FREE_BATCH 64
/* How far past the end of the file counted clusters may lie (our own reservations are inside
 * the file; other writers preallocate a little); beyond this the free-cluster scan gives up. */
#define SCAN_SLACK (256ull << 20)

struct cache_slot {
    uint64_t offset; /* host offset of the cached cluster; 0 = empty slot */
    uint64_t used;   /* LRU clock */
    uint8_t *data;
};

struct table_cache {
    unsigned n;
    struct cache_slot slot[CACHE_SLOTS];
};

struct qcow2 {
    int fd;
    bool read_only;
    char *path;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint64_t size;
    uint64_t file_size; /* bytes in the file (grows as we write) */
    uint64_t l2_entries;
    uint64_t refblock_entries;

    uint64_t *l1; /* host-endian copy of the L1 table */
    uint32_t l1_size;
    uint64_t l1_offset;

    uint64_t *reftable; /* host-endian copy of the refcount table */
    uint64_t reftable_offset;
    uint32_t reftable_clusters;
    uint64_t reftable_entries;

    struct table_cache l2_cache, refblock_cache;
    uint64_t lru_clock;

    uint64_t free_hint;             /* no free cluster below this index */
    uint64_t reserved[RESERVE_MAX]; /* clusters whose refcount is already 1 on disk */
    unsigned n_reserved, next_reserved;
    uint64_t reserve_bytes; /* the size of the next reservation */

    struct disk *backing;
    uint64_t backing_size;
    uint8_t *bounce;    /* one cluster */
    uint8_t *zbuf;      /* compressed bytes of one cluster (2 clusters + a sector) */
    uint8_t *unz;       /* the last decompressed cluster ... */
    uint64_t unz_entry; /* ... and the L2 entry it came from (0: none) */

    qcow2_io_hook_fn hook;
    void *hook_opaque;
};

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

static uint32_t get_be32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return be32toh(v);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}

static void put_be16(uint8_t *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, 2);
}

static uint16_t get_be16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return be16toh(v);
}

/* ---- file I/O: every write and sync goes through here (and through the test hook) ---- */

static int file_pread(struct qcow2 *q, void *buf, size_t len, uint64_t off)
{
    return fs_pread_all(q->fd, buf, len, off); /* past the end of the file: zeroes */
}

static int file_pwrite(struct qcow2 *q, const void *buf, size_t len, uint64_t off)
{
    if (q->read_only)
        return -EROFS;
    if (q->hook)
        q->hook(q->hook_opaque, QCOW2_IO_WRITE, buf, len, off);
    int r = fs_pwrite_all(q->fd, buf, len, off);
    if (r < 0)
        return r;
    if (off + len > q->file_size)
        q->file_size = off + len;
    return 0;
}

static const uint8_t zero_cluster[QCOW2_MAX_CLUSTER_SIZE];

/* Makes [off, off + len) read as zeroes without writing them: a hole (what QEMU does for the
 * empty parts of a new cluster), or written zeroes where the filesystem cannot punch. The
 * crash simulation sees the write of zeroes it amounts to. */
static int file_zero(struct qcow2 *q, uint64_t off, uint64_t len)
{
    if (q->hook)
        q->hook(q->hook_opaque, QCOW2_IO_WRITE, zero_cluster, len, off);
    if (fallocate(q->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    return errno == EOPNOTSUPP ? fs_pwrite_all(q->fd, zero_cluster, len, off) : -errno;
}

/* Grows the file to `size` bytes (a sparse tail). */
static int file_extend(struct qcow2 *q, uint64_t size)
{
    if (q->hook)
        q->hook(q->hook_opaque, QCOW2_IO_EXTEND, NULL, 0, size);
    if (ftruncate(q->fd, (off_t)size) < 0)
        return -errno;
    q->file_size = size;
    return 0;
}

static int file_sync(struct qcow2 *q)
{
    if (q->read_only)
        return 0;
    if (q->hook)
        q->hook(q->hook_opaque, QCOW2_IO_SYNC, NULL, 0, 0);
    return fdatasync(q->fd) < 0 ? -errno : 0;
}

/* ---- checks on offsets read from the file ---- */

static bool aligned(const struct qcow2 *q, uint64_t off)
{
    return (off & (q->cluster_size - 1)) == 0;
}

/* A host cluster a table points at must be aligned, past the header and not absurdly beyond
 * the end of the file (a cluster may end past EOF: the tail was never written). */
static bool host_cluster_ok(const struct qcow2 *q, uint64_t off)
{
    return off && aligned(q, off) && off < q->file_size + q->cluster_size;
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* True if [off, off+len) touches the header cluster, L1, the refcount table, a refcount block
 * or an L2 table: data must never be written there, whatever a (hostile) table says. */
static bool overlaps_metadata(const struct qcow2 *q, uint64_t off, uint64_t len)
{
    uint64_t cs = q->cluster_size;
    if (ranges_overlap(off, len, 0, cs) ||
        ranges_overlap(off, len, q->l1_offset, (uint64_t)q->l1_size * 8) ||
        ranges_overlap(off, len, q->reftable_offset, (uint64_t)q->reftable_clusters * cs))
        return true;
    for (uint64_t i = 0; i < q->reftable_entries; i++)
        if (q->reftable[i] && ranges_overlap(off, len, q->reftable[i], cs))
            return true;
    for (uint32_t i = 0; i < q->l1_size; i++) {
        uint64_t l2 = q->l1[i] & OFFSET_MASK;
        if (l2 && ranges_overlap(off, len, l2, cs))
            return true;
    }
    return false;
}

/* ---- cluster caches (L2 tables, refcount blocks); write-through, so eviction is free ---- */

static struct cache_slot *cache_lookup(struct qcow2 *q, struct table_cache *c, uint64_t off)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->slot[i].offset == off) {
            c->slot[i].used = ++q->lru_clock;
            return &c->slot[i];
        }
    return NULL;
}

static struct cache_slot *cache_victim(struct qcow2 *q, struct table_cache *c)
{
    struct cache_slot *v = &c->slot[0];
    for (unsigned i = 1; i < c->n; i++)
        if (c->slot[i].used < v->used)
            v = &c->slot[i];
    v->offset = 0;
    v->used = ++q->lru_clock;
    return v;
}

/* The table at host offset off (already validated), read from the file if not cached. */
static int cache_get(struct qcow2 *q, struct table_cache *c, uint64_t off, uint8_t **data)
{
    struct cache_slot *s = cache_lookup(q, c, off);
    if (!s) {
        s = cache_victim(q, c);
        int r = file_pread(q, s->data, q->cluster_size, off);
        if (r < 0)
            return r;
        s->offset = off;
    }
    *data = s->data;
    return 0;
}

/* A freshly allocated, all-zero table at off (the caller writes it to the file). */
static uint8_t *cache_new_zeroed(struct qcow2 *q, struct table_cache *c, uint64_t off)
{
    struct cache_slot *s = cache_lookup(q, c, off);
    if (!s)
        s = cache_victim(q, c);
    memset(s->data, 0, q->cluster_size);
    s->offset = off;
    return s->data;
}

static void cache_drop(struct table_cache *c, uint64_t off)
{
    for (unsigned i = 0; i < c->n; i++)
        if (c->slot[i].offset == off)
            c->slot[i].offset = 0;
}

/* ---- refcounts ---- */

static int refblock_load(struct qcow2 *q, uint64_t index, uint8_t **block)
{
    uint64_t off = q->reftable[index];
    if (!host_cluster_ok(q, off))
        return -EIO;
    return cache_get(q, &q->refblock_cache, off, block);
}

static int refcount_get(struct qcow2 *q, uint64_t cluster, uint16_t *rc)
{
    uint64_t index = cluster / q->refblock_entries;
    if (index >= q->reftable_entries || !q->reftable[index]) {
        *rc = 0;
        return 0;
    }
    uint8_t *block;
    int r = refblock_load(q, index, &block);
    if (r < 0)
        return r;
    *rc = get_be16(block + (cluster % q->refblock_entries) * 2);
    return 0;
}

/* Writes one refcount through to the file (not flushed). The block must exist. */
static int refcount_set_run(struct qcow2 *q, uint64_t first, uint64_t count, uint16_t value)
{
    while (count) {
        uint64_t index = first / q->refblock_entries;
        if (index >= q->reftable_entries || !q->reftable[index])
            return -EIO;
        uint8_t *block;
        int r = refblock_load(q, index, &block);
        if (r < 0)
            return r;
        uint64_t in = first % q->refblock_entries;
        uint64_t n = q->refblock_entries - in < count ? q->refblock_entries - in : count;
        for (uint64_t i = 0; i < n; i++)
            put_be16(block + (in + i) * 2, value);
        r = file_pwrite(q, block + in * 2, n * 2, q->reftable[index] + in * 2);
        if (r < 0)
            return r;
        first += n;
        count -= n;
    }
    return 0;
}

static int refcount_set(struct qcow2 *q, uint64_t cluster, uint16_t value)
{
    return refcount_set_run(q, cluster, 1, value);
}

/* A new refcount block for table index `index`, placed at `cluster` (the first free cluster,
 * which lies in the range the block describes, so the block counts itself). The block is
 * flushed before the table points at it. */
static int refblock_create(struct qcow2 *q, uint64_t index, uint64_t cluster)
{
    uint64_t off = cluster << q->cluster_bits;
    if (overlaps_metadata(q, off, q->cluster_size))
        return -EIO;
    uint8_t *block = cache_new_zeroed(q, &q->refblock_cache, off);
    put_be16(block + (cluster - index * q->refblock_entries) * 2, 1);
    int r = file_pwrite(q, block, q->cluster_size, off);
    if (r == 0)
        r = file_sync(q);
    if (r < 0) {
        cache_drop(&q->refblock_cache, off);
        return r;
    }
    uint8_t entry[8];
    put_be64(entry, off);
    r = file_pwrite(q, entry, 8, q->reftable_offset + index * 8);
    if (r == 0)
        r = file_sync(q);
    if (r < 0) {
        cache_drop(&q->refblock_cache, off);
        return r;
    }
    q->reftable[index] = off;
    return 0;
}

/* The refcount table is full and `first` (the first cluster it does not cover, all below it in
 * use) needs counting. Lay out B new refcount blocks then a table twice as big from `first`
 * on, the blocks counting themselves and the table; flush; point the header at the new table;
 * flush; release the old table. A crash before the header write leaves only unreferenced
 * clusters past the old table's reach. */
static int reftable_grow(struct qcow2 *q, uint64_t first)
{
    uint64_t cs = q->cluster_size, rbe = q->refblock_entries;
    uint64_t old_entries = q->reftable_entries;
    if (first != old_entries * rbe)
        return -EIO;
    uint64_t entries = old_entries * 2, blocks = 1, tclusters = 0;
    for (;;) { /* blocks and entries only grow, so this settles */
        tclusters = (entries * 8 + cs - 1) / cs;
        if (entries < old_entries + blocks) {
            entries = old_entries + blocks;
            continue;
        }
        if (blocks * rbe >= blocks + tclusters)
            break;
        blocks++;
    }
    entries = tclusters * cs / 8;
    if (tclusters * cs > MAX_REFTABLE_BYTES)
        return -EFBIG;
    uint64_t used = blocks + tclusters;
    if (overlaps_metadata(q, first * cs, used * cs))
        return -EIO;

    uint8_t *buf = calloc(1, tclusters * cs);
    uint64_t *table = calloc(entries, sizeof(*table));
    if (!buf || !table) {
        free(buf);
        free(table);
        return -ENOMEM;
    }
    int r = 0;
    for (uint64_t b = 0; b < blocks && r == 0; b++) {
        memset(buf, 0, cs);
        for (uint64_t c = first + b * rbe; c < first + used && c < first + (b + 1) * rbe; c++)
            put_be16(buf + (c % rbe) * 2, 1);
        r = file_pwrite(q, buf, cs, (first + b) * cs);
    }
    memcpy(table, q->reftable, old_entries * sizeof(*table));
    for (uint64_t b = 0; b < blocks; b++)
        table[old_entries + b] = (first + b) * cs;
    memset(buf, 0, tclusters * cs);
    for (uint64_t i = 0; i < entries; i++)
        put_be64(buf + i * 8, table[i]);
    if (r == 0)
        r = file_pwrite(q, buf, tclusters * cs, (first + blocks) * cs);
    if (r == 0)
        r = file_sync(q);
    uint8_t hdr[12];
    put_be64(hdr, (first + blocks) * cs);
    put_be32(hdr + 8, (uint32_t)tclusters);
    if (r == 0)
        r = file_pwrite(q, hdr, sizeof(hdr), H_REFTABLE_OFFSET);
    if (r == 0)
        r = file_sync(q);
    free(buf);
    if (r < 0) {
        free(table);
        return r;
    }
    uint64_t old_off = q->reftable_offset, old_clusters = q->reftable_clusters;
    free(q->reftable);
    q->reftable = table;
    q->reftable_entries = entries;
    q->reftable_offset = (first + blocks) * cs;
    q->reftable_clusters = (uint32_t)tclusters;
    for (uint64_t c = 0; c < old_clusters && r == 0; c++)
        r = refcount_set(q, (old_off >> q->cluster_bits) + c, 0);
    if ((old_off >> q->cluster_bits) < q->free_hint)
        q->free_hint = old_off >> q->cluster_bits;
    return r;
}

/* Finds the lowest free cluster and up to want-1 free ones right after it in the same refcount
 * block, and sets their refcounts to 1 in one write (not flushed). */
static int cluster_take(struct qcow2 *q, uint64_t want, uint64_t *cluster, uint64_t *got)
{
    uint64_t max_cluster = MAX_VIRTUAL_SIZE >> q->cluster_bits;
    for (uint64_t c = q->free_hint; c < max_cluster; c++) {
        uint16_t rc;
        int r = refcount_get(q, c, &rc);
        if (r < 0)
            return r;
        if (rc && (c << q->cluster_bits) > q->file_size + SCAN_SLACK)
            return -EIO; /* counted clusters far past the end of the file: corrupt */
        if (rc)
            continue;
        uint64_t index = c / q->refblock_entries;
        if (index >= q->reftable_entries) {
            r = reftable_grow(q, c);
        } else if (!q->reftable[index]) {
            r = refblock_create(q, index, c);
        } else {
            uint64_t n = 1, block_end = (index + 1) * q->refblock_entries;
            while (n < want && c + n < block_end) {
                r = refcount_get(q, c + n, &rc);
                if (r < 0 || rc)
                    break;
                n++;
            }
            r = refcount_set_run(q, c, n, 1);
            if (r == 0) {
                q->free_hint = c + n;
                *cluster = c;
                *got = n;
                return 0;
            }
        }
        if (r < 0)
            return r;
        /* c is now taken by refcount metadata; look again from there. */
        q->free_hint = c;
        c--;
    }
    return -ENOSPC;
}

/* Hands out one cluster whose refcount of 1 is already on disk. Reserves clusters in batches
 * (RESERVE_*) so one flush serves many allocations; a crash leaks the unused ones. */
static int cluster_alloc(struct qcow2 *q, uint64_t *off)
{
    if (q->next_reserved == q->n_reserved) {
        if (q->n_reserved) /* the last one was used up: allocations come in a stream */
            q->reserve_bytes =
                q->reserve_bytes * 2 > RESERVE_BYTES_MAX ? RESERVE_BYTES_MAX : q->reserve_bytes * 2;
        if (q->reserve_bytes < RESERVE_BYTES)
            q->reserve_bytes = RESERVE_BYTES;
        uint64_t want = q->reserve_bytes >> q->cluster_bits;
        want = want < RESERVE_MIN ? RESERVE_MIN : want > RESERVE_MAX ? RESERVE_MAX : want;
        q->n_reserved = q->next_reserved = 0;
        int r = 0;
        uint64_t end = 0;
        while (q->n_reserved < want && r == 0) {
            uint64_t first, n;
            r = cluster_take(q, want - q->n_reserved, &first, &n);
            for (uint64_t i = 0; r == 0 && i < n; i++)
                q->reserved[q->n_reserved++] = first + i;
            if (r == 0 && (first + n) << q->cluster_bits > end)
                end = (first + n) << q->cluster_bits;
        }
        /* Extend the file over the reserved clusters before the flush: qemu-img check calls a
         * pointer past the end of the file corruption, and a table entry may reach the disk
         * before the data it points at. */
        if (r == 0 && end > q->file_size)
            r = file_extend(q, end);
        if (r == 0)
            r = file_sync(q);
        if (r == 0 && q->n_reserved == 0)
            r = -ENOSPC;
        if (r < 0) {
            q->n_reserved = 0; /* leaked */
            return r;
        }
    }
    *off = q->reserved[q->next_reserved++] << q->cluster_bits;
    return 0;
}

/* A run of host clusters an L2 entry held (a compressed cluster may span two, and shares
 * them with its neighbours, hence refcounts above 1). */
struct host_span {
    uint64_t first, count;
};

/* Drops by one the refcount of clusters an entry no longer points at (the entry's removal is
 * already flushed). */
static int clusters_release(struct qcow2 *q, const struct host_span *spans, unsigned n)
{
    int r = 0;
    q->unz_entry = 0; /* the bytes behind it may be reused */
    for (unsigned i = 0; i < n && r == 0; i++)
        for (uint64_t c = spans[i].first; c < spans[i].first + spans[i].count && r == 0; c++) {
            uint16_t rc;
            r = refcount_get(q, c, &rc);
            if (r == 0 && rc == 0)
                r = -EIO; /* pointed at but not counted: corrupt */
            if (r == 0)
                r = refcount_set(q, c, (uint16_t)(rc - 1));
            if (r == 0 && rc == 1 && c < q->free_hint)
                q->free_hint = c;
        }
    return r;
}

/* Where a compressed cluster's bytes are: x = 62 - (cluster_bits - 8) bits of byte offset,
 * then the number of 512-byte sectors past the first. */
static void compressed_where(const struct qcow2 *q, uint64_t entry, uint64_t *off, uint64_t *len)
{
    unsigned x = 62 - (q->cluster_bits - 8);
    *off = entry & ((1ull << x) - 1);
    uint64_t sectors = (entry & ~(COPIED | COMPRESSED)) >> x;
    *len = (sectors + 1) * 512 - (*off & 511);
}

/* The host clusters an L2 entry owns (count 0 for none). */
static struct host_span entry_span(const struct qcow2 *q, uint64_t entry)
{
    struct host_span s = {0, 0};
    if (entry & COMPRESSED) {
        uint64_t off, len;
        compressed_where(q, entry, &off, &len);
        s.first = off >> q->cluster_bits;
        s.count = ((off + len - 1) >> q->cluster_bits) - s.first + 1;
    } else if (entry & OFFSET_MASK) {
        s.first = (entry & OFFSET_MASK) >> q->cluster_bits;
        s.count = 1;
    }
    return s;
}

/* ---- L1 / L2 ---- */

/* The host offset of guest cluster vc's L2 table, 0 if none; -EIO if L1 is bad there. */
static int l2_table_offset(struct qcow2 *q, uint64_t vc, uint64_t *l2off)
{
    uint64_t l1e = q->l1[vc / q->l2_entries];
    if (l1e & L1_RESERVED)
        return -EIO;
    uint64_t off = l1e & OFFSET_MASK;
    if (off && !host_cluster_ok(q, off))
        return -EIO;
    *l2off = off;
    return 0;
}

/* The L2 entry of guest cluster vc (0 when it has no L2 table), checked. */
static int l2_entry_get(struct qcow2 *q, uint64_t vc, uint64_t *entry)
{
    uint64_t l2off;
    int r = l2_table_offset(q, vc, &l2off);
    if (r < 0)
        return r;
    if (!l2off) {
        *entry = 0;
        return 0;
    }
    uint8_t *t;
    r = cache_get(q, &q->l2_cache, l2off, &t);
    if (r < 0)
        return r;
    uint64_t e = get_be64(t + (vc % q->l2_entries) * 8);
    if (e & COMPRESSED) {
        uint64_t off, len;
        compressed_where(q, e, &off, &len);
        if ((e & COPIED) || off < q->cluster_size || off >= (1ull << 56) || off >= q->file_size ||
            len > 2 * q->cluster_size + 512)
            return -EIO;
        *entry = e;
        return 0;
    }
    if (e & L2_RESERVED)
        return -EIO;
    uint64_t host = e & OFFSET_MASK;
    if (host && !host_cluster_ok(q, host))
        return -EIO;
    *entry = e;
    return 0;
}

/* Makes sure guest cluster vc has an L2 table (flushed before L1 links it). */
static int l2_table_ensure(struct qcow2 *q, uint64_t vc, uint64_t *l2off)
{
    int r = l2_table_offset(q, vc, l2off);
    if (r < 0 || *l2off) {
        if (r == 0 && !(q->l1[vc / q->l2_entries] & COPIED))
            return -EIO; /* shared with an internal snapshot: not supported */
        return r;
    }
    uint64_t off;
    r = cluster_alloc(q, &off);
    if (r < 0)
        return r;
    if (overlaps_metadata(q, off, q->cluster_size))
        return -EIO;
    uint8_t *t = cache_new_zeroed(q, &q->l2_cache, off);
    r = file_pwrite(q, t, q->cluster_size, off);
    if (r == 0)
        r = file_sync(q);
    uint64_t l1i = vc / q->l2_entries;
    uint8_t e[8];
    put_be64(e, off | COPIED);
    if (r == 0)
        r = file_pwrite(q, e, 8, q->l1_offset + l1i * 8);
    if (r < 0) {
        cache_drop(&q->l2_cache, off);
        return r; /* the cluster leaks */
    }
    q->l1[l1i] = off | COPIED;
    *l2off = off;
    return 0;
}

/* Writes one L2 entry through (the table must exist and be ours). */
static int l2_entry_set(struct qcow2 *q, uint64_t vc, uint64_t entry)
{
    uint64_t l2off;
    int r = l2_table_ensure(q, vc, &l2off);
    if (r < 0)
        return r;
    uint8_t *t;
    r = cache_get(q, &q->l2_cache, l2off, &t);
    if (r < 0)
        return r;
    uint64_t at = (vc % q->l2_entries) * 8;
    put_be64(t + at, entry);
    return file_pwrite(q, t + at, 8, l2off + at);
}

/* ---- guest I/O ---- */

static int check_range(const struct qcow2 *q, uint64_t offset, uint64_t len)
{
    if (offset > q->size || len > q->size - offset)
        return -EINVAL;
    return 0;
}

/* Reads what an unallocated cluster shows: the backing file, zeroes past its end. */
static int backing_read(struct qcow2 *q, uint64_t offset, uint8_t *buf, size_t len)
{
    size_t n = 0;
    if (q->backing && offset < q->backing_size) {
        n = len;
        if (offset + n > q->backing_size)
            n = (size_t)(q->backing_size - offset);
        int r = disk_read(q->backing, offset, buf, n);
        if (r < 0)
            return r;
    }
    memset(buf + n, 0, len - n);
    return 0;
}

/* Inflates a compressed cluster (raw deflate, as QEMU's zlib compression type writes) into
 * q->unz, which keeps it for the next read of the same cluster. */
static int decompress(struct qcow2 *q, uint64_t entry)
{
    if (q->unz_entry == entry)
        return 0;
    q->unz_entry = 0;
    uint64_t off, len;
    compressed_where(q, entry, &off, &len);
    int r = file_pread(q, q->zbuf, len, off);
    if (r < 0)
        return r;
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, -12) != Z_OK)
        return -ENOMEM;
    z.next_in = q->zbuf;
    z.avail_in = (uInt)len;
    z.next_out = q->unz;
    z.avail_out = (uInt)q->cluster_size;
    int zr = inflate(&z, Z_FINISH);
    bool ok = (zr == Z_STREAM_END || zr == Z_BUF_ERROR) && z.avail_out == 0;
    inflateEnd(&z);
    if (!ok)
        return -EIO;
    q->unz_entry = entry;
    return 0;
}

/* Reads [in, in+len) of guest cluster vc given its L2 entry. */
static int cluster_read(struct qcow2 *q, uint64_t vc, uint64_t entry, uint64_t in, uint8_t *buf,
                        size_t len)
{
    if (entry & COMPRESSED) {
        int r = decompress(q, entry);
        if (r == 0)
            memcpy(buf, q->unz + in, len);
        return r;
    }
    uint64_t host = entry & OFFSET_MASK;
    if (entry & ZERO_FLAG) {
        memset(buf, 0, len);
        return 0;
    }
    if (!host)
        return backing_read(q, (vc << q->cluster_bits) + in, buf, len);
    return file_pread(q, buf, len, host + in);
}

int qcow2_read(struct qcow2 *q, uint64_t offset, void *buf, size_t len)
{
    int r = check_range(q, offset, len);
    uint8_t *p = buf;
    while (r == 0 && len) {
        uint64_t vc = offset >> q->cluster_bits;
        uint64_t in = offset & (q->cluster_size - 1);
        size_t n = len;
        if (n > q->cluster_size - in)
            n = (size_t)(q->cluster_size - in);
        uint64_t entry;
        r = l2_entry_get(q, vc, &entry);
        if (r == 0)
            r = cluster_read(q, vc, entry, in, p, n);
        p += n;
        offset += n;
        len -= n;
    }
    return r;
}

/* Writes [in, in+n) of guest cluster vc. An allocated cluster of ours is written in place;
 * otherwise a new cluster gets the data plus the rest of the old contents (backing, zeroes),
 * and only then does the L2 entry point at it. */
static int cluster_write(struct qcow2 *q, uint64_t vc, uint64_t in, const uint8_t *data, size_t n)
{
    uint64_t cs = q->cluster_size;
    uint64_t entry;
    int r = l2_entry_get(q, vc, &entry);
    if (r < 0)
        return r;
    bool compressed = entry & COMPRESSED;
    uint64_t host = compressed ? 0 : entry & OFFSET_MASK;
    if (host && !(entry & COPIED))
        return -EIO; /* shared with an internal snapshot: not supported */
    if (host && !(entry & ZERO_FLAG)) {
        if (overlaps_metadata(q, host, cs))
            return -EIO;
        return file_pwrite(q, data, n, host + in);
    }
    const uint8_t *whole = data;
    bool zero_around = false; /* a part of a cluster that otherwise reads as zeroes */
    if (n != cs) {
        r = cluster_read(q, vc, entry, 0, q->bounce, cs);
        if (r < 0)
            return r;
        zero_around = memcmp(q->bounce, zero_cluster, in) == 0 &&
                      memcmp(q->bounce + in + n, zero_cluster, cs - in - n) == 0;
        memcpy(q->bounce + in, data, n);
        whole = q->bounce;
    }
    if (!host) {
        uint64_t l2off;
        r = l2_table_ensure(q, vc, &l2off);
        if (r == 0)
            r = cluster_alloc(q, &host);
        if (r < 0)
            return r;
    }
    if (overlaps_metadata(q, host, cs))
        return -EIO;
    if (zero_around) { /* write the data alone, not a cluster of mostly zeroes */
        r = file_zero(q, host, cs);
        if (r == 0)
            r = file_pwrite(q, data, n, host + in);
    } else {
        r = file_pwrite(q, whole, cs, host);
    }
    if (r == 0)
        r = l2_entry_set(q, vc, host | COPIED);
    if (r == 0 && compressed) { /* the compressed bytes lose a user once that is on disk */
        struct host_span old = entry_span(q, entry);
        r = file_sync(q);
        if (r == 0)
            r = clusters_release(q, &old, 1);
    }
    return r;
}

int qcow2_write(struct qcow2 *q, uint64_t offset, const void *buf, size_t len)
{
    if (q->read_only)
        return -EROFS;
    int r = check_range(q, offset, len);
    const uint8_t *p = buf;
    while (r == 0 && len) {
        uint64_t in = offset & (q->cluster_size - 1);
        size_t n = len;
        if (n > q->cluster_size - in)
            n = (size_t)(q->cluster_size - in);
        r = cluster_write(q, offset >> q->cluster_bits, in, p, n);
        p += n;
        offset += n;
        len -= n;
    }
    return r;
}

/* Whole clusters become zero clusters (plain "unallocated" when there is no backing file);
 * their host clusters are freed only after the new entries are flushed. */
int qcow2_write_zeroes(struct qcow2 *q, uint64_t offset, uint64_t len)
{
    if (q->read_only)
        return -EROFS;
    int r = check_range(q, offset, len);
    uint64_t cs = q->cluster_size;
    struct host_span freed[FREE_BATCH];
    unsigned n_freed = 0;
    while (r == 0 && len) {
        uint64_t in = offset & (cs - 1);
        uint64_t n = len < cs - in ? len : cs - in;
        uint64_t vc = offset >> q->cluster_bits;
        /* The last cluster of a disk whose size is not cluster-aligned counts as whole. */
        bool whole = in == 0 && (n == cs || offset + n == q->size);
        if (!whole) {
            uint8_t *zeros = calloc(1, n);
            if (!zeros) {
                r = -ENOMEM;
                break;
            }
            r = cluster_write(q, vc, in, zeros, n);
            free(zeros);
        } else {
            uint64_t entry = 0;
            r = l2_entry_get(q, vc, &entry);
            struct host_span old = entry_span(q, entry);
            uint64_t want = q->backing ? ZERO_FLAG : 0;
            if (r == 0 && old.count && !(entry & (COPIED | COMPRESSED)))
                r = -EIO; /* shared with an internal snapshot: not supported */
            if (r == 0 && entry != want && !(entry == 0 && !q->backing))
                r = l2_entry_set(q, vc, want);
            if (r == 0 && old.count)
                freed[n_freed++] = old;
        }
        if (r == 0 && (n_freed == FREE_BATCH || (n_freed && len == n))) {
            r = file_sync(q);
            if (r == 0)
                r = clusters_release(q, freed, n_freed);
            n_freed = 0;
        }
        offset += n;
        len -= n;
    }
    return r;
}

int qcow2_discard(struct qcow2 *q, uint64_t offset, uint64_t len)
{
    return qcow2_write_zeroes(q, offset, len);
}

int qcow2_flush(struct qcow2 *q)
{
    return file_sync(q);
}

uint64_t qcow2_size(const struct qcow2 *q)
{
    return q->size;
}

uint32_t qcow2_cluster_size(const struct qcow2 *q)
{
    return (uint32_t)q->cluster_size;
}

void qcow2_set_io_hook(struct qcow2 *q, qcow2_io_hook_fn hook, void *opaque)
{
    q->hook = hook;
    q->hook_opaque = opaque;
}

/* ---- open / close ---- */

static void qcow2_free(struct qcow2 *q)
{
    if (!q)
        return;
    if (q->backing)
        disk_close(q->backing);
    if (q->fd >= 0)
        close(q->fd);
    for (unsigned i = 0; i < CACHE_SLOTS; i++) {
        free(q->l2_cache.slot[i].data);
        free(q->refblock_cache.slot[i].data);
    }
    free(q->l1);
    free(q->reftable);
    free(q->bounce);
    free(q->zbuf);
    free(q->unz);
    free(q->path);
    free(q);
}

int qcow2_close(struct qcow2 *q)
{
    if (!q)
        return 0;
    int r = 0;
    if (!q->read_only) {
        /* Give back reserved clusters nothing points at. */
        for (unsigned i = q->next_reserved; i < q->n_reserved && r == 0;) {
            unsigned n = 1; /* runs of consecutive clusters in one write */
            while (i + n < q->n_reserved && q->reserved[i + n] == q->reserved[i] + n)
                n++;
            r = refcount_set_run(q, q->reserved[i], n, 0);
            i += n;
        }
        int s = file_sync(q);
        if (r == 0)
            r = s;
        /* The file was extended over them; cut the free tail off again (the refcounts saying
         * it is free are on disk). */
        uint64_t end = (q->file_size + q->cluster_size - 1) >> q->cluster_bits;
        uint64_t keep = end;
        for (unsigned i = 0; r == 0 && keep > 1 && i < RESERVE_MAX; i++) {
            uint16_t rc;
            r = refcount_get(q, keep - 1, &rc);
            if (r < 0 || rc)
                break;
            keep--;
        }
        if (r == 0 && keep < end && (keep << q->cluster_bits) < q->file_size) {
            if (q->hook)
                q->hook(q->hook_opaque, QCOW2_IO_EXTEND, NULL, 0, keep << q->cluster_bits);
            if (ftruncate(q->fd, (off_t)(keep << q->cluster_bits)) < 0)
                r = -errno;
            s = file_sync(q);
            if (r == 0)
                r = s;
        }
    }
    qcow2_free(q);
    return r;
}

bool qcow2_probe(const void *buf, size_t len)
{
    return len >= 4 && get_be32(buf) == QCOW2_MAGIC;
}

/* Loads a table of n big-endian 64-bit entries at off into host order. */
static int table_load(struct qcow2 *q, uint64_t off, uint64_t n, uint64_t **out)
{
    uint64_t *t = calloc(n ? n : 1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    int r = file_pread(q, t, n * 8, off);
    if (r < 0) {
        free(t);
        return r;
    }
    for (uint64_t i = 0; i < n; i++)
        t[i] = be64toh(t[i]);
    *out = t;
    return 0;
}

/* The backing file name (resolved against the image's folder) and format extension. */
static int open_backing(struct qcow2 *q, const uint8_t *hdr, uint64_t hdr_len, unsigned depth,
                        char *err, size_t errlen)
{
    uint64_t name_off = get_be64(hdr + H_BACKING_OFFSET);
    uint32_t name_len = get_be32(hdr + H_BACKING_SIZE);
    char format[32] = "";

    /* Header extensions: after the header, inside the first cluster, before the name. */
    uint64_t end = name_off ? name_off : hdr_len;
    if (end > hdr_len)
        end = hdr_len;
    for (uint64_t at = get_be32(hdr + H_HEADER_LENGTH); at + 8 <= end;) {
        uint32_t type = get_be32(hdr + at), len = get_be32(hdr + at + 4);
        if (type == EXT_END)
            break;
        uint64_t padded = ((uint64_t)len + 7) & ~7ull;
        if (padded > end - at - 8) {
            return err_set(err, errlen, -EINVAL, "%s: header extension 0x%08x runs past the header",
                           q->path, type);
        }
        if (type == EXT_BACKING_FORMAT) {
            if (len == 0 || len >= sizeof(format))
                return err_set(err, errlen, -EINVAL, "%s: bad backing format extension", q->path);
            memcpy(format, hdr + at + 8, len);
            format[len] = 0;
        }
        at += 8 + padded;
    }
    if (!name_off)
        return 0;
    if (name_len == 0 || name_len > MAX_BACKING_NAME || name_off > hdr_len ||
        name_len > hdr_len - name_off) {
        return err_set(err, errlen, -EINVAL,
                       "%s: backing file name (offset %llu, %u bytes) is not in the header",
                       q->path, (unsigned long long)name_off, name_len);
    }
    char name[MAX_BACKING_NAME + 1];
    memcpy(name, hdr + name_off, name_len);
    name[name_len] = 0;
    if (strlen(name) != name_len)
        return err_set(err, errlen, -EINVAL, "%s: backing file name contains a NUL byte", q->path);
    if (format[0] && strcmp(format, "raw") && strcmp(format, "qcow2")) {
        return err_set(err, errlen, -ENOTSUP,
                       "%s: backing file %s has format '%s'; only raw and qcow2 are supported",
                       q->path, name, format);
    }
    if (depth + 1 >= QCOW2_MAX_CHAIN_DEPTH) {
        return err_set(err, errlen, -ELOOP, "%s: backing chain deeper than %d images (a loop?)",
                       q->path, QCOW2_MAX_CHAIN_DEPTH);
    }
    char full[PATH_MAX];
    if (name[0] == '/') {
        snprintf(full, sizeof(full), "%s", name);
    } else {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", q->path);
        if (snprintf(full, sizeof(full), "%s/%s", dirname(dir), name) >= (int)sizeof(full))
            return err_set(err, errlen, -ENAMETOOLONG, "%s: backing file path too long", q->path);
    }
    char sub[512];
    q->backing =
        disk_open_format(full, format[0] ? format : NULL, true, depth + 1, sub, sizeof(sub));
    if (!q->backing) {
        /* Only the top image names itself; deeper ones pass the innermost reason up. */
        if (depth > 0)
            return err_set(err, errlen, -ENOENT, "%s", sub);
        return err_set(err, errlen, -ENOENT, "%s: backing file: %s", q->path, sub);
    }
    q->backing_size = disk_size(q->backing);
    return 0;
}

static int parse_header(struct qcow2 *q, const uint8_t *hdr, size_t got, char *err, size_t errlen)
{
    const char *p = q->path;
    if (got < HEADER_V3_LEN && !(got >= 8 && get_be32(hdr + H_VERSION) == 2 && got >= 72))
        return err_set(err, errlen, -EINVAL, "%s: truncated qcow2 header (%zu bytes)", p, got);
    uint32_t version = get_be32(hdr + H_VERSION);
    if (version != 3) {
        return err_set(err, errlen, -ENOTSUP,
                       "%s: qcow2 version %u is not supported (only 3; `qemu-img amend -f qcow2 -o "
                       "compat=1.1 %s` converts version 2)",
                       p, version, p);
    }
    uint32_t cluster_bits = get_be32(hdr + H_CLUSTER_BITS);
    if (cluster_bits < 9 || cluster_bits > 21) {
        return err_set(err, errlen, -EINVAL, "%s: cluster_bits %u out of range (9..21)", p,
                       cluster_bits);
    }
    q->cluster_bits = cluster_bits;
    q->cluster_size = 1ull << cluster_bits;
    q->l2_entries = q->cluster_size / 8;
    uint64_t cs = q->cluster_size;

    uint32_t hlen = get_be32(hdr + H_HEADER_LENGTH);
    if (hlen < HEADER_V3_LEN || hlen % 8 || hlen > cs || hlen > got)
        return err_set(err, errlen, -EINVAL, "%s: bad header_length %u", p, hlen);
    uint64_t incompat = get_be64(hdr + H_INCOMPAT);
    uint64_t known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION |
                     INCOMPAT_EXTL2;
    if (incompat & ~known) {
        return err_set(err, errlen, -ENOTSUP,
                       "%s: unknown incompatible qcow2 features 0x%llx; this image needs a "
                       "newer program",
                       p, (unsigned long long)(incompat & ~known));
    }
    if (incompat & INCOMPAT_DATA_FILE)
        return err_set(err, errlen, -ENOTSUP, "%s: external data files are not supported", p);
    if (incompat & INCOMPAT_EXTL2) {
        return err_set(err, errlen, -ENOTSUP,
                       "%s: extended L2 entries (subclusters) are not supported", p);
    }
    if (incompat & INCOMPAT_COMPRESSION)
        return err_set(err, errlen, -ENOTSUP, "%s: non-zlib compression type is not supported", p);
    if ((incompat & INCOMPAT_DIRTY) && !q->read_only) {
        return err_set(err, errlen, -EUCLEAN,
                       "%s: image is dirty (lazy refcounts, not closed cleanly); repair it "
                       "with `qemu-img check -r all %s`",
                       p, p);
    }
    if ((incompat & INCOMPAT_CORRUPT) && !q->read_only) {
        return err_set(err, errlen, -EUCLEAN,
                       "%s: image is marked corrupt; repair it with `qemu-img check -r all "
                       "%s`",
                       p, p);
    }
    if (get_be32(hdr + H_CRYPT) != 0)
        return err_set(err, errlen, -ENOTSUP, "%s: encrypted images are not supported", p);
    uint32_t order = get_be32(hdr + H_REFCOUNT_ORDER);
    if (order != 4) {
        return err_set(err, errlen, -ENOTSUP,
                       "%s: refcount_order %u is not supported (only 4, 16-bit refcounts)", p,
                       order);
    }
    q->refblock_entries = cs / 2;
    if (get_be32(hdr + H_NB_SNAPSHOTS) && !q->read_only) {
        return err_set(err, errlen, -ENOTSUP,
                       "%s: has internal snapshots; writing such images is not supported "
                       "(open it read-only)",
                       p);
    }

    q->size = get_be64(hdr + H_SIZE);
    if (q->size > MAX_VIRTUAL_SIZE) {
        return err_set(err, errlen, -EINVAL, "%s: virtual size %llu is too large", p,
                       (unsigned long long)q->size);
    }
    q->l1_size = get_be32(hdr + H_L1_SIZE);
    q->l1_offset = get_be64(hdr + H_L1_OFFSET);
    uint64_t per_l2 = q->l2_entries * cs;
    uint64_t need = (q->size + per_l2 - 1) / per_l2;
    if ((uint64_t)q->l1_size * 8 > MAX_L1_BYTES || q->l1_size < need) {
        return err_set(err, errlen, -EINVAL, "%s: L1 table size %u is wrong for a %llu-byte disk",
                       p, q->l1_size, (unsigned long long)q->size);
    }
    uint64_t l1_bytes = (uint64_t)q->l1_size * 8;
    if (q->l1_size && (!q->l1_offset || !aligned(q, q->l1_offset) || q->l1_offset > q->file_size ||
                       l1_bytes > q->file_size - q->l1_offset || q->l1_offset < cs)) {
        return err_set(err, errlen, -EINVAL,
                       "%s: L1 table at %llu (%llu bytes) is not inside the file", p,
                       (unsigned long long)q->l1_offset, (unsigned long long)l1_bytes);
    }
    q->reftable_offset = get_be64(hdr + H_REFTABLE_OFFSET);
    q->reftable_clusters = get_be32(hdr + H_REFTABLE_CLUSTERS);
    uint64_t rt_bytes = (uint64_t)q->reftable_clusters * cs;
    if (q->reftable_clusters == 0 || rt_bytes > MAX_REFTABLE_BYTES) {
        return err_set(err, errlen, -EINVAL, "%s: refcount table of %u clusters is out of range", p,
                       q->reftable_clusters);
    }
    if (!aligned(q, q->reftable_offset) || q->reftable_offset < cs ||
        q->reftable_offset > q->file_size || rt_bytes > q->file_size - q->reftable_offset) {
        return err_set(err, errlen, -EINVAL,
                       "%s: refcount table at %llu is not inside the file (or overlaps the "
                       "header)",
                       p, (unsigned long long)q->reftable_offset);
    }
    if (q->l1_size && ranges_overlap(q->l1_offset, l1_bytes, q->reftable_offset, rt_bytes))
        return err_set(err, errlen, -EINVAL, "%s: L1 table and refcount table overlap", p);
    q->reftable_entries = rt_bytes / 8;
    return 0;
}

static int autoclear_reset(struct qcow2 *q, const uint8_t *hdr)
{
    /* We do not maintain any autoclear feature (e.g. dirty bitmaps): clearing the bits tells
     * others their data is stale, as the spec asks of programs that do not know them. */
    if (q->read_only || !get_be64(hdr + H_AUTOCLEAR))
        return 0;
    uint8_t zero[8] = {0};
    int r = file_pwrite(q, zero, 8, H_AUTOCLEAR);
    return r ? r : file_sync(q);
}

struct qcow2 *qcow2_open(const char *path, bool read_only, unsigned depth, char *err, size_t errlen)
{
    struct qcow2 *q = calloc(1, sizeof(*q));
    uint8_t *hdr = NULL;
    if (!q || !(q->path = strdup(path))) {
        err_set(err, errlen, -ENOMEM, "%s: out of memory", path);
        free(q);
        return NULL;
    }
    q->read_only = read_only;
    q->fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (q->fd < 0) {
        err_set_errno(err, errlen, "%s", path);
        goto fail;
    }
    if (imglock_acquire(q->fd, path, !read_only, err, errlen) < 0) /* before the first write */
        goto fail;
    struct stat st;
    if (fstat(q->fd, &st) < 0) {
        err_set_errno(err, errlen, "%s", path);
        goto fail;
    }
    q->file_size = (uint64_t)st.st_size;

    /* Read the first cluster's worth, at most 2 MiB: header, extensions, backing name. */
    size_t want = st.st_size < QCOW2_MAX_CLUSTER_SIZE ? (size_t)st.st_size : QCOW2_MAX_CLUSTER_SIZE;
    hdr = calloc(1, want > HEADER_V3_LEN ? want : HEADER_V3_LEN);
    if (!hdr || file_pread(q, hdr, want, 0) < 0) {
        err_set(err, errlen, -EIO, "%s: cannot read the header", path);
        goto fail;
    }
    if (!qcow2_probe(hdr, want)) {
        err_set(err, errlen, -EINVAL, "%s: not a qcow2 image", path);
        goto fail;
    }
    if (parse_header(q, hdr, want, err, errlen) < 0)
        goto fail;
    size_t hdr_len = want < q->cluster_size ? want : (size_t)q->cluster_size;

    if (table_load(q, q->l1_offset, q->l1_size, &q->l1) < 0 ||
        table_load(q, q->reftable_offset, q->reftable_entries, &q->reftable) < 0) {
        err_set(err, errlen, -EIO, "%s: cannot read the L1 or refcount table", path);
        goto fail;
    }
    for (uint64_t i = 0; i < q->reftable_entries; i++) {
        uint64_t e = q->reftable[i];
        if (e && ((e & REFTABLE_RESERVED) || !host_cluster_ok(q, e))) {
            err_set(err, errlen, -EINVAL, "%s: refcount table entry %llu (%#llx) is invalid", path,
                    (unsigned long long)i, (unsigned long long)e);
            goto fail;
        }
    }
    unsigned slots = (unsigned)(CACHE_BYTES / q->cluster_size);
    slots = slots < 2 ? 2 : slots > CACHE_SLOTS ? CACHE_SLOTS : slots;
    q->l2_cache.n = q->refblock_cache.n = slots;
    for (unsigned i = 0; i < slots; i++) {
        q->l2_cache.slot[i].data = malloc(q->cluster_size);
        q->refblock_cache.slot[i].data = malloc(q->cluster_size);
        if (!q->l2_cache.slot[i].data || !q->refblock_cache.slot[i].data) {
            err_set(err, errlen, -ENOMEM, "%s: out of memory", path);
            goto fail;
        }
    }
    q->bounce = malloc(q->cluster_size);
    q->zbuf = malloc(2 * q->cluster_size + 512);
    q->unz = malloc(q->cluster_size);
    if (!q->bounce || !q->zbuf || !q->unz) {
        err_set(err, errlen, -ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    if (depth != QCOW2_ALONE && open_backing(q, hdr, hdr_len, depth, err, errlen) < 0)
        goto fail;
    if (autoclear_reset(q, hdr) < 0) {
        err_set_errno(err, errlen, "%s: cannot update the header", path);
        goto fail;
    }
    free(hdr);
    return q;
fail:
    free(hdr);
    qcow2_free(q);
    return NULL;
}

/* ---- create ---- */

/* The format (unless BACKING_FORMAT names it) and size of BACKING_PATH, resolved as an image at
 * PATH resolves it (relative to its folder). Read from the header without opening the image:
 * it may be in use (locked) by a running VM, and `qemu-img create -u` does not open it either. */
static int probe_backing(const char *path, const char *backing_path, const char *backing_format,
                         char *fmt, size_t fmtlen, uint64_t *size)
{
    char full[PATH_MAX], dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    if (backing_path[0] == '/')
        snprintf(full, sizeof(full), "%s", backing_path);
    else if (snprintf(full, sizeof(full), "%s/%s", dirname(dir), backing_path) >= (int)sizeof(full))
        return -ENAMETOOLONG;
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t h[HEADER_V3_LEN] = {0};
    struct stat st;
    ssize_t n = pread(fd, h, sizeof(h), 0);
    int r = fstat(fd, &st) < 0 ? -errno : 0;
    close(fd);
    bool qcow2 = n >= 32 && qcow2_probe(h, (size_t)n);
    if (r == 0 && backing_format && strcmp(backing_format, "qcow2") == 0 && !qcow2)
        r = -EINVAL;
    if (backing_format) /* a raw image may well hold a qcow2 header: the caller knows */
        qcow2 = strcmp(backing_format, "qcow2") == 0;
    if (r < 0)
        return r;
    snprintf(fmt, fmtlen, "%s", qcow2 ? "qcow2" : "raw");
    *size = qcow2 ? get_be64(h + H_SIZE) : (uint64_t)st.st_size;
    return 0;
}

/* Layout: cluster 0 header (+ backing format extension and name), 1 refcount table, 2 refcount
 * block, 3.. L1 table. Written to a temporary name, fsynced, then linked into place. */
int qcow2_create(const char *path, uint64_t size, uint32_t cluster_size, const char *backing_path,
                 const char *backing_format)
{
    if (cluster_size < QCOW2_MIN_CLUSTER_SIZE || cluster_size > QCOW2_MAX_CLUSTER_SIZE ||
        (cluster_size & (cluster_size - 1)))
        return -EINVAL;
    uint32_t bits = (uint32_t)__builtin_ctz(cluster_size);
    uint64_t cs = cluster_size;
    char fmt[16] = "";
    size_t name_len = backing_path ? strlen(backing_path) : 0;
    if (backing_path) {
        if (name_len == 0 || name_len > MAX_BACKING_NAME)
            return -EINVAL;
        if (backing_format && strcmp(backing_format, "raw") && strcmp(backing_format, "qcow2"))
            return -EINVAL;
        uint64_t bsize;
        int r = probe_backing(path, backing_path, backing_format, fmt, sizeof(fmt), &bsize);
        if (r < 0)
            return r;
        if (size == 0)
            size = bsize;
    }
    if (size > MAX_VIRTUAL_SIZE)
        return -EFBIG;
    size = (size + 511) & ~511ull; /* whole sectors, as QEMU requires */
    uint64_t per_l2 = cs / 8 * cs;
    uint64_t l1_size = (size + per_l2 - 1) / per_l2;
    if (l1_size == 0)
        l1_size = 1;
    if (l1_size * 8 > MAX_L1_BYTES)
        return -EFBIG;
    uint64_t l1_clusters = (l1_size * 8 + cs - 1) / cs;
    uint64_t used = 3 + l1_clusters;
    if (used > cs / 2)
        return -EFBIG; /* the first refcount block must count all of it */

    uint64_t hdr_len = HEADER_V3_LEN;
    size_t fmt_len = strlen(fmt);
    uint64_t ext_len = (fmt_len ? 8 + ((fmt_len + 7) & ~7ull) : 0) + 8;
    if (hdr_len + ext_len + name_len > cs)
        return -ENAMETOOLONG;

    uint8_t *buf = calloc(1, 3 * cs);
    if (!buf)
        return -ENOMEM;
    uint8_t *h = buf;
    put_be32(h, QCOW2_MAGIC);
    put_be32(h + H_VERSION, 3);
    if (backing_path) {
        put_be64(h + H_BACKING_OFFSET, hdr_len + ext_len);
        put_be32(h + H_BACKING_SIZE, (uint32_t)name_len);
        memcpy(h + hdr_len + ext_len, backing_path, name_len);
    }
    put_be32(h + H_CLUSTER_BITS, bits);
    put_be64(h + H_SIZE, size);
    put_be32(h + H_L1_SIZE, (uint32_t)l1_size);
    put_be64(h + H_L1_OFFSET, 3 * cs);
    put_be64(h + H_REFTABLE_OFFSET, cs);
    put_be32(h + H_REFTABLE_CLUSTERS, 1);
    put_be32(h + H_REFCOUNT_ORDER, 4);
    put_be32(h + H_HEADER_LENGTH, (uint32_t)hdr_len);
    if (fmt_len) {
        put_be32(h + hdr_len, EXT_BACKING_FORMAT);
        put_be32(h + hdr_len + 4, (uint32_t)fmt_len);
        memcpy(h + hdr_len + 8, fmt, fmt_len);
    }                           /* the end-of-extensions marker is the zeroes that follow */
    put_be64(buf + cs, 2 * cs); /* refcount table -> block at cluster 2 */
    for (uint64_t c = 0; c < used; c++)
        put_be16(buf + 2 * cs + c * 2, 1);

    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= (int)sizeof(tmp)) {
        free(buf);
        return -ENAMETOOLONG;
    }
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int e = -errno;
        free(buf);
        return e;
    }
    int r = fs_pwrite_all(fd, buf, 3 * cs, 0);
    free(buf);
    if (r == 0 && ftruncate(fd, (off_t)(used * cs)) < 0)
        r = -errno;
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    close(fd);
    /* link() refuses to replace an existing file, unlike rename(). */
    if (r == 0 && link(tmp, path) < 0)
        r = -errno;
    unlink(tmp);
    if (r == 0) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", path);
        int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return r;
}

int qcow2_layer_map(struct qcow2 *q, uint32_t granule, uint64_t *bitmap)
{
    if (!granule || granule > q->cluster_size || (granule & (granule - 1)))
        return -EINVAL;
    uint64_t nclusters = (q->size + q->cluster_size - 1) >> q->cluster_bits;
    uint64_t per = q->cluster_size / granule, nbits = (q->size + granule - 1) / granule;
    /* One L2 table at a time (any nonzero entry is this image's: data, compressed or zero). */
    for (uint64_t first = 0; first < nclusters; first += q->l2_entries) {
        uint64_t l2off;
        uint8_t *table;
        int r = l2_table_offset(q, first, &l2off);
        if (r == 0 && l2off)
            r = cache_get(q, &q->l2_cache, l2off, &table);
        if (r < 0)
            return r;
        for (uint64_t k = 0; l2off && k < q->l2_entries && first + k < nclusters; k++) {
            if (!get_be64(table + 8 * k))
                continue;
            for (uint64_t b = (first + k) * per; b < (first + k + 1) * per && b < nbits; b++)
                bitmap[b / 64] |= 1ull << (b % 64);
        }
    }
    return 0;
}

int qcow2_backing_name(const char *path, char *out, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t hdr[HEADER_V3_LEN];
    int r = 0;
    if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || !qcow2_probe(hdr, sizeof(hdr)))
        r = -EINVAL;
    uint64_t off = r ? 0 : get_be64(hdr + H_BACKING_OFFSET);
    uint32_t n = r ? 0 : get_be32(hdr + H_BACKING_SIZE);
    out[0] = 0;
    if (off &&
        (n == 0 || n > MAX_BACKING_NAME || n >= len || pread(fd, out, n, (off_t)off) != (ssize_t)n))
        r = -EINVAL;
    else if (off)
        out[n] = 0;
    close(fd);
    return r;
}

int qcow2_set_backing(const char *path, const char *backing_path, const char *backing_format)
{
    char fmt[16] = "";
    size_t name_len = backing_path ? strlen(backing_path) : 0;
    if (backing_path) {
        uint64_t bsize;
        if (name_len == 0 || name_len > MAX_BACKING_NAME)
            return -EINVAL;
        int r = probe_backing(path, backing_path, backing_format, fmt, sizeof(fmt), &bsize);
        if (r < 0)
            return r;
    }
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t h[HEADER_V3_LEN];
    uint32_t bits = 0;
    if (pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) && qcow2_probe(h, sizeof(h)) &&
        get_be32(h + H_VERSION) == 3)
        bits = get_be32(h + H_CLUSTER_BITS);
    uint64_t cs = 1ull << bits;
    uint8_t *old = bits >= 9 && bits <= 21 ? calloc(2, cs) : NULL;
    int r = old ? 0 : (bits ? -ENOMEM : -ENOTSUP);
    if (r == 0 && pread(fd, old, cs, 0) != (ssize_t)cs)
        r = -EIO;
    uint8_t *new = old ? old + cs : NULL;
    uint32_t hlen = r ? 0 : get_be32(old + H_HEADER_LENGTH);
    uint64_t old_name = r ? 0 : get_be64(old + H_BACKING_OFFSET);
    uint64_t old_end = old_name ? old_name + get_be32(old + H_BACKING_SIZE) : hlen;
    if (r == 0 && (hlen < HEADER_V3_LEN || hlen % 8 || hlen > cs || old_end > cs))
        r = -EINVAL;
    /* The header, our backing format extension, every other extension as it was, the end
     * marker, the name: rewritten in place inside cluster 0 (as `qemu-img rebase -u` does). */
    uint64_t at = hlen;
    if (r == 0) {
        memcpy(new, old, hlen);
        size_t fl = strlen(fmt);
        if (fl && at + 8 + ((fl + 7) & ~7ull) + 8 > cs) /* the extension and the end marker */
            r = -ENOSPC; /* a header that fills cluster 0 leaves no room for the extension */
        if (r == 0 && fl) {
            put_be32(new + at, EXT_BACKING_FORMAT);
            put_be32(new + at + 4, (uint32_t)fl);
            memcpy(new + at + 8, fmt, fl);
            at += 8 + ((fl + 7) & ~7ull);
        }
        uint64_t limit = old_name ? old_name : cs;
        for (uint64_t e = hlen; r == 0 && e + 8 <= limit;) {
            uint32_t type = get_be32(old + e), elen = get_be32(old + e + 4);
            uint64_t padded = 8 + (((uint64_t)elen + 7) & ~7ull);
            if (type == EXT_END)
                break;
            if (padded > limit - e || at + padded > cs) {
                r = -EINVAL;
                break;
            }
            if (e + padded > old_end)
                old_end = e + padded;
            if (type != EXT_BACKING_FORMAT) {
                memcpy(new + at, old + e, padded);
                at += padded;
            }
            e += padded;
        }
        at += 8; /* end of extensions: zeroes */
        if (r == 0 && at + name_len > cs)
            r = -ENAMETOOLONG;
    }
    if (r == 0) {
        put_be64(new + H_BACKING_OFFSET, name_len ? at : 0);
        put_be32(new + H_BACKING_SIZE, (uint32_t)name_len);
        memcpy(new + at, backing_path ? backing_path : "", name_len);
        uint64_t end = at + name_len > old_end + 8 ? at + name_len : old_end + 8;
        r = fs_pwrite_all(fd, new, end < cs ? end : cs, 0);
    }
    if (r == 0 && fdatasync(fd) < 0)
        r = -errno;
    free(old);
    close(fd);
    return r;
}
