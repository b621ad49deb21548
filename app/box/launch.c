/* Starting, watching and stopping a KVM box (see box.h). The one idea: a supervisor process
 * owns QEMU and holds STATE/lock for as long as QEMU lives, so "is the box running" is "is
 * the lock held" (no stale pid to trust), and when QEMU ends, for whatever reason, the
 * supervisor writes STATE/ended saying why: a panic, a failure the init script named, a
 * power-off and who asked for it, or QEMU's own last words.
 *
 * STATE holds: lock, start.lock (serialises starters), box.json (port, pids, size), token and
 * config (0600; the config reaches the box through fw_cfg), console.log (the box's serial
 * console), qemu.log (QEMU's stderr) and ended. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "app/box/box.h"
#include "app/box/wire.h"
#include "core/config/paths.h"
#include "core/util/fsutil.h"

#define DEFAULT_MEMORY (8ull << 30)
/* One emulated CPU. With two (multi-threaded TCG), the box's own kernel panicked within
 * minutes under two 2-vCPU VMs taking snapshots: an IPI taken right after VMRUN, before KVM's
 * VMLOAD restored the host's GS base, recursed in the page fault handler until the stack
 * overflowed ("corrupted stack end detected inside scheduler"). With one, never (README). */
#define BOX_DEFAULT_CPUS 1
#define DEFAULT_BOOT_TIMEOUT_S 180

/* DIR/NAME into OUT; a path too long for OUT becomes "" (which every open refuses). */
static void dpath(char *out, size_t len, const char *dir, const char *name)
{
    if (snprintf(out, len, "%s/%s", dir, name) >= (int)len)
        out[0] = '\0';
}

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p)
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return -errno;
        if (!c)
            return 0;
        *p = c;
    }
}

int box_default_dir(char *out, size_t len)
{
    const char *d = getenv("VMWS_BOX_DIR");
    if (d && *d)
        return snprintf(out, len, "%s", d) < (int)len ? 0 : -ENAMETOOLONG;
    char run[PATH_MAX];
    int rc = paths_runtime(run, sizeof(run));
    if (rc < 0)
        return rc;
    return snprintf(out, len, "%s/box", run) < (int)len ? 0 : -ENAMETOOLONG;
}

/* Where built initramfs files are kept: $XDG_CACHE_HOME/vmws/box or ~/.cache/vmws/box. */
static int cache_dir(char *out, size_t len)
{
    const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n = x && *x ? snprintf(out, len, "%s/vmws/box", x)
                    : snprintf(out, len, "%s/.cache/vmws/box", home && *home ? home : "/tmp");
    return n < (int)len ? mkdir_p(out, 0700) : -ENAMETOOLONG;
}

