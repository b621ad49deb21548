/* The VMM's control commands and their table: status, memory truth (with the balloon and the
 * guest's own view), pause/resume, quit, display, sound, the balloon's target, suspend and
 * snapshots. They run on the control socket's thread and take vmm.lock around anything that
 * touches the machine. Each checks its JSON arguments here; the work of suspend and snapshots
 * is vmm_snap.c's, called with plain C arguments. */
#include "core/vmm/vmm_priv.h"

json_t *vmm_fail(struct ctl_error *err, const char *cls, const char *fmt, const char *arg)
{
    err->cls = cls;
    snprintf(err->desc, sizeof(err->desc), fmt, arg);
    return NULL;
}

static uint64_t uptime_ms(const struct vmm *v)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)(now.tv_sec - v->started.tv_sec) * 1000 +
           (uint64_t)((now.tv_nsec - v->started.tv_nsec) / 1000000);
}

static json_t *cmd_query_status(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args;
    (void)err;
    pthread_mutex_lock(&v->lock);
    json_t *r = json_pack("{s:s, s:s, s:i, s:I, s:i, s:I, s:s, s:s, s:s}", "name", v->cfg->name,
                          "state", vmm_state_names[v->state], "cpus", (int)v->cfg->cpus, "memory",
                          (json_int_t)v->cfg->memory_bytes, "pid", (int)getpid(), "uptime_ms",
                          (json_int_t)uptime_ms(v), "backend", mem_backend_name(v->cfg->backend),
                          "vmem", v->cfg->backend == MEM_BACKEND_FILE ? v->paths->vmem : "",
                          "console", v->paths->console_sock);
    if (v->state == VMM_CRASHED)
        json_object_set_new(r, "detail", json_string(v->crash_detail));
    if (v->machine_live && v->blk)
        json_object_set_new(r, "disk", virtio_blk_status_json(v->blk));
    if (v->machine_live && v->net) /* the dashboard's rx/tx rates come from here */
        json_object_set_new(r, "net", virtio_net_status_json(v->net));
    bool agent = v->machine_live && v->vcon && virtio_console_guest_open(v->vcon);
    json_object_set_new(r, "management", vmm_mem_json_locked(v));
    if (v->machine_live && v->balloon) { /* the dashboard's sum of balloons */
        json_t *b = virtio_balloon_status_json(v->balloon, 0);
        json_object_set_new(r, "balloon",
                            json_pack("{s:O, s:O}", "target", json_object_get(b, "target"),
                                      "actual", json_object_get(b, "actual")));
        json_decref(b);
    }
    pthread_mutex_unlock(&v->lock);
    char os[sizeof(v->agent.os)];
    json_t *ja = json_pack("{s:b}", "connected", agent);
    if (vmm_agent_os(v, os, sizeof(os)))
        json_object_set_new(ja, "os", json_string(os));
    json_object_set_new(r, "agent", ja);
    return r;
}

/* query-memory {"detail": bool}: the memory truth. Without detail (the dashboard, every
 * second) the cheap measure: allocated, resident and dirty fresh, smaps' figures at most
 * MEMTRUTH_DETAIL_MS old; with it (vmws mem) everything from smaps now. "method" says which
 * and "cost_us" what measuring the VM cost. */
