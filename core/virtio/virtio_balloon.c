/* virtio-balloon (see virtio_balloon.h). Queues, in the order Linux and QEMU number them: 0
 * inflate and 1 deflate (arrays of le32 PFNs), then stats if VIRTIO_BALLOON_F_STATS_VQ was
 * accepted, then free page reporting if VIRTIO_BALLOON_F_REPORTING was (device-writable buffers
 * that are the free ranges themselves). The stats buffer is held, not returned: returning it is
 * how the host asks for fresh figures, and the driver answers by making it available again.
 * Locks: the transport's is held around the config and reset callbacks (not around
 * handle_chain) and is taken before this file's; this file never calls into the transport with
 * its own lock held. */
#include "core/virtio/virtio_balloon.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util/deadline.h"
#include "core/util/log.h"
#include "core/virtio/virtio_pci.h"

#define VIRTIO_BALLOON_F_STATS_VQ 1
#define VIRTIO_BALLOON_F_DEFLATE_ON_OOM 2
#define VIRTIO_BALLOON_F_REPORTING 5
#define PFN_SHIFT 12
#define CONFIG_LEN 8             /* num_pages, actual */
#define PFN_BATCH 256            /* Linux sends at most 256 PFNs per buffer */
#define MAX_PFN_BYTES (1u << 20) /* a longer inflate buffer is malformed */
#define STATS_FRESH_MS 1000

enum queue_role { Q_INFLATE, Q_DEFLATE, Q_STATS, Q_REPORTING, Q_NONE };

struct virtio_balloon {
    struct virtio_pci *vp;
    struct virtio_device_ops ops; /* balloon_ops, with the features this VM offers */
    struct machine *m;
    uint64_t ram_pages;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t stats_arrived;
    uint32_t target_pages, actual_pages;
    bool stats_held; /* the driver's stats buffer, to return when fresh figures are wanted */
    uint16_t stats_head;
    uint8_t stats_queue;
    struct balloon_stats stats;
    uint64_t stats_seq;
    struct timespec stats_time; /* when they arrived (CLOCK_MONOTONIC); 0 = never */
    uint64_t inflated_pages, deflated_pages, reported_bytes, freed_bytes, bad_pfns, discard_errors;
};

/* ---- the checks on guest numbers ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

size_t virtio_balloon_pfn_ranges(const struct guest_mem *mem, const uint32_t *pfns, size_t n,
                                 struct balloon_range *ranges, uint64_t *bad)
{
    uint64_t offs[PFN_BATCH];
    size_t nr = 0;
    for (size_t done = 0; done < n;) {
        size_t k = 0;
        for (; done < n && k < PFN_BATCH; done++) {
            uint64_t off = guest_mem_offset(mem, (uint64_t)pfns[done] << PFN_SHIFT);
            if (off == UINT64_MAX)
                (*bad)++;
            else
                offs[k++] = off;
        }
        qsort(offs, k, sizeof(offs[0]), cmp_u64);
        for (size_t i = 0; i < k; i++) {
            struct balloon_range *last = nr ? &ranges[nr - 1] : NULL;
            if (last && offs[i] >= last->off && offs[i] < last->off + last->len)
                continue; /* the same page twice */
            if (last && offs[i] == last->off + last->len)
                last->len += GUEST_PAGE_SIZE;
            else
                ranges[nr++] = (struct balloon_range){offs[i], GUEST_PAGE_SIZE};
        }
    }
    return nr;
}

int virtio_balloon_parse_stats(const uint8_t *buf, size_t len, struct balloon_stats *s)
{
    if (len % 10)
        return -EINVAL;
    for (size_t i = 0; i < len; i += 10) {
        uint16_t tag;
        uint64_t val;
        memcpy(&tag, buf + i, 2);
        memcpy(&val, buf + i + 2, 8);
        if (tag < BALLOON_S_NR) {
            s->value[tag] = val;
            s->present |= 1u << tag;
        }
    }
    return 0;
}

/* ---- the queues (the transport's serving thread, its lock not held) ---- */

