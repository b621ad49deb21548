/* End-to-end test helpers (see e2e.h). */
#include "tests/e2e/e2e.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char home[128], runtime[160];

const char *vmws_bin(void)
{
    const char *b = getenv("VMWS_BIN");
    return b && *b ? b : "./vmws";
}

const char *e2e_home(void)
{
    return home;
}

void e2e_setup(void)
{
    snprintf(home, sizeof(home), "/tmp/vmws-test-XXXXXX");
    if (!mkdtemp(home)) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(runtime, sizeof(runtime), "%s/run", home);
    mkdir(runtime, 0700);
    setenv("VMWS_HOME", home, 1);
    setenv("VMWS_RUNTIME_DIR", runtime, 1);
    unsetenv("DISPLAY");
    unsetenv("WAYLAND_DISPLAY");

    /* A reaper cleans up however this test process ends (a failed assertion exits it before
     * e2e_teardown, a timeout kills it): it waits for the pipe to close, then tears down. */
    int p[2];
    if (pipe2(p, O_CLOEXEC) == 0) {
        pid_t reaper = fork();
        if (reaper == 0) {
            setsid(); /* check kills a finished test's process group: the reaper must outlive it */
            close(p[1]);
            char b;
            while (read(p[0], &b, 1) > 0)
                ;
            e2e_teardown();
            _exit(0);
        }
        close(p[0]); /* the write end stays open in this process until it exits */
    }
}

void e2e_teardown(void)
{
    char cmd[1024];
    /* Any VMM still running under this home: kill it so a failed test leaves nothing behind. */
    snprintf(cmd, sizeof(cmd),
             "[ -d %s ] || exit 0; for p in %s/*/vmm.pid; do [ -f \"$p\" ] && "
             "kill -9 $(cat \"$p\") 2>/dev/null; done; sleep 0.2; rm -rf %s",
             home, home, home);
    int r = system(cmd);
    (void)r;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int vmws_cmdv(char *out, size_t outlen, int timeout_s, const char *arg, va_list ap)
{
    const char *argv[32];
    int argc = 0;
    argv[argc++] = vmws_bin();
    for (const char *a = arg; a && argc < 31; a = va_arg(ap, const char *))
        argv[argc++] = a;
    argv[argc] = NULL;

    int p[2];
    if (pipe(p) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    long deadline = now_ms() + timeout_s * 1000L;
    for (;;) {
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        long left = deadline - now_ms();
        if (left <= 0)
            break;
        if (poll(&pfd, 1, (int)left) <= 0)
            continue;
        char tmp[4096];
        ssize_t n = read(p[0], tmp, sizeof(tmp));
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n && out && len + 1 < outlen; i++)
            out[len++] = tmp[i];
    }
    if (out && outlen)
        out[len] = '\0';
    close(p[0]);
    int status;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(10000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int vmws_cmd(char *out, size_t outlen, int timeout_s, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int r = vmws_cmdv(out, outlen, timeout_s, arg, ap);
    va_end(ap);
    return r;
}

json_t *vmws_json(const char *arg, ...)
{
    static char out[1 << 16];
    va_list ap;
    va_start(ap, arg);
    int r = vmws_cmdv(out, sizeof(out), 30, arg, ap);
    va_end(ap);
    if (r != 0) {
        fprintf(stderr, "vmws %s failed (%d): %s\n", arg, r, out);
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loads(out, 0, &e);
    if (!j)
        fprintf(stderr, "vmws %s: not JSON (%s): %s\n", arg, e.text, out);
    return j;
}

struct console *console_open(const char *name)
{
    struct console *c = calloc(1, sizeof(*c));
    int in[2], out[2];
    if (!c || pipe(in) < 0 || pipe(out) < 0)
        return NULL;
    c->pid = fork();
    if (c->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execl(vmws_bin(), vmws_bin(), "console", name, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    c->to_guest = in[1];
    c->from_guest = out[0];
    fcntl(c->from_guest, F_SETFL, O_NONBLOCK);
    return c;
}

void console_send(struct console *c, const char *text)
{
    size_t len = strlen(text);
    while (len) {
        ssize_t n = write(c->to_guest, text, len);
        if (n <= 0)
            return;
        text += n;
        len -= (size_t)n;
    }
}

static void console_pump(struct console *c, int timeout_ms)
{
    struct pollfd pfd = {.fd = c->from_guest, .events = POLLIN};
    if (poll(&pfd, 1, timeout_ms) <= 0)
        return;
    ssize_t n = read(c->from_guest, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (n > 0) {
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
    } else if (n == 0) {
        usleep(10000); /* EOF: the VM is gone; keep the caller's deadline */
    }
}

bool console_expect(struct console *c, const char *text, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    for (;;) {
        char *hit = strstr(c->buf + c->mark, text);
        if (hit) {
            c->mark = (size_t)(hit - c->buf) + strlen(text);
            return true;
        }
        long left = deadline - now_ms();
        if (left <= 0 || c->len + 1 >= sizeof(c->buf))
            return false;
        console_pump(c, (int)(left < 100 ? left : 100));
    }
}

bool console_run(struct console *c, const char *cmd, const char *text, int timeout_ms)
{
    console_send(c, cmd);
    console_send(c, "\n");
    return console_expect(c, text, timeout_ms);
}

const char *console_tail(struct console *c)
{
    return c->buf + c->mark;
}

void console_close(struct console *c)
{
    if (!c)
        return;
    close(c->to_guest);
    close(c->from_guest);
    kill(c->pid, SIGTERM);
    waitpid(c->pid, NULL, 0);
    free(c);
}

void e2e_dump_logs(const char *vm)
{
    static const char *const logs[] = {"serial.log", "vmm.log"};
    for (unsigned i = 0; i < 2; i++) {
        char path[1024], buf[2048];
        snprintf(path, sizeof(path), "%s/%s/%s", e2e_home(), vm, logs[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        long end = ftell(f);
        fseek(f, end > (long)sizeof(buf) - 1 ? end - (long)sizeof(buf) + 1 : 0, SEEK_SET);
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = 0;
        fclose(f);
        fprintf(stderr, "---- end of %s ----\n%s\n", path, buf);
    }
}

bool e2e_guest(const char *vm, const char *cmd, const char *expect, char *seen, size_t seenlen)
{
    struct console *c = console_open(vm);
    bool ok = c && console_run(c, cmd, expect, 30000) &&
              (strcmp(expect, "vmws> ") == 0 || console_expect(c, "vmws> ", 30000));
    if (seen && seenlen)
        snprintf(seen, seenlen, "%s", c ? c->buf : "");
    if (!ok) {
        fprintf(stderr, "guest '%s': expected '%s', saw: %s\n", cmd, expect, c ? c->buf : "");
        e2e_dump_logs(vm);
    }
    console_close(c);
    return ok;
}

pid_t vm_pid(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/vmm.pid", home, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long pid = -1;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = -1;
    fclose(f);
    return (pid_t)pid;
}

bool wait_pid_gone(pid_t pid, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return true;
        waitpid(pid, NULL, WNOHANG); /* reap if it is our child */
        usleep(20000);
    }
    return false;
}
