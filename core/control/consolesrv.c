/* The serial console socket: guest output to every client and the serial log, client input
 * to the UART model. The one idea: one ring buffer holds the recent output and every reader
 * (each client, and the log) is just a position in it. console_server_output() only copies
 * into the ring and bumps an eventfd, so a vCPU thread never waits for a socket or a disk; a
 * reader that falls more than a ring behind skips ahead and is told how much it lost. */
#include "core/control/consolesrv.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
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
#include <time.h>
#include <unistd.h>

#include "core/control/ctl.h"

#define CONSOLE_RING_SIZE (256 * 1024)
#define CONSOLE_CLIENTS_MAX 16
#define CONSOLE_CHUNK 16384

struct console_reader {
    int fd;
    bool dead;
    uint64_t pos;  /* next ring offset (absolute) this reader gets */
    char note[96]; /* "bytes lost" marker still to send */
    size_t note_len;
};

struct console_server {
    struct ctl_listener listener;
    int wakefd;
    pthread_t thread;
    pthread_mutex_t lock; /* protects ring, head, stopping */
    unsigned char *ring;
    uint64_t head; /* total bytes ever output */
    bool stopping;
    struct console_reader log; /* fd -1 when there is no log file */
    char log_path[PATH_MAX];
    uint64_t log_size; /* bytes in the log file; at CONSOLE_LOG_MAX it moves to LOG.1 */
    console_input_fn input;
    void *opaque;
    struct console_reader clients[CONSOLE_CLIENTS_MAX];
    size_t nclients;
};

static void wake(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: already signalled */
    }
}

void console_server_output(struct console_server *s, const unsigned char *buf, size_t len)
{
    if (!s || !len)
        return;
    pthread_mutex_lock(&s->lock);
    uint64_t head = s->head;
    if (len > CONSOLE_RING_SIZE) { /* only the last ring's worth can be kept */
        head += len - CONSOLE_RING_SIZE;
        buf += len - CONSOLE_RING_SIZE;
        len = CONSOLE_RING_SIZE;
    }
    size_t off = (size_t)(head % CONSOLE_RING_SIZE);
    size_t first = len < CONSOLE_RING_SIZE - off ? len : CONSOLE_RING_SIZE - off;
    memcpy(s->ring + off, buf, first);
    memcpy(s->ring, buf + first, len - first);
    s->head = head + len;
    pthread_mutex_unlock(&s->lock);
    wake(s->wakefd);
}

/* Copies up to MAX bytes for reader R (which may have to skip lost bytes). Returns the count. */
static size_t ring_read(struct console_server *s, struct console_reader *r, unsigned char *out,
                        size_t max)
{
    pthread_mutex_lock(&s->lock);
    if (s->head - r->pos > CONSOLE_RING_SIZE) {
        uint64_t lost = s->head - CONSOLE_RING_SIZE - r->pos;
        r->pos = s->head - CONSOLE_RING_SIZE;
        int n = snprintf(r->note, sizeof(r->note),
                         "\r\n[vmws: %" PRIu64 " bytes of console output lost]\r\n", lost);
        r->note_len = n > 0 ? (size_t)n : 0;
    }
    size_t avail = (size_t)(s->head - r->pos);
    size_t n = avail < max ? avail : max;
    size_t off = (size_t)(r->pos % CONSOLE_RING_SIZE);
    size_t first = n < CONSOLE_RING_SIZE - off ? n : CONSOLE_RING_SIZE - off;
    memcpy(out, s->ring + off, first);
    memcpy(out + first, s->ring, n - first);
    pthread_mutex_unlock(&s->lock);
    return n;
}

static bool reader_behind(struct console_server *s, const struct console_reader *r)
{
    pthread_mutex_lock(&s->lock);
    bool behind = r->pos != s->head;
    pthread_mutex_unlock(&s->lock);
    return behind || r->note_len;
}

/* Sends what reader R has not seen yet. Sockets are non-blocking: on EAGAIN we stop and wait
 * for POLLOUT. Returns true when R is fully caught up. */
/* The log reached CONSOLE_LOG_MAX: it becomes LOG.1 and a new log starts with a line saying so.
 * If the move fails the log goes on growing (losing nothing matters more than the cap). */
static void log_rotate(struct console_server *s)
{
    char old[PATH_MAX + 2];
    snprintf(old, sizeof(old), "%s.1", s->log_path);
    int fd = -1;
    if (rename(s->log_path, old) == 0)
        fd = open(s->log_path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                  0600);
    if (fd < 0) {
        s->log_size = 0; /* try again after another CONSOLE_LOG_MAX */
        return;
    }
    close(s->log.fd);
    s->log.fd = fd;
    const char *base = strrchr(s->log_path, '/');
    char note[PATH_MAX + 96];
    int n = snprintf(note, sizeof(note),
                     "[vmws: the serial log reached %llu MiB; what came before is in %s.1]\n",
                     CONSOLE_LOG_MAX >> 20, base ? base + 1 : s->log_path);
    s->log_size = write(fd, note, (size_t)n) == n ? (uint64_t)n : 0;
}