static enum queue_role role_of(struct virtio_balloon *b, unsigned queue)
{
    uint64_t f = virtio_pci_chain_features(b->vp);
    bool stats = f >> VIRTIO_BALLOON_F_STATS_VQ & 1,
         reporting = f >> VIRTIO_BALLOON_F_REPORTING & 1;
    if (queue < 2)
        return queue == 0 ? Q_INFLATE : Q_DEFLATE;
    if (queue == 2 && stats)
        return Q_STATS;
    if (queue == 2u + stats && reporting)
        return Q_REPORTING;
    return Q_NONE;
}

static void give_back(struct virtio_balloon *b, uint64_t off, uint64_t len)
{
    uint64_t freed = 0;
    int r = guest_mem_discard(b->m->mem, off, len, &freed);
    pthread_mutex_lock(&b->lock);
    b->freed_bytes += freed;
    b->discard_errors += r < 0;
    pthread_mutex_unlock(&b->lock);
    if (r < 0)
        vmm_log_repeating("virtio-balloon: cannot give back %llu bytes at RAM offset 0x%llx: %s",
                          (unsigned long long)len, (unsigned long long)off, strerror(-r));
}

/* An array of le32 PFNs: inflated pages go back to the host, deflated ones are only counted. */
static int inflate_or_deflate(struct virtio_balloon *b, struct virtq_chain *c, bool deflate,
                              char *reason, size_t rlen)
{
    if (c->readable_len % 4 || c->readable_len > MAX_PFN_BYTES) {
        snprintf(reason, rlen, "%s buffer at head %u: %llu bytes is not an array of PFNs",
                 deflate ? "deflate" : "inflate", c->head, (unsigned long long)c->readable_len);
        return -1;
    }
    uint64_t n = c->readable_len / 4, bad = 0;
    if (deflate) { /* no VIRTIO_BALLOON_F_MUST_TELL_HOST: the guest may use them already */
        pthread_mutex_lock(&b->lock);
        b->deflated_pages += n;
        pthread_mutex_unlock(&b->lock);
        return 0;
    }
    uint32_t pfns[PFN_BATCH];
    struct balloon_range ranges[PFN_BATCH];
    for (uint64_t done = 0; done < n;) {
        size_t k = n - done < PFN_BATCH ? (size_t)(n - done) : PFN_BATCH;
        virtq_chain_read(c, done * 4, pfns, k * 4);
        size_t nr = virtio_balloon_pfn_ranges(b->m->mem, pfns, k, ranges, &bad);
        for (size_t i = 0; i < nr; i++)
            give_back(b, ranges[i].off, ranges[i].len);
        done += k;
    }
    pthread_mutex_lock(&b->lock);
    b->inflated_pages += n - bad;
    b->bad_pfns += bad;
    pthread_mutex_unlock(&b->lock);
    if (bad)
        vmm_log_repeating("virtio-balloon: the guest gave %llu PFNs outside its RAM; skipped",
                          (unsigned long long)bad);
    return 0;
}

/* Free page reporting: each device-writable segment is a free range (checked to be RAM by the
 * transport); the whole pages inside it go back to the host. */
static int report(struct virtio_balloon *b, struct virtq_chain *c)
{
    uint64_t bytes = 0;
    for (unsigned s = c->nreadable; s < c->nseg; s++) {
        uint64_t off = guest_mem_offset(b->m->mem, c->seg[s].gpa);
        if (off != UINT64_MAX) {
            give_back(b, off, c->seg[s].len);
            bytes += c->seg[s].len;
        }
    }
    pthread_mutex_lock(&b->lock);
    b->reported_bytes += bytes;
    pthread_mutex_unlock(&b->lock);
    return 0;
}