#define MEMTRUTH_DETAIL_MS 5000
static json_t *cmd_query_memory(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    bool detail = json_is_true(json_object_get(args, "detail"));
    struct memtruth_vm vm;
    struct memtruth_host host;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const char *method = "smaps";
    pthread_mutex_lock(&v->memtruth_lock);
    int r = detail ? memtruth_vm_measure(&vm, 0, v->mem.host, v->mem.size, v->mem.fd,
                                         v->cfg->memory_bytes)
                   : memtruth_vm_measure_cached(&vm, &v->memtruth_cache, v->mem.host, v->mem.size,
                                                v->mem.fd, v->cfg->backend == MEM_BACKEND_HUGETLBFS,
                                                v->cfg->memory_bytes, MEMTRUTH_DETAIL_MS, &method);
    pthread_mutex_unlock(&v->memtruth_lock);
    double cost_ms = vmm_ms_since(&t0);
    if (r == 0)
        r = memtruth_host_measure(&host, NULL);
    if (r < 0) {
        err->cls = "GenericError";
        snprintf(err->desc, sizeof(err->desc), "cannot measure memory: %s", strerror(-r));
        return NULL;
    }
    json_t *jvm = memtruth_vm_json(&vm);
    json_object_set_new(jvm, "vmm_dirty_pages",
                        json_integer((json_int_t)guest_mem_vmm_dirty_pages(&v->mem)));
    json_t *ret = json_pack("{s:o, s:o, s:s, s:s, s:s, s:I}", "vm", jvm, "host",
                            memtruth_host_json(&host), "backend", mem_backend_name(v->cfg->backend),
                            "path", v->cfg->backend == MEM_BACKEND_FILE ? v->paths->vmem : "",
                            "method", method, "cost_us", (json_int_t)(cost_ms * 1000));
    /* The guest's side: the balloon and the statistics its driver reports (asked afresh when
     * older than a second; a guest that does not answer within 500 ms gets its last ones, with
     * their age). The wait is outside vmm.lock, which is taken only for moments meanwhile: a
     * guest that never answers holds up no other command. */
    pthread_mutex_lock(&v->lock);
    struct virtio_balloon *asked = v->machine_live && v->state == VMM_RUNNING ? v->balloon : NULL;
    uint64_t seq = 0;
    if (asked && !virtio_balloon_ask_stats(asked, &seq))
        asked = NULL;
    pthread_mutex_unlock(&v->lock);
    for (int i = 0; asked && i < 50; i++) {
        struct timespec tick = {0, 10 * 1000 * 1000};
        nanosleep(&tick, NULL);
        pthread_mutex_lock(&v->lock); /* the machine (and its balloon) may be gone: a reboot */
        bool same = v->machine_live && v->balloon == asked;
        bool arrived = same && virtio_balloon_stats_seq(asked) != seq;
        pthread_mutex_unlock(&v->lock);
        if (!same || arrived)
            break;
    }
    pthread_mutex_lock(&v->lock);
    json_t *balloon = NULL;
    if (v->machine_live && v->balloon)
        balloon = virtio_balloon_status_json(v->balloon, 0);
    json_object_set_new(ret, "management", vmm_mem_json_locked(v));
    pthread_mutex_unlock(&v->lock);
    if (balloon)
        json_object_set_new(ret, "balloon", balloon);
    return ret;
}

/* set-balloon {"target": bytes}: how much of the guest's RAM the host wants back (0: none). */
static json_t *cmd_set_balloon(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    json_t *jt = args ? json_object_get(args, "target") : NULL;
    if (!json_is_integer(jt) || json_integer_value(jt) < 0 ||
        (uint64_t)json_integer_value(jt) > v->mem.size) {
        err->cls = "InvalidArgument";
        snprintf(err->desc, sizeof(err->desc),
                 "set-balloon takes {\"target\": bytes from 0 to the guest's RAM, %llu}",
                 (unsigned long long)v->mem.size);
        return NULL;
    }
    if (!v->cfg->balloon.enabled)
        return vmm_fail(err, "GenericError", "%s",
                        "the VM has no balloon ([balloon] enabled = no in its vm.conf)");
    if (v->cfg->memory.dynamic)
        return vmm_fail(err, "GenericError", "%s",
                        "dynamic memory sets this VM's balloon target ([memory] dynamic = yes "
                        "in its vm.conf; see vmws mem for why it chose it)");
    pthread_mutex_lock(&v->lock);
    v->balloon_target = (uint64_t)json_integer_value(jt) / GUEST_PAGE_SIZE * GUEST_PAGE_SIZE;
    if (v->machine_live && v->balloon)
        virtio_balloon_set_target(v->balloon, v->balloon_target);
    json_t *r = json_pack("{s:I}", "target", (json_int_t)v->balloon_target);
    pthread_mutex_unlock(&v->lock);
    vmm_log("balloon: target %llu MiB", (unsigned long long)(v->balloon_target >> 20));
    return r;
}