/* True if a supervisor holds DIR/lock. */
static bool box_locked(const char *dir)
{
    char p[PATH_MAX];
    dpath(p, sizeof(p), dir, "lock");
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool held = flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

static char *slurp_tail(const char *path, size_t max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    off_t end = lseek(fd, 0, SEEK_END);
    off_t start = end > (off_t)max ? end - (off_t)max : 0;
    char *buf = malloc((size_t)(end - start) + 1);
    ssize_t n = buf ? pread(fd, buf, (size_t)(end - start), start) : -1;
    close(fd);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    for (ssize_t i = 0; i < n; i++) { /* the console has \r\n and the odd NUL */
        if (buf[i] == '\r' || buf[i] == '\0')
            buf[i] = i + 1 < n && buf[i + 1] == '\n' ? ' ' : '\n';
    }
    return buf;
}

/* The text after MARK on the last line that holds it, trimmed, into OUT. */
static bool find_line(const char *text, const char *mark, char *out, size_t len)
{
    const char *hit = NULL;
    for (const char *p = text; (p = strstr(p, mark)); p++)
        hit = p;
    if (!hit)
        return false;
    hit += strlen(mark);
    size_t n = strcspn(hit, "\n");
    while (n && (hit[n - 1] == ' ' || hit[n - 1] == '\t'))
        n--;
    snprintf(out, len, "%.*s", (int)n, hit);
    return true;
}

/* Why the box whose QEMU ended with STATUS stopped, from its console and QEMU's stderr. */
static void ended_reason(const char *dir, int status, char *out, size_t len)
{
    char p[PATH_MAX], line[400];
    dpath(p, sizeof(p), dir, "console.log");
    char *con = slurp_tail(p, 1 << 16);
    if (con && find_line(con, "VMWS-BOX-FAIL: ", line, sizeof(line)))
        snprintf(out, len, "the box failed: %s", line);
    else if (con && find_line(con, "Kernel panic - not syncing: ", line, sizeof(line)))
        snprintf(out, len, "the box's kernel panicked: %s", line);
    else if (con && find_line(con, "vmws-box: powering off: ", line, sizeof(line)))
        snprintf(out, len, "powered off: %s", line);
    else if (WIFSIGNALED(status))
        snprintf(out, len, "QEMU was killed by signal %d", WTERMSIG(status));
    else {
        dpath(p, sizeof(p), dir, "qemu.log");
        char *q = slurp_tail(p, 4096);
        char *last = q ? q + strlen(q) : NULL;
        while (last && last > q && last[-1] == '\n')
            *--last = '\0';
        while (last && last > q && last[-1] != '\n')
            last--;
        snprintf(out, len, "QEMU exited with status %d%s%s", WEXITSTATUS(status),
                 last && *last ? ": " : " before the box was up", last && *last ? last : "");
        free(q);
    }
    free(con);
}

int box_status_read(const char *dir, struct box_status *st)
{
    memset(st, 0, sizeof(*st));
    char p[PATH_MAX];
    st->running = box_locked(dir);
    dpath(p, sizeof(p), dir, st->running ? "box.json" : "ended");
    if (!st->running) {
        char *e = slurp_tail(p, sizeof(st->ended) - 1);
        if (e)
            snprintf(st->ended, sizeof(st->ended), "%.*s", (int)strcspn(e, "\n"), e);
        free(e);
        return 0;
    }
    json_t *j = json_load_file(p, 0, NULL);
    if (!j)
        return -EAGAIN; /* starting: the lock is held, box.json not written yet */
    st->supervisor = (pid_t)json_integer_value(json_object_get(j, "supervisor"));
    st->qemu = (pid_t)json_integer_value(json_object_get(j, "qemu"));
    st->port = (int)json_integer_value(json_object_get(j, "port"));
    st->cpus = (unsigned)json_integer_value(json_object_get(j, "cpus"));
    st->memory = (uint64_t)json_integer_value(json_object_get(j, "memory"));
    st->started = json_integer_value(json_object_get(j, "started"));
    size_t k;
    json_t *v;
    json_array_foreach(json_object_get(j, "forwards"), k, v)
    {
        if (st->nforwards < (int)(sizeof(st->forwards) / sizeof(st->forwards[0])))
            st->forwards[st->nforwards++] = (int)json_integer_value(v);
    }
    json_decref(j);
    return st->port > 0 ? 0 : -EINVAL;
}

/* Which vmws binary this is (device, inode, size, mtime): a box runs its starter's build as
 * its agent, and a rebuilt vmws must not talk to, or run in, a box of the old one. */
static void agent_identity(char *out, size_t len)
{
    struct stat st;
    if (stat("/proc/self/exe", &st) < 0)
        memset(&st, 0, sizeof(st));
    snprintf(out, len, "%llx:%llx:%llx:%llx.%09ld", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino, (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

/* True if the box running in DIR was started by this build of vmws and shares at least what
 * C asks for; else WHY says what differs. */
static bool running_box_fits(const struct box_config *c, char *why, size_t whylen)
{
    char p[PATH_MAX], agent[128];
    dpath(p, sizeof(p), c->dir, "box.json");
    json_t *j = json_load_file(p, 0, NULL);
    agent_identity(agent, sizeof(agent));
    const char *theirs = json_string_value(json_object_get(j, "agent"));
    bool fits = theirs && strcmp(theirs, agent) == 0;
    if (!fits)
        snprintf(why, whylen, "it runs another build of vmws");
    for (int i = 0; fits && i < c->nshares; i++) {
        size_t k;
        json_t *v;
        bool have = false;
        json_array_foreach(json_object_get(j, "shares"), k, v)
        {
            const char *s = json_string_value(v);
            size_t n = s ? strlen(s) : 0;
            have |= s && strncmp(c->shares[i], s, n) == 0 &&
                    (c->shares[i][n] == '/' || c->shares[i][n] == '\0');
        }
        if (!have) {
            fits = false;
            snprintf(why, whylen, "it does not share %s", c->shares[i]);
        }
    }
    json_decref(j);
    return fits;
}

/* ---- QEMU's command line ----------------------------------------------------------------- */

struct argv_buf {
    char *v[96];
    int n;
};

static void arg(struct argv_buf *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(struct argv_buf *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (a->n < (int)(sizeof(a->v) / sizeof(a->v[0])) - 1 && vasprintf(&a->v[a->n], fmt, ap) >= 0)
        a->n++;
    va_end(ap);
    a->v[a->n] = NULL;
}

/* PATH with QEMU's option-value escaping (a comma is written twice). */
static const char *qesc(const char *path, char *buf, size_t len)
{
    size_t o = 0;
    for (const char *s = path; *s && o + 2 < len; s++) {
        buf[o++] = *s;
        if (*s == ',')
            buf[o++] = ',';
    }
    buf[o] = '\0';
    return buf;
}

static void qemu_argv(struct argv_buf *a, const char *qemu, const char *kernel,
                      const char *initramfs, const struct box_config *c, unsigned cpus,
                      uint64_t memory, int port, int poke)
{
    char e1[PATH_MAX * 2], p[PATH_MAX];
    arg(a, "%s", qemu);
    arg(a, "-name");
    arg(a, "vmws-box");
    /* Multi-threaded TCG; an AMD CPU with SVM and nested paging, minus what TCG can't do.
     * $VMWS_BOX_ACCEL replaces the accelerator's options (for diagnosing the box itself). */
    const char *accel = getenv("VMWS_BOX_ACCEL");
    arg(a, "-accel");
    arg(a, "%s", accel && *accel ? accel : "tcg,thread=multi");
    arg(a, "-M");
    arg(a, "pc");
    /* No AVX: glibc's string functions would take their AVX2 paths, which TCG runs several
     * times slower than the SSE2 ones (an SDL frame: 3 s instead of 0.6 s). */
    const char *cpu = getenv("VMWS_BOX_CPU"); /* the same, for the CPU model */
    arg(a, "-cpu");
    arg(a, "%s",
        cpu && *cpu ? cpu
                    : "EPYC,+svm,+npt,-avx,-avx2,-fma,-f16c,-rdseed,-sha-ni,-fxsr-opt,"
                      "-misalignsse,-3dnowprefetch,-osvw,-topoext,-nrip-save,-xsavec");
    arg(a, "-smp");
    arg(a, "%u", cpus);
    arg(a, "-m");
    arg(a, "%llum", (unsigned long long)(memory >> 20));
    arg(a, "-nodefaults");
    arg(a, "-no-user-config");
    arg(a, "-display");
    arg(a, "none");
    arg(a, "-no-reboot"); /* with panic=-1: a panic ends QEMU at once */
    arg(a, "-kernel");
    arg(a, "%s", qesc(kernel, e1, sizeof(e1)));
    arg(a, "-initrd");
    arg(a, "%s", qesc(initramfs, e1, sizeof(e1)));
    /* loglevel=5 puts warnings such as a stall's ("clocksource: Long readout interval", see
     * POKE_MS) on the console the host keeps. $VMWS_BOX_APPEND adds kernel arguments (for
     * diagnosing the box itself). */
    const char *extra = getenv("VMWS_BOX_APPEND");
    arg(a, "-append");
    arg(a, "console=ttyS0 panic=-1 loglevel=5 mitigations=off%s%s",
        extra && *extra ? " " : "", extra && *extra ? extra : "");
    dpath(p, sizeof(p), c->dir, "console.log");
    arg(a, "-chardev");
    arg(a, "file,id=con,path=%s", qesc(p, e1, sizeof(e1)));
    arg(a, "-serial");
    arg(a, "chardev:con");
    dpath(p, sizeof(p), c->dir, "config");
    arg(a, "-fw_cfg");
    arg(a, "name=opt/vmws/box,file=%s", qesc(p, e1, sizeof(e1)));
    arg(a, "-fsdev");
    arg(a, "local,id=root,path=/,readonly=on,security_model=none,multidevs=remap");
    arg(a, "-device");
    arg(a, "virtio-9p-pci,fsdev=root,mount_tag=root");
    for (int i = 0; i < c->nshares; i++) {
        arg(a, "-fsdev");
        arg(a, "local,id=share%d,path=%s,security_model=none,multidevs=remap", i,
            qesc(c->shares[i], e1, sizeof(e1)));
        arg(a, "-device");
        arg(a, "virtio-9p-pci,fsdev=share%d,mount_tag=share%d", i, i);
    }
    arg(a, "-netdev");
    /* Forwarded ports arrive on the box's address, BOX_GUEST_ADDR (slirp's ARP cannot reach
     * the box's loopback). */
    char fwd[16 * 64] = "";
    for (int i = 0, n = 0; i < c->nforwards; i++)
        n += snprintf(fwd + n, sizeof(fwd) - (size_t)n, ",hostfwd=tcp:127.0.0.1:%d-:%d",
                      c->forwards[i], c->forwards[i]);
    arg(a, "user,id=net0,hostfwd=tcp:127.0.0.1:%d-:%d,hostfwd=udp:127.0.0.1:%d-:%d%s", port,
        BOX_AGENT_PORT, poke, BOX_POKE_PORT, fwd);
    arg(a, "-device");
    arg(a, "virtio-net-pci,netdev=net0");
}

/* ---- the supervisor ---------------------------------------------------------------------- */

/* Runs in its own process: starts QEMU, records box.json, waits, records why it ended. */
/* The box's pulse. Under load the box sometimes stood still for minutes (12-03: 267 s, 273 s,
 * 413 s; its kernel: "clocksource: Long readout interval"), its own timer interrupts not
 * arriving, until anything came from outside: a `vmws box exec` ended each stall at once. That
 * happened with the kernel's idle=poll as well, and with single-threaded TCG; never while the guest's files
 * were on a 9p share (every write an outside event). So the supervisor sends a datagram into the
 * box every POKE_MS (to a port nothing listens on: its kernel answers, nothing else runs), and a
 * stall lasts at most that long. */
#define POKE_MS 200

/* STATE/host.meminfo: the host's /proc/meminfo and QEMU's resident memory, for a dashboard in
 * the box (whose own /proc/meminfo is the box's). */
static void report_host(const char *dir, pid_t qemu)
{
    char buf[8192], p[PATH_MAX];
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 128) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return;
    snprintf(p, sizeof(p), "/proc/%d/statm", (int)qemu);
    FILE *f = fopen(p, "re");
    unsigned long long size = 0, rss = 0;
    if (f && fscanf(f, "%llu %llu", &size, &rss) == 2)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "VmwsBoxRss: %llu kB\n",
                      rss * (unsigned long long)sysconf(_SC_PAGESIZE) / 1024);
    if (f)
        fclose(f);
    dpath(p, sizeof(p), dir, "host.meminfo");
    fs_write_atomic(p, buf, (size_t)n);
}

static void supervise(const struct box_config *c, char *const *qargv, unsigned cpus,
                      uint64_t memory, int port, int poke)
{
    char p[PATH_MAX];
    if (c->tied)
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    else
        setsid();
    /* Nothing of the starter's: not its start.lock (a flock shared with us would outlive it),
     * not a pipe someone waits to see closed. */
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    dpath(p, sizeof(p), c->dir, "lock");
    int lock = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX) < 0)
        _exit(1);
    int null = open("/dev/null", O_RDWR);
    dpath(p, sizeof(p), c->dir, "qemu.log");
    int log = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    dup2(null, 0);
    dup2(log, 1);
    dup2(log, 2);
    dpath(p, sizeof(p), c->dir, "ended");
    unlink(p);
    /* Keep the last box's console: a test that started this one may want the old panic. */
    char old[PATH_MAX + 8];
    dpath(p, sizeof(p), c->dir, "console.log");
    snprintf(old, sizeof(old), "%s.old", p);
    rename(p, old);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);

    pid_t qemu = fork();
    if (qemu == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(qargv[0], qargv);
        fprintf(stderr, "cannot run %s: %s\n", qargv[0], strerror(errno));
        _exit(127);
    }
    char agent[128];
    agent_identity(agent, sizeof(agent));
    json_t *shares = json_array();
    for (int i = 0; i < c->nshares; i++)
        json_array_append_new(shares, json_string(c->shares[i]));
    json_t *fwd = json_array();
    for (int i = 0; i < c->nforwards; i++)
        json_array_append_new(fwd, json_integer(c->forwards[i]));
    json_t *j = json_pack("{sisisisisIsIsssOso}", "supervisor", (int)getpid(), "qemu", (int)qemu,
                          "port", port, "cpus", (int)cpus, "memory", (json_int_t)memory, "started",
                          (json_int_t)time(NULL), "agent", agent, "shares", shares, "forwards",
                          fwd);
    json_decref(shares);
    char *s = json_dumps(j, JSON_COMPACT);
    dpath(p, sizeof(p), c->dir, "box.json");
    if (s)
        fs_write_atomic(p, s, strlen(s));
    free(s);
    json_decref(j);

    int ps = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in pa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)poke),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int status = 0;
    bool stopping = false;
    unsigned pulses = 0;
    for (;;) {
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        int n = poll(&pfd, 1, stopping ? 10000 : POKE_MS);
        if (n == 0 && !stopping) {
            if (ps >= 0 && poke > 0)
                sendto(ps, "", 1, MSG_DONTWAIT, (struct sockaddr *)&pa, sizeof(pa));
            if (c->host_report && ++pulses % (1000 / POKE_MS) == 0)
                report_host(c->dir, qemu);
            continue;
        }
        if (n == 0 && stopping) /* QEMU ignored SIGTERM for 10 s */
            kill(qemu, SIGKILL);
        struct signalfd_siginfo si;
        if (n > 0 && read(sfd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo != SIGCHLD &&
            !stopping) {
            stopping = true;
            kill(qemu, SIGTERM);
        }
        if (waitpid(qemu, &status, WNOHANG) == qemu)
            break;
    }
    char why[512];
    ended_reason(c->dir, status, why, sizeof(why));
    if (stopping && strncmp(why, "QEMU", 4) == 0)
        snprintf(why, sizeof(why), "stopped");
    dpath(p, sizeof(p), c->dir, "box.json");
    unlink(p);
    size_t wl = strlen(why);
    why[wl] = '\n';
    dpath(p, sizeof(p), c->dir, "ended");
    fs_write_atomic(p, why, wl + 1);
    _exit(0);
}