static int stats_in(struct virtio_balloon *b, unsigned queue, struct virtq_chain *c, char *reason,
                    size_t rlen)
{
    uint8_t buf[BALLOON_S_NR * 10 * 2];
    struct balloon_stats s;
    memset(&s, 0, sizeof(s));
    if (c->readable_len > sizeof(buf) || virtq_chain_read(c, 0, buf, (size_t)c->readable_len) < 0 ||
        virtio_balloon_parse_stats(buf, (size_t)c->readable_len, &s) < 0) {
        snprintf(reason, rlen, "stats buffer at head %u: %llu bytes is not {le16, le64} entries",
                 c->head, (unsigned long long)c->readable_len);
        return -1;
    }
    pthread_mutex_lock(&b->lock);
    b->stats = s;
    b->stats_seq++;
    clock_gettime(CLOCK_MONOTONIC, &b->stats_time);
    bool hold = !b->stats_held; /* a second buffer while one is held goes straight back */
    if (hold) {
        b->stats_held = true;
        b->stats_head = c->head;
        b->stats_queue = (uint8_t)queue;
    }
    pthread_cond_broadcast(&b->stats_arrived);
    pthread_mutex_unlock(&b->lock);
    return hold ? VIRTIO_CHAIN_HELD : 0;
}

static int balloon_handle_chain(void *opaque, unsigned queue, struct virtq_chain *c, char *reason,
                                size_t rlen)
{
    struct virtio_balloon *b = opaque;
    switch (role_of(b, queue)) {
    case Q_INFLATE:
    case Q_DEFLATE:
        return inflate_or_deflate(b, c, queue == 1, reason, rlen);
    case Q_STATS:
        return stats_in(b, queue, c, reason, rlen);
    case Q_REPORTING:
        return report(b, c);
    default:
        snprintf(reason, rlen, "queue %u is not in use with the features accepted", queue);
        return -1;
    }
}

/* ---- config space and reset (transport lock held) ---- */

static void balloon_config_read(void *opaque, unsigned off, uint8_t *data, unsigned len)
{
    struct virtio_balloon *b = opaque;
    uint8_t cfg[CONFIG_LEN];
    pthread_mutex_lock(&b->lock);
    memcpy(cfg, &b->target_pages, 4); /* little endian, like every x86 value here */
    memcpy(cfg + 4, &b->actual_pages, 4);
    pthread_mutex_unlock(&b->lock);
    for (unsigned i = 0; i < len; i++)
        data[i] = off + i < CONFIG_LEN ? cfg[off + i] : 0;
}

static void balloon_config_write(void *opaque, unsigned off, const uint8_t *data, unsigned len)
{
    struct virtio_balloon *b = opaque;
    if (off != 4 || len != 4) /* only `actual` is the driver's to write */
        return;
    uint32_t actual;
    memcpy(&actual, data, 4);
    pthread_mutex_lock(&b->lock);
    b->actual_pages = actual <= b->ram_pages ? actual : (uint32_t)b->ram_pages;
    pthread_mutex_unlock(&b->lock);
}

static void balloon_reset(void *opaque)
{
    struct virtio_balloon *b = opaque;
    pthread_mutex_lock(&b->lock);
    b->stats_held = false;
    b->actual_pages = 0;
    pthread_mutex_unlock(&b->lock);
}

static const struct virtio_device_ops balloon_ops = {
    .device_id = 5,
    .class_code = 0x050000, /* memory controller, RAM (QEMU's choice: PCI_CLASS_OTHERS) */
    .features = 1ull << VIRTIO_BALLOON_F_STATS_VQ | 1ull << VIRTIO_BALLOON_F_DEFLATE_ON_OOM |
                1ull << VIRTIO_BALLOON_F_REPORTING,
    .num_queues = 4,
    .config_len = CONFIG_LEN,
    .name = "virtio-balloon",
    .config_read = balloon_config_read,
    .config_write = balloon_config_write,
    .handle_chain = balloon_handle_chain,
    .reset = balloon_reset,
};

/* ---- the VMM's side ---- */

struct virtio_balloon *virtio_balloon_create(struct machine *m, struct pci_bus *bus, unsigned slot,
                                             uint64_t target_bytes, bool reporting)
{
    struct virtio_balloon *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->m = m;
    b->ram_pages = m->mem->size / GUEST_PAGE_SIZE;
    pthread_mutex_init(&b->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->stats_arrived, &ca);
    pthread_condattr_destroy(&ca);
    uint64_t t = target_bytes / GUEST_PAGE_SIZE;
    b->target_pages = (uint32_t)(t < b->ram_pages ? t : b->ram_pages);
    b->ops = balloon_ops;
    if (!reporting)
        b->ops.features &= ~(1ull << VIRTIO_BALLOON_F_REPORTING);
    b->vp = virtio_pci_create(m, bus, slot, &b->ops, b);
    if (!b->vp) {
        virtio_balloon_destroy(b);
        return NULL;
    }
    return b;
}

