/* Child `vmws` commands for the dashboard (see jobs.h). Children get /dev/null as stdin and
 * pipes as stdout/stderr, never the dashboard's terminal, so nothing they print can tear the
 * screen. They are started from /proc/self/exe: the very binary that runs the dashboard. */
#include "ui/jobs.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int job_start(struct job *j, enum job_kind kind, const char *vm, const char *desc,
              const char *const *argv)
{
    /* /proc/self/exe, not its readlink(): it still works after a rebuild replaced the file */
    const char *args[JOB_ARGS_MAX + 2];
    size_t a = 0;
    args[a++] = "vmws";
    for (size_t i = 0; argv[i] && a <= JOB_ARGS_MAX; i++)
        args[a++] = argv[i];
    args[a] = NULL;

    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(err, O_CLOEXEC) < 0) {
        int e = -errno;
        close(out[0]);
        close(out[1]);
        return e;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = -errno;
        close(out[0]);
        close(out[1]);
        close(err[0]);
        close(err[1]);
        return e;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        execv("/proc/self/exe", (char *const *)args);
        dprintf(2, "cannot run /proc/self/exe: %s\n", strerror(errno));
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    memset(j, 0, sizeof(*j));
    j->used = true;
    j->kind = kind;
    j->pid = pid;
    j->out_fd = out[0];
    j->err_fd = err[0];
    fcntl(j->out_fd, F_SETFL, O_NONBLOCK);
    fcntl(j->err_fd, F_SETFL, O_NONBLOCK);
    j->started_ms = mono_ms();
    snprintf(j->vm, sizeof(j->vm), "%s", vm ? vm : "");
    snprintf(j->desc, sizeof(j->desc), "%s", desc ? desc : "");
    return 0;
}

int job_pollfds(const struct job *j, struct pollfd *pfd)
{
    int n = 0;
    if (!j->used || j->done)
        return 0;
    if (j->out_fd >= 0)
        pfd[n++] = (struct pollfd){.fd = j->out_fd, .events = POLLIN};
    if (j->err_fd >= 0)
        pfd[n++] = (struct pollfd){.fd = j->err_fd, .events = POLLIN};
    return n;
}

/* Reads what FD has; returns false at EOF or on an error. */
static bool drain(int fd, struct job *j, bool is_out)
{
    char buf[8192];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK;
        if (n == 0)
            return false;
        if (is_out) {
            if (j->out_len + (size_t)n + 1 > j->out_cap && j->out_len < (8u << 20)) {
                size_t cap = (j->out_len + (size_t)n + 1) * 2;
                char *p = realloc(j->out, cap);
                if (!p)
                    continue;
                j->out = p;
                j->out_cap = cap;
            }
            if (j->out_len + (size_t)n + 1 <= j->out_cap) {
                memcpy(j->out + j->out_len, buf, (size_t)n);
                j->out_len += (size_t)n;
                j->out[j->out_len] = '\0';
            }
        } else {
            size_t room = sizeof(j->err) - 1 - j->err_len;
            size_t take = (size_t)n < room ? (size_t)n : room;
            memcpy(j->err + j->err_len, buf, take);
            j->err_len += take;
            j->err[j->err_len] = '\0';
        }
    }
}

bool job_service(struct job *j)
{
    if (!j->used || j->done)
        return false;
    if (j->out_fd >= 0 && !drain(j->out_fd, j, true)) {
        close(j->out_fd);
        j->out_fd = -1;
    }
    if (j->err_fd >= 0 && !drain(j->err_fd, j, false)) {
        close(j->err_fd);
        j->err_fd = -1;
    }
    if (j->out_fd >= 0 || j->err_fd >= 0)
        return false;
    int st;
    pid_t r = waitpid(j->pid, &st, 0); /* both pipes closed: the child is exiting */
    if (r == j->pid)
        j->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    else
        j->status = 127;
    j->done = true;
    if (!j->out) {
        j->out = calloc(1, 1);
        j->out_cap = j->out ? 1 : 0;
    }
    return true;
}

void job_release(struct job *j)
{
    if (!j->used)
        return;
    if (!j->done) {
        kill(j->pid, SIGTERM);
        waitpid(j->pid, NULL, 0);
    }
    if (j->out_fd >= 0)
        close(j->out_fd);
    if (j->err_fd >= 0)
        close(j->err_fd);
    free(j->out);
    memset(j, 0, sizeof(*j));
    j->out_fd = j->err_fd = -1;
}

static void last_line(const char *text, char *buf, size_t len)
{
    buf[0] = '\0';
    if (!text)
        return;
    const char *end = text + strlen(text);
    while (end > text && (end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\r'))
        end--;
    const char *start = end;
    while (start > text && start[-1] != '\n')
        start--;
    size_t n = (size_t)(end - start);
    if (n >= len)
        n = len - 1;
    memcpy(buf, start, n);
    buf[n] = '\0';
}

void job_message(const struct job *j, char *buf, size_t len)
{
    last_line(j->err, buf, len);
    if (!buf[0])
        last_line(j->out, buf, len);
    /* "vmws: " adds nothing on a dashboard that is vmws */
    if (strncmp(buf, "vmws: ", 6) == 0)
        memmove(buf, buf + 6, strlen(buf + 6) + 1);
}