/* ---- start ------------------------------------------------------------------------------- */

static int free_port(int type)
{
    int s = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int port = -1;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0)
        close(s);
    return port;
}

int box_connect(int port, int timeout_ms)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
        int rc = -errno;
        if (s >= 0)
            close(s);
        return rc;
    }
    /* QEMU accepts for the guest before the agent listens, and retries its SYN into the box
     * with a growing backoff: only a hello proves a connection, and a slow one is dropped for
     * a fresh one (so the socket is non-blocking, which callers keep). */
    fcntl(s, F_SETFL, O_NONBLOCK);
    struct box_reader r = {0};
    uint8_t type;
    int rc = box_reader_next(&r, s, &type, timeout_ms);
    box_reader_free(&r);
    if (rc < 0 || type != BOX_HELLO) {
        close(s);
        return rc < 0 ? rc : -EPROTO;
    }
    return s;
}

int box_read_token(const char *dir, char *out, size_t len)
{
    char p[PATH_MAX];
    dpath(p, sizeof(p), dir, "token");
    FILE *f = fopen(p, "re");
    if (!f)
        return -errno;
    bool ok = fgets(out, (int)len, f) != NULL;
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
    return ok && *out ? 0 : -EINVAL;
}

/* Writes the token and the box's configuration (what the init script and the agent read). */
static int write_config(const struct box_config *c, const char *agent, char *why, size_t whylen)
{
    uint8_t raw[24];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        snprintf(why, whylen, "no random bytes for the token: %s", strerror(errno));
        return -EIO;
    }
    char token[2 * sizeof(raw) + 2];
    for (size_t i = 0; i < sizeof(raw); i++)
        sprintf(token + 2 * i, "%02x", raw[i]);
    char p[PATH_MAX], cfg[8192];
    int n = snprintf(cfg, sizeof(cfg), "agent=%s\ntoken=%s\nidle=%d\nidle_when_empty=%d\n",
                     agent, token, c->idle_timeout_s, c->idle_when_empty);
    for (int i = 0; i < c->nshares && n < (int)sizeof(cfg); i++)
        n += snprintf(cfg + n, sizeof(cfg) - (size_t)n, "share=%s\n", c->shares[i]);
    if (n >= (int)sizeof(cfg)) {
        snprintf(why, whylen, "too many or too long shares");
        return -E2BIG;
    }
    dpath(p, sizeof(p), c->dir, "config");
    int rc = fs_write_atomic(p, cfg, (size_t)n);
    size_t tl = strlen(token);
    token[tl] = '\n';
    dpath(p, sizeof(p), c->dir, "token");
    if (rc == 0)
        rc = fs_write_atomic(p, token, tl + 1);
    if (rc < 0 && snprintf(why, whylen, "cannot write in %s: %s", c->dir, strerror(-rc)) < 0)
        why[0] = '\0';
    return rc;
}