void virtio_balloon_destroy(struct virtio_balloon *b)
{
    if (!b)
        return;
    if (virtio_pci_destroy(b->vp) < 0)
        return; /* a request still running uses B: left to the process's exit (logged) */
    pthread_cond_destroy(&b->stats_arrived);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

int virtio_balloon_quiesce(struct virtio_balloon *b, unsigned timeout_ms, char *err, size_t errlen)
{
    return virtio_pci_quiesce(b->vp, timeout_ms, err, errlen);
}

void virtio_balloon_resume(struct virtio_balloon *b)
{
    virtio_pci_unquiesce(b->vp);
}

void virtio_balloon_set_target(struct virtio_balloon *b, uint64_t bytes)
{
    uint64_t t = bytes / GUEST_PAGE_SIZE;
    pthread_mutex_lock(&b->lock);
    b->target_pages = (uint32_t)(t < b->ram_pages ? t : b->ram_pages);
    pthread_mutex_unlock(&b->lock);
    virtio_pci_config_changed(b->vp);
}

uint64_t virtio_balloon_target(struct virtio_balloon *b)
{
    pthread_mutex_lock(&b->lock);
    uint64_t t = (uint64_t)b->target_pages * GUEST_PAGE_SIZE;
    pthread_mutex_unlock(&b->lock);
    return t;
}

static double ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) * 1e3 + (double)(now.tv_nsec - t->tv_nsec) / 1e6;
}

bool virtio_balloon_ask_stats(struct virtio_balloon *b, uint64_t *seq)
{
    pthread_mutex_lock(&b->lock);
    bool fresh = b->stats_time.tv_sec && ms_since(&b->stats_time) < STATS_FRESH_MS;
    bool ask = b->stats_held && !fresh;
    uint16_t head = b->stats_head;
    unsigned queue = b->stats_queue;
    *seq = b->stats_seq;
    if (ask)
        b->stats_held = false;
    pthread_mutex_unlock(&b->lock);
    if (ask) /* returning the held buffer is the request: the driver refills it */
        virtio_pci_complete_held(b->vp, queue, head, 0);
    return ask;
}

uint64_t virtio_balloon_stats_seq(struct virtio_balloon *b)
{
    pthread_mutex_lock(&b->lock);
    uint64_t seq = b->stats_seq;
    pthread_mutex_unlock(&b->lock);
    return seq;
}

/* Asks for fresh statistics and waits up to WAIT_MS for them. */
static void refresh_stats(struct virtio_balloon *b, unsigned wait_ms)
{
    uint64_t seq;
    if (!virtio_balloon_ask_stats(b, &seq) || !wait_ms)
        return;
    struct timespec deadline = deadline_in_ms(wait_ms);
    pthread_mutex_lock(&b->lock);
    while (b->stats_seq == seq &&
           pthread_cond_timedwait(&b->stats_arrived, &b->lock, &deadline) == 0)
        ;
    pthread_mutex_unlock(&b->lock);
}

