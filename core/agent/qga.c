/* The guest agent client (see qga.h). Replies are lines; after a guest-sync-delimited the agent
 * sends 0xFF first, so everything before it is dropped. Locks: calls are serialised by
 * call_lock; the receive buffer and the connected flag are under lock, which qga_receive takes
 * from the device's thread and a call holds only between its waits. */
#include "core/agent/qga.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/util/deadline.h"

#define RX_MAX 65536 /* a longer reply is the agent's garbage: dropped */
#define SYNC_TIMEOUT_MS 2000

struct qga {
    qga_send_fn send;
    void *opaque;
    pthread_mutex_t call_lock;
    pthread_mutex_t lock; /* guards below */
    pthread_cond_t cond;
    bool connected, closing;
    unsigned active; /* calls in qga_call */
    uint64_t gen;    /* bumps at every connect or disconnect: a call in flight fails */
    size_t rx_len;
    uint8_t rx[RX_MAX];
};

struct qga *qga_create(qga_send_fn send, void *opaque)
{
    struct qga *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->send = send;
    a->opaque = opaque;
    pthread_mutex_init(&a->call_lock, NULL);
    pthread_mutex_init(&a->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cond, &ca);
    pthread_condattr_destroy(&ca);
    return a;
}

void qga_destroy(struct qga *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    a->closing = true;
    pthread_cond_broadcast(&a->cond);
    while (a->active)
        pthread_cond_wait(&a->cond, &a->lock);
    pthread_mutex_unlock(&a->lock);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->call_lock);
    free(a);
}

