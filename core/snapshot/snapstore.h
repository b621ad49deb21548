/* On-disk snapshot tree of one VM, in VMDIR/snapshots/: tree.json (the nodes: id, label, parent,
 * time, power state, sizes, disk image; which node the present descends from, which image the
 * VM writes), and per node ID.mem (the guest pages that changed since its parent: a sorted
 * index with a CRC per page, then the pages; a page that changed to zero - given back by a
 * balloon or a free page report - is an index entry without data) and ID.state (the machine
 * state, state.h). A node's memory is its own pages plus, for any page it lacks, its nearest
 * ancestor's; a page no ancestor has is zero. Files are written to temporary names, fsynced and renamed before
 * tree.json names them, and tree.json is replaced atomically, so a crash at any point leaves a
 * tree that loads (snap_tree_tidy removes the orphans). Disk images of the tree
 * (snapshots/disk-N.qcow2) are orphans only if no node, nor the image the VM writes, has them
 * in its backing chain. */
#ifndef VMWS_SNAPSTORE_H
#define VMWS_SNAPSTORE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNAP_ID_MAX 16
#define SNAP_NEXT_ID_MAX 1000000000000000ULL /* ids are decimal, at most 15 digits */
#define SNAP_LABEL_MAX 64
#define SNAP_DISK_MAX 512

struct page_delta {
    int fd;
    uint64_t npages, ndata; /* entries, and those of them stored as data (the rest are zero) */
    uint64_t *pages;        /* sorted page numbers (RAM offset / 4 KiB) */
    uint32_t *crcs;
    uint64_t *slots; /* per entry: its 4 KiB slot in the data, or PAGE_DELTA_ZERO */
    uint64_t data_offset;
};
#define PAGE_DELTA_ZERO UINT64_MAX

#define SNAP_QUIESCED_MAX 160

struct snap_node {
    char id[SNAP_ID_MAX];
    char label[SNAP_LABEL_MAX];
    char parent[SNAP_ID_MAX]; /* "" for a root */
    int64_t created;          /* unix time */
    bool automatic;           /* kept by revert */
    char vm_state[16];        /* running, paused, suspended, off */
    uint64_t pages, mem_bytes, state_bytes;
    /* The disk image frozen when the node was taken (core/snapshot/disksnap.h), relative to the
     * VM's folder or absolute; "" when the VM had no disk. */
    char disk[SNAP_DISK_MAX];
    bool deleting; /* a delete that merges the disk began; only finishing it is allowed */
    /* "quiesced" (the guest agent froze the guest's file systems for the take) or "not
     * quiesced: <why>"; "" when the take did not say (an older vmws, a powered-off VM). */
    char quiesced[SNAP_QUIESCED_MAX];
    struct page_delta *delta; /* loaded on demand */
};

struct snap_tree {
    char dir[PATH_MAX - 300]; /* room for the file names below it */
    struct snap_node *nodes;
    size_t n;
    uint64_t next_id;
    char current[SNAP_ID_MAX];       /* "" = the present state descends from no snapshot */
    char disk_active[SNAP_DISK_MAX]; /* the image the VM writes; "" = the one vm.conf names */
    char base_format[8]; /* vm.conf's [disk] format ("" = probe); set by the loader's caller */
};

/* Loads VMDIR/snapshots/tree.json (an absent tree is empty). CONFIGURED is vm.conf's [disk]
 * path ("" = none): the only absolute path a node may name. Refuses a corrupt tree with ERR
 * naming the file and the problem. */
int snap_tree_load(struct snap_tree *t, const char *vm_dir, const char *configured, char *err,
                   size_t errlen);
/* Removes files no node names (left by an interrupted operation). Only for the process that
 * holds the VM (its VMM, or an operation on it powered off, holding its pidfile lock): to
 * anyone else, an operation's new files look the same until its tree.json names them. */
void snap_tree_tidy(struct snap_tree *t);
int snap_tree_save(struct snap_tree *t, char *err, size_t errlen);
void snap_tree_free(struct snap_tree *t);
/* By id, else by label (the newest node with that label). */
struct snap_node *snap_find(struct snap_tree *t, const char *id_or_label);
struct snap_node *snap_parent(struct snap_tree *t, const struct snap_node *n);
/* Adds a node (fills id and created); the caller fills the rest. Returns NULL on ENOMEM. */
struct snap_node *snap_add(struct snap_tree *t, const char *label, const char *parent);
/* Removes node N from the array (files untouched); children must have been reparented. */
void snap_remove(struct snap_tree *t, struct snap_node *n);
void snap_path(const struct snap_tree *t, const char *id, const char *ext, char *out, size_t len);

/* Page deltas. DATA holds N pages of 4 KiB, in the order of PAGES (sorted ascending); ZERO
 * (NULL = none) marks the pages that are zero (a page given back by the guest: punched, not
 * stored): they take an index entry and no data, and DATA's slot for them is not read. */
int page_delta_write(const char *path, const uint64_t *pages, size_t n, const uint8_t *data,
                     const uint8_t *zero, char *err, size_t errlen);
int page_delta_open(const char *path, struct page_delta *d, char *err, size_t errlen);
void page_delta_close(struct page_delta *d);
/* Index of PAGE in D, or -1. */
int64_t page_delta_find(const struct page_delta *d, uint64_t page);
/* Reads entry IDX into DST (4 KiB) and checks its CRC. Returns 0, 1 for a zero entry (DST
 * zeroed), -EIO or -EBADMSG. */
int page_delta_read(const struct page_delta *d, uint64_t idx, void *dst);
/* The node's delta, opened once and cached in the node. */
struct page_delta *snap_delta(struct snap_tree *t, struct snap_node *n, char *err, size_t errlen);

/* Writes to OUT_PATH the union of CHILD and PARENT's pages, CHILD's content winning: what the
 * child's delta must become when its parent is deleted. *BYTES gets the new file's size. */
int page_delta_merge(const struct page_delta *child, const struct page_delta *parent,
                     const char *out_path, uint64_t *bytes, char *err, size_t errlen);
/* Size a merged file would have, without writing it. */
uint64_t page_delta_merged_bytes(const struct page_delta *child, const struct page_delta *parent);
/* Size of a delta file of NPAGES entries, NDATA of them stored as data. */
uint64_t page_delta_file_bytes(uint64_t npages, uint64_t ndata);

#endif
