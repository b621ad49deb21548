/* The tree and disk steps of take and revert (see treeops.h). A powered-off VM's node has an
 * empty page delta and no state file: there was no memory to keep. */
#include "core/snapshot/treeops.h"

#include "core/snapshot/disksnap.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

int snapshot_disk_move_begin(struct snap_tree *t, const char *from, const char *onto,
                             struct snapshot_disk_move *m, char *err, size_t errlen)
{
    snprintf(m->from, sizeof(m->from), "%s", from);
    m->overlay[0] = '\0';
    if (!onto[0])
        return 0;
    int r = disksnap_overlay(t, onto, m->overlay, sizeof(m->overlay), err, errlen);
    if (r < 0)
        m->overlay[0] = '\0'; /* it names a file we did not make */
    return r;
}

void snapshot_disk_move_adopt(struct snap_tree *t, const struct snapshot_disk_move *m)
{
    if (m->overlay[0])
        snprintf(t->disk_active, sizeof(t->disk_active), "%s", m->overlay);
}

bool snapshot_disk_move_undo(struct snap_tree *t, const struct snapshot_disk_move *m)
{
    if (!m->overlay[0] || strcmp(t->disk_active, m->overlay) != 0)
        return false;
    snprintf(t->disk_active, sizeof(t->disk_active), "%s", m->from);
    return true;
}

void snapshot_disk_move_end(struct snap_tree *t, const struct snapshot_disk_move *m, bool done,
                            bool keep_from)
{
    if (!m->overlay[0])
        return;
    if (!done)
        disksnap_discard(t, m->overlay);
    else if (!keep_from)
        disksnap_discard(t, m->from);
}

int snapshot_revert_disk(struct snap_tree *t, const char *target_id,
                         const struct snapshot_disk_move *m, char *err, size_t errlen)
{
    snapshot_disk_move_adopt(t, m);
    snprintf(t->current, sizeof(t->current), "%s", target_id);
    return snap_tree_save(t, err, errlen);
}

int snapshot_take_offline(struct snap_tree *t, const char *configured, const char *label,
                          bool automatic, char *err, size_t errlen)
{
    struct snapshot_disk_move m;
    const char *active = disksnap_active(t, configured);
    int r = snapshot_disk_move_begin(t, active, active, &m, err, errlen);
    if (r < 0)
        return r;
    struct snap_node *n = snap_add(t, label, t->current);
    if (!n) {
        snprintf(err, errlen, "out of memory for a snapshot node");
        r = -ENOMEM;
    } else {
        snprintf(n->vm_state, sizeof(n->vm_state), "off");
        snprintf(n->disk, sizeof(n->disk), "%s", m.from);
        n->automatic = automatic;
        n->mem_bytes = page_delta_file_bytes(0, 0);
        char path[PATH_MAX];
        snap_path(t, n->id, "mem", path, sizeof(path));
        r = page_delta_write(path, NULL, 0, NULL, NULL, err, errlen);
    }
    if (r == 0) {
        snprintf(t->current, sizeof(t->current), "%s", n->id);
        snapshot_disk_move_adopt(t, &m);
        r = snap_tree_save(t, err, errlen);
    }
    snapshot_disk_move_end(t, &m, r == 0, true);
    return r;
}

int snapshot_keep_offline_disk(struct snap_tree *t, const char *configured,
                               const char *target_label, struct snap_node **kept, char *err,
                               size_t errlen)
{
    *kept = NULL;
    if (!t->disk_active[0] || !disksnap_has_data(t, disksnap_active(t, configured)))
        return 0;
    char label[SNAP_LABEL_MAX];
    snprintf(label, sizeof(label), "auto-before-%.40s", target_label);
    int r = snapshot_take_offline(t, configured, label, true, err, errlen);
    if (r == 0)
        *kept = snap_find(t, t->current);
    return r;
}

int snapshot_revert_offline(struct snap_tree *t, const char *configured,
                            const struct snap_node *target, struct snap_node **kept, char *err,
                            size_t errlen)
{
    char target_id[SNAP_ID_MAX]; /* keeping the disk adds a node: TARGET may move */
    snprintf(target_id, sizeof(target_id), "%s", target->id);
    int r = snapshot_keep_offline_disk(t, configured, target->label, kept, err, errlen);
    if (r < 0)
        return r;
    target = snap_find(t, target_id);
    /* From the tree's own overlay (never vm.conf's image), so that only it can be removed. */
    struct snapshot_disk_move m;
    r = snapshot_disk_move_begin(t, t->disk_active, target->disk, &m, err, errlen);
    if (r == 0)
        r = snapshot_revert_disk(t, target_id, &m, err, errlen);
    snapshot_disk_move_end(t, &m, r == 0, false);
    return r;
}