void qga_receive(struct qga *a, const uint8_t *buf, size_t len)
{
    pthread_mutex_lock(&a->lock);
    if (len > RX_MAX - a->rx_len)
        a->rx_len = 0; /* no reply is that long: start again at the next 0xFF or line */
    if (len <= RX_MAX - a->rx_len) {
        memcpy(a->rx + a->rx_len, buf, len);
        a->rx_len += len;
    }
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

void qga_set_connected(struct qga *a, bool connected)
{
    pthread_mutex_lock(&a->lock);
    if (a->connected != connected) {
        a->connected = connected;
        a->gen++;
        a->rx_len = 0;
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
}

bool qga_connected(struct qga *a)
{
    pthread_mutex_lock(&a->lock);
    bool c = a->connected;
    pthread_mutex_unlock(&a->lock);
    return c;
}

static void rx_drop(struct qga *a, size_t n)
{
    memmove(a->rx, a->rx + n, a->rx_len - n);
    a->rx_len -= n;
}

/* The next whole line as JSON (under lock): 1 with *OUT (NULL if the line is not JSON), 0 if
 * no line is complete yet. With MARKER, first drops everything up to a 0xFF (0 until one came). */
static int take_line(struct qga *a, bool *marker, json_t **out)
{
    if (*marker) {
        uint8_t *ff = memchr(a->rx, 0xff, a->rx_len);
        if (!ff) {
            a->rx_len = 0;
            return 0;
        }
        rx_drop(a, (size_t)(ff - a->rx) + 1);
        *marker = false;
    }
    uint8_t *nl = memchr(a->rx, '\n', a->rx_len);
    if (!nl)
        return 0;
    size_t n = (size_t)(nl - a->rx) + 1;
    *out = json_loadb((const char *)a->rx, n, 0, NULL);
    rx_drop(a, n);
    return 1;
}

/* Waits (under lock) for a reply object until DEADLINE: 1 with *OUT, or -errno. */
static int wait_reply(struct qga *a, uint64_t gen, bool *marker, const struct timespec *deadline,
                      json_t **out)
{
    for (;;) {
        if (a->closing)
            return -ESHUTDOWN;
        if (a->gen != gen)
            return -ENOTCONN;
        json_t *j = NULL;
        if (take_line(a, marker, &j)) {
            if (json_is_object(j) &&
                (json_object_get(j, "return") || json_object_get(j, "error"))) {
                *out = j;
                return 1;
            }
            json_decref(j); /* not a reply: skipped */
            continue;
        }
        if (pthread_cond_timedwait(&a->cond, &a->lock, deadline) == ETIMEDOUT)
            return -ETIMEDOUT;
    }
}

static int send_json(struct qga *a, bool marker, json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        return -ENOMEM;
    size_t n = strlen(text);
    char *buf = malloc(n + 2);
    int r = -ENOMEM;
    if (buf) {
        size_t off = 0;
        if (marker)
            buf[off++] = (char)0xff; /* resets the agent's parser */
        memcpy(buf + off, text, n);
        buf[off + n] = '\n';
        r = a->send(a->opaque, buf, off + n + 1);
    }
    free(buf);
    free(text);
    return r;
}

static int call_locked(struct qga *a, const char *cmd, json_t *args, unsigned timeout_ms,
                       bool no_reply, json_t **ret, char *err, size_t errlen)
{
    pthread_mutex_lock(&a->lock);
    if (!a->connected || a->closing) {
        pthread_mutex_unlock(&a->lock);
        json_decref(args);
        snprintf(err, errlen, "no guest agent (nothing in the guest has the port open)");
        return -ENOTCONN;
    }
    uint64_t gen = a->gen;
    a->rx_len = 0;
    pthread_mutex_unlock(&a->lock);

    /* The handshake: our id back, after the agent's 0xFF. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    json_int_t id = (json_int_t)((ts.tv_nsec ^ (long)ts.tv_sec << 20 ^ rand()) & 0x3fffffff);
    json_t *j = NULL;
    int r = send_json(
        a, true,
        json_pack("{s:s, s:{s:I}}", "execute", "guest-sync-delimited", "arguments", "id", id));
    struct timespec deadline = deadline_in_ms(timeout_ms < SYNC_TIMEOUT_MS ? timeout_ms : SYNC_TIMEOUT_MS);
    pthread_mutex_lock(&a->lock);
    bool marker = true;
    while (r == 0) {
        r = wait_reply(a, gen, &marker, &deadline, &j);
        if (r < 0)
            break;
        json_t *got = json_object_get(j, "return");
        bool ours = json_is_integer(got) && json_integer_value(got) == id;
        json_decref(j);
        j = NULL;
        if (ours) {
            r = 0;
            break;
        }
        r = 0;
    }
    pthread_mutex_unlock(&a->lock);
    if (r < 0) {
        json_decref(args);
        snprintf(err, errlen, "%s",
                 r == -ETIMEDOUT   ? "the guest agent did not answer its handshake (hung, or "
                                     "not an agent on the port)"
                 : r == -ENOTCONN  ? "the guest agent closed the port"
                 : r == -ESHUTDOWN ? "the VM is going away"
                                   : "cannot write to the guest agent's port");
        return r;
    }

    json_t *msg = json_pack("{s:s}", "execute", cmd);
    if (args)
        json_object_set_new(msg, "arguments", args);
    r = send_json(a, false, msg);
    deadline = deadline_in_ms(timeout_ms);
    pthread_mutex_lock(&a->lock);
    marker = false;
    if (r == 0)
        r = wait_reply(a, gen, &marker, &deadline, &j);
    pthread_mutex_unlock(&a->lock);
    if (no_reply && r == -ETIMEDOUT)
        return 0; /* no error within the time: it is doing it */
    if (no_reply && r == -ENOTCONN)
        return 0; /* shutting down closes the port */
    if (r < 0) {
        snprintf(err, errlen, "%s: %s", cmd,
                 r == -ETIMEDOUT   ? "the guest agent did not answer in time"
                 : r == -ENOTCONN  ? "the guest agent closed the port"
                 : r == -ESHUTDOWN ? "the VM is going away"
                                   : "cannot write to the guest agent's port");
        return r;
    }
    json_t *e = json_object_get(j, "error");
    if (e) {
        const char *desc = json_string_value(json_object_get(e, "desc"));
        snprintf(err, errlen, "%s: the guest agent says: %s", cmd, desc ? desc : "error");
        json_decref(j);
        return -EIO;
    }
    if (ret)
        *ret = json_incref(json_object_get(j, "return"));
    json_decref(j);
    return 0;
}

int qga_call(struct qga *a, const char *cmd, json_t *args, unsigned timeout_ms, bool no_reply,
             json_t **ret, char *err, size_t errlen)
{
    if (ret)
        *ret = NULL;
    pthread_mutex_lock(&a->lock);
    a->active++;
    pthread_mutex_unlock(&a->lock);
    pthread_mutex_lock(&a->call_lock);
    int r = call_locked(a, cmd, args, timeout_ms, no_reply, ret, err, errlen);
    pthread_mutex_unlock(&a->call_lock);
    pthread_mutex_lock(&a->lock);
    if (--a->active == 0)
        pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    return r;
}
