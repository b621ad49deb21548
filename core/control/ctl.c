/* The JSON control socket's server (QMP-like: greeting, execute/return/error, events).
 * The one idea: the server thread never blocks on a client. Every client socket is
 * non-blocking; replies and events go into a per-client outgoing buffer that is flushed as the
 * socket accepts data, and a client whose buffer grows past CTL_OUTBUF_MAX (it stopped reading)
 * is dropped. Requests are lines of at most CTL_LINE_MAX bytes; other threads hand events to
 * the server thread through a locked queue and an eventfd. */
#include "core/control/ctl.h"
#include "core/util/linebuf.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CTL_LINE_MAX (64 * 1024)       /* longest request line the server accepts */
#define CTL_OUTBUF_MAX (1024 * 1024)   /* unsent bytes a client may have before it is dropped */
#define CTL_EVENTS_QUEUE_MAX (4 << 20) /* events waiting for the server thread */
#define CTL_CLIENTS_MAX 64

/* ---- listening socket (shared with the console server) ------------------------------------ */

int ctl_listener_open(struct ctl_listener *l, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    l->fd = -1;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "%s: socket path too long (at most %zu bytes)", path,
                 sizeof(sa.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    snprintf(l->path, sizeof(l->path), "%s", path);

    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "%s: exists and is not a socket (move it away)", path);
            return -EEXIST;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0) {
            snprintf(err, errlen, "socket: %s", strerror(errno));
            return -errno;
        }
        int rc = connect(probe, (struct sockaddr *)&sa, sizeof(sa));
        int e = errno;
        close(probe);
        if (rc == 0 || e != ECONNREFUSED) {
            snprintf(err, errlen,
                     "%s: another process is already listening here (is the VM already "
                     "running?)",
                     path);
            return -EADDRINUSE;
        }
        unlink(path); /* stale: its owner died without cleaning up */
    }

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "socket: %s", strerror(e));
        return -e;
    }
    /* Nobody can connect before listen(), so fixing the mode between bind and listen leaves
     * no window in which the socket is reachable with a wider mode. */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0 ||
        stat(path, &st) < 0 || listen(fd, 16) < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    l->fd = fd;
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    return 0;
}

