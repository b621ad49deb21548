/* The VMM process of one VM (see vmm.h). The main thread owns the machine's life: it boots it,
 * sleeps until something stops it (guest poweroff or reset, a client's quit, a signal, a guest
 * error), and then powers off, reboots or stays up as "crashed" so the user can read why.
 * Control and console sockets are served by their own threads and touch the machine only under
 * vmm.lock, because a reboot replaces the machine and its devices underneath them. */
#include "core/vmm/vmm_priv.h"

#include "core/util/crashpoint.h"

#define MAX_IMAGE_BYTES (1ULL << 30)

const char *const vmm_state_names[] = {"booting", "running", "paused", "shutdown", "crashed"};

double vmm_ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

void vmm_show_state(struct vmm *v)
{
    if (v->display)
        v->backends->display.set_state(v->display, vmm_state_names[v->state]);
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
        v->kernel = (struct file_image){
            vmws_guest_bzimage, (size_t)(vmws_guest_bzimage_end - vmws_guest_bzimage), false};
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
    for (size_t i = vmm_ndevices; i-- > 0;)
        if (vmm_devices[i].stop)
            vmm_devices[i].stop(v);
    machine_destroy(&v->m); /* joins the vCPU threads first: no device is in use after this */
    for (size_t i = vmm_ndevices; i-- > 0;)
        if (vmm_devices[i].destroy)
            vmm_devices[i].destroy(v);
    v->machine_live = false;
}

/* Devices with work of their own in flight (the disk's I/O thread, the sound card's DMA on the
 * mixer's thread) first reach a quiet point, where they touch neither guest RAM nor their
 * state; one that cannot within its bound fails the save or load, and the VM runs on
 * unchanged. Quiesces nest (a revert holds its own around the load's). */
static void resume_devices_locked(struct vmm *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (vmm_devices[i].resume)
            vmm_devices[i].resume(v);
}

int vmm_quiesce_devices_locked(struct vmm *v, char *err, size_t errlen)
{
    for (size_t i = 0; i < vmm_ndevices; i++) {
        if (vmm_devices[i].quiesce && vmm_devices[i].quiesce(v, err, errlen) < 0) {
            resume_devices_locked(v, i);
            return -ETIMEDOUT;
        }
    }
    return 0;
}

void vmm_resume_devices_locked(struct vmm *v)
{
    resume_devices_locked(v, vmm_ndevices);
}

static int save_devices_locked(struct vmm *v, struct state_writer *w)
{
    int r = 0;
    for (size_t i = 0; i < vmm_ndevices && r == 0; i++) {
        r = vmm_devices[i].save(v, w);
        state_put_version(w, vmm_devices[i].tag, vmm_devices[i].version);
    }
    return r;
}

/* Saves the machine and every device (paused). */
int save_all_locked(struct vmm *v, struct state_writer *w)
{
    char err[256];
    int r = vmm_quiesce_devices_locked(v, err, sizeof(err));
    if (r < 0) {
        vmm_log("cannot save the machine: %s", err);
        return r;
    }
    r = machine_save_state(&v->m, w);
    if (r == 0)
        r = save_devices_locked(v, w);
    resume_devices_locked(v, vmm_ndevices);
    return r < 0 ? r : w->error;
}

/* The devices' present state, in memory: what a load that fails halfway puts back. */
static int keep_devices_locked(struct vmm *v, struct state_reader *kept)
{
    struct state_writer w;
    state_writer_init(&w);
    int r = save_devices_locked(v, &w);
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[128];
    if (r == 0)
        r = state_writer_finish(&w, &buf, &len);
    state_writer_free(&w);
    return r < 0 ? r : state_reader_parse(kept, buf, len, err, sizeof(err));
}

static int load_devices_locked(struct vmm *v, const struct state_reader *r, char *err,
                               size_t errlen)
{
    for (size_t i = 0; i < vmm_ndevices; i++) {
        uint32_t saved = state_version(r, vmm_devices[i].tag);
        if (saved > vmm_devices[i].version) {
            snprintf(err, errlen,
                     "the saved state's %s record is version %u; this vmws reads up to %u "
                     "(saved by a newer vmws?)",
                     vmm_devices[i].name, saved, vmm_devices[i].version);
            return -EINVAL;
        }
        if (vmm_devices[i].load(v, r)) {
            snprintf(err, errlen, "the saved state's %s record does not fit this machine",
                     vmm_devices[i].name);
            return -EINVAL;
        }
    }
    return 0;
}

/* All or nothing: the machine's records are checked before anything is applied, and the
 * devices' present state is kept first, so a device record that fails halfway puts every
 * device back as it was (the vCPUs are loaded last, after all devices took theirs). */