static uint64_t host_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : DEFAULT_MEMORY;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Checks that a path with no newline (the config is line-based) and a directory. */
static int check_share(const char *path, char *why, size_t whylen)
{
    struct stat st;
    if (path[0] != '/' || strchr(path, '\n')) {
        snprintf(why, whylen, "a share must be an absolute path without newlines: %s", path);
        return -EINVAL;
    }
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(why, whylen, "cannot share %s: %s", path,
                 errno ? strerror(errno) : "not a directory");
        return -ENOTDIR;
    }
    return 0;
}

static int start_checked(struct box_config *c, char *why, size_t whylen);

bool box_shares_cover(const struct box_config *c, const char *path)
{
    for (int i = 0; i < c->nshares; i++) {
        size_t n = strlen(c->shares[i]);
        if (strncmp(path, c->shares[i], n) == 0 && (path[n] == '/' || path[n] == '\0'))
            return true;
    }
    return false;
}

/* True if PATH lies where the box mounts its own tmpfs, hiding the host's files. */
static bool hidden_in_box(const char *path)
{
    static const char *const tmpfs[] = {"/tmp/", "/run/", "/dev/shm/"};
    for (size_t i = 0; i < sizeof(tmpfs) / sizeof(tmpfs[0]); i++) {
        if (strncmp(path, tmpfs[i], strlen(tmpfs[i])) == 0)
            return true;
    }
    return false;
}

