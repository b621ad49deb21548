/* Snapshot operations on a live (paused) machine: take, revert, delete — each in time and space
 * proportional to the pages that changed, not to RAM. The VMM keeps a "carry" bitmap: pages that
 * may differ from the tree's current node (pages dirtied since, plus a deleted current node's
 * pages). Take stores exactly those; revert rewrites exactly those plus the pages of the deltas
 * on the tree path between the current node and the target. */
#ifndef VMWS_SNAPSHOT_H
#define VMWS_SNAPSHOT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/snapshot/disksnap.h"
#include "core/snapshot/snapstore.h"
#include "core/util/state.h"
#include "core/vm/guestmem.h"

/* Pages are numbered RAM first (RAM offset / 4 KiB), then the EXTRA region's (the framebuffer:
 * device memory outside guest RAM that snapshots must keep too). RAM's page count is a multiple
 * of 64, so the extra region's bits start on a word of the bitmaps. */
struct snapshot_host {
    struct guest_mem *mem;
    uint8_t *extra;
    uint64_t extra_pages;
    uint64_t *carry; /* one bit per page (RAM and extra) */
    int (*collect_dirty)(void *opaque, uint64_t *bitmap);
    int (*save_state)(void *opaque, struct state_writer *w);
    int (*load_state)(void *opaque, const struct state_reader *r, char *err, size_t errlen);
    void *opaque;
};

/* What a take copied while the guest was paused; written out by snapshot_commit(). */
struct snapshot_capture {
    uint64_t *pages;
    uint8_t *data;
    uint8_t *zero; /* per page: it reads as zeroes (stored without data; see snapstore.h) */
    uint64_t npages, nzero;
    uint8_t *state;
    size_t state_len;
    char disk[SNAP_DISK_MAX]; /* the disk image frozen with it (core/snapshot/disksnap.h); "" = none
                               */
};

/* Paused: folds the dirty log into the carry, copies the carried pages and the machine state.
 * A carried page that reads as zeroes (a hole of the memory file - a page the guest gave back -
 * found without touching it, or a page of zeroes) is noted as zero and not copied. */
int snapshot_capture(struct snapshot_host *h, struct snapshot_capture *c, char *err, size_t errlen);
/* Guest may run again: writes the capture as a new child of the current node, makes it current
 * and clears the carry bits it stored. With PARENT (the node that was current when the capture
 * was made; a revert moved on since), it becomes PARENT's child and nothing else changes. */
int snapshot_commit(struct snap_tree *t, struct snapshot_host *h, struct snapshot_capture *c,
                    const char *label, bool automatic, const char *vm_state, const char *parent,
                    struct snap_node **out, char *err, size_t errlen);
void snapshot_capture_free(struct snapshot_capture *c);

/* Paused, after the current state was kept as a node: makes guest memory and machine state
 * those of TARGET and saves the tree with TARGET current. Everything is read and checked before
 * anything changes; *APPLIED says whether memory was rewritten (true with an error: only the
 * tree's save failed). *PAGES_WRITTEN gets the number of pages rewritten. */
int snapshot_revert(struct snap_tree *t, struct snapshot_host *h, struct snap_node *target,
                    uint64_t *pages_written, bool *applied, char *err, size_t errlen);

/* After a fresh boot the present descends from the current node by its disk alone: every page
 * a node on the way to the root holds may now differ (the others are zero here and there), so
 * they join the carry and the next snapshot, a child of the current node, stores them. */
void snapshot_fresh_boot(struct snap_tree *t, struct snapshot_host *h);

/* Bytes of free space deleting N needs (its pages merged into each child) — seed 004's sum. */
int snapshot_delete_cost(struct snap_tree *t, struct snap_node *n, uint64_t *needs, char *err,
                         size_t errlen);
/* What deleting N will do and the free space it needs, known before it starts (seed 004): its
 * pages merged into each child's, its disk image merged away (ACTIVE: as for disksnap_plan). */
struct snapshot_delete_plan {
    uint64_t memory_needs; /* bytes, snapshot_delete_cost */
    struct disksnap_plan disk;
};
int snapshot_delete_plan(struct snap_tree *t, struct snap_node *n, struct disk *active,
                         struct snapshot_delete_plan *p, char *err, size_t errlen);
/* Deletes N: merges its pages into its children and its disk image as DISK plans (NULL: leave
 * disks alone; see core/snapshot/disksnap.h), refusing with ERR if the filesystem lacks the space
 * for both, reparents the children, and if N is current, moves current to N's parent and adds N's
 * pages to CARRY (of CARRY_PAGES bits; NULL when no machine is attached: then nothing carries).
 * Disk images must not be open elsewhere meanwhile. */
int snapshot_delete(struct snap_tree *t, struct snap_node *n, struct disksnap_plan *disk,
                    uint64_t *carry, uint64_t carry_pages, char *err, size_t errlen);
/* Pages numbered by a host (RAM + extra). */
uint64_t snapshot_host_pages(const struct snapshot_host *h);

/* The tree as `vmws snapshot list --json` and the control socket show it, with what deleting
 * each node needs (memory and disk; ACTIVE: the open image the VM writes, or NULL). */
json_t *snapshot_tree_json(struct snap_tree *t, struct disk *active);

#endif
