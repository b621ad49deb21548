/* The VMM process of one VM (see vmm.h). The main thread owns the machine's life: it boots it,
 * sleeps until something stops it (guest poweroff or reset, a client's quit, a signal, a guest
 * error), and then powers off, reboots or stays up as "crashed" so the user can read why.
 * Control and console sockets are served by their own threads and touch the machine only under
 * vmm.lock, because a reboot replaces the machine and its devices underneath them. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audio/audio.h"
#include "core/acpi.h"
#include "core/consolesrv.h"
#include "core/ctl.h"
#include "core/devices.h"
#include "core/linuxboot.h"
#include "core/log.h"
#include "core/machine.h"
#include "core/memtruth.h"
#include "core/snapshot.h"
#include "core/state.h"
#include "core/virtio_blk.h"
#include "core/vmm.h"
#include "display/dconfig.h"
#include "display/display.h"

#define MAX_IMAGE_BYTES (1ULL << 30)

enum vmm_state { VMM_BOOTING, VMM_RUNNING, VMM_PAUSED, VMM_SHUTDOWN, VMM_CRASHED };

static const char *const state_names[] = {"booting", "running", "paused", "shutdown", "crashed"};

struct file_image {
    const uint8_t *data;
    size_t len;
    bool mapped;
};

struct vmm {
    const struct vm_config *cfg;
    const struct vm_paths *paths;
    struct guest_mem mem;
    struct file_image kernel, initrd;

    pthread_mutex_t lock; /* guards everything below */
    enum vmm_state state;
    char crash_detail[256];
    bool machine_live;
    struct machine m;
    struct serial *serial;
    struct rtc *rtc;
    struct i8042 *i8042;
    struct pci_bus *pci;
    struct pm *pm;
    struct virtio_blk *blk;      /* [disk] in vm.conf; NULL = no disk */
    struct audio *audio;         /* ES1370 + PC speaker + PulseAudio; NULL = no sound */
    unsigned audio_attenuation; /* 100 - volume; from [audio] in vm.conf at the first boot */
    bool audio_muted;
    bool audio_configured;
    struct display *display; /* the screen: outlives reboots, attached to each machine */

    struct ctl_server *ctl;
    struct console_server *console;
    int quit_fd; /* eventfd: a client asked us to quit (or suspended the VM) */
    struct timespec started;
    const struct vmm_options *opts;

    /* Snapshots (under lock): the tree, and the pages that may differ from its current node. */
    struct snap_tree tree;
    bool tree_ok;
    char tree_err[256];
    uint64_t *carry;
    struct snapshot_host snap_host;
    enum machine_stop_reason after_revert; /* a reverted-to node's power state to enter */
    bool suspended;                        /* the VM was suspended: keep its memory file */
};

#define T_CARRY STATE_TAG('C', 'A', 'R', 'Y')

static uint64_t ram_pages(const struct vmm *v)
{
    return v->mem.size / GUEST_PAGE_SIZE;
}

static size_t carry_words(const struct vmm *v)
{
    return (size_t)((snapshot_host_pages(&v->snap_host) + 63) / 64);
}


/* ---- images ---- */

static int map_file(const char *what, const char *path, struct file_image *img, char *err,
                    size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open %s %s: %s", what, path, strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    if (!S_ISREG(st.st_mode) || st.st_size == 0 || (uint64_t)st.st_size > MAX_IMAGE_BYTES) {
        snprintf(err, errlen, "%s %s is not a regular file of 1 byte to 1 GiB", what, path);
        close(fd);
        return -EINVAL;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        int e = errno;
        snprintf(err, errlen, "cannot map %s %s: %s", what, path, strerror(e));
        return -e;
    }
    *img = (struct file_image){p, (size_t)st.st_size, true};
    return 0;
}

static void unmap_image(struct file_image *img)
{
    if (img->mapped)
        munmap((void *)img->data, img->len);
    memset(img, 0, sizeof(*img));
}

static int load_images(struct vmm *v, char *err, size_t errlen)
{
    const struct vm_config *cfg = v->cfg;
    int r = 0;
    if (cfg->kernel[0] == '\0' || strcmp(cfg->kernel, "builtin") == 0)
        v->kernel = (struct file_image){vmws_guest_bzimage,
                                        (size_t)(vmws_guest_bzimage_end - vmws_guest_bzimage),
                                        false};
    else
        r = map_file("kernel", cfg->kernel, &v->kernel, err, errlen);
    if (r == 0 && cfg->initrd[0])
        r = map_file("initrd", cfg->initrd, &v->initrd, err, errlen);
    if (r == 0) {
        struct bzimage_info info;
        r = bzimage_parse(v->kernel.data, v->kernel.len, &info, err, errlen);
        if (r == 0)
            vmm_log("kernel: %s, boot protocol %u.%02u%s%s",
                    cfg->kernel[0] ? cfg->kernel : "built-in guest", info.protocol >> 8,
                    info.protocol & 0xff, info.version[0] ? ", version " : "", info.version);
    }
    return r;
}

/* ---- the machine ---- */

