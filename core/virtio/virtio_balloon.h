/* virtio-balloon over the virtio-pci transport (virtio 1.x, 5.5): the host sets a target, the
 * guest's driver inflates towards it and gives back the pages it took (inflate queue), reports
 * free memory of its own accord (free page reporting queue) and tells its memory statistics
 * (stats queue). The one idea: every page that comes back leaves the host for real -
 * guest_mem_discard() punches it out of the memory file - and is changed-to-zero for snapshots;
 * a PFN outside guest RAM is skipped and counted, never trusted. */
#ifndef VMWS_VIRTIO_BALLOON_H
#define VMWS_VIRTIO_BALLOON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/devices/devices.h"
#include "core/util/state.h"
#include "core/vm/machine.h"

#define VIRTIO_BALLOON_PCI_SLOT 8 /* INTx on IRQ 10 (even slot); 7 is virtio-net's */

/* The guest's statistics (virtio 1.x 5.5.6.3), by tag; a tag the driver never sent is absent. */
enum {
    BALLOON_S_SWAP_IN,  /* bytes swapped in */
    BALLOON_S_SWAP_OUT, /* bytes swapped out */
    BALLOON_S_MAJFLT,   /* major faults */
    BALLOON_S_MINFLT,   /* minor faults */
    BALLOON_S_MEMFREE,  /* bytes free (MemFree) */
    BALLOON_S_MEMTOT,   /* bytes of RAM the guest manages (MemTotal) */
    BALLOON_S_AVAIL,    /* bytes available (MemAvailable) */
    BALLOON_S_CACHES,   /* bytes of file pages (Cached + Buffers + SwapCached) */
    BALLOON_S_HTLB_PGALLOC,
    BALLOON_S_HTLB_PGFAIL,
    BALLOON_S_NR
};
struct balloon_stats {
    uint64_t value[BALLOON_S_NR];
    uint32_t present; /* bit per tag */
};

struct virtio_balloon;
/* Puts the device at PCI SLOT, the target TARGET_BYTES of RAM taken back (0: none), offering
 * free page reporting if REPORTING. NULL if the slot is taken (logged). */
struct virtio_balloon *virtio_balloon_create(struct machine *m, struct pci_bus *bus, unsigned slot,
                                             uint64_t target_bytes, bool reporting);
void virtio_balloon_destroy(struct virtio_balloon *b);
int virtio_balloon_quiesce(struct virtio_balloon *b, unsigned timeout_ms, char *err, size_t errlen);
void virtio_balloon_resume(struct virtio_balloon *b);
/* How much of the guest's RAM the host wants back (rounded down to 4 KiB, at most all of it);
 * the driver is told at once. */
void virtio_balloon_set_target(struct virtio_balloon *b, uint64_t bytes);
uint64_t virtio_balloon_target(struct virtio_balloon *b);
/* {"target", "actual" (bytes the driver says it holds), "driver" (bound), "guest": {free,
 * total, available, cached, major_faults, minor_faults, swap_in, swap_out}, "stats_age_ms",
 * counters, "broken" with why}. Asks the driver for fresh statistics first when the ones held
 * are older than a second, waiting for them up to WAIT_MS. */
json_t *virtio_balloon_status_json(struct virtio_balloon *b, unsigned wait_ms);
/* Without waiting (for a caller that must not wait under its own lock): asks the driver for fresh
 * statistics if the ones held are older than a second (true if it asked) and gives the sequence
 * number of the ones held; virtio_balloon_stats_seq() moves past it when fresh ones arrive. */
bool virtio_balloon_ask_stats(struct virtio_balloon *b, uint64_t *seq);
uint64_t virtio_balloon_stats_seq(struct virtio_balloon *b);
/* Target, actual, the stats buffer held and the last statistics ('VBAL'), then the transport. */
int virtio_balloon_save(struct virtio_balloon *b, struct state_writer *w);
int virtio_balloon_load(struct virtio_balloon *b, const struct state_reader *r);

/* The checks on the guest's numbers, for the device and its unit tests. */
/* Turns N PFNs (4 KiB frames) into ranges of RAM offsets {off, len} in RANGES (room for N),
 * sorted and merged within each 256 PFNs (Linux's largest batch); a PFN that is not guest RAM
 * is skipped and counted in *BAD. Returns the number of ranges. */
struct balloon_range {
    uint64_t off, len;
};
size_t virtio_balloon_pfn_ranges(const struct guest_mem *mem, const uint32_t *pfns, size_t n,
                                 struct balloon_range *ranges, uint64_t *bad);
/* Parses LEN bytes of {le16 tag, le64 value} into S (unknown tags skipped). -EINVAL if LEN is
 * not a whole number of entries. */
int virtio_balloon_parse_stats(const uint8_t *buf, size_t len, struct balloon_stats *s);

#endif
