/* `vmws console NAME`: the guest's serial console, relayed between the terminal and the VM's
 * console socket. The one idea: two modes. On a tty it is interactive (raw mode, Ctrl-]
 * detaches, the terminal is restored on every way out). On a pipe it is a tool for scripts:
 * stdin goes to the guest, and after stdin ends the output keeps flowing until the guest has
 * been quiet for --idle ms, so `printf 'mem stat\n' | vmws console vm1` prints the answer. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "app/cli.h"

#define DETACH_KEY 0x1d /* Ctrl-] */

static struct termios saved_tio;
static volatile sig_atomic_t tio_saved;

static void restore_terminal(void)
{
    if (tio_saved) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
        tio_saved = 0;
    }
}

static void on_fatal_signal(int sig)
{
    restore_terminal(); /* tcsetattr is async-signal-safe */
    signal(sig, SIG_DFL);
    raise(sig);
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int relay_interactive(const char *name, int sock)
{
    if (tcgetattr(STDIN_FILENO, &saved_tio) < 0)
        return cli_error("cannot read the terminal settings: %s", strerror(errno));
    struct termios raw = saved_tio;
    cfmakeraw(&raw);
    atexit(restore_terminal);
    static const int sigs[] = {SIGTERM, SIGHUP, SIGINT, SIGQUIT};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], on_fatal_signal);
    tio_saved = 1;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) < 0) {
        tio_saved = 0;
        return cli_error("cannot put the terminal in raw mode: %s", strerror(errno));
    }
    fprintf(stderr, "Connected to the console of VM '%s'. Press Ctrl-] to detach.\r\n", name);

    char buf[4096];
    for (;;) {
        struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
                              {.fd = sock, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents) {
            ssize_t n = read(sock, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                restore_terminal();
                fprintf(stderr, "\r\n[VM '%s' closed its console: it stopped]\n", name);
                return 0;
            }
            if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
                break;
        }
        if (p[0].revents) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break; /* the terminal went away */
            char *k = memchr(buf, DETACH_KEY, (size_t)n);
            size_t len = k ? (size_t)(k - buf) : (size_t)n;
            if (len && write_all(sock, buf, len) < 0)
                break;
            if (k) {
                restore_terminal();
                fprintf(stderr, "\r\n[detached from VM '%s'; it keeps running]\n", name);
                return 0;
            }
        }
    }
    restore_terminal();
    fprintf(stderr, "\r\n[console of VM '%s' disconnected]\n", name);
    return 0;
}

static int relay_pipe(int sock, int idle_ms)
{
    bool stdin_open = true;
    int64_t last = mono_ms();
    char buf[16384];
    for (;;) {
        struct pollfd p[2] = {{.fd = sock, .events = POLLIN},
                              {.fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN}};
        int timeout = -1;
        if (!stdin_open) {
            int64_t left = last + idle_ms - mono_ms();
            if (left <= 0)
                return 0; /* quiet for long enough: the answer is complete */
            timeout = (int)left;
        }
        int pr = poll(p, 2, timeout);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0)
            return cli_error("poll: %s", strerror(errno));
        if (p[0].revents) {
            ssize_t n = read(sock, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return 0; /* the VM ended */
            if (write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
                return 0; /* nobody reads our output any more */
            last = mono_ms();
        }
        if (stdin_open && p[1].revents) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                stdin_open = false;
                last = mono_ms();
                continue;
            }
            if (write_all(sock, buf, (size_t)n) < 0)
                stdin_open = false; /* the VM is going away; drain what is left */
        }
    }
}

int cli_console_attach(const char *name, int idle_ms)
{
    struct vm_paths p;
    if (cli_vm_open(name, &p, NULL))
        return 1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t plen = strlen(p.console_sock);
    if (plen >= sizeof(sa.sun_path))
        return cli_error("%s: socket path too long", p.console_sock);
    memcpy(sa.sun_path, p.console_sock, plen + 1);
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return cli_error("socket: %s", strerror(errno));
    if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(sock);
        struct cli_vm_state st;
        cli_vm_query(&p, NULL, &st);
        if (!st.running)
            return cli_error("VM '%s' is not running (start it with 'vmws start %s')", name, name);
        return cli_error("cannot connect to the console of VM '%s' at %s: %s", name, p.console_sock,
                         strerror(e));
    }
    signal(SIGPIPE, SIG_IGN);
    int rc = isatty(STDIN_FILENO) ? relay_interactive(name, sock) : relay_pipe(sock, idle_ms);
    close(sock);
    return rc;
}

int cmd_console(int argc, char **argv)
{
    static const struct option opts[] = {
        {"idle", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int idle_ms = 1000;
    int c;
    while ((c = cli_getopt(argc, argv, opts)) != -1) {
        switch (c) {
        case 'h':
            return cli_print_help(argv[0]);
        case 'i': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 0 || v > 3600 * 1000)
                return cli_usage_error(argv[0], "bad --idle '%s' (expected milliseconds)", optarg);
            idle_ms = (int)v;
            break;
        }
        default:
            return EXIT_USAGE;
        }
    }
    int rc = cli_positional(argc, argv, 1, "the VM's NAME");
    return rc ? rc : cli_console_attach(argv[optind], idle_ms);
}
