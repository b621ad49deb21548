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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/acpi.h"
#include "core/consolesrv.h"
#include "core/ctl.h"
#include "core/devices.h"
#include "core/linuxboot.h"
#include "core/log.h"
#include "core/machine.h"
#include "core/memtruth.h"
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
    struct display *display; /* the screen: outlives reboots, attached to each machine */

    struct ctl_server *ctl;
    struct console_server *console;
    int quit_fd; /* eventfd: a client asked us to quit */
    struct timespec started;
};

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
    machine_destroy(&v->m); /* joins the vCPU threads first: no device is in use after this */
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

static int boot_machine_locked(struct vmm *v, char *err, size_t errlen)
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
    if (v->display) {
        int dr = display_attach(v->display, m, v->i8042, err, errlen);
        if (dr < 0)
            return dr;
    }

    uint64_t rsdp = 0;
    struct acpi_config acfg = {.ncpus = v->cfg->cpus};
    r = acpi_build(&v->mem, &acfg, &rsdp);
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
    r = machine_get_boot_sregs(m, &sregs);
    if (r < 0) {
        snprintf(err, errlen, "KVM_GET_SREGS: %s", strerror(-r));
        return r;
    }
    linuxboot_vcpu_state(&entry, &regs, &sregs);
    r = machine_set_boot_state(m, &regs, &sregs, err, errlen);
    if (r == 0)
        r = machine_start(m, err, errlen);
    if (r == 0)
        v->state = VMM_RUNNING;
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

static const struct ctl_command vmm_commands[] = {
    {"query-status", cmd_query_status},
    {"query-memory", cmd_query_memory},
    {"stop", cmd_stop},
    {"cont", cmd_cont},
    {"quit", cmd_quit},
    {"query-display", cmd_query_display},
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
static int run_machine(struct vmm *v, int sigfd, int *ready_fd)
{
    char err[512];
    for (;;) {
        pthread_mutex_lock(&v->lock);
        int r = boot_machine_locked(v, err, sizeof(err));
        pthread_mutex_unlock(&v->lock);
        if (r < 0) {
            vmm_log("cannot boot %s: %s", v->cfg->name, err);
            fprintf(stderr, "vmws: cannot boot %s: %s\n", v->cfg->name, err);
            pthread_mutex_lock(&v->lock);
            destroy_machine_locked(v);
            pthread_mutex_unlock(&v->lock);
            return 1;
        }
        vmm_log("booted %s: %u vCPU(s), %llu MiB %s memory", v->cfg->name, v->cfg->cpus,
                (unsigned long long)(v->cfg->memory_bytes >> 20),
                mem_backend_name(v->cfg->backend));
        display_set_state(v->display, state_names[v->state]);
        if (*ready_fd >= 0) {
            ssize_t w = write(*ready_fd, "R", 1);
            (void)w;
            close(*ready_fd);
            *ready_fd = -1;
        }

        enum wake w = wait_for_event(v, sigfd, true);
        if (w != WAKE_MACHINE)
            machine_request_stop(&v->m, STOP_QUIT, w == WAKE_SIGNAL ? "signal" : "client quit");

        pthread_mutex_lock(&v->lock);
        enum machine_stop_reason why = v->m.stop_reason;
        char detail[256];
        snprintf(detail, sizeof(detail), "%s", v->m.stop_detail);
        destroy_machine_locked(v);
        v->state = why == STOP_ERROR ? VMM_CRASHED : why == STOP_RESET ? VMM_BOOTING : VMM_SHUTDOWN;
        if (why == STOP_ERROR)
            snprintf(v->crash_detail, sizeof(v->crash_detail), "%s", detail);
        pthread_mutex_unlock(&v->lock);

        vmm_log("%s stopped: %s", v->cfg->name, detail);
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

int vmm_run(const struct vm_config *cfg, const struct vm_paths *paths, int ready_fd)
{
    struct vmm v = {.cfg = cfg, .paths = paths, .quit_fd = -1};
    char err[512] = "";
    int status = 1;
    pthread_mutex_init(&v.lock, NULL);
    clock_gettime(CLOCK_MONOTONIC, &v.started);
    v.mem.fd = -1;

    int sigfd = block_signals();
    v.quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (sigfd < 0 || v.quit_fd < 0) {
        vmm_log("cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
    if (load_images(&v, err, sizeof(err)) < 0)
        goto fail;
    /* A powered-off VM has no memory: start from an empty sparse file, as on real hardware
     * nothing survives power-off (suspend, which keeps it, does not come through here). */
    if (cfg->backend == MEM_BACKEND_FILE && unlink(paths->vmem) < 0 && errno != ENOENT) {
        snprintf(err, sizeof(err), "cannot remove stale memory file %.400s: %s", paths->vmem,
                 strerror(errno));
        goto fail;
    }
    if (guest_mem_open(&v.mem, cfg->memory_bytes, cfg->backend, paths->vmem, err, sizeof(err)) < 0)
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
        !(v.display = display_create(&dcfg, err, sizeof(err))))
        goto fail;
    status = run_machine(&v, sigfd, &ready_fd);
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
        if (cfg->backend == MEM_BACKEND_FILE && status == 0)
            unlink(paths->vmem);
    }
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