static void serial_to_console(void *opaque, const unsigned char *buf, size_t len)
{
    struct vmm *v = opaque;
    console_server_output(v->console, buf, len);
}

static void console_to_serial(void *opaque, const unsigned char *buf, size_t len)
{
    struct vmm *v = opaque;
    pthread_mutex_lock(&v->lock);
    if (v->machine_live && v->serial)
        serial_input(v->serial, buf, len);
    pthread_mutex_unlock(&v->lock);
}

static void destroy_machine_locked(struct vmm *v)
{
    if (!v->machine_live)
        return;
    display_detach(v->display);
    audio_stop(v->audio); /* the mixer thread raises IRQs: stop it while the VM fd is open */
    char qerr[256];
    if (v->blk && virtio_blk_quiesce(v->blk, 5000, qerr, sizeof(qerr)) < 0)
        vmm_log("%s", qerr); /* its I/O thread raises IRQs too: no new requests from here */
    machine_destroy(&v->m); /* joins the vCPU threads first: no device is in use after this */
    virtio_blk_destroy(v->blk);
    v->blk = NULL;
    audio_destroy(v->audio);
    v->audio = NULL;
    serial_destroy(v->serial);
    rtc_destroy(v->rtc);
    i8042_destroy(v->i8042);
    pci_destroy(v->pci);
    pm_destroy(v->pm);
    v->serial = NULL;
    v->rtc = NULL;
    v->i8042 = NULL;
    v->pci = NULL;
    v->pm = NULL;
    v->machine_live = false;
}

/* Saves the machine and every device (paused). */
static int save_all_locked(struct vmm *v, struct state_writer *w)
{
    int r = machine_save_state(&v->m, w);
    if (r == 0)
        r = serial_save(v->serial, w);
    if (r == 0)
        r = rtc_save(v->rtc, w);
    if (r == 0)
        r = i8042_save(v->i8042, w);
    if (r == 0)
        r = pci_save(v->pci, w);
    if (r == 0)
        r = pm_save(v->pm, w);
    if (r == 0 && v->display)
        r = display_save(v->display, w);
    if (r == 0 && v->audio)
        r = audio_save(v->audio, w);
    if (r == 0 && v->blk)
        r = virtio_blk_save(v->blk, w);
    return r < 0 ? r : w->error;
}

static int load_all_locked(struct vmm *v, const struct state_reader *r, char *err, size_t errlen)
{
    /* Device records are checked before the vCPUs are touched: a bad file changes nothing. */
    int rc = machine_check_state(&v->m, r, err, errlen);
    if (rc < 0)
        return rc;
    if (serial_load(v->serial, r) || rtc_load(v->rtc, r) || i8042_load(v->i8042, r) ||
        pci_load(v->pci, r) || pm_load(v->pm, r) || (v->display && display_load(v->display, r)) ||
        (v->audio && audio_load(v->audio, r)) || (v->blk && virtio_blk_load(v->blk, r))) {
        snprintf(err, errlen, "the saved state's device records do not fit this machine");
        return -EINVAL;
    }
    return machine_load_state(&v->m, r, true, err, errlen);
}

static int create_machine_locked(struct vmm *v, char *err, size_t errlen)
{
    struct machine *m = &v->m;
    int r = machine_create(m, &v->mem, v->cfg->cpus, err, errlen);
    v->machine_live = true;
    if (r < 0)
        return r;
    v->serial = serial_create(m, COM1_BASE, COM1_IRQ, serial_to_console, v);
    v->rtc = rtc_create(m);
    v->i8042 = i8042_create(m);
    v->pci = pci_create(m);
    v->pm = pm_create(m);
    if (!v->serial || !v->rtc || !v->i8042 || !v->pci || !v->pm) {
        snprintf(err, errlen, "cannot create the machine's devices (out of memory?)");
        return -ENOMEM;
    }
    if (!v->audio_configured) { /* later boots keep what `vmws volume` set */
        v->audio_attenuation = 100 - (v->cfg->audio.volume <= 100 ? v->cfg->audio.volume : 100);
        v->audio_muted = v->cfg->audio.muted;
        v->audio_configured = true;
    }
    struct audio_config acfg = {
        .vm_name = v->cfg->name, .volume = 100 - v->audio_attenuation, .muted = v->audio_muted};
    if (v->cfg->audio.enabled) /* NULL: logged, the VM runs without sound */
        v->audio = audio_create(m, v->pci, &acfg);
    if (v->cfg->disk.path[0]) { /* relative to the VM's directory */
        char path[2 * PATH_MAX + 2];
        snprintf(path, sizeof(path), "%s%s%s", v->cfg->disk.path[0] == '/' ? "" : v->paths->dir,
                 v->cfg->disk.path[0] == '/' ? "" : "/", v->cfg->disk.path);
        v->blk = virtio_blk_create(m, v->pci, VIRTIO_BLK_PCI_SLOT, path, err, errlen);
        if (!v->blk)
            return -EIO;
    }
    if (v->display) {
        int dr = display_attach(v->display, m, v->i8042, err, errlen);
        if (dr < 0)
            return dr;
    }
    return 0;
}

