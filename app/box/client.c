/* `vmws box exec`'s side of the exec protocol (wire.h): one connection to the box's agent per
 * command; stdout and stderr relayed as they come, the command's exit status returned as
 * ours. The one idea: a connection that ends without an exit frame means the box died under
 * the command, and that is reported as a box failure (BOX_EXIT_FAILED, with why and the
 * console's tail), never as the command's own failure. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "app/box/box.h"
#include "app/box/wire.h"

static volatile sig_atomic_t interrupted, resized;

static void on_signal(int sig)
{
    interrupted = sig;
}

static void on_winch(int sig)
{
    (void)sig;
    resized = 1;
}

/* Our terminal's size as the protocol's {"rows", "cols"} (80x24 if unknown). */
static json_t *winsize_json(void)
{
    struct winsize ws = {0};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0 || !ws.ws_row || !ws.ws_col) {
        ws.ws_row = 24;
        ws.ws_col = 80;
    }
    return json_pack("{sisi}", "rows", (int)ws.ws_row, "cols", (int)ws.ws_col);
}

/* True if fds A and B are the same file (a test log that gets both stdout and stderr): the
 * command then gets one pipe for both, and their order is kept. */
static bool same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

static int write_out(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static json_t *request(const char *token, char *const argv[], const char *cwd, bool in,
                       bool merge, bool tty)
{
    extern char **environ;
    json_t *a = json_array(), *env = json_array();
    for (int i = 0; argv[i]; i++)
        json_array_append_new(a, json_string(argv[i]));
    for (char **e = environ; *e; e++) {
        json_t *s = json_string(*e); /* NULL for a variable that is not UTF-8: left out */
        if (s)
            json_array_append_new(env, s);
    }
    json_t *req = json_pack("{sssosssososb}", "token", token, "argv", a, "cwd", cwd, "env", env,
                            "stdin", json_boolean(in), "merge", merge);
    if (req && tty)
        json_object_set_new(req, "tty", winsize_json());
    return req;
}

/* The box went away under a command: wait for its supervisor to say why, and say it. */
static int box_failed(const char *dir, const char *cmd)
{
    struct box_status st;
    for (int i = 0; i < 100; i++) {
        if (box_status_read(dir, &st) == 0 && !st.running)
            break;
        usleep(100000);
    }
    fprintf(stderr, "vmws box: the box failed while running %s: %s\n", cmd,
            st.running ? "its agent stopped answering" : st.ended[0] ? st.ended : "unknown");
    box_print_console_tail(dir, 30);
    return BOX_EXIT_FAILED;
}

int box_exec(const char *dir, char *const argv[], const char *cwd, enum box_stdin stdin_mode,
             int timeout_s)
{
    struct box_status st;
    char token[128];
    if (box_status_read(dir, &st) < 0 || !st.running) {
        fprintf(stderr, "vmws box: no box is running in %s%s%s (start one with 'vmws box start')\n",
                dir, st.ended[0] ? "; the last one ended: " : "", st.ended);
        return BOX_EXIT_FAILED;
    }
    if (box_read_token(dir, token, sizeof(token)) < 0) {
        fprintf(stderr, "vmws box: cannot read the box's token in %s\n", dir);
        return BOX_EXIT_FAILED;
    }
    int s = box_connect(st.port, 10000);
    if (s < 0) {
        fprintf(stderr, "vmws box: the box's agent does not answer on 127.0.0.1:%d: %s\n", st.port,
                strerror(-s));
        return BOX_EXIT_FAILED;
    }
    bool tty = stdin_mode == BOX_STDIN_TTY && isatty(STDIN_FILENO);
    json_t *req = request(token, argv, cwd, stdin_mode != BOX_STDIN_NULL,
                          tty || same_file(1, 2), tty);
    int rc = req ? box_frame_write_json(s, BOX_REQUEST, req) : -ENOMEM;
    json_decref(req);
    if (rc < 0) {
        close(s);
        return box_failed(dir, argv[0]);
    }

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct termios saved;
    if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
        struct termios raw = saved;
        cfmakeraw(&raw);
        tcsetattr(STDIN_FILENO, TCSADRAIN, &raw);
        struct sigaction wa = {.sa_handler = on_winch};
        sigaction(SIGWINCH, &wa, NULL);
    } else {
        tty = false;
    }

    struct box_reader r = {0};
    int in = stdin_mode != BOX_STDIN_NULL ? 0 : -1;
    double deadline = timeout_s > 0 ? now_s() + timeout_s : 0;
    int result = -1;
    while (result < 0) {
        if (interrupted) {
            result = 128 + interrupted; /* closing the connection kills the command */
            break;
        }
        int wait_ms = -1;
        if (deadline) {
            double left = deadline - now_s();
            if (left <= 0) {
                fprintf(stderr, "vmws box: %s did not finish within %d s; killed\n", argv[0],
                        timeout_s);
                box_print_console_tail(dir, 20); /* a box kernel that hung says so there */
                result = BOX_EXIT_TIMEOUT;
                break;
            }
            wait_ms = left > 1 ? 1000 : (int)(left * 1000) + 1;
        }
        if (resized) {
            resized = 0;
            json_t *ws = winsize_json();
            box_frame_write_json(s, BOX_WINSIZE, ws);
            json_decref(ws);
        }
        struct pollfd p[2] = {{s, POLLIN, 0}, {in, POLLIN, 0}};
        if (poll(p, 2, wait_ms) < 0 && errno != EINTR)
            break;
        if (p[1].revents) {
            char buf[65536];
            ssize_t n = read(in, buf, sizeof(buf));
            if (n <= 0)
                in = -1;
            if (box_frame_write(s, BOX_STDIN, buf, n > 0 ? (size_t)n : 0) < 0)
                break;
        }
        if (!p[0].revents)
            continue;
        uint8_t type;
        rc = box_reader_step(&r, s, &type);
        if (rc < 0)
            break;
        if (rc == 0)
            continue;
        if (type == BOX_STDOUT || type == BOX_STDERR) {
            write_out(type == BOX_STDOUT ? 1 : 2, r.data, r.len);
        } else if (type == BOX_EXIT) {
            json_t *j = box_reader_json(&r);
            const char *err = json_string_value(json_object_get(j, "error"));
            if (err)
                fprintf(stderr, "vmws box: the agent refused to run %s: %s\n", argv[0], err);
            result = err ? BOX_EXIT_FAILED
                     : json_object_get(j, "signal")
                         ? 128 + (int)json_integer_value(json_object_get(j, "signal"))
                         : (int)json_integer_value(json_object_get(j, "exit"));
            json_decref(j);
        }
    }
    box_reader_free(&r);
    close(s);
    if (tty)
        tcsetattr(STDIN_FILENO, TCSADRAIN, &saved);
    return result >= 0 ? result : box_failed(dir, argv[0]);
}
