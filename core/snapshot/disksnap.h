/* The VM's disk inside the snapshot tree. A node's disk is the image that was the VM's writable
 * image when the node was taken, frozen from then on; the VM goes on writing a new qcow2 overlay
 * on it (snapshots/disk-N.qcow2). So the backing chain of the image the VM writes is the tree's
 * path from the current node to the root, which is what `qemu-img info --backing-chain` shows.
 * Reverting puts a fresh overlay on the target's image. Deleting a node merges its image away:
 * streamed into every image that has it as backing file, or the one such image committed into
 * it, whichever needs less free space (seed 004), and nothing is done without that space.
 *
 * Image paths are stored as the tree stores them: relative to the VM's folder, or absolute.
 * These functions work on closed images: a running VM's disk is detached around a merge. */
#ifndef VMWS_DISKSNAP_H
#define VMWS_DISKSNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/snapshot/snapstore.h"
#include "core/storage/disk.h"

/* The image the VM writes: the tree's overlay, else CONFIGURED (vm.conf's [disk] path; "" for
 * none). */
const char *disksnap_active(const struct snap_tree *t, const char *configured);
/* The format of an image the tree names: "qcow2" for its overlays, vm.conf's for the base
 * (t->base_format; NULL: probe). */
const char *disksnap_format(const struct snap_tree *t, const char *rel);
/* The absolute path of an image path as the tree stores it. */
void disksnap_path(const struct snap_tree *t, const char *rel, char *out, size_t len);
/* Creates an empty overlay on BACKING (a tree path) in snapshots/; OUT gets its tree path. */
int disksnap_overlay(struct snap_tree *t, const char *backing, char *out, size_t len, char *err,
                     size_t errlen);
/* Removes an overlay the tree no longer uses (only images in snapshots/). */
void disksnap_discard(const struct snap_tree *t, const char *rel);
/* True when the image at REL holds data of its own (an overlay someone wrote to). */
bool disksnap_has_data(const struct snap_tree *t, const char *rel);

enum disksnap_how {
    DISKSNAP_NONE,   /* the node has no disk */
    DISKSNAP_DROP,   /* no image has the node's as backing file: it is just removed */
    DISKSNAP_STREAM, /* its clusters are copied up into every image above it */
    DISKSNAP_COMMIT, /* the one image above it is copied down into it and takes its place */
};

#define DISKSNAP_MAX_DEPS 64

struct disksnap_plan {
    enum disksnap_how how;
    uint64_t needs;        /* bytes of free space the merge may need */
    uint64_t stream_needs; /* what each way would need (commit: only with one image above) */
    uint64_t commit_needs;
    size_t ndeps;
    struct snap_node *deps[DISKSNAP_MAX_DEPS]; /* images above: child nodes; NULL = the active */
    char obsolete[SNAP_DISK_MAX];              /* removed once the tree no longer names it */
};

/* How deleting N would treat its disk, and what it needs. ACTIVE, if not NULL, is the open
 * image the VM writes (read through it instead of opening it). */
int disksnap_plan(struct snap_tree *t, struct snap_node *n, struct disk *active,
                  struct disksnap_plan *p, char *err, size_t errlen);
/* Carries out the plan on closed images and updates the tree in memory (the caller checked the
 * free space, removes N and saves the tree, then calls disksnap_finish). Every image above N reads
 * the same throughout; a commit overwrites N's own image, so N is first saved as 'deleting'. */
int disksnap_merge(struct snap_tree *t, struct snap_node *n, struct disksnap_plan *p, char *err,
                   size_t errlen);
/* Removes the image the merge made obsolete, if it is in the VM's folder (a user's image
 * elsewhere stays). */
void disksnap_finish(const struct snap_tree *t, const struct disksnap_plan *p);
const char *disksnap_how_name(enum disksnap_how how);

#endif
