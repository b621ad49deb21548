/* libslirp behind net_slirp_send() and a receive callback (see slirp_net.h). The thread's loop:
 * under the lock, ask slirp which sockets to watch (slirp_pollfds_fill) and find the nearest
 * timer; poll without the lock (an eventfd wakes it when a frame from the guest may have opened
 * a socket); under the lock again, let slirp read and write its sockets (slirp_pollfds_poll)
 * and fire the timers that are due. Timers are a short list (slirp makes a handful). */
#include "core/net/slirp_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <slirp/libslirp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/util/log.h"

#define POLL_MAX_MS 1000 /* slirp's own timeouts are shorter; this only bounds a lost wakeup */

struct net_timer {
    struct net_timer *next;
    int64_t expire_ms; /* -1: not armed */
    SlirpTimerCb cb;
    void *cb_opaque;
};

struct net_slirp {
    Slirp *slirp;
    pthread_mutex_t lock; /* guards slirp, the timers and stopping */
    net_receive_fn receive;
    void *opaque;
    struct net_timer *timers;
    int wake_fd;
    pthread_t thread;
    bool thread_started, stopping;
    struct pollfd *pfd; /* the thread's alone */
    unsigned npfd, pfd_cap;
};

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void wake(struct net_slirp *s)
{
    uint64_t one = 1;
    ssize_t w = write(s->wake_fd, &one, sizeof(one));
    (void)w;
}

/* ---- slirp's callbacks (the lock held) ---- */

static ssize_t cb_send_packet(const void *buf, size_t len, void *opaque)
{
    struct net_slirp *s = opaque;
    s->receive(s->opaque, buf, len);
    return (ssize_t)len;
}

static void cb_guest_error(const char *msg, void *opaque)
{
    (void)opaque;
    vmm_log_repeating("net: slirp: the guest sent something wrong: %s", msg);
}

static int64_t cb_clock_get_ns(void *opaque)
{
    (void)opaque;
    return now_ns();
}

static void *cb_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
    struct net_slirp *s = opaque;
    struct net_timer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    *t = (struct net_timer){s->timers, -1, cb, cb_opaque};
    s->timers = t;
    return t;
}

static void cb_timer_free(void *timer, void *opaque)
{
    struct net_slirp *s = opaque;
    for (struct net_timer **p = &s->timers; *p; p = &(*p)->next) {
        if (*p == timer) {
            *p = (*p)->next;
            free(timer);
            return;
        }
    }
}

static void cb_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
    struct net_slirp *s = opaque;
    ((struct net_timer *)timer)->expire_ms = expire_ms;
    wake(s); /* the loop may sleep past it */
}

static void cb_register_poll_fd(int fd, void *opaque)
{
    (void)fd, (void)opaque; /* every poll round asks slirp for its sockets afresh */
}

static void cb_notify(void *opaque)
{
    wake(opaque);
}

static int cb_add_poll(int fd, int events, void *opaque)
{
    struct net_slirp *s = opaque;
    if (s->npfd == s->pfd_cap) {
        unsigned cap = s->pfd_cap ? 2 * s->pfd_cap : 16;
        struct pollfd *p = realloc(s->pfd, cap * sizeof(*p));
        if (!p)
            return -1; /* that socket waits for a later round */
        s->pfd = p, s->pfd_cap = cap;
    }
    short ev =
        (short)((events & SLIRP_POLL_IN ? POLLIN : 0) | (events & SLIRP_POLL_OUT ? POLLOUT : 0) |
                (events & SLIRP_POLL_PRI ? POLLPRI : 0));
    s->pfd[s->npfd] = (struct pollfd){.fd = fd, .events = ev};
    return (int)s->npfd++;
}

static int cb_get_revents(int idx, void *opaque)
{
    struct net_slirp *s = opaque;
    if (idx < 0 || (unsigned)idx >= s->npfd)
        return 0;
    short r = s->pfd[idx].revents;
    return (r & POLLIN ? SLIRP_POLL_IN : 0) | (r & POLLOUT ? SLIRP_POLL_OUT : 0) |
           (r & POLLPRI ? SLIRP_POLL_PRI : 0) | (r & POLLERR ? SLIRP_POLL_ERR : 0) |
           (r & POLLHUP ? SLIRP_POLL_HUP : 0);
}

static const SlirpCb callbacks = {
    .send_packet = cb_send_packet,
    .guest_error = cb_guest_error,
    .clock_get_ns = cb_clock_get_ns,
    .timer_new = cb_timer_new,
    .timer_free = cb_timer_free,
    .timer_mod = cb_timer_mod,
    .register_poll_fd = cb_register_poll_fd,
    .unregister_poll_fd = cb_register_poll_fd,
    .notify = cb_notify,
};

/* ---- the thread ---- */