int ctl_start_thread(pthread_t *thread, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(thread, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

void ctl_listener_close(struct ctl_listener *l)
{
    if (l->fd < 0)
        return;
    struct stat st;
    if (lstat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
        unlink(l->path);
    close(l->fd);
    l->fd = -1;
}

/* ---- server ------------------------------------------------------------------------------- */

struct ctl_conn {
    int fd;
    bool dead;
    bool discarding; /* inside an over-long line: drop bytes up to the next newline */
    struct buf in, out;
};

struct ctl_server {
    struct ctl_listener listener;
    int wakefd;
    pthread_t thread;
    pthread_mutex_t lock; /* protects events and stopping */
    struct buf events;
    bool stopping;
    char *greeting; /* the greeting line, newline included */
    const struct ctl_command *cmds;
    size_t ncmds;
    void *opaque;
    struct ctl_conn *conns[CTL_CLIENTS_MAX];
    size_t nconns;
};

static void conn_flush(struct ctl_conn *c)
{
    while (!c->dead && c->out.len && c->fd >= 0) { /* fd -1: ctl_handle_bytes keeps the replies */
        ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                c->dead = true;
            return;
        }
        buf_consume(&c->out, (size_t)n);
    }
}

static void conn_queue(struct ctl_conn *c, const char *line, size_t len)
{
    if (c->dead)
        return;
    if (c->out.len + len > CTL_OUTBUF_MAX || buf_append(&c->out, line, len) < 0) {
        c->dead = true; /* it stopped reading: drop it rather than grow without bound */
        return;
    }
    conn_flush(c);
}

static void conn_send_json(struct ctl_conn *c, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    if (!s) {
        c->dead = true;
        return;
    }
    size_t n = strlen(s);
    s[n] = '\n'; /* json_dumps allocated n+1 bytes; the NUL becomes the line end */
    conn_queue(c, s, n + 1);
    free(s);
}

static json_t *error_reply(const char *cls, const char *desc)
{
    return json_pack("{s:{s:s,s:s}}", "error", "class", cls, "desc", desc);
}

static json_t *query_commands(struct ctl_server *s)
{
    json_t *list = json_array();
    bool have_builtin = false;
    for (size_t i = 0; i < s->ncmds; i++) {
        json_array_append_new(list, json_pack("{s:s}", "name", s->cmds[i].name));
        have_builtin |= strcmp(s->cmds[i].name, "query-commands") == 0;
    }
    if (!have_builtin)
        json_array_append_new(list, json_pack("{s:s}", "name", "query-commands"));
    return list;
}

/* Runs one request line and returns the reply (without the id). */
static json_t *run_request(struct ctl_server *s, json_t *req)
{
    char desc[512];
    if (!json_is_object(req))
        return error_reply("GenericError", "request must be a JSON object like "
                                           "{\"execute\": \"query-commands\"}");
    json_t *exec = json_object_get(req, "execute");
    if (!json_is_string(exec))
        return error_reply("GenericError",
                           "missing \"execute\": expected {\"execute\": COMMAND-NAME, "
                           "\"arguments\": {...}}");
    json_t *args = json_object_get(req, "arguments");
    if (args && !json_is_object(args))
        return error_reply("GenericError", "\"arguments\" must be an object");
    const char *name = json_string_value(exec);
    const struct ctl_command *cmd = NULL;
    for (size_t i = 0; i < s->ncmds; i++) {
        if (strcmp(s->cmds[i].name, name) == 0)
            cmd = &s->cmds[i];
    }
    if (!cmd) {
        if (strcmp(name, "query-commands") == 0)
            return json_pack("{s:o}", "return", query_commands(s));
        snprintf(desc, sizeof(desc), "The command %s has not been found (see query-commands)",
                 name);
        return error_reply("CommandNotFound", desc);
    }
    json_t *a = args ? json_incref(args) : json_object();
    struct ctl_error cerr = {0};
    json_t *ret = cmd->fn(s->opaque, a, &cerr);
    json_decref(a);
    if (!ret) {
        if (!cerr.desc[0])
            snprintf(cerr.desc, sizeof(cerr.desc), "command %s failed", name);
        return error_reply(cerr.cls ? cerr.cls : "GenericError", cerr.desc);
    }
    return json_pack("{s:o}", "return", ret);
}

static void handle_line(struct ctl_server *s, struct ctl_conn *c, char *line, size_t len)
{
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    size_t skip = 0;
    while (skip < len && (line[skip] == ' ' || line[skip] == '\t'))
        skip++;
    if (skip == len)
        return; /* blank line: nothing to do */

    json_error_t jerr;
    json_t *req = json_loadb(line + skip, len - skip, 0, &jerr);
    json_t *reply;
    if (!req) {
        char desc[512];
        snprintf(desc, sizeof(desc), "malformed JSON: %s (at column %d)", jerr.text, jerr.column);
        reply = error_reply("GenericError", desc);
    } else {
        reply = run_request(s, req);
        json_t *id = json_is_object(req) ? json_object_get(req, "id") : NULL;
        if (id)
            json_object_set(reply, "id", id);
        json_decref(req);
    }
    conn_send_json(c, reply);
    json_decref(reply);
}

static void conn_feed(struct ctl_server *s, struct ctl_conn *c, const char *data, size_t n)
{
    while (n && !c->dead) {
        const char *nl = memchr(data, '\n', n);
        size_t take = nl ? (size_t)(nl - data) : n;
        size_t used = take + (nl ? 1 : 0);
        if (c->discarding) {
            c->discarding = !nl;
        } else if (c->in.len + take > CTL_LINE_MAX) {
            char desc[128];
            snprintf(desc, sizeof(desc),
                     "request line too long (more than %d bytes); the line was dropped",
                     CTL_LINE_MAX);
            json_t *reply = error_reply("GenericError", desc);
            conn_send_json(c, reply);
            json_decref(reply);
            c->in.len = 0;
            c->discarding = !nl;
        } else if (buf_append(&c->in, data, take) < 0) {
            c->dead = true;
        } else if (nl) {
            handle_line(s, c, c->in.data, c->in.len);
            c->in.len = 0;
        }
        data += used;
        n -= used;
    }
}

char *ctl_handle_bytes(const struct ctl_command *cmds, size_t ncmds, void *opaque, const char *data,
                       size_t n, size_t *len)
{
    struct ctl_server s = {.cmds = cmds, .ncmds = ncmds, .opaque = opaque};
    struct ctl_conn c = {.fd = -1};
    conn_feed(&s, &c, data, n);
    buf_free(&c.in); /* a partial last line is dropped, as at EOF */
    if (c.dead || buf_append(&c.out, "", 0) < 0) {
        buf_free(&c.out);
        return NULL;
    }
    *len = c.out.len;
    return c.out.data;
}

static void conn_read(struct ctl_server *s, struct ctl_conn *c)
{
    char buf[16384];
    /* Bounded per wakeup so one chatty client cannot starve the others. */
    for (int round = 0; round < 8 && !c->dead; round++) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                c->dead = true;
            return;
        }
        if (n == 0) {
            c->dead = true; /* EOF; a partial last line is dropped */
            return;
        }
        conn_feed(s, c, buf, (size_t)n);
    }
}

