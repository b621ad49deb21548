/* Inside the KVM box: the agent, PID 1 once the init script is done. It listens on
 * BOX_AGENT_PORT (QEMU forwards the host's 127.0.0.1:PORT to it) and runs one command per
 * connection for whoever knows the box's token (wire.h), relaying its output as it comes.
 * The one idea: each connection gets its own process (a session), which owns the command's
 * process group; PID 1 only accepts, reaps every orphan a command leaves, and powers the box
 * off when asked or when no session has run for the idle time. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "app/box/box.h"
#include "app/box/wire.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

/* How long a command's pipes may stay open after it exited (a daemon it started holds them)
 * before the exit status is sent anyway. */
#define DRAIN_IDLE_MS 200

struct agent_config {
    char token[128];
    int idle_s; /* 0: never power off by itself */
    bool idle_when_empty; /* idle also needs: no process but ours (box.h) */
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vmws-box: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void power_off(const char *why)
{
    say("powering off: %s", why);
    sync();
    reboot(RB_POWER_OFF);
    _exit(1);
}

static int read_config(const char *path, struct agent_config *c)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        if (strcmp(line, "token") == 0)
            snprintf(c->token, sizeof(c->token), "%s", eq + 1);
        else if (strcmp(line, "idle") == 0)
            c->idle_s = atoi(eq + 1);
        else if (strcmp(line, "idle_when_empty") == 0)
            c->idle_when_empty = atoi(eq + 1) != 0;
    }
    fclose(f);
    return c->token[0] ? 0 : -EINVAL;
}

/* Constant-time comparison, so timing does not leak the token. */
static bool token_ok(const struct agent_config *c, const json_t *req)
{
    const char *t = json_string_value(json_object_get(req, "token"));
    size_t n = strlen(c->token);
    if (!t || strlen(t) != n)
        return false;
    unsigned diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)(t[i] ^ c->token[i]);
    return diff == 0;
}

static void send_exit_error(int sock, const char *why)
{
    json_t *j = json_pack("{ss}", "error", why);
    box_frame_write_json(sock, BOX_EXIT, j);
    json_decref(j);
}

/* NULL-terminated copy of a JSON array of strings, or NULL. */
static char **string_array(json_t *a)
{
    if (!json_is_array(a))
        return NULL;
    size_t n = json_array_size(a);
    char **v = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; v && i < n; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s) {
            free(v);
            return NULL;
        }
        v[i] = (char *)s;
    }
    return v;
}

/* The command's side of the session: its own process group, the pipes as stdio. */
static void exec_command(char **argv, char **env, const char *cwd, int in, int out, int err)
{
    setsid();
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (cwd && chdir(cwd) < 0) {
        fprintf(stderr, "vmws box: cannot enter %s in the box: %s\n", cwd, strerror(errno));
        _exit(127);
    }
    if (env)
        environ = env;
    setenv("VMWS_IN_BOX", "1", 1); /* for a program that wants to say where it ran */
    execvp(argv[0], argv);
    fprintf(stderr, "vmws box: cannot run %s in the box: %s\n", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
}

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Relays pipe FD to the client as frames of TYPE; returns false at end of file. */
static bool relay_pipe(int fd, int sock, uint8_t type)
{
    char buf[65536];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return true;
    if (n <= 0)
        return false;
    return box_frame_write(sock, type, buf, (size_t)n) == 0;
}

/* The size {"rows", "cols"} in J for the terminal whose master is FD (its foreground process
 * group gets SIGWINCH). */
static void set_winsize(int fd, const json_t *j)
{
    json_int_t rows = json_integer_value(json_object_get(j, "rows"));
    json_int_t cols = json_integer_value(json_object_get(j, "cols"));
    if (rows <= 0 || cols <= 0 || rows > 10000 || cols > 10000)
        return;
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    ioctl(fd, TIOCSWINSZ, &ws);
}

/* A new pseudo-terminal of TTY's size; returns its master or -errno. */
static int open_pty(const json_t *tty)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0)
        return -errno;
    if (grantpt(m) < 0 || unlockpt(m) < 0 || !ptsname(m)) {
        int rc = -errno;
        close(m);
        return rc;
    }
    set_winsize(m, tty);
    return m;
}

static void relay_session(int sock, struct box_reader *rd, pid_t pid, int in, int out, int err,
                          int hold) __attribute__((noreturn));

