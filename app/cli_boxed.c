/* vmws on a machine without a usable KVM: the same workstation, its VMs inside the KVM box
 * (app/box/). main() asks cli_boxed_dispatch first; where /dev/kvm cannot run a guest (or
 * VMWS_BOX=always) the VM commands - the dashboard, start, stop, console, mem, snapshot, ... -
 * run as the same `vmws` inside one box that shares $VMWS_HOME read-write at its own path, so
 * the VMs' folders stay the host's. The VMMs' sockets and pid locks stay in the box's private
 * runtime dir (unix sockets do not connect across 9p). See the README, "Without KVM".
 * The one idea: nothing in the box knows it is remote; the host side only decides where a
 * command runs, starts the box for the first VM, and the box powers itself off when nothing
 * but its agent runs any more (box.h: idle_when_empty). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app/box/box.h"
#include "app/cli.h"

/* Measured 12-03 on this project's 2-core machine (README, "Without KVM"): filling and
 * verifying 128 MiB in the built-in guest took 9-13 times as long in the box (one CPU) as
 * natively on its kvm_pvm KVM. */
#define BOXED_SLOWDOWN 10
/* What the box needs besides its VMs' RAM: its kernel, the tmpfs over its root, the VMMs and
 * their page tables. Measured: an idle box with one VM holding 128 MiB used 158 MiB itself
 * (free in the box); its QEMU held 470 MiB of the host's RAM. */
#define BOXED_OVERHEAD (512ull << 20)
/* The box powers off this long after its last VM (and last command) ended. */
#define BOXED_IDLE_S 10
/* VNC ports forwarded from the host's 127.0.0.1 (the first free ones from 5900). */
#define BOXED_VNC_PORTS 8

/* How a command is run when the box is used. */
enum where {
    HERE,      /* natively: it needs no VMM (create, help, box, ...) */
    BOX_IF_UP, /* in the box when it runs (a VM may run there), else natively */
    BOX_START, /* in the box, started first if needed */
};

static enum where command_class(int argc, char **argv)
{
    if (argc < 2)
        return BOX_START; /* the dashboard, or the default VM's console */
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return HERE;
    }
    static const char *const start[] = {"start", "run", "resume"};
    static const char *const if_up[] = {"stop",   "kill",    "suspend", "snapshot", "list",
                                        "status", "console", "mem",     "volume",   "delete"};
    for (size_t i = 0; i < sizeof(start) / sizeof(start[0]); i++) {
        if (strcmp(argv[1], start[i]) == 0)
            return BOX_START;
    }
    for (size_t i = 0; i < sizeof(if_up) / sizeof(if_up[0]); i++) {
        if (strcmp(argv[1], if_up[i]) == 0)
            return BOX_IF_UP;
    }
    return HERE;
}

/* The workstation's box: $VMWS_HOME/.box (one per $VMWS_HOME; not the test suite's). */
static int boxed_dir(char *home, size_t hlen, char *dir, size_t dlen)
{
    int rc = paths_home(home, hlen);
    if (rc < 0)
        return rc;
    return snprintf(dir, dlen, "%s/.box", home) < (int)dlen ? 0 : -ENAMETOOLONG;
}

/* The RAM of every VM in HOME (the box must hold them all), at least the default VM's. */
static uint64_t vms_memory(const char *home)
{
    uint64_t sum = 0;
    DIR *d = opendir(home);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!vm_name_valid(e->d_name))
            continue;
        char conf[PATH_MAX + 300], err[256];
        snprintf(conf, sizeof(conf), "%s/%s/vm.conf", home, e->d_name);
        struct vm_config cfg;
        if (access(conf, F_OK) == 0 && vmconfig_load(conf, &cfg, err, sizeof(err)) == 0)
            sum += cfg.memory_bytes;
    }
    if (d)
        closedir(d);
    struct vm_config def;
    vmconfig_defaults(&def, CLI_DEFAULT_VM);
    return sum ? sum : def.memory_bytes;
}