/* Loads ACPI tables and the kernel and points the boot vCPU at it. */
static int boot_kernel_locked(struct vmm *v, char *err, size_t errlen)
{
    uint64_t rsdp = 0;
    struct acpi_config acfg = {.ncpus = v->cfg->cpus};
    int r = acpi_build(&v->mem, &acfg, &rsdp);
    if (r < 0) {
        snprintf(err, errlen, "cannot build ACPI tables for %u vCPUs: %s", v->cfg->cpus,
                 strerror(-r));
        return r;
    }
    struct boot_request req = {
        .kernel = v->kernel.data,
        .kernel_len = v->kernel.len,
        .initrd = v->initrd.data,
        .initrd_len = v->initrd.len,
        .cmdline = v->cfg->append,
        .acpi_rsdp = rsdp,
    };
    if (v->display)
        display_boot_framebuffer(v->display, &req.fb);
    struct boot_entry entry;
    r = linuxboot_load(&v->mem, &req, &entry, err, errlen);
    if (r < 0)
        return r;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    memset(&regs, 0, sizeof(regs));
    r = machine_get_boot_sregs(&v->m, &sregs);
    if (r < 0) {
        snprintf(err, errlen, "KVM_GET_SREGS: %s", strerror(-r));
        return r;
    }
    linuxboot_vcpu_state(&entry, &regs, &sregs);
    return machine_set_boot_state(&v->m, &regs, &sregs, err, errlen);
}

/* Resumes from the suspend state: machine, devices, the carry bitmap. The file is removed once
 * the machine runs from it (its memory file moves on from here). */
static int resume_locked(struct vmm *v, char *err, size_t errlen)
{
    struct state_reader r;
    int rc = state_reader_load(&r, v->paths->suspend_state, err, errlen);
    if (rc < 0)
        return rc;
    rc = load_all_locked(v, &r, err, errlen);
    const struct state_record *carry = state_get(&r, T_CARRY, 0);
    size_t words = carry_words(v);
    if (rc == 0 && carry && carry->len == words * sizeof(uint64_t))
        memcpy(v->carry, carry->data, carry->len);
    else if (rc == 0) /* unknown changes: everything may differ from the current node */
        memset(v->carry, 0xff, words * sizeof(uint64_t));
    state_reader_free(&r);
    return rc;
}

static int boot_machine_locked(struct vmm *v, bool resume, char *err, size_t errlen)
{
    int r = create_machine_locked(v, err, errlen);
    if (r == 0)
        r = resume ? resume_locked(v, err, errlen) : boot_kernel_locked(v, err, errlen);
    if (r == 0 && v->opts->start_paused) {
        v->m.pause_requested = true; /* vCPU threads park before their first KVM_RUN */
        v->state = VMM_PAUSED;
    } else {
        v->state = VMM_RUNNING;
    }
    if (r == 0)
        r = machine_start(&v->m, err, errlen);
    if (r == 0 && resume)
        unlink(v->paths->suspend_state);
    return r;
}

/* ---- control commands (run on the control socket's thread) ---- */

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
                          "state", state_names[v->state], "cpus", (int)v->cfg->cpus, "memory",
                          (json_int_t)v->cfg->memory_bytes, "pid", (int)getpid(), "uptime_ms",
                          (json_int_t)uptime_ms(v), "backend", mem_backend_name(v->cfg->backend),
                          "vmem", v->cfg->backend == MEM_BACKEND_FILE ? v->paths->vmem : "",
                          "console", v->paths->console_sock);
    if (v->state == VMM_CRASHED)
        json_object_set_new(r, "detail", json_string(v->crash_detail));
    if (v->machine_live && v->blk)
        json_object_set_new(r, "disk", virtio_blk_status_json(v->blk));
    pthread_mutex_unlock(&v->lock);
    return r;
}

static json_t *cmd_query_memory(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args;
    struct memtruth_vm vm;
    struct memtruth_host host;
    int r = memtruth_vm_measure(&vm, 0, v->mem.host, v->mem.size, v->mem.fd,
                                v->cfg->memory_bytes);
    if (r == 0)
        r = memtruth_host_measure(&host, NULL);
    if (r < 0) {
        err->cls = "GenericError";
        snprintf(err->desc, sizeof(err->desc), "cannot measure memory: %s", strerror(-r));
        return NULL;
    }
    json_t *jvm = memtruth_vm_json(&vm);
    json_object_set_new(jvm, "vmm_dirty_pages", json_integer((json_int_t)guest_mem_vmm_dirty_pages(&v->mem)));
    return json_pack("{s:o, s:o, s:s, s:s}", "vm", jvm, "host", memtruth_host_json(&host),
                     "backend", mem_backend_name(v->cfg->backend), "path",
                     v->cfg->backend == MEM_BACKEND_FILE ? v->paths->vmem : "");
}