static json_t *pause_or_resume(struct vmm *v, bool pause, struct ctl_error *err)
{
    pthread_mutex_lock(&v->lock);
    enum vmm_state want = pause ? VMM_PAUSED : VMM_RUNNING;
    enum vmm_state from = pause ? VMM_RUNNING : VMM_PAUSED;
    bool ok = v->machine_live && (v->state == from || v->state == want);
    int r = 0;
    if (ok && v->state == from) {
        if (pause)
            r = machine_pause(&v->m, MACHINE_PAUSE_TIMEOUT_MS, err->desc, sizeof(err->desc));
        else
            machine_resume(&v->m);
    }
    if (ok && v->state == from && r == 0) {
        v->state = want;
        ctl_server_event(v->ctl, pause ? "STOP" : "RESUME", NULL);
        vmm_show_state(v);
    }
    enum vmm_state now = v->state;
    pthread_mutex_unlock(&v->lock);
    if (r < 0) {
        err->cls = "GenericError";
        return NULL;
    }
    if (!ok) {
        err->cls = "GenericError";
        snprintf(err->desc, sizeof(err->desc), "cannot %s a VM that is %s",
                 pause ? "pause" : "resume", vmm_state_names[now]);
        return NULL;
    }
    return json_object();
}

static json_t *cmd_stop(void *opaque, json_t *args, struct ctl_error *err)
{
    (void)args;
    return pause_or_resume(opaque, true, err);
}

static json_t *cmd_cont(void *opaque, json_t *args, struct ctl_error *err)
{
    (void)args;
    json_t *r = pause_or_resume(opaque, false, err);
    if (r) /* the guest's clock stood still while paused */
        vmm_agent_resync_clock_async(opaque, "resume");
    return r;
}

static json_t *cmd_quit(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args;
    (void)err;
    uint64_t one = 1;
    ssize_t w = write(v->quit_fd, &one, sizeof(one));
    (void)w;
    return json_object();
}

/* The ACPI power button; "acpi": whether the guest's OS listens (it will shut down and power
 * off through S5) or not (nothing happens: `vmws stop` then pulls the plug). */
static json_t *cmd_system_powerdown(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args, (void)err;
    pthread_mutex_lock(&v->lock);
    bool listened = v->machine_live && v->pm && pm_power_button(v->pm);
    pthread_mutex_unlock(&v->lock);
    return json_pack("{s:b}", "acpi", listened);
}

/* guest-shutdown: asks the guest agent to shut the guest down (it powers off by itself);
 * {"agent": true}, or {"agent": false, "reason": why not} (no agent, it refused or hung). */
static json_t *cmd_guest_shutdown(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args, (void)err;
    char why[256];
    int r = vmm_agent_call(v, "guest-shutdown", json_pack("{s:s}", "mode", "powerdown"), 2000, true,
                           NULL, why, sizeof(why));
    if (r == 0)
        vmm_log("guest agent: asked the guest to shut down");
    return r == 0 ? json_pack("{s:b}", "agent", 1)
                  : json_pack("{s:b, s:s}", "agent", 0, "reason", why);
}

static json_t *cmd_query_display(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args;
    (void)err;
    json_t *r = v->display ? v->backends->display.status_json(v->display)
                           : json_pack("{s:b, s:i}", "sdl", 0, "updates", 0);
    json_object_set_new(r, "width", json_integer(framebuffer_width(v->fb)));
    json_object_set_new(r, "height", json_integer(framebuffer_height(v->fb)));
    return r;
}

/* query-audio: the sound card, speaker and PulseAudio stream; set-volume {"volume": 0-100,
 * "mute": bool} (either or both). */
static json_t *cmd_query_audio(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args;
    pthread_mutex_lock(&v->lock);
    json_t *r = v->audio ? v->backends->audio.status_json(v->audio) : NULL;
    pthread_mutex_unlock(&v->lock);
    if (!r) {
        err->cls = "GenericError";
        snprintf(err->desc, sizeof(err->desc), "the VM has no sound devices (see vmm.log)");
    }
    return r;
}

/* query-net: the network card (MAC, forwards, device status, needs_reset and why, rx/tx byte
 * and packet counters). */
static json_t *cmd_query_net(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args;
    pthread_mutex_lock(&v->lock);
    json_t *r = v->machine_live && v->net ? virtio_net_status_json(v->net) : NULL;
    pthread_mutex_unlock(&v->lock);
    if (!r)
        return vmm_fail(err, "GenericError", "%s",
                        "the VM has no network card (see [net] in vm.conf)");
    return r;
}

/* query-disk: the virtio-blk disk (image, capacity, device status, needs_reset and why). */
static json_t *cmd_query_disk(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args;
    pthread_mutex_lock(&v->lock);
    json_t *r = v->machine_live && v->blk ? virtio_blk_status_json(v->blk) : NULL;
    pthread_mutex_unlock(&v->lock);
    if (!r) {
        err->cls = "GenericError";
        snprintf(err->desc, sizeof(err->desc), "the VM has no disk (see [disk] in vm.conf)");
    }
    return r;
}