static bool tcp_port_free(int port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = s >= 0 && bind(s, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (s >= 0)
        close(s);
    return ok;
}

/* The one sentence a user sees when the box stands in for KVM. */
static void boxed_sentence(char *out, size_t len, const char *why)
{
    snprintf(out, len,
             "no KVM on this machine (%s): VMs run inside an emulated KVM host (vmws box), "
             "about %d times slower",
             why, BOXED_SLOWDOWN);
}

static int start_box(const char *home, const char *dir)
{
    struct box_config c;
    memset(&c, 0, sizeof(c));
    if (snprintf(c.dir, sizeof(c.dir), "%s", dir) >= (int)sizeof(c.dir))
        return -ENAMETOOLONG;
    snprintf(c.shares[c.nshares++], sizeof(c.shares[0]), "%s", home);
    /* One emulated CPU unless $VMWS_BOX_CPUS says more ("all": every host CPU): with two, the
     * box's own kernel panicked in soak runs (README, "KVM here, or the KVM box"), and a
     * panic here would take every VM of the user with it. */
    const char *want = getenv("VMWS_BOX_CPUS");
    long cpus = !want || !*want            ? 1
                : strcmp(want, "all") == 0 ? sysconf(_SC_NPROCESSORS_ONLN)
                                           : strtol(want, NULL, 10);
    c.cpus = cpus >= 1 && cpus <= 64 ? (unsigned)cpus : 1;
    c.memory = (vms_memory(home) + BOXED_OVERHEAD + (1ull << 20) - 1) & ~((1ull << 20) - 1);
    c.idle_timeout_s = BOXED_IDLE_S;
    c.idle_when_empty = true;
    c.host_report = true;
    for (int port = 5900; port < 6000 && c.nforwards < BOXED_VNC_PORTS; port++) {
        if (tcp_port_free(port))
            c.forwards[c.nforwards++] = port;
    }
    return box_start(&c);
}

/* True if the box is wanted for this command; WHY says why KVM is not used natively. */
static bool box_wanted(bool no_box, char *why, size_t whylen)
{
    const char *mode = getenv("VMWS_BOX");
    if (getenv("VMWS_IN_BOX") || no_box || (mode && strcmp(mode, "never") == 0))
        return false;
    if (mode && strcmp(mode, "always") == 0) {
        snprintf(why, whylen, "VMWS_BOX=always");
        return true;
    }
    return !box_kvm_native(why, whylen);
}

/* Where the command runs in the box: here, unless the box cannot see it (its /tmp, /run and
 * /dev/shm are its own), then $VMWS_HOME. */
static void box_cwd(const char *home, char *out, size_t len)
{
    static const char *const hidden[] = {"/tmp", "/run", "/dev/shm"};
    if (!getcwd(out, len))
        snprintf(out, len, "%s", home);
    size_t hl = strlen(home);
    if (strncmp(out, home, hl) == 0 && (out[hl] == '/' || out[hl] == '\0'))
        return;
    for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++) {
        size_t n = strlen(hidden[i]);
        if (strncmp(out, hidden[i], n) == 0 && (out[n] == '/' || out[n] == '\0'))
            snprintf(out, len, "%s", home);
    }
}

int cli_boxed_dispatch(int *argc, char **argv)
{
    bool no_box = false;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--no-box") == 0) {
            no_box = true;
            memmove(&argv[i], &argv[i + 1], (size_t)(*argc - i) * sizeof(char *));
            (*argc)--;
            i--;
        }
    }
    enum where w = command_class(*argc, argv);
    char why[256];
    if (w == HERE || !box_wanted(no_box, why, sizeof(why)))
        return -1;

    char home[PATH_MAX], dir[PATH_MAX + 8];
    int rc = boxed_dir(home, sizeof(home), dir, sizeof(dir));
    if (rc < 0)
        return cli_error("cannot find $VMWS_HOME for the KVM box: %s", strerror(-rc));
    struct box_status st;
    box_status_read(dir, &st);
    bool up = st.running;
    if (!up && w == BOX_IF_UP)
        return -1; /* no box, so no VM runs: the command can say so itself */

    char sentence[512];
    boxed_sentence(sentence, sizeof(sentence), why);
    bool terminal = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    if (!up || (*argc < 2 && terminal))
        fprintf(stderr, "vmws: %s (--no-box or VMWS_BOX=never: don't)\n", sentence);
    if (!up && start_box(home, dir) < 0)
        return cli_error("the KVM box did not start (see above); 'vmws --no-box ...' tries KVM "
                         "natively");

    /* For the dashboard in the box: its header and the host's memory (launch.c). */
    char meminfo[PATH_MAX + 32];
    snprintf(meminfo, sizeof(meminfo), "%s/host.meminfo", dir);
    setenv("VMWS_BOX_NOTE", sentence, 1);
    setenv("VMWS_HOST_MEMINFO", meminfo, 1);
    /* VNC servers in the box take the ports the host forwards, on the box's address. */
    char ports[16 * 8] = "";
    box_status_read(dir, &st);
    for (int i = 0, n = 0; i < st.nforwards; i++)
        n += snprintf(ports + n, sizeof(ports) - (size_t)n, "%s%d", i ? "," : "", st.forwards[i]);
    setenv("VMWS_VNC_PORTS", ports, 1);
    setenv("VMWS_VNC_BIND", BOX_GUEST_ADDR, 1);

    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return cli_error("cannot find this program's path: %s", strerror(errno));
    self[n] = '\0';
    argv[0] = self;
    char cwd[PATH_MAX];
    box_cwd(home, cwd, sizeof(cwd));
    /* On a terminal every command gets one in the box (the dashboard, the console, prompts);
     * on pipes, stdin goes to the commands that read it. */
    bool reads = *argc < 2 || strcmp(argv[1], "console") == 0 || strcmp(argv[1], "run") == 0;
    enum box_stdin in = terminal ? BOX_STDIN_TTY : reads ? BOX_STDIN_PIPE : BOX_STDIN_NULL;
    rc = box_exec(dir, argv, cwd, in, 0);
    return rc == BOX_EXIT_FAILED ? 1 : rc;
}