json_t *virtio_balloon_status_json(struct virtio_balloon *b, unsigned wait_ms)
{
    bool driver = virtio_pci_driver_ok(b->vp);
    if (driver)
        refresh_stats(b, wait_ms);
    bool needs_reset;
    char why[200];
    virtio_pci_status(b->vp, &needs_reset, why, sizeof(why));
    pthread_mutex_lock(&b->lock);
    json_t *j =
        json_pack("{s:I, s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "target",
                  (json_int_t)((uint64_t)b->target_pages * GUEST_PAGE_SIZE), "actual",
                  (json_int_t)((uint64_t)b->actual_pages * GUEST_PAGE_SIZE), "driver", driver,
                  "inflated_pages", (json_int_t)b->inflated_pages, "deflated_pages",
                  (json_int_t)b->deflated_pages, "reported_bytes", (json_int_t)b->reported_bytes,
                  "given_back_bytes", (json_int_t)b->freed_bytes, "bad_pfns",
                  (json_int_t)b->bad_pfns, "discard_errors", (json_int_t)b->discard_errors);
    if (b->stats.present) {
        static const char *const names[BALLOON_S_NR] = {
            "swap_in", "swap_out",  "major_faults", "minor_faults",        "free",
            "total",   "available", "cached",       "hugetlb_allocations", "hugetlb_failures"};
        json_t *g = json_object();
        for (unsigned t = 0; t < BALLOON_S_NR; t++)
            if (b->stats.present >> t & 1)
                json_object_set_new(g, names[t], json_integer((json_int_t)b->stats.value[t]));
        json_object_set_new(j, "guest", g);
        json_object_set_new(
            j, "stats_age_ms",
            json_integer(b->stats_time.tv_sec ? (json_int_t)ms_since(&b->stats_time) : -1));
    }
    pthread_mutex_unlock(&b->lock);
    if (needs_reset)
        json_object_set_new(j, "broken", json_string(why));
    return j;
}

/* Saved as 'VBAL' version 1. The statistics' time is not: loaded ones count as old. */
struct balloon_saved {
    uint32_t version, target_pages, actual_pages;
    uint16_t stats_head;
    uint8_t stats_held, stats_queue;
    uint32_t stats_present, pad;
    uint64_t stats[BALLOON_S_NR];
};
_Static_assert(sizeof(struct balloon_saved) == 24 + 8 * BALLOON_S_NR, "record layout");
#define T_VBAL STATE_TAG('V', 'B', 'A', 'L')
#define TRANSPORT_INSTANCE VIRTIO_BALLOON_PCI_SLOT /* its 'VIOP' record (virtio-blk's is 0) */

int virtio_balloon_save(struct virtio_balloon *b, struct state_writer *w)
{
    struct balloon_saved s = {.version = 1};
    pthread_mutex_lock(&b->lock);
    s.target_pages = b->target_pages;
    s.actual_pages = b->actual_pages;
    s.stats_head = b->stats_head;
    s.stats_held = b->stats_held;
    s.stats_queue = b->stats_queue;
    s.stats_present = b->stats.present;
    memcpy(s.stats, b->stats.value, sizeof(s.stats));
    pthread_mutex_unlock(&b->lock);
    state_put(w, T_VBAL, 0, &s, sizeof(s));
    return virtio_pci_save(b->vp, w, TRANSPORT_INSTANCE);
}

/* A state saved before the VM had a balloon (an older vmws, or [balloon] off) has no record:
 * the guest never saw the device, which is then reset, as at power-on, with nothing inflated. */
int virtio_balloon_load(struct virtio_balloon *b, const struct state_reader *r)
{
    struct balloon_saved s;
    if (!state_get(r, T_VBAL, 0)) {
        virtio_pci_reset(b->vp);
        pthread_mutex_lock(&b->lock);
        b->actual_pages = 0;
        b->stats_held = false;
        b->stats.present = 0;
        pthread_mutex_unlock(&b->lock);
        return 0;
    }
    if (state_get_exact(r, T_VBAL, 0, &s, sizeof(s)) < 0 || s.version != 1 ||
        s.target_pages > b->ram_pages || s.actual_pages > b->ram_pages ||
        s.stats_queue >= balloon_ops.num_queues || s.stats_head >= VIRTQ_MAX_SIZE)
        return -EINVAL;
    int rc = virtio_pci_load(b->vp, r, TRANSPORT_INSTANCE);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&b->lock);
    b->target_pages = s.target_pages;
    b->actual_pages = s.actual_pages;
    b->stats_held = s.stats_held;
    b->stats_head = s.stats_head;
    b->stats_queue = s.stats_queue;
    b->stats.present = s.stats_present & ((1u << BALLOON_S_NR) - 1);
    memcpy(b->stats.value, s.stats, sizeof(s.stats));
    memset(&b->stats_time, 0, sizeof(b->stats_time));
    pthread_mutex_unlock(&b->lock);
    return 0;
}