static int start_locked(const struct box_config *cfg)
{
    char why[1024] = "";
    struct box_config *c = malloc(sizeof(*c));
    if (!c)
        return -ENOMEM;
    *c = *cfg;
    int rc = start_checked(c, why, sizeof(why));
    free(c);
    return rc;
}

static int start_checked(struct box_config *c, char *why, size_t whylen)
{
    struct box_host h;
    int rc = box_host_find(&h, why, whylen);
    char cache[PATH_MAX], initramfs[PATH_MAX], kernel[PATH_MAX], agent[PATH_MAX] = "";
    if (rc == 0 && (rc = cache_dir(cache, sizeof(cache))) < 0)
        snprintf(why, whylen, "cannot create the cache directory: %s", strerror(-rc));
    if (rc == 0)
        rc = box_initramfs(&h, cache, initramfs, sizeof(initramfs), why, whylen);
    if (rc == 0)
        box_kernel_image(&h, cache, kernel, sizeof(kernel));
    ssize_t al = readlink("/proc/self/exe", agent, sizeof(agent) - 1);
    if (rc == 0 && al <= 0) {
        rc = -errno;
        snprintf(why, whylen, "cannot find this program's path: %s", strerror(errno));
    }
    if (al > 0)
        agent[al] = '\0';
    /* This program is the box's agent: it must be visible there. */
    char agent_dir[PATH_MAX];
    snprintf(agent_dir, sizeof(agent_dir), "%s", agent);
    if (strrchr(agent_dir, '/'))
        *strrchr(agent_dir, '/') = '\0';
    if (rc == 0 && hidden_in_box(agent) && !box_shares_cover(c, agent) &&
        c->nshares < BOX_MAX_SHARES)
        snprintf(c->shares[c->nshares++], sizeof(c->shares[0]), "%s", agent_dir);
    for (int i = 0; rc == 0 && i < c->nshares; i++)
        rc = check_share(c->shares[i], why, whylen);
    if (rc == 0)
        rc = write_config(c, agent, why, whylen);
    if (rc < 0) {
        fprintf(stderr, "vmws box: %s\n", why);
        return rc;
    }

    unsigned cpus = c->cpus ? c->cpus : BOX_DEFAULT_CPUS;
    uint64_t memory = c->memory ? c->memory : DEFAULT_MEMORY;
    if (!c->memory && memory > host_memory() / 4 * 3)
        memory = host_memory() / 4 * 3 & ~((1ull << 20) - 1);
    int boot_timeout = c->boot_timeout_s ? c->boot_timeout_s : DEFAULT_BOOT_TIMEOUT_S;
    if (!c->quiet)
        fprintf(stderr, "vmws box: starting a KVM box (QEMU TCG, %u CPUs, %llu MiB, kernel %s)\n",
                cpus, (unsigned long long)(memory >> 20), h.kver);

    for (int attempt = 0; attempt < 3; attempt++) {
        int port = free_port(SOCK_STREAM), poke = free_port(SOCK_DGRAM);
        struct argv_buf a = {0};
        qemu_argv(&a, h.qemu, kernel, initramfs, c, cpus, memory, port, poke);
        double t0 = now_s();
        pid_t sup = fork();
        if (sup == 0)
            supervise(c, a.v, cpus, memory, port, poke);
        for (int i = 0; i < a.n; i++)
            free(a.v[i]);
        if (sup < 0) {
            fprintf(stderr, "vmws box: cannot fork: %s\n", strerror(errno));
            return -errno;
        }
        for (;;) {
            int status;
            if (waitpid(sup, &status, WNOHANG) == sup) {
                struct box_status st;
                box_status_read(c->dir, &st);
                if (strstr(st.ended, "host forwarding") && attempt < 2)
                    break; /* the port was taken in between: another one */
                fprintf(stderr, "vmws box: the box did not come up: %s\n",
                        st.ended[0] ? st.ended : "its supervisor died");
                box_print_console_tail(c->dir, 20);
                return -EIO;
            }
            int s = box_connect(port, 1000);
            if (s >= 0) {
                close(s);
                if (!c->quiet)
                    fprintf(stderr, "vmws box: ready after %.1f s (127.0.0.1:%d, %s)\n",
                            now_s() - t0, port, c->dir);
                return 0;
            }
            if (now_s() - t0 > boot_timeout) {
                fprintf(stderr, "vmws box: the box did not answer within %d s\n", boot_timeout);
                box_print_console_tail(c->dir, 20);
                kill(sup, SIGTERM);
                waitpid(sup, NULL, 0);
                return -ETIMEDOUT;
            }
            usleep(200000);
        }
    }
    return -EIO;
}