/* One connection: hello, request, the command, its output, its exit status. */
static void session(int sock, const struct agent_config *cfg)
{
    json_t *hello = json_pack("{ss}", "vmws-box", PACKAGE_VERSION);
    box_frame_write_json(sock, BOX_HELLO, hello);
    json_decref(hello);

    struct box_reader r = {0};
    uint8_t type;
    if (box_reader_next(&r, sock, &type, 10000) < 0)
        _exit(0);
    json_t *req = box_reader_json(&r);
    if (!req || !token_ok(cfg, req)) {
        send_exit_error(sock, "bad request or wrong token");
        _exit(0);
    }
    if (type == BOX_POWEROFF) {
        json_t *ok = json_pack("{si}", "exit", 0);
        box_frame_write_json(sock, BOX_EXIT, ok);
        close(sock);
        power_off("asked by the host");
    }
    char **argv = string_array(json_object_get(req, "argv"));
    char **env = string_array(json_object_get(req, "env"));
    const char *cwd = json_string_value(json_object_get(req, "cwd"));
    bool want_stdin = json_is_true(json_object_get(req, "stdin"));
    bool merge = json_is_true(json_object_get(req, "merge"));
    json_t *tty = json_object_get(req, "tty");
    if (type != BOX_REQUEST || !argv || !argv[0]) {
        send_exit_error(sock, "the request names no command");
        _exit(0);
    }

    int inp[2] = {-1, -1}, outp[2], errp[2];
    int master = -1;
    if (json_is_object(tty)) {
        /* A terminal: the command's stdin, stdout and stderr are the pty's other side. */
        if ((master = open_pty(tty)) < 0) {
            send_exit_error(sock, strerror(-master));
            _exit(0);
        }
        /* We hold the terminal's side too until the command exits, so that reading the
         * master never sees a hang-up before the command opened it. */
        int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
        pid_t pid = slave < 0 ? -1 : fork();
        if (pid == 0) {
            setsid();
            if (ioctl(slave, TIOCSCTTY, 0) < 0)
                _exit(126);
            exec_command(argv, env, cwd, slave, slave, slave);
        }
        if (pid < 0) {
            send_exit_error(sock, strerror(errno));
            _exit(0);
        }
        relay_session(sock, &r, pid, master, dup(master), -1, slave);
    }
    if ((want_stdin ? pipe2(inp, O_CLOEXEC) : 0) < 0 || pipe2(outp, O_CLOEXEC) < 0 ||
        (!merge && pipe2(errp, O_CLOEXEC) < 0)) {
        send_exit_error(sock, strerror(errno));
        _exit(0);
    }
    if (!want_stdin) {
        inp[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        inp[1] = -1;
    }
    if (merge) {
        errp[0] = -1;
        errp[1] = outp[1];
    }
    pid_t pid = fork();
    if (pid == 0)
        exec_command(argv, env, cwd, inp[0], outp[1], errp[1]);
    if (pid < 0) {
        send_exit_error(sock, strerror(errno));
        _exit(0);
    }
    close(inp[0]);
    close(outp[1]);
    if (!merge)
        close(errp[1]);
    relay_session(sock, &r, pid, inp[1], outp[0], errp[0], -1);
}

/* The session's relay until the command ended: stdin frames into IN, OUT and ERR out as
 * frames, signals and window sizes passed on (IN is the pty's master when there is one, OUT a
 * copy of it, and HOLD our copy of its other side, closed once the command exited), then the
 * exit status. Never returns. */
static void relay_session(int sock, struct box_reader *rd, pid_t pid, int in, int out, int err,
                          int hold)
{
    struct box_reader r = *rd;
    uint8_t type;
    bool tty = isatty(in);
    fcntl(out, F_SETFL, O_NONBLOCK);
    if (err >= 0)
        fcntl(err, F_SETFL, O_NONBLOCK);
    fcntl(sock, F_SETFL, O_NONBLOCK);
    int pidfd = pidfd_open_(pid);

    int status = -1;
    for (;;) {
        struct pollfd p[4] = {{sock, POLLIN, 0}, {out, POLLIN, 0}, {err, POLLIN, 0},
                              {status < 0 ? pidfd : -1, POLLIN, 0}};
        int timeout = -1;
        if (status >= 0) { /* exited: drain what is there, don't wait for daemons */
            if (out < 0 && err < 0)
                break;
            timeout = DRAIN_IDLE_MS;
        }
        int n = poll(p, 4, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            break;
        if (p[0].revents) {
            int rc;
            while ((rc = box_reader_step(&r, sock, &type)) == 1) {
                if (type == BOX_WINSIZE && tty) {
                    json_t *j = box_reader_json(&r);
                    set_winsize(in, j);
                    json_decref(j);
                } else if (type == BOX_STDIN && in >= 0 && tty) {
                    if (r.len && write(in, r.data, r.len) < 0 && errno != EAGAIN) {
                        close(in);
                        in = -1;
                    }
                } else if (type == BOX_STDIN && in >= 0) {
                    if (r.len == 0 || write(in, r.data, r.len) != (ssize_t)r.len) {
                        close(in);
                        in = -1;
                    }
                } else if (type == BOX_SIGNAL) {
                    json_t *j = box_reader_json(&r);
                    int sig = (int)json_integer_value(json_object_get(j, "signal"));
                    json_decref(j);
                    if (sig > 0 && sig < 65)
                        kill(-pid, sig);
                }
            }
            if (rc < 0) { /* the client is gone: so is its command */
                kill(-pid, SIGKILL);
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                _exit(0);
            }
        }
        if (p[1].revents && !relay_pipe(out, sock, BOX_STDOUT)) {
            close(out);
            out = -1;
        }
        if (p[2].revents && !relay_pipe(err, sock, BOX_STDERR)) {
            close(err);
            err = -1;
        }
        if (p[3].revents && status < 0) {
            if (waitpid(pid, &status, 0) < 0)
                status = 0;
            if (hold >= 0)
                close(hold);
            hold = -1;
        }
    }
    json_t *ex = WIFSIGNALED(status) ? json_pack("{si}", "signal", WTERMSIG(status))
                                     : json_pack("{si}", "exit", WEXITSTATUS(status));
    box_frame_write_json(sock, BOX_EXIT, ex);
    json_decref(ex);
    shutdown(sock, SHUT_WR);
    _exit(0);
}

/* True if a process other than the agent and the kernel's threads runs in the box (a VMM a
 * command left behind). Every process of ours descends from PID 1; kernel threads from 2. */
static bool others_run(void)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    bool found = false;
    while (d && !found && (e = readdir(d))) {
        int pid = atoi(e->d_name);
        if (pid <= 2)
            continue;
        char p[64], buf[512];
        snprintf(p, sizeof(p), "/proc/%d/stat", pid);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
        if (fd >= 0)
            close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        const char *rp = strrchr(buf, ')'); /* after the command name: " S PPID" */
        int ppid = 0;
        char state;
        if (rp && sscanf(rp + 1, " %c %d", &state, &ppid) == 2 && ppid != 2 && state != 'Z')
            found = true;
    }
    if (d)
        closedir(d);
    return found;
}

int box_agent_main(int argc, char **argv)
{
    const char *cfg_path = NULL;
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--config") == 0)
            cfg_path = argv[i + 1];
    }
    struct agent_config cfg = {0};
    int rc = cfg_path ? read_config(cfg_path, &cfg) : -EINVAL;
    if (rc < 0) {
        say("VMWS-BOX-FAIL: cannot read the configuration %s: %s", cfg_path ? cfg_path : "(none)",
            strerror(-rc));
        power_off("no configuration");
    }
    setenv("HOME", "/root", 1);
    setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
    chdir("/");

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    signal(SIGPIPE, SIG_IGN);

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(BOX_AGENT_PORT)};
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 64) < 0) {
        say("VMWS-BOX-FAIL: cannot listen on port %d: %s", BOX_AGENT_PORT, strerror(errno));
        power_off("no port");
    }
    struct timespec up;
    clock_gettime(CLOCK_BOOTTIME, &up);
    say("agent ready on port %d after %.2f s (idle power-off: %d s, 0 is never)", BOX_AGENT_PORT,
        (double)up.tv_sec + (double)up.tv_nsec / 1e9, cfg.idle_s);

    pid_t sessions[256];
    int nsessions = 0;
    time_t idle_since = time(NULL);
    for (;;) {
        struct pollfd p[2] = {{ls, POLLIN, 0}, {sfd, POLLIN, 0}};
        int n = poll(p, 2, cfg.idle_s ? 1000 : -1);
        if (n < 0 && errno != EINTR)
            power_off("poll failed");
        if (p[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == sizeof(si))
                ;
            /* Reap everything: sessions and the orphans commands leave behind. */
            pid_t dead;
            while ((dead = waitpid(-1, NULL, WNOHANG)) > 0) {
                for (int i = 0; i < nsessions; i++) {
                    if (sessions[i] == dead)
                        sessions[i] = sessions[--nsessions];
                }
            }
        }
        if (p[0].revents && nsessions < (int)(sizeof(sessions) / sizeof(sessions[0]))) {
            int s = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
            if (s >= 0) {
                setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                pid_t pid = fork();
                if (pid == 0) {
                    close(ls);
                    close(sfd);
                    sigprocmask(SIG_UNBLOCK, &mask, NULL);
                    session(s, &cfg);
                }
                if (pid > 0)
                    sessions[nsessions++] = pid;
                close(s);
            }
        }
        if (nsessions > 0 || (cfg.idle_when_empty && others_run()))
            idle_since = time(NULL);
        else if (cfg.idle_s && time(NULL) - idle_since >= cfg.idle_s)
            power_off("no command for the idle time");
    }
}