static bool reader_flush(struct console_server *s, struct console_reader *r, bool is_file)
{
    unsigned char buf[CONSOLE_CHUNK];
    while (!r->dead) {
        size_t n = ring_read(s, r, buf, sizeof(buf));
        if (r->note_len) {
            ssize_t w = is_file ? write(r->fd, r->note, r->note_len)
                                : send(r->fd, r->note, r->note_len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return false;
            r->note_len = 0; /* sent, or failed: it is only a note */
        }
        if (n == 0)
            return true;
        if (is_file && s->log_size >= CONSOLE_LOG_MAX)
            log_rotate(s);
        size_t done = 0;
        while (done < n) {
            ssize_t w = is_file ? write(r->fd, buf + done, n - done)
                                : send(r->fd, buf + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                r->pos += done;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return false;
                if (is_file) { /* disk full or similar: stop logging, keep serving */
                    close(r->fd);
                    r->fd = -1;
                }
                r->dead = true;
                return true;
            }
            done += (size_t)w;
        }
        if (is_file)
            s->log_size += n;
        r->pos += n;
    }
    return true;
}

static void client_read(struct console_server *s, struct console_reader *c)
{
    unsigned char buf[4096];
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        c->dead = true;
        return;
    }
    if (s->input)
        s->input(s->opaque, buf, (size_t)n);
}

static void server_accept(struct console_server *s)
{
    for (;;) {
        int fd = accept4(s->listener.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (s->nclients == CONSOLE_CLIENTS_MAX) {
            static const char busy[] = "[vmws: too many console clients]\r\n";
            if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                /* nothing more to tell it */
            }
            close(fd);
            continue;
        }
        struct console_reader *c = &s->clients[s->nclients++];
        memset(c, 0, sizeof(*c));
        c->fd = fd;
        pthread_mutex_lock(&s->lock);
        c->pos = s->head; /* a new client sees output from now on */
        pthread_mutex_unlock(&s->lock);
    }
}

static void *server_main(void *arg)
{
    struct console_server *s = arg;
    struct pollfd pfd[CONSOLE_CLIENTS_MAX + 2];
    for (;;) {
        pfd[0] = (struct pollfd){.fd = s->listener.fd, .events = POLLIN};
        pfd[1] = (struct pollfd){.fd = s->wakefd, .events = POLLIN};
        size_t n = s->nclients;
        for (size_t i = 0; i < n; i++) {
            struct console_reader *c = &s->clients[i];
            pfd[2 + i] = (struct pollfd){
                .fd = c->fd,
                .events = (short)(POLLIN | (reader_behind(s, c) ? POLLOUT : 0)),
            };
        }
        if (poll(pfd, 2 + n, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd[1].revents & POLLIN) {
            uint64_t v;
            if (read(s->wakefd, &v, sizeof(v)) < 0) {
                /* spurious */
            }
            pthread_mutex_lock(&s->lock);
            bool stop = s->stopping;
            pthread_mutex_unlock(&s->lock);
            if (stop)
                break;
            if (s->log.fd >= 0)
                reader_flush(s, &s->log, true);
            for (size_t i = 0; i < n; i++)
                reader_flush(s, &s->clients[i], false);
        }
        for (size_t i = 0; i < n; i++) {
            struct console_reader *c = &s->clients[i];
            if (pfd[2 + i].revents & POLLOUT)
                reader_flush(s, c, false);
            if (pfd[2 + i].revents & (POLLIN | POLLHUP | POLLERR))
                client_read(s, c);
        }
        if (pfd[0].revents & POLLIN)
            server_accept(s);
        size_t keep = 0;
        for (size_t i = 0; i < s->nclients; i++) {
            if (s->clients[i].dead)
                close(s->clients[i].fd);
            else
                s->clients[keep++] = s->clients[i];
        }
        s->nclients = keep;
    }
    return NULL;
}

struct console_server *console_server_start(const char *sock_path, const char *log_path,
                                            console_input_fn input, void *opaque, char *err,
                                            size_t errlen)
{
    struct console_server *s = calloc(1, sizeof(*s));
    if (!s || !(s->ring = malloc(CONSOLE_RING_SIZE))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->input = input;
    s->opaque = opaque;
    s->listener.fd = -1;
    s->log.fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wakefd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (log_path) {
        s->log.fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        struct stat st;
        if (s->log.fd < 0 || fstat(s->log.fd, &st) < 0) {
            snprintf(err, errlen, "%s: %s", log_path, strerror(errno));
            goto fail;
        }
        snprintf(s->log_path, sizeof(s->log_path), "%s", log_path);
        s->log_size = (uint64_t)st.st_size;
    }
    if (ctl_listener_open(&s->listener, sock_path, err, errlen) < 0)
        goto fail;
    int rc = ctl_start_thread(&s->thread, server_main, s);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the console thread: %s", strerror(rc));
        goto fail;
    }
    return s;
fail:
    ctl_listener_close(&s->listener);
    if (s->log.fd >= 0)
        close(s->log.fd);
    if (s->wakefd >= 0)
        close(s->wakefd);
    pthread_mutex_destroy(&s->lock);
    free(s->ring);
    free(s);
    return NULL;
}

void console_server_stop(struct console_server *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_mutex_unlock(&s->lock);
    wake(s->wakefd);
    pthread_join(s->thread, NULL);

    /* The guest's last words (e.g. "Power down") should still reach the log and clients:
     * give slow clients a short grace period, then close. */
    if (s->log.fd >= 0) {
        reader_flush(s, &s->log, true);
        if (s->log.fd >= 0)
            close(s->log.fd);
    }
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < s->nclients; i++) {
        struct console_reader *c = &s->clients[i];
        while (!reader_flush(s, c, false)) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
            if (ms >= 200)
                break;
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            poll(&p, 1, (int)(200 - ms));
        }
        close(c->fd);
    }
    ctl_listener_close(&s->listener);
    close(s->wakefd);
    pthread_mutex_destroy(&s->lock);
    free(s->ring);
    free(s);
}