int load_all_locked(struct vmm *v, const struct state_reader *r, char *err, size_t errlen)
{
    int rc = machine_check_state(&v->m, r, err, errlen);
    if (rc < 0)
        return rc;
    char qerr[256];
    if (vmm_quiesce_devices_locked(v, qerr, sizeof(qerr)) < 0) {
        snprintf(err, errlen, "%s", qerr);
        return -ETIMEDOUT;
    }
    struct state_reader kept = {0};
    rc = keep_devices_locked(v, &kept);
    if (rc < 0) {
        snprintf(err, errlen, "cannot keep the devices' state before loading: %s", strerror(-rc));
    } else {
        rc = load_devices_locked(v, r, err, errlen);
        if (rc == 0)
            rc = machine_load_state(&v->m, r, true, err, errlen);
        char kerr[128];
        if (rc < 0 && load_devices_locked(v, &kept, kerr, sizeof(kerr)) < 0)
            vmm_log("cannot put the devices back after a failed load: %s", kerr);
    }
    state_reader_free(&kept);
    resume_devices_locked(v, vmm_ndevices);
    return rc;
}

static int create_machine_locked(struct vmm *v, char *err, size_t errlen)
{
    int r = machine_create(&v->m, &v->mem, v->cfg->cpus, err, errlen);
    v->machine_live = true;
    for (size_t i = 0; i < vmm_ndevices && r == 0; i++)
        r = vmm_devices[i].create(v, err, errlen);
    return r;
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
    framebuffer_boot_info(v->fb, &req.fb);
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
        pthread_mutex_lock(&v->m.lock); /* the mixer's thread may ask machine_is_paused */
        v->m.pause_requested = true;    /* vCPU threads park before their first KVM_RUN */
        pthread_mutex_unlock(&v->m.lock);
        v->state = VMM_PAUSED;
    } else {
        v->state = VMM_RUNNING;
    }
    if (r == 0)
        r = machine_start(&v->m, err, errlen);
    if (r == 0 && resume) {
        unlink(v->paths->suspend_state);
        vmm_agent_resync_clock_async(v, "resume"); /* the guest slept through the suspend */
    }
    return r;
}

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
        vmm_snapshot_wait_idle(v, UINT_MAX); /* a reboot waits for a merge of its disk */
        pthread_mutex_lock(&v->lock);
        if (!resume && v->tree_ok) /* memory starts from zero, the disk from the current node */
            snapshot_fresh_boot(&v->tree, &v->snap_host);
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
        pthread_mutex_lock(&v->lock); /* a control command may change the state already */
        vmm_show_state(v);
        pthread_mutex_unlock(&v->lock);
        if (*ready_fd >= 0) {
            ssize_t w = write(*ready_fd, "R", 1);
            (void)w;
            close(*ready_fd);
            *ready_fd = -1;
        }
        resume = false;

        enum wake w = wait_for_event(v, sigfd, true);
        pthread_mutex_lock(&v->lock); /* a suspend sets it on the control thread */
        bool was_suspended = v->suspended;
        pthread_mutex_unlock(&v->lock);
        if (w != WAKE_MACHINE)
            machine_request_stop(&v->m, STOP_QUIT,
                                 was_suspended      ? "suspended"
                                 : w == WAKE_SIGNAL ? "signal"
                                                    : "client quit");

        pthread_mutex_lock(&v->lock);
        destroy_machine_locked(v); /* vCPUs joined: none sets the reason any more */
        enum machine_stop_reason why = v->m.stop_reason;
        char detail[256];
        snprintf(detail, sizeof(detail), "%s", v->m.stop_detail);
        v->state = why == STOP_ERROR ? VMM_CRASHED : why == STOP_RESET ? VMM_BOOTING : VMM_SHUTDOWN;
        if (why == STOP_ERROR)
            snprintf(v->crash_detail, sizeof(v->crash_detail), "%s", detail);
        bool suspended = v->suspended;
        pthread_mutex_unlock(&v->lock);

        vmm_log("%s stopped: %s", v->cfg->name, detail);
        if (suspended) { /* the memory first, then the state that needs it (issue 14, 6) */
            crash_point("suspend-writeback");
            struct timespec t0;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            int sr = v->mem.fd >= 0 && fdatasync(v->mem.fd) < 0 ? -errno : 0;
            double ms = vmm_ms_since(&t0);
            if (sr == 0)
                sr = state_writer_save(&v->suspend_w, v->paths->suspend_state);
            state_writer_free(&v->suspend_w);
            if (sr < 0) {
                vmm_log("the suspend failed: cannot write back the memory file or save %s: %s; "
                        "the VM is off",
                        v->paths->suspend_state, strerror(-sr));
                return 1;
            }
            vmm_log("memory file durable %.0f ms after the suspend, then %s", ms,
                    v->paths->suspend_state);
            json_t *d = json_pack("{s:f}", "writeback_ms", ms);
            ctl_server_event(v->ctl, "SUSPENDED", d);
            json_decref(d);
            return 0;
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
            json_t *d =
                json_pack("{s:s}", "reason", why == STOP_POWEROFF ? "guest-poweroff" : "quit");
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
    int r = guest_mem_open(&v->mem, cfg->memory_bytes, cfg->backend, paths->vmem, err, errlen);
    int a = r < 0 ? 0 : guest_mem_advise(&v->mem, cfg->memory_sharing, cfg->memory_huge_pages);
    if (a == -EINVAL)
        vmm_log("memory_sharing = yes has no effect with memory_backend = %s: KSM merges only "
                "private anonymous memory (memory_backend = anon)",
                mem_backend_name(cfg->backend));
    else if (a < 0)
        vmm_log("madvise of guest RAM (memory_sharing, memory_huge_pages): %s", strerror(-a));
    return r;
}