static json_t *cmd_set_volume(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    json_t *jv = args ? json_object_get(args, "volume") : NULL;
    json_t *jm = args ? json_object_get(args, "mute") : NULL;
    if ((!jv && !jm) ||
        (jv &&
         (!json_is_integer(jv) || json_integer_value(jv) < 0 || json_integer_value(jv) > 100)) ||
        (jm && !json_is_boolean(jm))) {
        err->cls = "GenericError";
        snprintf(err->desc, sizeof(err->desc),
                 "set-volume takes {\"volume\": 0-100} and/or {\"mute\": true|false}");
        return NULL;
    }
    pthread_mutex_lock(&v->lock);
    if (jv)
        v->audio_attenuation = 100 - (unsigned)json_integer_value(jv);
    if (jm)
        v->audio_muted = json_is_true(jm);
    if (v->audio)
        v->backends->audio.set_volume(v->audio, 100 - v->audio_attenuation, v->audio_muted);
    json_t *r = json_pack("{s:i, s:b}", "volume", (int)(100 - v->audio_attenuation), "muted",
                          v->audio_muted);
    pthread_mutex_unlock(&v->lock);
    return r;
}

static json_t *cmd_suspend(void *opaque, json_t *args, struct ctl_error *err)
{
    (void)args;
    double pause_ms;
    size_t bytes;
    if (vmm_suspend(opaque, &pause_ms, &bytes, err) < 0)
        return NULL;
    return json_pack("{s:f, s:I}", "pause_ms", pause_ms, "state_bytes", (json_int_t)bytes);
}

static json_t *node_json(const struct snap_node *n)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "id", n->id, "label", n->label,
                     "vm_state", n->vm_state, "pages", (json_int_t)n->pages, "memory_bytes",
                     (json_int_t)n->mem_bytes, "state_bytes", (json_int_t)n->state_bytes, "parent",
                     n->parent);
}

/* snapshot-take {"label": L, "vm_state": S (optional: the power state the node records)}. */
static json_t *cmd_snapshot_take(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    const char *label = NULL, *vm_state = NULL;
    if (json_unpack(args, "{s:s, s?:s}", "label", &label, "vm_state", &vm_state) < 0 || !*label ||
        strlen(label) >= SNAP_LABEL_MAX)
        return vmm_fail(err, "InvalidArgument", "%s",
                        "snapshot-take needs {\"label\": a name of 1-63 characters}");
    /* Quiesced: the guest agent freezes the guest's file systems around the take (seed 004),
     * waiting without the lock; otherwise the take goes on and says why not. */
    char quiesced[SNAP_QUIESCED_MAX] = "quiesced", why[SNAP_QUIESCED_MAX - 16];
    pthread_mutex_lock(&v->lock);
    bool running = v->machine_live && v->state == VMM_RUNNING;
    pthread_mutex_unlock(&v->lock);
    bool frozen = running && vmm_agent_freeze(v, why, sizeof(why)) == 0;
    if (!running)
        snprintf(quiesced, sizeof(quiesced), "not quiesced: the VM is not running");
    else if (!frozen)
        snprintf(quiesced, sizeof(quiesced), "not quiesced: %s", why);
    struct snap_node taken;
    double pause_ms;
    int r = vmm_snapshot_take(v, label, vm_state, quiesced, &taken, &pause_ms, err);
    bool thawed = !frozen || vmm_agent_thaw(v, why, sizeof(why)) == 0; /* logged if not */
    if (r < 0)
        return NULL;
    json_t *ret = node_json(&taken);
    if (!thawed)
        json_object_set_new(ret, "thaw_error", json_string(why));
    json_object_set_new(ret, "pause_ms", json_real(pause_ms));
    json_object_set_new(ret, "quiesced", json_string(quiesced));
    if (ret)
        ctl_server_event(v->ctl, "SNAPSHOT_TAKEN", ret);
    return ret;
}

