/* `vmws run | start | stop | kill`: the VMM process's life cycle.
 * The one idea: `run` is the VMM in the foreground (pidfile locked for its whole life);
 * `start` is just `run` in a new session with its output in vmm.log, and waits on a pipe for
 * the one byte vmm_run() writes once the control socket accepts connections - so "started"
 * is only printed when the VM really answers, and an early death is shown from vmm.log. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "app/cli.h"
#include "audio/audio.h"
#include "core/config/dconfig.h"
#include "core/vmm/backends.h"
#include "core/vmm/vmm.h"
#include "display/display.h"

#define START_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS 10000
/* In the KVM box (app/cli_boxed.c) a VMM's exit writes its memory's dirty pages back to the
 * host's .vmem over 9p first (the kernel does so when a shared mapping there goes away):
 * measured there, a VM with 108 MiB dirty took 9.6 s to stop. */
#define STOP_TIMEOUT_BOX_MS 120000
#define STOP_ACPI_TIMEOUT_MS 90000 /* a guest OS shutting down by its power button */

const char *cli_start_display_mode;

/* What the VMM runs with on the host: the display's viewers and the sound mixer. */
static const struct vmm_backends host_backends = {
    .display = {.create = display_create,
                .set_state = display_set_state,
                .status_json = display_status_json,
                .destroy = display_destroy},
    .audio = {.create = audio_create,
              .stop = audio_stop,
              .destroy = audio_destroy,
              .set_volume = audio_set_volume,
              .status_json = audio_status_json},
};

static int check_display_mode(const char *cmd, const char *mode)
{
    bool sdl, vnc, optional;
    if (display_mode_parse(mode, &sdl, &vnc, &optional) < 0)
        return cli_usage_error(cmd, "bad --display '%s' (expected sdl, vnc, sdl,vnc, none or auto)",
                               mode);
    return 0;
}

int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"ready-fd", required_argument, NULL, 'r'},
        {"display", required_argument, NULL, 'D'},
        {"paused", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int ready_fd = -1;
    const char *display_mode = NULL;
    bool paused = false;
    int c;
    while ((c = cli_getopt(argc, argv, opts)) != -1) {
        switch (c) {
        case 'h':
            return cli_print_help(argv[0]);
        case 'D':
            if (check_display_mode(argv[0], optarg))
                return EXIT_USAGE;
            display_mode = optarg;
            break;
        case 'p':
            paused = true;
            break;
        case 'r': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 0 || v > 65535 || fcntl((int)v, F_GETFD) < 0)
                return cli_usage_error(argv[0],
                                       "bad --ready-fd '%s' (expected an open file "
                                       "descriptor number)",
                                       optarg);
            ready_fd = (int)v;
            break;
        }
        default:
            return EXIT_USAGE;
        }
    }
    int rc = cli_positional(argc, argv, 1, "the VM's NAME");
    if (rc)
        return rc;
    const char *name = argv[optind];
    struct vm_paths p;
    struct vm_config cfg;
    if (cli_vm_open(name, &p, &cfg))
        return 1;
    if (display_mode)
        snprintf(cfg.display.mode, sizeof(cfg.display.mode), "%s", display_mode);
    char run[PATH_MAX];
    rc = paths_runtime(run, sizeof(run));
    if (rc < 0)
        return cli_error("cannot use the runtime directory %s: %s (it must be a directory "
                         "owned by you; set VMWS_RUNTIME_DIR to use another)",
                         run, strerror(-rc));
    pid_t holder = 0;
    int pidfd = pidfile_acquire(p.pidfile, &holder);
    if (pidfd == -EBUSY)
        return cli_error("VM '%s' is already running (pid %ld)", name, (long)holder);
    if (pidfd < 0)
        return cli_error("cannot write the pidfile %s: %s", p.pidfile, strerror(-pidfd));

    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&now));
    fprintf(stderr, "vmws run %s: pid %ld at %s, %u vCPU%s, %llu MiB, %s memory\n", name,
            (long)getpid(), when, cfg.cpus, cfg.cpus == 1 ? "" : "s",
            (unsigned long long)(cfg.memory_bytes >> 20), mem_backend_name(cfg.backend));
    fflush(stdout);
    struct vmm_options vo = {
        .ready_fd = ready_fd, .start_paused = paused, .backends = &host_backends};
    rc = vmm_run(&cfg, &p, &vo);
    unlink(p.pidfile); /* while still holding the lock: nobody can mistake it for live */
    close(pidfd);
    return rc < 0 || rc > 255 ? 1 : rc;
}

/* Prints the end of what this start attempt wrote to vmm.log (from OFFSET on). */
static void print_log_tail(const char *path, off_t offset)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    char buf[4096];
    if (fstat(fd, &st) == 0 && st.st_size > offset) {
        off_t from = st.st_size - offset > (off_t)sizeof(buf) - 1
                         ? st.st_size - (off_t)sizeof(buf) + 1
                         : offset;
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
        if (n > 0) {
            buf[n] = '\0';
            char *s = buf;
            if (from != offset && (s = strchr(buf, '\n')))
                s++; /* skip a partial first line */
            for (char *line = strtok(s ? s : buf, "\n"); line; line = strtok(NULL, "\n"))
                fprintf(stderr, "  %s\n", line);
        }
    }
    close(fd);
}

