/* Take and revert as the snapshot tree and the VM's disk images see them, one implementation for
 * both callers: the VMM, whose machine is live (core/vmm/vmm_snap.c), and the command line, which
 * changes a powered-off VM's tree itself (no memory: its nodes are disk-only). The one idea: an
 * operation moves the VM's disk to a new overlay, made before the guest pauses, on the image a
 * take freezes or the one a revert goes back to; a saved tree naming the overlay makes the move
 * final, and an operation that fails removes the overlay again. */
#ifndef VMWS_TREEOPS_H
#define VMWS_TREEOPS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/snapshot/snapstore.h"

struct snapshot_disk_move {
    char from[SNAP_DISK_MAX];    /* the image the VM wrote (a tree path); "" = it has none */
    char overlay[SNAP_DISK_MAX]; /* its new image; "" = the disk stays where it is */
};

/* Makes the overlay on ONTO (a take: FROM itself; a revert: the target's image; "" = no overlay)
 * for a VM that writes FROM. On failure nothing was made. */
int snapshot_disk_move_begin(struct snap_tree *t, const char *from, const char *onto,
                             struct snapshot_disk_move *m, char *err, size_t errlen);
/* The tree names the overlay as the image the VM writes (in memory: saving the tree commits). */
void snapshot_disk_move_adopt(struct snap_tree *t, const struct snapshot_disk_move *m);
/* Undoes adopt after a failure: true if the tree named the overlay (it names FROM again). */
bool snapshot_disk_move_undo(struct snap_tree *t, const struct snapshot_disk_move *m);
/* After the operation: a failed one (DONE false) removes the overlay; a done one removes FROM,
 * on which nothing is based any more, unless KEEP_FROM (a node froze it). Only images in
 * snapshots/ are ever removed. */
void snapshot_disk_move_end(struct snap_tree *t, const struct snapshot_disk_move *m, bool done,
                            bool keep_from);

/* A revert that leaves memory alone (a powered-off target: the VM powers off, or has no
 * machine): TARGET_ID becomes current, the VM writes the move's overlay, and the tree is saved. */
int snapshot_revert_disk(struct snap_tree *t, const char *target_id,
                         const struct snapshot_disk_move *m, char *err, size_t errlen);

/* The operations on a powered-off VM, each saving the tree. CONFIGURED is vm.conf's [disk] path
 * ("" = none); the caller holds the VM, as for snap_tree_tidy (core/snapshot/snapstore.h). */

/* Takes a disk-only node: the image the VM writes is frozen with it and the VM will write a new
 * overlay on it. AUTOMATIC: a present a revert replaces. The node becomes current. */
int snapshot_take_offline(struct snap_tree *t, const char *configured, const char *label,
                          bool automatic, char *err, size_t errlen);
/* Before a revert replaces the present: the disk as it is now, kept as the automatic node
 * "auto-before-TARGET_LABEL" (*KEPT; NULL when nothing was written since the current node). */
int snapshot_keep_offline_disk(struct snap_tree *t, const char *configured,
                               const char *target_label, struct snap_node **kept, char *err,
                               size_t errlen);
/* Reverts to TARGET, a powered-off node: the disk is kept first as snapshot_keep_offline_disk
 * does (*KEPT), then a fresh overlay on TARGET's image replaces the one the VM wrote. */
int snapshot_revert_offline(struct snap_tree *t, const char *configured,
                            const struct snap_node *target, struct snap_node **kept, char *err,
                            size_t errlen);

#endif
