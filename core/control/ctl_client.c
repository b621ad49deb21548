/* The JSON control socket's client, used by the CLI and the dashboard: connect and read the
 * greeting, execute a command and wait for the reply with the same id, collect events.
 * The one idea: replies and events share one stream, so while waiting for a reply the client
 * keeps the events it reads (up to CTL_CLIENT_EVENTS_MAX) for ctl_client_next_event(). */
#include "core/control/ctl.h"
#include "core/util/linebuf.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CTL_CLIENT_LINE_MAX (64 << 20) /* longest reply line the client accepts */
#define CTL_CLIENT_EVENTS_MAX 256      /* events a client keeps while waiting for a reply */

struct ctl_client {
    int fd;
    char path[108];
    struct buf in;
    json_t *greeting_msg;
    json_t *events[CTL_CLIENT_EVENTS_MAX];
    size_t ev_head, ev_count;
    json_int_t next_id;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads one message. Returns 1 with *MSG, 0 on timeout, -1 on EOF/error (ERR set). */
static int client_read_msg(struct ctl_client *c, int64_t deadline, json_t **msg, char *err,
                           size_t errlen)
{
    for (;;) {
        char *nl = c->in.len ? memchr(c->in.data, '\n', c->in.len) : NULL;
        if (nl) {
            size_t len = (size_t)(nl - c->in.data);
            json_error_t jerr;
            json_t *m = json_loadb(c->in.data, len, 0, &jerr);
            buf_consume(&c->in, len + 1);
            if (!m || !json_is_object(m)) {
                json_decref(m);
                continue; /* not a message we understand: skip it */
            }
            *msg = m;
            return 1;
        }
        if (c->in.len > CTL_CLIENT_LINE_MAX) {
            snprintf(err, errlen, "%s: reply line too long", c->path);
            return -1;
        }
        int wait = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return 0;
            wait = left > INT32_MAX ? INT32_MAX : (int)left;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&p, 1, wait);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0) {
            snprintf(err, errlen, "%s: poll: %s", c->path, strerror(errno));
            return -1;
        }
        if (pr == 0)
            return 0;
        char buf[16384];
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "%s: %s", c->path, strerror(errno));
            return -1;
        }
        if (n == 0) {
            snprintf(err, errlen, "%s: the VMM closed the connection", c->path);
            return -1;
        }
        if (buf_append(&c->in, buf, (size_t)n) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
}

static int64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static void client_keep_event(struct ctl_client *c, json_t *ev)
{
    if (c->ev_count == CTL_CLIENT_EVENTS_MAX) { /* full: forget the oldest */
        json_decref(c->events[c->ev_head]);
        c->ev_head = (c->ev_head + 1) % CTL_CLIENT_EVENTS_MAX;
        c->ev_count--;
    }
    c->events[(c->ev_head + c->ev_count++) % CTL_CLIENT_EVENTS_MAX] = ev;
}

struct ctl_client *ctl_client_connect(const char *path, json_t **greeting, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "%s: socket path too long", path);
        return NULL;
    }
    strcpy(sa.sun_path, path);
    struct ctl_client *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(c->path, sizeof(c->path), "%s", path);
    c->next_id = 1;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    json_t *msg = NULL;
    int rc = client_read_msg(c, deadline_of(5000), &msg, err, errlen);
    if (rc == 0)
        snprintf(err, errlen, "%s: no greeting within 5 s (is the VMM hung?)", path);
    if (rc <= 0)
        goto fail;
    if (!json_object_get(msg, "vmws")) {
        json_decref(msg);
        snprintf(err, errlen, "%s: unexpected greeting (not a vmws control socket)", path);
        goto fail;
    }
    c->greeting_msg = msg;
    if (greeting)
        *greeting = json_object_get(msg, "vmws");
    return c;
fail:
    if (c->fd >= 0)
        close(c->fd);
    buf_free(&c->in);
    free(c);
    return NULL;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

json_t *ctl_client_execute(struct ctl_client *c, const char *command, json_t *arguments,
                           int timeout_ms, char *err, size_t errlen)
{
    json_int_t id = c->next_id++;
    json_t *req = json_pack("{s:s,s:I}", "execute", command, "id", id);
    if (arguments)
        json_object_set(req, "arguments", arguments);
    char *line = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!line) {
        snprintf(err, errlen, "cannot encode the request");
        return NULL;
    }
    size_t n = strlen(line);
    line[n] = '\n';
    int rc = send_all(c->fd, line, n + 1);
    free(line);
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", c->path, strerror(-rc));
        return NULL;
    }
    int64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        json_t *msg = NULL;
        int r = client_read_msg(c, deadline, &msg, err, errlen);
        if (r == 0)
            snprintf(err, errlen, "%s: no reply to '%s' within %d ms", c->path, command,
                     timeout_ms);
        if (r <= 0)
            return NULL;
        if (json_object_get(msg, "event")) {
            client_keep_event(c, msg);
            continue;
        }
        json_t *rid = json_object_get(msg, "id");
        if (!json_is_integer(rid) || json_integer_value(rid) != id) {
            json_decref(msg);
            continue; /* a reply to someone else's request */
        }
        json_t *ret = json_object_get(msg, "return");
        if (ret) {
            json_incref(ret);
            json_decref(msg);
            return ret;
        }
        json_t *e = json_object_get(msg, "error");
        const char *cls = json_string_value(json_object_get(e, "class"));
        const char *desc = json_string_value(json_object_get(e, "desc"));
        snprintf(err, errlen, "%s: %s", cls ? cls : "GenericError",
                 desc ? desc : "(no description)");
        json_decref(msg);
        return NULL;
    }
}

json_t *ctl_client_next_event(struct ctl_client *c, int timeout_ms)
{
    if (c->ev_count) {
        json_t *ev = c->events[c->ev_head];
        c->ev_head = (c->ev_head + 1) % CTL_CLIENT_EVENTS_MAX;
        c->ev_count--;
        return ev;
    }
    int64_t deadline = deadline_of(timeout_ms);
    char err[256];
    for (;;) {
        json_t *msg = NULL;
        if (client_read_msg(c, deadline, &msg, err, sizeof(err)) <= 0)
            return NULL;
        if (json_object_get(msg, "event"))
            return msg;
        json_decref(msg); /* a stray reply */
    }
}

void ctl_client_close(struct ctl_client *c)
{
    if (!c)
        return;
    close(c->fd);
    buf_free(&c->in);
    json_decref(c->greeting_msg);
    while (c->ev_count) {
        json_decref(c->events[c->ev_head]);
        c->ev_head = (c->ev_head + 1) % CTL_CLIENT_EVENTS_MAX;
        c->ev_count--;
    }
    free(c);
}