int box_start(const struct box_config *c)
{
    int rc = mkdir_p(c->dir, 0700);
    if (rc < 0) {
        fprintf(stderr, "vmws box: cannot create %s: %s\n", c->dir, strerror(-rc));
        return rc;
    }
    char p[PATH_MAX];
    dpath(p, sizeof(p), c->dir, "start.lock");
    int lock = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX) < 0) {
        fprintf(stderr, "vmws box: cannot lock %s: %s\n", p, strerror(errno));
        if (lock >= 0)
            close(lock);
        return -errno;
    }
    char why[PATH_MAX + 64];
    if (box_locked(c->dir) && !running_box_fits(c, why, sizeof(why))) {
        if (!c->quiet)
            fprintf(stderr, "vmws box: restarting the box in %s: %s\n", c->dir, why);
        box_stop(c->dir, 20);
    }
    rc = box_locked(c->dir) ? 0 : start_locked(c);
    close(lock);
    return rc;
}

/* ---- stop -------------------------------------------------------------------------------- */

static bool wait_unlocked(const char *dir, int timeout_ms)
{
    for (int t = 0; t < timeout_ms; t += 50) {
        if (!box_locked(dir))
            return true;
        usleep(50000);
    }
    return !box_locked(dir);
}

int box_stop(const char *dir, int timeout_s)
{
    struct box_status st;
    if (box_status_read(dir, &st) < 0 || !st.running)
        return -ESRCH;
    char token[128];
    int s = box_read_token(dir, token, sizeof(token)) == 0 ? box_connect(st.port, 2000) : -1;
    if (s >= 0) {
        json_t *j = json_pack("{ss}", "token", token);
        box_frame_write_json(s, BOX_POWEROFF, j);
        json_decref(j);
        close(s);
        if (wait_unlocked(dir, timeout_s * 1000))
            return 0;
    }
    if (st.supervisor > 0)
        kill(st.supervisor, SIGTERM);
    if (wait_unlocked(dir, 15000))
        return 0;
    if (st.qemu > 0)
        kill(st.qemu, SIGKILL);
    return wait_unlocked(dir, 5000) ? 0 : -ETIMEDOUT;
}

void box_print_console_tail(const char *dir, int lines)
{
    char p[PATH_MAX], line[400];
    dpath(p, sizeof(p), dir, "console.log");
    char *con = slurp_tail(p, 1 << 16);
    if (!con)
        return;
    if (find_line(con, "Kernel panic - not syncing: ", line, sizeof(line)))
        fprintf(stderr, "vmws box: the box's kernel panicked: %s\n", line);
    const char *start = con + strlen(con);
    while (start > con && start[-1] == '\n')
        start--;
    for (int n = 0; start > con && n <= lines; start--) {
        if (start[-1] == '\n')
            n++;
    }
    fprintf(stderr, "vmws box: the end of its console (%s):\n", p);
    for (const char *l = start; *l;) {
        size_t n = strcspn(l, "\n");
        if (n)
            fprintf(stderr, "  | %.*s\n", (int)n, l);
        l += n + (l[n] ? 1 : 0);
    }
    free(con);
}