/* Fires the timers due at NOW_MS (one at a time: a callback may re-arm or free timers); returns
 * the milliseconds to the next one, at most LIMIT. */
static uint32_t run_timers_locked(struct net_slirp *s, uint32_t limit)
{
    for (;;) {
        int64_t now = now_ns() / 1000000;
        struct net_timer *due = NULL;
        uint32_t next = limit;
        for (struct net_timer *t = s->timers; t; t = t->next) {
            if (t->expire_ms < 0)
                continue;
            if (t->expire_ms <= now) {
                due = t;
                break;
            }
            if (t->expire_ms - now < next)
                next = (uint32_t)(t->expire_ms - now);
        }
        if (!due)
            return next;
        due->expire_ms = -1;
        due->cb(due->cb_opaque);
    }
}

static void *slirp_thread(void *arg)
{
    struct net_slirp *s = arg;
    pthread_setname_np(pthread_self(), "vmws-slirp");
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        uint32_t timeout = run_timers_locked(s, POLL_MAX_MS);
        s->npfd = 0;
        cb_add_poll(s->wake_fd, SLIRP_POLL_IN, s);
        slirp_pollfds_fill(s->slirp, &timeout, cb_add_poll, s);
        pthread_mutex_unlock(&s->lock);
        int r = poll(s->pfd, s->npfd, (int)timeout);
        int e = errno;
        pthread_mutex_lock(&s->lock);
        if (s->npfd && s->pfd[0].revents & POLLIN) {
            uint64_t v;
            ssize_t n = read(s->wake_fd, &v, sizeof(v));
            (void)n;
        }
        if (!s->stopping)
            slirp_pollfds_poll(s->slirp, r < 0 && e != EINTR, cb_get_revents, s);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- the module ---- */

struct net_slirp *net_slirp_create(const struct vm_net_config *cfg, net_receive_fn receive,
                                   void *opaque, char *err, size_t errlen)
{
    struct net_slirp *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory starting the network");
        return NULL;
    }
    s->receive = receive;
    s->opaque = opaque;
    pthread_mutex_init(&s->lock, NULL);
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    SlirpConfig sc = {.version = 3, .in_enabled = true};
    inet_pton(AF_INET, NET_SLIRP_NETWORK, &sc.vnetwork);
    inet_pton(AF_INET, "255.255.255.0", &sc.vnetmask);
    inet_pton(AF_INET, NET_SLIRP_GATEWAY, &sc.vhost);
    inet_pton(AF_INET, NET_SLIRP_GUEST, &sc.vdhcp_start);
    inet_pton(AF_INET, NET_SLIRP_DNS, &sc.vnameserver);
    sc.vhostname = "vmws";
    if (s->wake_fd < 0 || !(s->slirp = slirp_new(&sc, &callbacks, s))) {
        snprintf(err, errlen, "cannot start the user-mode network (libslirp %s): %s",
                 slirp_version_string(), s->wake_fd < 0 ? strerror(errno) : "slirp_new failed");
        net_slirp_destroy(s);
        return NULL;
    }
    struct in_addr host, guest;
    inet_pton(AF_INET, "127.0.0.1", &host);
    inet_pton(AF_INET, NET_SLIRP_GUEST, &guest);
    for (unsigned i = 0; i < cfg->nforwards; i++) {
        const struct vm_net_forward *f = &cfg->forwards[i];
        errno = 0;
        if (slirp_add_hostfwd(s->slirp, f->udp, host, f->host_port, guest, f->guest_port) < 0) {
            snprintf(err, errlen,
                     "cannot forward host %s port 127.0.0.1:%u to the guest's port %u: %s (is the "
                     "port in use? change forward in [net] of vm.conf)",
                     f->udp ? "udp" : "tcp", f->host_port, f->guest_port,
                     errno ? strerror(errno) : "slirp refused it");
            net_slirp_destroy(s);
            return NULL;
        }
    }
    if (pthread_create(&s->thread, NULL, slirp_thread, s) != 0) {
        snprintf(err, errlen, "cannot start the network's thread");
        net_slirp_destroy(s);
        return NULL;
    }
    s->thread_started = true;
    return s;
}

void net_slirp_destroy(struct net_slirp *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_mutex_unlock(&s->lock);
        wake(s);
        pthread_join(s->thread, NULL);
    }
    if (s->slirp)
        slirp_cleanup(s->slirp); /* frees its timers through cb_timer_free */
    while (s->timers)
        cb_timer_free(s->timers, s);
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    free(s->pfd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void net_slirp_send(struct net_slirp *s, const uint8_t *frame, size_t len)
{
    pthread_mutex_lock(&s->lock);
    slirp_input(s->slirp, frame, (int)len);
    pthread_mutex_unlock(&s->lock);
    wake(s); /* the frame may have opened a socket the loop must watch */
}