bool cli_start_paused;

int cli_start_vm(const char *name, bool quiet)
{
    struct vm_paths p;
    struct vm_config cfg;
    if (cli_vm_open(name, &p, &cfg))
        return 1;
    struct cli_vm_state st;
    cli_vm_query(&p, &cfg, &st);
    if (st.running)
        return cli_error("VM '%s' is already running (pid %ld)", name, (long)st.pid);
    if (st.pid > 0)
        return cli_error("VM '%s' is already starting (pid %ld; see %s)", name, (long)st.pid,
                         p.vmm_log);
    char run[PATH_MAX];
    int rc = paths_runtime(run, sizeof(run));
    if (rc < 0)
        return cli_error("cannot use the runtime directory %s: %s (set VMWS_RUNTIME_DIR to a "
                         "directory owned by you)",
                         run, strerror(-rc));
    int logfd = open(p.vmm_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (logfd < 0)
        return cli_error("cannot open %s: %s", p.vmm_log, strerror(errno));
    struct stat lst;
    off_t log_start = fstat(logfd, &lst) == 0 ? lst.st_size : 0;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int pfd[2];
    if (devnull < 0 || pipe2(pfd, O_CLOEXEC) < 0) {
        close(logfd);
        return cli_error("cannot set up the VMM's pipes: %s", strerror(errno));
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(logfd);
        return cli_error("cannot fork the VMM: %s", strerror(errno));
    }
    if (pid == 0) {
        setsid(); /* its own session: closing this terminal does not kill the VM */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        close(pfd[0]);
        /* Only stdio and the ready pipe go to the VMM: an inherited pipe end would keep
         * whoever started us waiting for an EOF until the VM stops. */
        close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
        fcntl(pfd[1], F_SETFD, 0); /* the ready pipe survives exec */
        char fdstr[16];
        snprintf(fdstr, sizeof(fdstr), "%d", pfd[1]);
        const char *args[10] = {"vmws", "run", name, "--ready-fd", fdstr};
        int na = 5;
        if (cli_start_display_mode) {
            args[na++] = "--display";
            args[na++] = cli_start_display_mode;
        }
        if (cli_start_paused)
            args[na++] = "--paused";
        args[na] = NULL;
        execv("/proc/self/exe", (char *const *)args);
        fprintf(stderr, "vmws: cannot execute /proc/self/exe: %s\n", strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    close(devnull);
    close(logfd);

    struct pollfd pp = {.fd = pfd[0], .events = POLLIN};
    int pr;
    do
        pr = poll(&pp, 1, START_TIMEOUT_MS);
    while (pr < 0 && errno == EINTR);
    char byte;
    ssize_t n = pr > 0 ? read(pfd[0], &byte, 1) : -1;
    close(pfd[0]);
    if (n == 1) {
        if (!quiet) {
            printf("%s %s (pid %ld)\n", st.suspended ? "resumed" : "started", name, (long)pid);
            cli_display_print(&p, "  ");
        }
        return 0;
    }
    if (pr == 0)
        return cli_error("VM '%s' did not become ready within %d s (pid %ld is still running; "
                         "see %s, or stop it with 'vmws kill %s')",
                         name, START_TIMEOUT_MS / 1000, (long)pid, p.vmm_log, name);
    int status = 0;
    waitpid(pid, &status, 0);
    char how[64];
    if (WIFEXITED(status))
        snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(how, sizeof(how), "was killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(how, sizeof(how), "ended");
    cli_error("VM '%s' failed to start: the VMM %s. Its log says:", name, how);
    print_log_tail(p.vmm_log, log_start);
    fprintf(stderr, "vmws: (full log: %s)\n", p.vmm_log);
    return 1;
}

int cmd_start(int argc, char **argv)
{
    static const struct option opts[] = {
        {"display", required_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;
    while ((c = cli_getopt(argc, argv, opts)) != -1) {
        if (c == 'h')
            return cli_print_help(argv[0]);
        if (c == 'D' && !check_display_mode(argv[0], optarg)) {
            cli_start_display_mode = optarg;
            continue;
        }
        return EXIT_USAGE;
    }
    int rc = cli_positional(argc, argv, 1, "the VM's NAME");
    return rc ? rc : cli_start_vm(argv[optind], false);
}

/* Parses the common "NAME" only command line of stop and kill. */
static int name_only(int argc, char **argv, const char **name)
{
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;
    while ((c = cli_getopt(argc, argv, opts)) != -1) {
        if (c == 'h') {
            cli_print_help(argv[0]);
            return -1;
        }
        return EXIT_USAGE;
    }
    int rc = cli_positional(argc, argv, 1, "the VM's NAME");
    *name = rc ? NULL : argv[optind];
    return rc;
}

int cmd_stop(int argc, char **argv)
{
    const char *name;
    int rc = name_only(argc, argv, &name);
    if (rc)
        return rc < 0 ? 0 : rc;
    struct vm_paths p;
    if (cli_vm_open(name, &p, NULL))
        return 1;
    if (pidfile_live_pid(p.pidfile) <= 0 && access(p.suspend_state, F_OK) == 0) {
        /* Powering off a suspended VM: its saved state and memory go, like on real hardware. */
        if (unlink(p.suspend_state) < 0)
            return cli_error("cannot remove %s: %s", p.suspend_state, strerror(errno));
        unlink(p.vmem);
        printf("stopped %s (its suspended state was discarded)\n", name);
        return 0;
    }
    struct ctl_client *c = cli_vm_connect(name, &p);
    if (!c)
        return 1;
    char err[512];
    pid_t pid = pidfile_live_pid(p.pidfile);
    json_t *r = ctl_client_execute(c, "query-status", NULL, 3000, err, sizeof(err));
    if (r && json_is_integer(json_object_get(r, "pid")))
        pid = (pid_t)json_integer_value(json_object_get(r, "pid"));
    json_decref(r);
    /* The guest agent first, then the ACPI power button (a guest OS that listens shuts down by
     * itself), then the plug. */
    r = ctl_client_execute(c, "guest-shutdown", NULL, 5000, err, sizeof(err));
    bool agent = r && json_is_true(json_object_get(r, "agent"));
    if (!agent)
        printf("%s: no shutdown through the guest agent: %s\n", name,
               r ? json_string_value(json_object_get(r, "reason")) : err);
    json_decref(r);
    bool acpi = false;
    if (!agent) {
        r = ctl_client_execute(c, "system_powerdown", NULL, 3000, err, sizeof(err));
        acpi = r && json_is_true(json_object_get(r, "acpi"));
        json_decref(r);
    }
    const char *how = agent ? "the guest agent" : "the ACPI power button";
    if ((agent || acpi) && pid > 0) {
        printf("%s: the guest is shutting down (%s; up to %d s)\n", name, how,
               STOP_ACPI_TIMEOUT_MS / 1000);
        fflush(stdout);
        if (pid_wait_gone(pid, STOP_ACPI_TIMEOUT_MS)) {
            ctl_client_close(c);
            printf("stopped %s (the guest shut down through %s)\n", name, how);
            return 0;
        }
        printf("%s: the guest did not power off within %d s: pulling the plug\n", name,
               STOP_ACPI_TIMEOUT_MS / 1000);
    }
    r = ctl_client_execute(c, "quit", NULL, 5000, err, sizeof(err));
    ctl_client_close(c);
    /* A refusal is a reply with an error class; a closed connection means it is going. */
    if (!r && strncmp(err, p.ctl_sock, strlen(p.ctl_sock)) != 0)
        return cli_error("VM '%s' refused to stop: %s", name, err);
    json_decref(r);
    if (pid > 0) {
        int limit = getenv("VMWS_IN_BOX") ? STOP_TIMEOUT_BOX_MS : STOP_TIMEOUT_MS;
        if (!pid_wait_gone(pid, limit))
            return cli_error("VM '%s' (pid %ld) did not exit within %d s of 'quit' (force it "
                             "with 'vmws kill %s')",
                             name, (long)pid, limit / 1000, name);
    } else {
        /* No pid known: wait until the control socket stops answering. */
        int waited = 0;
        while ((c = ctl_client_connect(p.ctl_sock, NULL, err, sizeof(err)))) {
            ctl_client_close(c);
            if (waited >= STOP_TIMEOUT_MS)
                return cli_error("VM '%s' still answers %d s after 'quit' (force it with "
                                 "'vmws kill %s')",
                                 name, STOP_TIMEOUT_MS / 1000, name);
            usleep(50000);
            waited += 50;
        }
    }
    printf("stopped %s\n", name);
    return 0;
}

int cmd_kill(int argc, char **argv)
{
    const char *name;
    int rc = name_only(argc, argv, &name);
    if (rc)
        return rc < 0 ? 0 : rc;
    struct vm_paths p;
    if (cli_vm_open(name, &p, NULL))
        return 1;
    pid_t pid = pidfile_live_pid(p.pidfile);
    rc = cli_kill_vm(name, &p);
    switch (rc) {
    case 0:
        printf("killed %s\n", name);
        return 0;
    case 1:
        return cli_error("VM '%s' is not running (stale pidfile and sockets, if any, were "
                         "removed)",
                         name);
    case -ESRCH:
        return cli_error("the process holding %s (pid %ld) is not 'vmws run %s'; not killing "
                         "it",
                         p.pidfile, (long)pid, name);
    case -ETIMEDOUT:
        return cli_error("VM '%s' (pid %ld) did not die within 5 s of SIGKILL", name, (long)pid);
    case -EBUSY:
        return cli_error("a VMM with no pidfile still answers on %s (find it with "
                         "'fuser %s')",
                         p.ctl_sock, p.ctl_sock);
    default:
        return cli_error("cannot kill VM '%s' (pid %ld): %s", name, (long)pid, strerror(-rc));
    }
}