static void conn_free(struct ctl_conn *c)
{
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

static void server_accept(struct ctl_server *s)
{
    for (;;) {
        int fd = accept4(s->listener.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or a transient error: poll again */
        if (s->nconns == CTL_CLIENTS_MAX) {
            static const char busy[] = "{\"error\":{\"class\":\"GenericError\",\"desc\":"
                                       "\"too many clients\"}}\n";
            if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                /* nothing more to tell it */
            }
            close(fd);
            continue;
        }
        struct ctl_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
        c->fd = fd;
        s->conns[s->nconns++] = c;
        conn_queue(c, s->greeting, strlen(s->greeting));
    }
}

/* Moves queued events to every client. Returns true if the server should stop. */
static bool server_take_events(struct ctl_server *s)
{
    uint64_t v;
    if (read(s->wakefd, &v, sizeof(v)) < 0) {
        /* EAGAIN: a spurious wakeup */
    }
    pthread_mutex_lock(&s->lock);
    struct buf ev = s->events;
    memset(&s->events, 0, sizeof(s->events));
    bool stop = s->stopping;
    pthread_mutex_unlock(&s->lock);
    if (ev.len) {
        for (size_t i = 0; i < s->nconns; i++)
            conn_queue(s->conns[i], ev.data, ev.len);
    }
    buf_free(&ev);
    return stop;
}

static void *server_main(void *arg)
{
    struct ctl_server *s = arg;
    struct pollfd pfd[CTL_CLIENTS_MAX + 2];
    struct ctl_conn *polled[CTL_CLIENTS_MAX];
    for (;;) {
        pfd[0] = (struct pollfd){.fd = s->listener.fd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = s->wakefd, .events = POLLIN};
        size_t np = s->nconns;
        for (size_t i = 0; i < np; i++) {
            polled[i] = s->conns[i];
            pfd[2 + i] = (struct pollfd){
                .fd = polled[i]->fd,
                .events = (short)(POLLIN | (polled[i]->out.len ? POLLOUT : 0)),
            };
        }
        if (poll(pfd, 2 + np, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if ((pfd[1].revents & POLLIN) && server_take_events(s))
            break;
        for (size_t i = 0; i < np; i++) {
            struct ctl_conn *c = polled[i];
            short re = pfd[2 + i].revents;
            if (re & POLLOUT)
                conn_flush(c);
            if (re & (POLLIN | POLLHUP | POLLERR))
                conn_read(s, c);
        }
        if (pfd[0].revents & POLLIN)
            server_accept(s);
        size_t keep = 0;
        for (size_t i = 0; i < s->nconns; i++) {
            if (s->conns[i]->dead)
                conn_free(s->conns[i]);
            else
                s->conns[keep++] = s->conns[i];
        }
        s->nconns = keep;
    }
    return NULL;
}

struct ctl_server *ctl_server_start(const char *path, json_t *greeting,
                                    const struct ctl_command *cmds, size_t ncmds, void *opaque,
                                    char *err, size_t errlen)
{
    struct ctl_server *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cmds = cmds;
    s->ncmds = ncmds;
    s->opaque = opaque;
    s->wakefd = -1;
    s->listener.fd = -1;
    pthread_mutex_init(&s->lock, NULL);

    json_t *g = json_pack("{s:O}", "vmws", greeting ? greeting : json_null());
    char *gs = g ? json_dumps(g, JSON_COMPACT) : NULL;
    json_decref(g);
    if (!gs || asprintf(&s->greeting, "%s\n", gs) < 0) {
        free(gs);
        snprintf(err, errlen, "cannot encode the greeting");
        goto fail;
    }
    free(gs);

    s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wakefd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (ctl_listener_open(&s->listener, path, err, errlen) < 0)
        goto fail;

    int rc = ctl_start_thread(&s->thread, server_main, s);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the control socket thread: %s", strerror(rc));
        goto fail;
    }
    return s;

fail:
    ctl_listener_close(&s->listener);
    if (s->wakefd >= 0)
        close(s->wakefd);
    free(s->greeting);
    pthread_mutex_destroy(&s->lock);
    free(s);
    return NULL;
}

static void wake(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is already non-zero, the thread will wake anyway */
    }
}

void ctl_server_event(struct ctl_server *s, const char *event, json_t *data)
{
    if (!s)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    json_t *d = data ? json_incref(data) : json_object();
    json_t *msg =
        json_pack("{s:s,s:o,s:{s:I,s:I}}", "event", event, "data", d, "timestamp", "seconds",
                  (json_int_t)tv.tv_sec, "microseconds", (json_int_t)tv.tv_usec);
    char *line = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (!line)
        return;
    pthread_mutex_lock(&s->lock);
    if (s->events.len + strlen(line) + 1 <= CTL_EVENTS_QUEUE_MAX) {
        buf_append(&s->events, line, strlen(line));
        buf_append(&s->events, "\n", 1);
    }
    pthread_mutex_unlock(&s->lock);
    free(line);
    wake(s->wakefd);
}

void ctl_server_stop(struct ctl_server *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_mutex_unlock(&s->lock);
    wake(s->wakefd);
    pthread_join(s->thread, NULL);
    for (size_t i = 0; i < s->nconns; i++) {
        conn_flush(s->conns[i]); /* best effort: a last event such as SHUTDOWN */
        conn_free(s->conns[i]);
    }
    ctl_listener_close(&s->listener);
    close(s->wakefd);
    buf_free(&s->events);
    free(s->greeting);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
