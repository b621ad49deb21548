/* Suspend and the snapshot tree on the live machine: the VMM's side of `vmws suspend` and
 * `vmws snapshot ...`, with plain arguments (the control commands in vmm_cmds.c speak JSON). The
 * guest is paused only for the copy of what changed (take), the rewrite of what differs (revert)
 * or the state save (suspend); files are written after. The tree and disk steps are
 * core/snapshot/'s, the same a powered-off VM's command line uses. */
#include "core/snapshot/treeops.h"
#include "core/util/crashpoint.h"
#include "core/util/deadline.h"
#include "core/vmm/vmm_priv.h"

/* Pages changed since the last call: RAM (KVM's log and the VMM's), then the framebuffer. */
static int host_collect_dirty(void *opaque, uint64_t *bitmap)
{
    struct vmm *v = opaque;
    framebuffer_collect_dirty(v->fb, bitmap + ram_pages(v) / 64);
    return machine_collect_dirty(&v->m, bitmap);
}

static int host_save_state(void *opaque, struct state_writer *w)
{
    return save_all_locked(opaque, w);
}

static int host_load_state(void *opaque, const struct state_reader *r, char *err, size_t errlen)
{
    return load_all_locked(opaque, r, err, errlen);
}

/* Checks (under lock) that the VM can be snapshotted now. */
static int snapshot_ready_locked(struct vmm *v, struct ctl_error *err)
{
    if (v->snap_busy[0]) {
        vmm_fail(err, "GenericError",
                 "snapshot %s is being deleted; try again when that is done (vmws snapshot list "
                 "shows it)",
                 v->snap_busy);
        return -EBUSY;
    }
    if (!v->tree_ok) {
        vmm_fail(err, "GenericError", "%s", v->tree_err);
        return -EIO;
    }
    if (!v->machine_live || (v->state != VMM_RUNNING && v->state != VMM_PAUSED)) {
        vmm_fail(err, "GenericError", "the VM is %s", vmm_state_names[v->state]);
        return -EBUSY;
    }
    return 0;
}

/* Paused: collects machine state + carry as the suspend state; the main loop then ends the
 * machine, writes back the memory file and only then writes suspend.state (run_machine). */
static int suspend_locked(struct vmm *v, size_t *state_bytes, char *err, size_t errlen)
{
    int r = host_collect_dirty(v, v->carry);
    struct state_writer *w = &v->suspend_w;
    state_writer_init(w);
    if (r == 0)
        r = save_all_locked(v, w);
    if (r == 0) /* the framebuffer is not in the memory file */
        r = framebuffer_save_contents(v->fb, w);
    state_put(w, T_CARRY, 0, v->carry, carry_words(v) * sizeof(uint64_t));
    *state_bytes = w->len;
    if (r == 0)
        r = w->error;
    if (r < 0) {
        state_writer_free(w);
        snprintf(err, errlen, "cannot save the suspend state: %s", strerror(-r));
        return r;
    }
    /* The memory is already in the file (MAP_SHARED): the guest need not wait for its
     * writeback, which the main loop does (and reports) after the machine is gone. */
    v->suspended = true;
    v->state = VMM_SHUTDOWN;
    uint64_t one = 1;
    ssize_t wr = write(v->quit_fd, &one, sizeof(one));
    (void)wr;
    return 0;
}