static json_t *pause_or_resume(struct vmm *v, bool pause, struct ctl_error *err)
{
    pthread_mutex_lock(&v->lock);
    enum vmm_state want = pause ? VMM_PAUSED : VMM_RUNNING;
    enum vmm_state from = pause ? VMM_RUNNING : VMM_PAUSED;
    bool ok = v->machine_live && (v->state == from || v->state == want);
    if (ok && v->state == from) {
        if (pause)
            machine_pause(&v->m);
        else
            machine_resume(&v->m);
        v->state = want;
        ctl_server_event(v->ctl, pause ? "STOP" : "RESUME", NULL);
        display_set_state(v->display, state_names[want]);
    }
    enum vmm_state now = v->state;
    pthread_mutex_unlock(&v->lock);
    if (!ok) {
        err->cls = "GenericError";
        snprintf(err->desc, sizeof(err->desc), "cannot %s a VM that is %s",
                 pause ? "pause" : "resume", state_names[now]);
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
    return pause_or_resume(opaque, false, err);
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

/* ---- suspend and snapshots ---- */

static double ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Pages changed since the last call: RAM (KVM's log and the VMM's), then the framebuffer. */
static int host_collect_dirty(void *opaque, uint64_t *bitmap)
{
    struct vmm *v = opaque;
    display_collect_dirty(v->display, bitmap + ram_pages(v) / 64);
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

static json_t *fail_cmd(struct ctl_error *err, const char *cls, const char *fmt, const char *arg)
{
    err->cls = cls;
    snprintf(err->desc, sizeof(err->desc), fmt, arg);
    return NULL;
}

/* Checks (under lock) that the VM can be snapshotted now. */
static bool snapshot_ready_locked(struct vmm *v, struct ctl_error *err)
{
    if (!v->tree_ok) {
        fail_cmd(err, "GenericError", "%s", v->tree_err);
        return false;
    }
    if (!v->machine_live || (v->state != VMM_RUNNING && v->state != VMM_PAUSED)) {
        fail_cmd(err, "GenericError", "the VM is %s", state_names[v->state]);
        return false;
    }
    return true;
}

/* Paused: saves machine state + carry as the suspend state and starts writing back the memory
 * file; the main loop then ends the process without discarding the memory. */
static int suspend_locked(struct vmm *v, size_t *state_bytes, char *err, size_t errlen)
{
    int r = host_collect_dirty(v, v->carry);
    struct state_writer w;
    state_writer_init(&w);
    if (r == 0)
        r = save_all_locked(v, &w);
    if (r == 0) /* the framebuffer is not in the memory file */
        r = display_save_contents(v->display, &w);
    state_put(&w, T_CARRY, 0, v->carry, carry_words(v) * sizeof(uint64_t));
    *state_bytes = w.len;
    if (r == 0)
        r = state_writer_save(&w, v->paths->suspend_state);
    state_writer_free(&w);
    if (r < 0) {
        snprintf(err, errlen, "cannot save the suspend state %.150s: %s", v->paths->suspend_state,
                 strerror(-r));
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

static json_t *cmd_suspend(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args;
    pthread_mutex_lock(&v->lock);
    if (!v->machine_live || (v->state != VMM_RUNNING && v->state != VMM_PAUSED)) {
        pthread_mutex_unlock(&v->lock);
        return fail_cmd(err, "GenericError", "cannot suspend a VM that is %s",
                        state_names[v->state]);
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool was_running = v->state == VMM_RUNNING;
    machine_pause(&v->m);
    size_t bytes = 0;
    int r = suspend_locked(v, &bytes, err->desc, sizeof(err->desc));
    double pause_ms = ms_since(&t0);
    if (r < 0 && was_running) {
        machine_resume(&v->m); /* nothing is lost: the VM just keeps running */
        v->state = VMM_RUNNING;
    }
    pthread_mutex_unlock(&v->lock);
    if (r < 0) {
        err->cls = "GenericError";
        return NULL;
    }
    vmm_log("suspended %s: %.1f ms paused, state %zu bytes", v->cfg->name, pause_ms, bytes);
    return json_pack("{s:f, s:I}", "pause_ms", pause_ms, "state_bytes", (json_int_t)bytes);
}

static json_t *node_json(struct snap_node *n)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "id", n->id, "label", n->label,
                     "vm_state", n->vm_state, "pages", (json_int_t)n->pages, "memory_bytes",
                     (json_int_t)n->mem_bytes, "state_bytes", (json_int_t)n->state_bytes,
                     "parent", n->parent);
}

/* Takes a snapshot (under lock, machine live). PAUSE_MS gets how long the guest was paused. */
static struct snap_node *take_locked(struct vmm *v, const char *label, bool automatic,
                                     const char *vm_state, double *pause_ms, char *err,
                                     size_t errlen)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool was_running = v->state == VMM_RUNNING;
    if (was_running)
        machine_pause(&v->m);
    struct snapshot_capture cap;
    int r = snapshot_capture(&v->snap_host, &cap, err, errlen);
    if (was_running)
        machine_resume(&v->m);
    *pause_ms = ms_since(&t0);
    if (r < 0)
        return NULL;
    if (!vm_state)
        vm_state = was_running ? "running" : "paused";
    struct snap_node *n = NULL;
    r = snapshot_commit(&v->tree, &v->snap_host, &cap, label, automatic, vm_state, NULL, &n,
                        err, errlen);
    snapshot_capture_free(&cap);
    return r < 0 ? NULL : n;
}

static json_t *cmd_snapshot_take(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    const char *label = NULL, *vm_state = NULL;
    if (json_unpack(args, "{s:s, s?:s}", "label", &label, "vm_state", &vm_state) < 0 ||
        !*label || strlen(label) >= SNAP_LABEL_MAX)
        return fail_cmd(err, "InvalidArgument", "%s",
                        "snapshot-take needs {\"label\": a name of 1-63 characters}");
    pthread_mutex_lock(&v->lock);
    json_t *ret = NULL;
    double pause_ms = 0;
    if (snapshot_ready_locked(v, err)) {
        struct snap_node *n =
            take_locked(v, label, false, vm_state, &pause_ms, err->desc, sizeof(err->desc));
        if (n) {
            ret = node_json(n);
            json_object_set_new(ret, "pause_ms", json_real(pause_ms));
        } else {
            err->cls = "GenericError";
        }
    }
    pthread_mutex_unlock(&v->lock);
    if (ret)
        ctl_server_event(v->ctl, "SNAPSHOT_TAKEN", ret);
    return ret;
}

/* Revert, in the order that keeps the guest's pause short: capture the present (memory copy
 * only), rewrite what differs from the target, let the guest run, then write the captured
 * present to disk as an automatic node next to where it was taken. */
static json_t *cmd_snapshot_revert(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    const char *id = NULL;
    int keep = 1;
    if (json_unpack(args, "{s:s, s?:b}", "id", &id, "keep_current", &keep) < 0)
        return fail_cmd(err, "InvalidArgument", "%s", "snapshot-revert needs {\"id\": ID or label}");
    pthread_mutex_lock(&v->lock);
    if (!snapshot_ready_locked(v, err)) {
        pthread_mutex_unlock(&v->lock);
        return NULL;
    }
    struct snap_node *target = snap_find(&v->tree, id);
    if (!target) {
        pthread_mutex_unlock(&v->lock);
        return fail_cmd(err, "InvalidArgument", "no snapshot '%s' (see 'vmws snapshot list')", id);
    }
    char target_id[SNAP_ID_MAX], target_label[SNAP_LABEL_MAX], target_state[16],
        kept_parent[SNAP_ID_MAX];
    snprintf(target_id, sizeof(target_id), "%s", target->id);
    snprintf(target_label, sizeof(target_label), "%s", target->label);
    snprintf(target_state, sizeof(target_state), "%s", target->vm_state);
    snprintf(kept_parent, sizeof(kept_parent), "%s", v->tree.current);

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool was_running = v->state == VMM_RUNNING;
    machine_pause(&v->m);
    v->state = VMM_PAUSED;
    /* 1. The present, copied in memory (the revert below makes it unreachable otherwise). */
    struct snapshot_capture cap = {0};
    int r = keep ? snapshot_capture(&v->snap_host, &cap, err->desc, sizeof(err->desc)) : 0;
    /* 2. Become the target. */
    uint64_t pages = 0;
    bool to_off = strcmp(target_state, "off") == 0;
    if (r == 0 && to_off) { /* a powered-off node: the VM powers off */
        snprintf(v->tree.current, sizeof(v->tree.current), "%s", target_id);
        r = snap_tree_save(&v->tree, err->desc, sizeof(err->desc));
    } else if (r == 0) {
        r = snapshot_revert(&v->tree, &v->snap_host, target, &pages, err->desc,
                            sizeof(err->desc));
        if (r == 0)
            display_redraw(v->display); /* its pages were rewritten behind its back */
    }
    /* 3. Enter the target's power state (or carry on as before if nothing changed). */
    size_t bytes = 0;
    double pause_ms = 0;
    if (r == 0 && to_off) {
        uint64_t one = 1;
        ssize_t w = write(v->quit_fd, &one, sizeof(one));
        (void)w;
    } else if (r == 0 && strcmp(target_state, "suspended") == 0) {
        r = suspend_locked(v, &bytes, err->desc, sizeof(err->desc));
    } else if ((r == 0 && strcmp(target_state, "paused") != 0) || (r < 0 && was_running)) {
        machine_resume(&v->m);
        v->state = VMM_RUNNING;
    }
    pause_ms = ms_since(&t0);
    /* 4. The present as it was, kept as an automatic node beside the node it descended from. */
    char kept_id[SNAP_ID_MAX] = "";
    if (r == 0 && keep) {
        char label[SNAP_LABEL_MAX];
        struct snap_node *kept = NULL;
        snprintf(label, sizeof(label), "auto-before-%.40s", target_label);
        char kerr[256];
        if (snapshot_commit(&v->tree, &v->snap_host, &cap, label, true,
                            was_running ? "running" : "paused", kept_parent, &kept, kerr,
                            sizeof(kerr)) < 0)
            vmm_log("reverted, but the state before could not be kept: %s", kerr);
        if (kept)
            snprintf(kept_id, sizeof(kept_id), "%s", kept->id);
    }
    snapshot_capture_free(&cap);
    json_t *ret = NULL;
    if (r == 0)
        ret = json_pack("{s:s, s:s, s:I, s:f, s:s}", "id", target_id, "kept", kept_id,
                        "pages_written", (json_int_t)pages, "pause_ms", pause_ms, "vm_state",
                        target_state);
    else
        err->cls = "GenericError";
    pthread_mutex_unlock(&v->lock);
    if (ret) {
        vmm_log("reverted %s to snapshot %s: %llu pages, guest paused %.1f ms", v->cfg->name,
                target_id, (unsigned long long)pages, pause_ms);
        ctl_server_event(v->ctl, "SNAPSHOT_REVERTED", ret);
    }
    return ret;
}

static json_t *cmd_snapshot_delete(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    const char *id = NULL;
    int dry_run = 0;
    if (json_unpack(args, "{s:s, s?:b}", "id", &id, "dry_run", &dry_run) < 0)
        return fail_cmd(err, "InvalidArgument", "%s", "snapshot-delete needs {\"id\": ID or label}");
    pthread_mutex_lock(&v->lock);
    json_t *ret = NULL;
    struct snap_node *n = v->tree_ok ? snap_find(&v->tree, id) : NULL;
    if (!v->tree_ok) {
        fail_cmd(err, "GenericError", "%s", v->tree_err);
    } else if (!n) {
        fail_cmd(err, "InvalidArgument", "no snapshot '%s' (see 'vmws snapshot list')", id);
    } else {
        uint64_t needs = 0;
        char nid[SNAP_ID_MAX];
        snprintf(nid, sizeof(nid), "%s", n->id);
        int r = snapshot_delete_cost(&v->tree, n, &needs, err->desc, sizeof(err->desc));
        if (r == 0 && !dry_run)
            r = snapshot_delete(&v->tree, n, v->carry, snapshot_host_pages(&v->snap_host),
                                err->desc, sizeof(err->desc));
        if (r == 0)
            ret = json_pack("{s:s, s:I, s:b}", "id", nid, "needs_bytes", (json_int_t)needs,
                            "deleted", !dry_run);
        else
            err->cls = "GenericError";
    }
    pthread_mutex_unlock(&v->lock);
    return ret;
}

static json_t *cmd_query_snapshots(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args;
    pthread_mutex_lock(&v->lock);
    json_t *ret = v->tree_ok ? snapshot_tree_json(&v->tree) : NULL;
    if (!v->tree_ok)
        fail_cmd(err, "GenericError", "%s", v->tree_err);
    pthread_mutex_unlock(&v->lock);
    return ret;
}

/* The screen: size, whether the SDL window is open, where VNC listens (see display/). */
static json_t *cmd_query_display(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    struct display *d = v->display;
    (void)args;
    (void)err;
    json_t *r = json_pack("{s:i, s:i, s:b, s:I}", "width", (int)display_width(d), "height",
                          (int)display_height(d), "sdl", display_sdl_open(d), "updates",
                          (json_int_t)display_updates(d));
    if (display_vnc_port(d))
        json_object_set_new(r, "vnc",
                            json_pack("{s:s, s:i, s:b, s:i}", "host", display_vnc_host(d), "port",
                                      display_vnc_port(d), "password", display_vnc_auth(d),
                                      "clients", (int)display_vnc_clients(d)));
    return r;
}

/* query-audio: the sound card, speaker and PulseAudio stream; set-volume {"volume": 0-100,
 * "mute": bool} (either or both). */
static json_t *cmd_query_audio(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    (void)args;
    pthread_mutex_lock(&v->lock);
    json_t *r = v->audio ? audio_status_json(v->audio) : NULL;
    pthread_mutex_unlock(&v->lock);
    if (!r) {
        err->cls = "GenericError";
        snprintf(err->desc, sizeof(err->desc), "the VM has no sound devices (see vmm.log)");
    }
    return r;
}

static json_t *cmd_set_volume(void *opaque, json_t *args, struct ctl_error *err)
{
    struct vmm *v = opaque;
    json_t *jv = args ? json_object_get(args, "volume") : NULL;
    json_t *jm = args ? json_object_get(args, "mute") : NULL;
    if ((!jv && !jm) || (jv && (!json_is_integer(jv) || json_integer_value(jv) < 0 ||
                                json_integer_value(jv) > 100)) ||
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
        audio_set_volume(v->audio, 100 - v->audio_attenuation, v->audio_muted);
    json_t *r = json_pack("{s:i, s:b}", "volume", (int)(100 - v->audio_attenuation), "muted",
                          v->audio_muted);
    pthread_mutex_unlock(&v->lock);
    return r;
}

static const struct ctl_command vmm_commands[] = {
    {"query-status", cmd_query_status},
    {"query-memory", cmd_query_memory},
    {"stop", cmd_stop},
    {"cont", cmd_cont},
    {"quit", cmd_quit},
    {"query-display", cmd_query_display},
    {"suspend", cmd_suspend},
    {"snapshot-take", cmd_snapshot_take},
    {"snapshot-revert", cmd_snapshot_revert},
    {"snapshot-delete", cmd_snapshot_delete},
    {"query-snapshots", cmd_query_snapshots},
    {"query-audio", cmd_query_audio},
    {"set-volume", cmd_set_volume},
};

/* ---- the main loop ---- */

enum wake { WAKE_MACHINE, WAKE_QUIT, WAKE_SIGNAL };

/* Sleeps until the machine stops, a client quits or a signal arrives. */
static enum wake wait_for_event(struct vmm *v, int sigfd, bool machine_running)
{
    struct pollfd fds[3] = {
        {.fd = v->quit_fd, .events = POLLIN},
        {.fd = sigfd, .events = POLLIN},
        {.fd = machine_running ? v->m.stop_notify_fd : -1, .events = POLLIN},
    };
    for (;;) {
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            return WAKE_QUIT;
        }
        if (fds[1].revents) {
            struct signalfd_siginfo si;
            ssize_t n = read(sigfd, &si, sizeof(si));
            (void)n;
            vmm_log("signal %u: stopping the VM", si.ssi_signo);
            return WAKE_SIGNAL;
        }
        if (fds[0].revents)
            return WAKE_QUIT;
        if (fds[2].revents)
            return WAKE_MACHINE;
    }
}

static int block_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    signal(SIGPIPE, SIG_IGN);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* threads created later inherit this */
    return signalfd(-1, &set, SFD_CLOEXEC);
}

/* Runs the machine until it ends; returns the exit status. READY_FD gets its byte once the
 * first boot is under way, so `vmws start` reports boot errors instead of "started". */
static int run_machine(struct vmm *v, int sigfd, int *ready_fd, bool resume)
{
    char err[512];
    for (;;) {
        pthread_mutex_lock(&v->lock);
        if (!resume && v->tree_ok && v->tree.current[0]) {
            /* A fresh boot descends from no snapshot. */
            v->tree.current[0] = '\0';
            snap_tree_save(&v->tree, err, sizeof(err));
        }
        int r = boot_machine_locked(v, resume, err, sizeof(err));
        pthread_mutex_unlock(&v->lock);
        if (r < 0) {
            vmm_log("cannot %s %s: %s", resume ? "resume" : "boot", v->cfg->name, err);
            fprintf(stderr, "vmws: cannot %s %s: %s\n", resume ? "resume" : "boot", v->cfg->name,
                    err);
            pthread_mutex_lock(&v->lock);
            destroy_machine_locked(v);
            pthread_mutex_unlock(&v->lock);
            return 1;
        }
        vmm_log("%s %s: %u vCPU(s), %llu MiB %s memory%s", resume ? "resumed" : "booted",
                v->cfg->name, v->cfg->cpus, (unsigned long long)(v->cfg->memory_bytes >> 20),
                mem_backend_name(v->cfg->backend), v->opts->start_paused ? ", paused" : "");
        display_set_state(v->display, state_names[v->state]);
        if (*ready_fd >= 0) {
            ssize_t w = write(*ready_fd, "R", 1);
            (void)w;
            close(*ready_fd);
            *ready_fd = -1;
        }
        resume = false;

        enum wake w = wait_for_event(v, sigfd, true);
        if (w != WAKE_MACHINE)
            machine_request_stop(&v->m, STOP_QUIT, v->suspended ? "suspended"
                                                   : w == WAKE_SIGNAL ? "signal"
                                                                      : "client quit");

        pthread_mutex_lock(&v->lock);
        enum machine_stop_reason why = v->m.stop_reason;
        char detail[256];
        snprintf(detail, sizeof(detail), "%s", v->m.stop_detail);
        destroy_machine_locked(v);
        v->state = why == STOP_ERROR ? VMM_CRASHED : why == STOP_RESET ? VMM_BOOTING : VMM_SHUTDOWN;
        if (why == STOP_ERROR)
            snprintf(v->crash_detail, sizeof(v->crash_detail), "%s", detail);
        bool suspended = v->suspended;
        pthread_mutex_unlock(&v->lock);

        vmm_log("%s stopped: %s", v->cfg->name, detail);
        if (suspended) {
            struct timespec t0;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            int sr = v->mem.fd >= 0 ? fdatasync(v->mem.fd) : 0;
            double ms = ms_since(&t0);
            if (sr < 0)
                vmm_log("writing back the memory file failed: %s", strerror(errno));
            else
                vmm_log("memory file durable %.0f ms after the suspend", ms);
            json_t *d = json_pack("{s:f}", "writeback_ms", ms);
            ctl_server_event(v->ctl, "SUSPENDED", d);
            json_decref(d);
            return sr < 0 ? 1 : 0;
        }
        switch (why) {
        case STOP_RESET:
            ctl_server_event(v->ctl, "RESET", NULL);
            continue;
        case STOP_ERROR: {
            json_t *d = json_pack("{s:s}", "detail", detail);
            ctl_server_event(v->ctl, "GUEST_CRASHED", d);
            json_decref(d);
            /* Stay up so `vmws status` can tell the user what happened; quit ends it. */
            wait_for_event(v, sigfd, false);
            return 1;
        }
        default: {
            json_t *d = json_pack("{s:s}", "reason", why == STOP_POWEROFF ? "guest-poweroff" : "quit");
            ctl_server_event(v->ctl, "SHUTDOWN", d);
            json_decref(d);
            return 0;
        }
        }
    }
}

/* Opens guest RAM: kept as it is when resuming from suspend, else a fresh empty file. */
static int open_memory(struct vmm *v, bool resume, char *err, size_t errlen)
{
    const struct vm_config *cfg = v->cfg;
    const struct vm_paths *paths = v->paths;
    if (resume) {
        struct stat st;
        if (cfg->backend != MEM_BACKEND_FILE || stat(paths->vmem, &st) < 0 ||
            (uint64_t)st.st_size != cfg->memory_bytes) {
            snprintf(err, errlen,
                     "cannot resume: the memory file %.300s is missing or no longer %llu MiB "
                     "(was vm.conf changed while the VM was suspended?); 'vmws stop' discards "
                     "the suspended state",
                     paths->vmem, (unsigned long long)(cfg->memory_bytes >> 20));
            return -EINVAL;
        }
    } else if (cfg->backend == MEM_BACKEND_FILE && unlink(paths->vmem) < 0 && errno != ENOENT) {
        /* A powered-off VM has no memory: start from an empty sparse file. */
        snprintf(err, errlen, "cannot remove stale memory file %.400s: %s", paths->vmem,
                 strerror(errno));
        return -errno;
    }
    return guest_mem_open(&v->mem, cfg->memory_bytes, cfg->backend, paths->vmem, err, errlen);
}

/* What snapshots keep as pages: guest RAM, then the framebuffer. */
static int setup_snapshot_host(struct vmm *v, char *err, size_t errlen)
{
    v->snap_host = (struct snapshot_host){
        .mem = &v->mem,
        .extra = display_fb_host(v->display),
        .extra_pages = display_fb_pages(v->display),
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

int vmm_run(const struct vm_config *cfg, const struct vm_paths *paths,
            const struct vmm_options *opts)
{
    struct vmm v = {.cfg = cfg, .paths = paths, .quit_fd = -1, .opts = opts};
    char err[512] = "";
    int status = 1;
    int ready_fd = opts->ready_fd;
    pthread_mutex_init(&v.lock, NULL);
    clock_gettime(CLOCK_MONOTONIC, &v.started);
    v.mem.fd = -1;
    bool resume = access(paths->suspend_state, F_OK) == 0;

    int sigfd = block_signals();
    v.quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (sigfd < 0 || v.quit_fd < 0) {
        vmm_log("cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
    v.tree_ok = snap_tree_load(&v.tree, paths->dir, v.tree_err, sizeof(v.tree_err)) == 0;
    if (!v.tree_ok)
        vmm_log("snapshots unavailable: %s", v.tree_err);
    if (load_images(&v, err, sizeof(err)) < 0 || open_memory(&v, resume, err, sizeof(err)) < 0)
        goto fail;
    v.console = console_server_start(paths->console_sock, paths->serial_log, console_to_serial, &v,
                                     err, sizeof(err));
    if (!v.console)
        goto fail;
    json_t *greeting = json_pack("{s:s, s:s, s:i}", "version", PACKAGE_VERSION, "name", cfg->name,
                                 "pid", (int)getpid());
    v.ctl = ctl_server_start(paths->ctl_sock, greeting, vmm_commands,
                             sizeof(vmm_commands) / sizeof(vmm_commands[0]), &v, err, sizeof(err));
    json_decref(greeting);
    if (!v.ctl)
        goto fail;
    struct display_config dcfg;
    if (display_config_from_vm(cfg, paths->dir, &dcfg, err, sizeof(err)) < 0 ||
        !(v.display = display_create(&dcfg, err, sizeof(err))) ||
        setup_snapshot_host(&v, err, sizeof(err)) < 0)
        goto fail;
    status = run_machine(&v, sigfd, &ready_fd, resume);
    goto out;

fail:
    vmm_log("%s", err);
    fprintf(stderr, "vmws: %s\n", err);
out:
    display_destroy(v.display); /* the machine is gone: nothing draws or types any more */
    if (v.ctl)
        ctl_server_stop(v.ctl);
    if (v.console)
        console_server_stop(v.console);
    if (v.mem.host) {
        guest_mem_close(&v.mem);
        if (cfg->backend == MEM_BACKEND_FILE && status == 0 && !v.suspended)
            unlink(paths->vmem);
    }
    free(v.carry);
    snap_tree_free(&v.tree);
    unmap_image(&v.kernel);
    unmap_image(&v.initrd);
    if (v.quit_fd >= 0)
        close(v.quit_fd);
    if (sigfd >= 0)
        close(sigfd);
    if (ready_fd >= 0)
        close(ready_fd);
    pthread_mutex_destroy(&v.lock);
    return status;
}