int vmm_run(const struct vm_config *cfg, const struct vm_paths *paths,
            const struct vmm_options *opts)
{
    struct vmm v = {
        .cfg = cfg, .paths = paths, .quit_fd = -1, .opts = opts, .backends = opts->backends};
    char err[512] = "";
    int status = 1;
    int ready_fd = opts->ready_fd;
    pthread_mutex_init(&v.lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&v.snap_idle, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&v.memtruth_lock, NULL);
    clock_gettime(CLOCK_MONOTONIC, &v.started);
    v.mem.fd = -1;
    bool resume = access(paths->suspend_state, F_OK) == 0;

    int sigfd = block_signals();
    v.quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (sigfd < 0 || v.quit_fd < 0) {
        vmm_log("cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
    v.tree_ok =
        snap_tree_load(&v.tree, paths->dir, cfg->disk.path, v.tree_err, sizeof(v.tree_err)) == 0;
    snprintf(v.tree.base_format, sizeof(v.tree.base_format), "%s", cfg->disk.format);
    if (v.tree_ok) /* this process holds the VM (its pidfile lock) */
        snap_tree_tidy(&v.tree);
    if (!v.tree_ok)
        vmm_log("snapshots unavailable: %s", v.tree_err);
    v.policy.stop_fd = -1;
    if (vmm_mem_admit_and_enter(&v, err, sizeof(err)) < 0 ||
        load_images(&v, err, sizeof(err)) < 0 || open_memory(&v, resume, err, sizeof(err)) < 0)
        goto fail;
    v.console = console_server_start(paths->console_sock, paths->serial_log, console_to_serial, &v,
                                     err, sizeof(err));
    if (!v.console)
        goto fail;
    if (vmm_agent_start(&v) < 0)
        vmm_log("guest agent: cannot start its client (out of memory?): every use falls back");
    struct display_config dcfg;
    if (display_config_from_vm(cfg, paths->dir, &dcfg, err, sizeof(err)) < 0 ||
        !(v.fb = framebuffer_create(dcfg.width, dcfg.height, err, sizeof(err))))
        goto fail;
    if (v.backends && v.backends->display.create &&
        !(v.display = v.backends->display.create(v.fb, &dcfg, err, sizeof(err))))
        goto fail;
    if (setup_snapshot_host(&v, err, sizeof(err)) < 0)
        goto fail;
    /* The control server's thread starts once everything its commands read is in place (a
     * query-display answered while the display was being created read it half-set: TSan). */
    json_t *greeting = json_pack("{s:s, s:s, s:i}", "version", PACKAGE_VERSION, "name", cfg->name,
                                 "pid", (int)getpid());
    v.ctl = ctl_server_start(paths->ctl_sock, greeting, vmm_commands, vmm_ncommands, &v, err,
                             sizeof(err));
    json_decref(greeting);
    if (!v.ctl || vmm_mem_policy_start(&v, err, sizeof(err)) < 0)
        goto fail;
    status = run_machine(&v, sigfd, &ready_fd, resume);
    goto out;

fail:
    vmm_log("%s", err);
    fprintf(stderr, "vmws: %s\n", err);
out:
    /* A delete still merging uses this VMM's state to the end: give it a while, then leave it
     * as a crash would (the merge's steps are crash-safe; the next delete finishes it). */
    if (!vmm_snapshot_wait_idle(&v, 30000)) {
        vmm_log("exiting with snapshot %s's delete unfinished; 'vmws snapshot delete' finishes "
                "it",
                v.snap_busy);
        _exit(status);
    }
    vmm_mem_policy_stop(&v);
    /* No command runs after this: they read the display, the framebuffer and the rest below
     * (a query-display while they were destroyed crashed the VMM: a dashboard polls it). */
    if (v.ctl)
        ctl_server_stop(v.ctl);
    if (v.display) /* the machine is gone: nothing draws or types any more */
        v.backends->display.destroy(v.display);
    framebuffer_destroy(v.fb);
    if (v.console)
        console_server_stop(v.console);
    vmm_agent_stop(&v);
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
    memcg_leave(&v.memcg);
    memtruth_cache_free(&v.memtruth_cache);
    pthread_mutex_destroy(&v.memtruth_lock);
    pthread_mutex_destroy(&v.lock);
    pthread_cond_destroy(&v.snap_idle);
    return status;
}