int vmm_suspend(struct vmm *v, double *pause_ms, size_t *state_bytes, struct ctl_error *err)
{
    pthread_mutex_lock(&v->lock);
    if (v->snap_busy[0]) { /* its carry is not whole until the merge ends */
        vmm_fail(err, "GenericError", "snapshot %s is being deleted; suspend when that is done",
                 v->snap_busy);
        pthread_mutex_unlock(&v->lock);
        return -EBUSY;
    }
    if (!v->machine_live || (v->state != VMM_RUNNING && v->state != VMM_PAUSED)) {
        vmm_fail(err, "GenericError", "cannot suspend a VM that is %s", vmm_state_names[v->state]);
        pthread_mutex_unlock(&v->lock);
        return -EBUSY;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool was_running = v->state == VMM_RUNNING;
    *state_bytes = 0;
    int r = machine_pause(&v->m, MACHINE_PAUSE_TIMEOUT_MS, err->desc, sizeof(err->desc));
    if (r < 0) {
        pthread_mutex_unlock(&v->lock);
        err->cls = "GenericError";
        return r;
    }
    r = suspend_locked(v, state_bytes, err->desc, sizeof(err->desc));
    *pause_ms = vmm_ms_since(&t0);
    if (r < 0 && was_running) {
        machine_resume(&v->m); /* nothing is lost: the VM just keeps running */
        v->state = VMM_RUNNING;
    }
    pthread_mutex_unlock(&v->lock);
    if (r < 0) {
        err->cls = "GenericError";
        return r;
    }
    vmm_log("suspended %s: %.1f ms paused, state %zu bytes", v->cfg->name, *pause_ms, *state_bytes);
    return 0;
}

/* Quiesced disk: the device moves to the image at tree path REL; if that cannot be opened, back
 * to FALLBACK (NULL: none). */
static int blk_attach_locked(struct vmm *v, const char *rel, char *err, size_t errlen)
{
    char path[PATH_MAX];
    disksnap_path(&v->tree, rel, path, sizeof(path));
    return virtio_blk_attach_image(v->blk, path, disksnap_format(&v->tree, rel), err, errlen);
}

static int blk_switch_locked(struct vmm *v, const char *rel, const char *fallback, char *err,
                             size_t errlen)
{
    char e2[256];
    virtio_blk_detach_image(v->blk);
    int r = blk_attach_locked(v, rel, err, errlen);
    if (r < 0 && fallback && blk_attach_locked(v, fallback, e2, sizeof(e2)) < 0)
        vmm_log("the disk has no image now: %s", e2);
    return r;
}

static const char *active_disk(const struct vmm *v)
{
    return disksnap_active(&v->tree, v->cfg->disk.path);
}

/* Takes a snapshot (under lock, machine live). PAUSE_MS gets how long the guest was paused. The
 * disk image written so far is frozen with the node and the guest goes on in a new overlay on
 * it (made before the pause); its disk requests wait until the tree names that overlay. */
static struct snap_node *take_locked(struct vmm *v, const char *label, bool automatic,
                                     const char *vm_state, double *pause_ms, char *err,
                                     size_t errlen)
{
    bool disk = v->blk != NULL;
    const char *frozen = disk ? active_disk(v) : "";
    struct snapshot_disk_move dm;
    if (snapshot_disk_move_begin(&v->tree, frozen, frozen, &dm, err, errlen) < 0)
        return NULL;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool was_running = v->state == VMM_RUNNING;
    int r = was_running ? machine_pause(&v->m, MACHINE_PAUSE_TIMEOUT_MS, err, errlen) : 0;
    if (r < 0) {
        snapshot_disk_move_end(&v->tree, &dm, false, true);
        return NULL;
    }
    r = vmm_quiesce_devices_locked(v, err, errlen); /* nothing writes guest RAM meanwhile */
    bool quiesced = r == 0;
    struct snapshot_capture cap;
    if (r == 0)
        r = snapshot_capture(&v->snap_host, &cap, err, errlen);
    if (r == 0 && disk && (r = blk_switch_locked(v, dm.overlay, dm.from, err, errlen)) < 0)
        snapshot_capture_free(&cap);
    if (was_running)
        machine_resume(&v->m);
    *pause_ms = vmm_ms_since(&t0);
    if (r == 0 && disk) {
        snapshot_disk_move_adopt(&v->tree, &dm);
        r = snap_tree_save(&v->tree, err, errlen);
        if (r < 0) { /* nothing was written to the overlay yet: stay on the old image */
            snapshot_disk_move_undo(&v->tree, &dm);
            char e2[256];
            blk_switch_locked(v, dm.from, NULL, e2, sizeof(e2));
            snapshot_capture_free(&cap);
        }
    }
    if (quiesced)
        vmm_resume_devices_locked(v);
    snapshot_disk_move_end(&v->tree, &dm, r == 0, true); /* the node freezes dm.from */
    if (r < 0)
        return NULL;
    if (!vm_state)
        vm_state = was_running ? "running" : "paused";
    snprintf(cap.disk, sizeof(cap.disk), "%s", dm.from);
    struct snap_node *n = NULL;
    r = snapshot_commit(&v->tree, &v->snap_host, &cap, label, automatic, vm_state, NULL, &n, err,
                        errlen);
    snapshot_capture_free(&cap);
    return r < 0 ? NULL : n;
}

int vmm_snapshot_take(struct vmm *v, const char *label, const char *vm_state, const char *quiesced,
                      struct snap_node *taken, double *pause_ms, struct ctl_error *err)
{
    pthread_mutex_lock(&v->lock);
    *pause_ms = 0;
    int r = snapshot_ready_locked(v, err);
    if (r == 0) {
        struct snap_node *n =
            take_locked(v, label, false, vm_state, pause_ms, err->desc, sizeof(err->desc));
        if (n && quiesced) {
            char e2[256];
            snprintf(n->quiesced, sizeof(n->quiesced), "%s", quiesced);
            if (snap_tree_save(&v->tree, e2, sizeof(e2)) < 0) /* the node itself is durable */
                vmm_log("snapshot %s: cannot record '%s': %s", n->id, quiesced, e2);
        }
        if (n) {
            *taken = *n; /* the tree's array moves as nodes come and go */
            taken->delta = NULL;
        } else {
            err->cls = "GenericError";
            r = -EIO;
        }
    }
    pthread_mutex_unlock(&v->lock);
    return r;
}

/* Revert. With KEEP_CURRENT the present first becomes a durable automatic node - its pages and
 * state written and fsynced, tree.json naming it - before anything of the target is applied; a
 * present that cannot be kept stops the revert with nothing changed. The node freezes the image
 * the guest wrote; the tree names a new overlay on it that nobody ever attaches (so a present
 * whose disk chain no longer opens can still be kept and left), since the guest moves on to a
 * fresh overlay on the target's image in the same pause, and memory and machine state become the
 * target's. */
int vmm_snapshot_revert(struct vmm *v, const char *id, bool keep_current, struct vmm_reverted *out,
                        struct ctl_error *err)
{
    pthread_mutex_lock(&v->lock);
    int r = snapshot_ready_locked(v, err);
    if (r < 0) {
        pthread_mutex_unlock(&v->lock);
        return r;
    }
    struct snap_node *target = snap_find(&v->tree, id);
    if (!target || target->deleting) {
        pthread_mutex_unlock(&v->lock);
        vmm_fail(err, "InvalidArgument",
                 target ? "snapshot '%s' is being deleted (finish with 'vmws snapshot delete')"
                        : "no snapshot '%s' (see 'vmws snapshot list')",
                 id);
        return -ENOENT;
    }
    char target_id[SNAP_ID_MAX], target_label[SNAP_LABEL_MAX], target_state[16];
    snprintf(target_id, sizeof(target_id), "%s", target->id);
    snprintf(target_label, sizeof(target_label), "%s", target->label);
    snprintf(target_state, sizeof(target_state), "%s", target->vm_state);
    /* The overlays, made before the pause: KEEP on the image the present wrote (for the kept
     * node), DM from where the tree will say the guest writes onto the target's image. */
    bool disk = v->blk && target->disk[0];
    struct snapshot_disk_move keep, dm;
    memset(&keep, 0, sizeof(keep));
    const char *present = v->blk ? active_disk(v) : "";
    r = keep_current ? snapshot_disk_move_begin(&v->tree, present, present, &keep, err->desc,
                                                sizeof(err->desc))
                     : 0;
    if (r == 0)
        r = snapshot_disk_move_begin(&v->tree, keep.overlay[0] ? keep.overlay : present,
                                     disk ? target->disk : "", &dm, err->desc, sizeof(err->desc));
    if (r < 0) {
        snapshot_disk_move_end(&v->tree, &keep, false, true);
        pthread_mutex_unlock(&v->lock);
        err->cls = "GenericError";
        return r;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool was_running = v->state == VMM_RUNNING;
    r = machine_pause(&v->m, MACHINE_PAUSE_TIMEOUT_MS, err->desc, sizeof(err->desc));
    if (r < 0) { /* nothing changed: the overlays made for it go again */
        snapshot_disk_move_end(&v->tree, &dm, false, false);
        snapshot_disk_move_end(&v->tree, &keep, false, true);
        pthread_mutex_unlock(&v->lock);
        err->cls = "GenericError";
        return r;
    }
    v->state = VMM_PAUSED;
    /* Every device quiet until the pages are rewritten: none may DMA into them meanwhile. */
    r = vmm_quiesce_devices_locked(v, err->desc, sizeof(err->desc));
    bool quiesced = r == 0;
    /* 1. The present, kept as a node before anything changes. */
    char kept_id[SNAP_ID_MAX] = "";
    if (r == 0 && keep_current) {
        struct snapshot_capture cap = {0};
        struct snap_node *kept = NULL;
        char label[SNAP_LABEL_MAX], kerr[sizeof(err->desc) - 64];
        snprintf(label, sizeof(label), "auto-before-%.40s", target_label);
        r = snapshot_capture(&v->snap_host, &cap, kerr, sizeof(kerr));
        if (r == 0) {
            snapshot_disk_move_adopt(&v->tree, &keep);
            snprintf(cap.disk, sizeof(cap.disk), "%s", keep.from);
            r = snapshot_commit(&v->tree, &v->snap_host, &cap, label, true,
                                was_running ? "running" : "paused", NULL, &kept, kerr,
                                sizeof(kerr));
            if (r < 0)
                snapshot_disk_move_undo(&v->tree, &keep);
        }
        snapshot_capture_free(&cap);
        if (r < 0)
            snprintf(err->desc, sizeof(err->desc),
                     "nothing was reverted: the present could not be kept: %s", kerr);
        else
            snprintf(kept_id, sizeof(kept_id), "%s", kept->id);
        crash_point("revert-kept");
        target = snap_find(&v->tree, target_id); /* the tree's array may have moved */
    }
    if (!kept_id[0]) /* kept: the node froze keep.from, the tree names keep.overlay */
        snapshot_disk_move_end(&v->tree, &keep, false, true);
    /* 2. Become the target: its disk, then (saving the tree) its memory and state. */
    if (r == 0 && disk &&
        (r = blk_switch_locked(v, dm.overlay, dm.from, err->desc, sizeof(err->desc))) == 0)
        snapshot_disk_move_adopt(&v->tree, &dm);
    else if (r == 0 && kept_id[0] && v->blk) /* a target without a disk: on in keep.overlay */
        r = blk_switch_locked(v, keep.overlay, NULL, err->desc, sizeof(err->desc));
    uint64_t pages = 0;
    bool applied = false; /* memory is the target's, whether or not the tree was saved */
    bool to_off = strcmp(target_state, "off") == 0;
    if (r == 0 && to_off) { /* a powered-off node: the VM powers off */
        r = snapshot_revert_disk(&v->tree, target_id, &dm, err->desc, sizeof(err->desc));
    } else if (r == 0) {
        r = snapshot_revert(&v->tree, &v->snap_host, target, &pages, &applied, err->desc,
                            sizeof(err->desc));
        if (applied)
            framebuffer_redraw(v->fb); /* its pages were rewritten behind its back */
    }
    if (r < 0 && !applied && snapshot_disk_move_undo(&v->tree, &dm)) { /* back to the old disk */
        char e2[256];
        blk_switch_locked(v, dm.from, NULL, e2, sizeof(e2));
    }
    if (quiesced)
        vmm_resume_devices_locked(v);
    /* Memory rewritten but the tree not saved: tree.json on disk still names the old image,
     * the guest's memory goes with the new one; both stay, and so does the pause, until a
     * later save (another revert, a take) makes the tree match. */
    bool unsaved = r < 0 && applied;
    if (!unsaved)
        snapshot_disk_move_end(&v->tree, &dm, r == 0, false);
    /* 3. Enter the target's power state (or carry on as before if nothing changed). */
    size_t bytes = 0;
    if (r == 0 && to_off) {
        uint64_t one = 1;
        ssize_t w = write(v->quit_fd, &one, sizeof(one));
        (void)w;
    } else if (r == 0 && strcmp(target_state, "suspended") == 0) {
        r = suspend_locked(v, &bytes, err->desc, sizeof(err->desc));
    } else if ((r == 0 && strcmp(target_state, "paused") != 0) ||
               (r < 0 && !applied && was_running)) {
        machine_resume(&v->m);
        v->state = VMM_RUNNING;
    }
    double pause_ms = vmm_ms_since(&t0);
    if (unsaved) {
        char why[sizeof(err->desc)];
        memcpy(why, err->desc, sizeof(why));
        if (snprintf(err->desc, sizeof(err->desc),
                     "memory is snapshot %s's now, but the snapshot tree could not be saved (the "
                     "VM stays paused; revert again once that is fixed%s%s): %s",
                     target_label, kept_id[0] ? "; the state before is snapshot " : "", kept_id,
                     why) >= (int)sizeof(err->desc))
            vmm_log("revert: %s", why); /* the reason, in full, where the message was cut */
    }
    if (r < 0)
        err->cls = "GenericError";
    pthread_mutex_unlock(&v->lock);
    if (r < 0)
        return r;
    vmm_log("reverted %s to snapshot %s: %llu pages, guest paused %.1f ms", v->cfg->name, target_id,
            (unsigned long long)pages, pause_ms);
    *out = (struct vmm_reverted){.pages_written = pages, .pause_ms = pause_ms};
    snprintf(out->id, sizeof(out->id), "%s", target_id);
    snprintf(out->kept, sizeof(out->kept), "%s", kept_id);
    snprintf(out->vm_state, sizeof(out->vm_state), "%s", target_state);
    return 0;
}

/* Deleting merges the node's pages into its children and its disk image away (disksnap.h),
 * which takes as long as the files are big: it runs on a worker thread, on a copy of the tree,
 * without vmm.lock, so the control thread goes on answering (`vmws status`, `vmws snapshot
 * list`, which shows the delete in progress). Meanwhile the other snapshot operations and
 * suspend are refused (snapshot_ready_locked), a reboot waits for it, and a merge that rewrites
 * images of the running disk's chain keeps the disk detached: the guest's disk requests wait,
 * its vCPUs do not. At the end, under the lock, the copy becomes the VMM's tree (on failure
 * too: the tree on disk may say the node is being deleted), the pages it adds to the carry are
 * or'ed in, the disk is attached again and SNAPSHOT_DELETED tells the clients. */
struct delete_job {
    struct vmm *v;
    struct snap_tree tree; /* the VMM's, copied: the merge works on it unlocked */
    struct disksnap_plan disk;
    uint64_t *carry; /* the pages the delete adds to the VMM's carry */
    bool detached;
    char id[SNAP_ID_MAX];
};

static int tree_copy(struct snap_tree *dst, const struct snap_tree *src)
{
    *dst = *src;
    dst->nodes = src->n ? malloc(src->n * sizeof(*src->nodes)) : NULL;
    if (src->n && !dst->nodes)
        return -ENOMEM;
    for (size_t i = 0; i < src->n; i++) {
        dst->nodes[i] = src->nodes[i];
        dst->nodes[i].delta = NULL; /* each tree opens its own, on demand */
    }
    return 0;
}

/* Quiesced and detached for the merge: the disk goes back on the image the tree names. */
static void reattach_disk_locked(struct vmm *v)
{
    char e2[256];
    if (blk_attach_locked(v, active_disk(v), e2, sizeof(e2)) < 0)
        vmm_log("the disk has no image now: %s", e2);
    virtio_blk_resume(v->blk);
}

static void *delete_worker(void *arg)
{
    struct delete_job *j = arg;
    struct vmm *v = j->v;
    pthread_setname_np(pthread_self(), "vmws-delete");
    char err[256] = "";
    struct snap_node *n = snap_find(&j->tree, j->id);
    int r = n ? snapshot_delete(&j->tree, n, &j->disk, j->carry, snapshot_host_pages(&v->snap_host),
                                err, sizeof(err))
              : -ENOENT;
    pthread_mutex_lock(&v->lock);
    snap_tree_free(&v->tree);
    v->tree = j->tree;
    for (size_t i = 0; i < carry_words(v); i++)
        v->carry[i] |= j->carry[i];
    if (j->detached && v->machine_live && v->blk)
        reattach_disk_locked(v);
    double ms = vmm_ms_since(&v->snap_busy_since);
    v->snap_busy[0] = '\0';
    pthread_cond_broadcast(&v->snap_idle);
    json_t *d = json_pack("{s:s, s:b, s:f}", "id", j->id, "deleted", r == 0, "ms", ms);
    if (d && r < 0)
        json_object_set_new(d, "error", json_string(err));
    ctl_server_event(v->ctl, "SNAPSHOT_DELETED", d);
    json_decref(d);
    pthread_mutex_unlock(&v->lock);
    if (r < 0)
        vmm_log("deleting snapshot %s failed after %.0f ms: %s", j->id, ms, err);
    else
        vmm_log("deleted snapshot %s: %.0f ms", j->id, ms);
    free(j->carry);
    free(j);
    return NULL;
}

/* Starts the merge of N (plan PLAN) on its worker. */
static int delete_start_locked(struct vmm *v, struct snap_node *n,
                               const struct snapshot_delete_plan *plan, char *err, size_t errlen)
{
    struct delete_job *j = calloc(1, sizeof(*j));
    uint64_t *carry = calloc(carry_words(v), sizeof(uint64_t));
    if (!j || !carry || tree_copy(&j->tree, &v->tree) < 0) {
        if (j)
            free(j->tree.nodes);
        free(j);
        free(carry);
        snprintf(err, errlen, "out of memory starting the delete");
        return -ENOMEM;
    }
    j->v = v;
    j->disk = plan->disk;
    for (size_t i = 0; i < j->disk.ndeps; i++) /* the plan names nodes: the copy's, same place */
        if (j->disk.deps[i])
            j->disk.deps[i] = j->tree.nodes + (plan->disk.deps[i] - v->tree.nodes);
    j->carry = carry;
    snprintf(j->id, sizeof(j->id), "%s", n->id);
    j->detached =
        v->blk && (plan->disk.how == DISKSNAP_STREAM || plan->disk.how == DISKSNAP_COMMIT);
    int r = j->detached ? virtio_blk_quiesce(v->blk, 2000, err, errlen) : 0;
    if (r == 0 && j->detached)
        virtio_blk_detach_image(v->blk);
    pthread_t t; /* all signals blocked: they are the main thread's (signalfd) */
    if (r == 0 && (r = -ctl_start_thread(&t, delete_worker, j)) < 0) {
        snprintf(err, errlen, "cannot start the delete's thread: %s", strerror(-r));
        if (j->detached)
            reattach_disk_locked(v);
    }
    if (r < 0) {
        snap_tree_free(&j->tree);
        free(carry);
        free(j);
        return r;
    }
    pthread_detach(t);
    snprintf(v->snap_busy, sizeof(v->snap_busy), "%s", j->id);
    clock_gettime(CLOCK_MONOTONIC, &v->snap_busy_since);
    return 0;
}

int vmm_snapshot_delete(struct vmm *v, const char *id, bool dry_run, struct vmm_deleted *out,
                        struct ctl_error *err)
{
    pthread_mutex_lock(&v->lock);
    struct snap_node *n = v->tree_ok ? snap_find(&v->tree, id) : NULL;
    int r;
    if (!v->tree_ok) {
        vmm_fail(err, "GenericError", "%s", v->tree_err);
        r = -EIO;
    } else if (!n) {
        vmm_fail(err, "InvalidArgument", "no snapshot '%s' (see 'vmws snapshot list')", id);
        r = -ENOENT;
    } else if (v->snap_busy[0] && !dry_run) {
        vmm_fail(err, "GenericError",
                 "snapshot %s is being deleted; try again when that is done (vmws snapshot list "
                 "shows it)",
                 v->snap_busy);
        r = -EBUSY;
    } else {
        snprintf(out->id, sizeof(out->id), "%s", n->id);
        r = snapshot_delete_plan(&v->tree, n, v->blk ? virtio_blk_image(v->blk) : NULL, &out->plan,
                                 err->desc, sizeof(err->desc));
        if (r == 0 && !dry_run)
            r = delete_start_locked(v, n, &out->plan, err->desc, sizeof(err->desc));
        if (r < 0)
            err->cls = "GenericError";
    }
    pthread_mutex_unlock(&v->lock);
    return r;
}

bool vmm_snapshot_wait_idle(struct vmm *v, unsigned timeout_ms)
{
    struct timespec deadline = deadline_in_ms(timeout_ms);
    pthread_mutex_lock(&v->lock);
    while (v->snap_busy[0] &&
           pthread_cond_timedwait(&v->snap_idle, &v->lock, &deadline) != ETIMEDOUT)
        ;
    bool idle = !v->snap_busy[0];
    pthread_mutex_unlock(&v->lock);
    return idle;
}

/* What snapshots keep as pages: guest RAM, then the framebuffer. */
int setup_snapshot_host(struct vmm *v, char *err, size_t errlen)
{
    v->snap_host = (struct snapshot_host){
        .mem = &v->mem,
        .extra = framebuffer_pixels(v->fb),
        .extra_pages = framebuffer_pages(v->fb),
        .collect_dirty = host_collect_dirty,
        .save_state = host_save_state,
        .load_state = host_load_state,
        .opaque = v,
    };
    v->carry = calloc(carry_words(v), sizeof(uint64_t));
    v->snap_host.carry = v->carry;
    if (!v->carry) {
        snprintf(err, errlen, "out of memory for the snapshot bitmap");
        return -ENOMEM;
    }
    return 0;
}