/* snapshot-revert {"id": ID or label, "keep_current": bool (default true)}. */
static json_t *cmd_snapshot_revert(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    const char *id = NULL;
    int keep = 1;
    if (json_unpack(args, "{s:s, s?:b}", "id", &id, "keep_current", &keep) < 0)
        return vmm_fail(err, "InvalidArgument", "%s",
                        "snapshot-revert needs {\"id\": ID or label}");
    struct vmm_reverted rv;
    if (vmm_snapshot_revert(v, id, keep, &rv, err) < 0)
        return NULL;
    json_t *ret =
        json_pack("{s:s, s:s, s:I, s:f, s:s}", "id", rv.id, "kept", rv.kept, "pages_written",
                  (json_int_t)rv.pages_written, "pause_ms", rv.pause_ms, "vm_state", rv.vm_state);
    /* The guest's clock is the snapshot's: the agent sets it to now (as VMware Tools does). */
    char why[256], clock[300] = "not set: the VM is not running";
    if (strcmp(rv.vm_state, "running") == 0) {
        if (vmm_agent_after_revert(v, why, sizeof(why)) == 0)
            snprintf(clock, sizeof(clock), "set to the host's through the guest agent");
        else
            snprintf(clock, sizeof(clock), "not set: %s", why);
        vmm_log("after revert to %s: clock %s", rv.id, clock);
    }
    json_object_set_new(ret, "clock", json_string(clock));
    if (ret)
        ctl_server_event(v->ctl, "SNAPSHOT_REVERTED", ret);
    return ret;
}

/* snapshot-delete {"id": ID or label, "dry_run": bool (only say what it needs)}: starts the
 * merge and answers at once (vmm_snapshot_delete). */
static json_t *cmd_snapshot_delete(void *opaque, json_t *args, struct ctl_error *err)
{
    const char *id = NULL;
    int dry_run = 0;
    if (json_unpack(args, "{s:s, s?:b}", "id", &id, "dry_run", &dry_run) < 0)
        return vmm_fail(err, "InvalidArgument", "%s",
                        "snapshot-delete needs {\"id\": ID or label}");
    struct vmm_deleted d;
    if (vmm_snapshot_delete(opaque, id, dry_run, &d, err) < 0)
        return NULL;
    const struct disksnap_plan *disk = &d.plan.disk;
    /* "started": the merge runs on; the event SNAPSHOT_DELETED says how it ended. */
    return json_pack("{s:s, s:I, s:I, s:I, s:s, s:I, s:I, s:b}", "id", d.id, "needs_bytes",
                     (json_int_t)(d.plan.memory_needs + disk->needs), "memory_needs_bytes",
                     (json_int_t)d.plan.memory_needs, "disk_needs_bytes", (json_int_t)disk->needs,
                     "disk_merge", disksnap_how_name(disk->how), "disk_stream_bytes",
                     (json_int_t)disk->stream_needs, "disk_commit_bytes",
                     (json_int_t)disk->commit_needs, "started", !dry_run);
}

static json_t *cmd_query_snapshots(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args;
    pthread_mutex_lock(&v->lock);
    json_t *ret =
        v->tree_ok ? snapshot_tree_json(&v->tree, v->blk ? virtio_blk_image(v->blk) : NULL) : NULL;
    if (!v->tree_ok)
        vmm_fail(err, "GenericError", "%s", v->tree_err);
    if (ret && v->snap_busy[0]) /* the tree as it was before that delete, until it ends */
        json_object_set_new(ret, "deleting",
                            json_pack("{s:s, s:f}", "id", v->snap_busy, "elapsed_ms",
                                      vmm_ms_since(&v->snap_busy_since)));
    pthread_mutex_unlock(&v->lock);
    return ret;
}

const struct ctl_command vmm_commands[] = {
    {"query-status", cmd_query_status},
    {"query-memory", cmd_query_memory},
    {"stop", cmd_stop},
    {"cont", cmd_cont},
    {"quit", cmd_quit},
    {"system_powerdown", cmd_system_powerdown},
    {"guest-shutdown", cmd_guest_shutdown},
    {"query-display", cmd_query_display},
    {"suspend", cmd_suspend},
    {"snapshot-take", cmd_snapshot_take},
    {"snapshot-revert", cmd_snapshot_revert},
    {"snapshot-delete", cmd_snapshot_delete},
    {"query-snapshots", cmd_query_snapshots},
    {"query-audio", cmd_query_audio},
    {"query-disk", cmd_query_disk},
    {"query-net", cmd_query_net},
    {"set-volume", cmd_set_volume},
    {"set-balloon", cmd_set_balloon},
};
const size_t vmm_ncommands = sizeof(vmm_commands) / sizeof(vmm_commands[0]);
