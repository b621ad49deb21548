/* The VNC server (libvncserver, threaded mode). The RFB framebuffer *is* the guest's
 * framebuffer mapping (32 bpp, red at bit 16), so an update costs no copy on our side: the
 * refresh thread marks dirty rows modified and each client's own thread encodes and sends them.
 * Listens on 127.0.0.1:5900+N (first free N) unless configured, or - vnc_listen = unix - only on
 * a Unix socket in the runtime dir (mode 0600: only the VM's owner can connect; libvncserver has
 * no Unix listener, so our thread accepts and hands each connection to rfbNewClient, as its own
 * listener thread does with TCP ones); optional VNC password, with
 * failed attempts rate-limited; WebSocket clients are refused (Debian builds libvncserver with
 * WebSockets on the RFB port, so a web page could otherwise reach a VM); the file-transfer
 * extension is never registered. Protocol errors end that client, nothing more. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <rfb/rfb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/control/ctl.h"
#include "core/util/log.h"
#include "display/display_priv.h"

#define VNC_FIRST_PORT 5900
#define VNC_LAST_PORT 5999

struct vnc_server {
    struct display *d;
    rfbScreenInfoPtr screen;
    atomic_uint clients;
    char *passwords[2]; /* NULL-terminated list for rfbCheckPasswordByList */
    pthread_mutex_t auth_lock;
    unsigned failures;                 /* failed passwords since the last right one */
    double blocked_until;              /* CLOCK_MONOTONIC s: every attempt is refused until then */
    struct ctl_listener unix_listener; /* vnc_listen = unix; fd -1 otherwise */
    int unix_stop_fd;                  /* eventfd: the accept thread ends */
    pthread_t unix_thread;
    bool unix_thread_started;
};

/* vnc_listen = unix: accepts on the socket and gives each connection to libvncserver, which
 * runs it on a thread of its own as it does a TCP client (rfbStartOnHoldClient unless the new
 * client hook put it on hold). */
static void *unix_accept_thread(void *arg)
{
    struct vnc_server *v = arg;
    struct pollfd pfd[2] = {{.fd = v->unix_listener.fd, .events = POLLIN},
                            {.fd = v->unix_stop_fd, .events = POLLIN}};
    for (;;) {
        if (poll(pfd, 2, -1) < 0 && errno != EINTR)
            break;
        if (pfd[1].revents)
            break;
        if (!(pfd[0].revents & POLLIN))
            continue;
        int fd = accept4(v->unix_listener.fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue; /* EAGAIN, or a transient error: poll again */
        rfbClientPtr cl = rfbNewClient(v->screen, fd); /* closes FD itself on failure */
        if (cl && !cl->onHold)
            rfbStartOnHoldClient(cl);
    }
    return NULL;
}

static int unix_listen(struct vnc_server *v, char *err, size_t errlen)
{
    v->unix_stop_fd = eventfd(0, EFD_CLOEXEC);
    if (v->unix_stop_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        return -errno;
    }
    if (ctl_listener_open(&v->unix_listener, v->d->cfg.vnc_socket, err, errlen) < 0)
        return -EIO;
    int r = pthread_create(&v->unix_thread, NULL, unix_accept_thread, v);
    if (r != 0) {
        snprintf(err, errlen, "cannot start the VNC socket's thread: %s", strerror(r));
        return -r;
    }
    v->unix_thread_started = true;
    return 0;
}

static void unix_close(struct vnc_server *v)
{
    if (v->unix_thread_started) {
        uint64_t one = 1;
        ssize_t w = write(v->unix_stop_fd, &one, sizeof(one));
        (void)w;
        pthread_join(v->unix_thread, NULL);
    }
    ctl_listener_close(&v->unix_listener);
    if (v->unix_stop_fd >= 0)
        close(v->unix_stop_fd);
}

/* After AUTH_FREE_FAILURES wrong passwords in a row, every attempt - right or wrong - is refused
 * for AUTH_BLOCK_S seconds, doubling with each further failure up to AUTH_BLOCK_MAX_S. */
#define AUTH_FREE_FAILURES 5
#define AUTH_BLOCK_S 3.0
#define AUTH_BLOCK_MAX_S 300.0

struct vnc_client {
    struct vnc_server *v;
    int last_x, last_y;
    bool have_pos;
};

static void vnc_vlog(bool all, const char *fmt, va_list ap)
{
    /* libvncserver is chatty (pixel formats, encodings, statistics): keep who came and went
     * and anything about authentication or failures. */
    static const char *const keep[] = {"connection", "gone", "password", "auth",
                                       "fail",       "rror", "refus",    "invalid"};
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n')
        buf[--n] = '\0';
    bool wanted = all;
    for (size_t i = 0; !wanted && i < sizeof(keep) / sizeof(keep[0]); i++)
        wanted = strcasestr(buf, keep[i]) != NULL;
    if (wanted)
        vmm_log("vnc: %s", buf);
}

static void vnc_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vnc_vlog(false, fmt, ap);
    va_end(ap);
}

static void vnc_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vnc_vlog(true, fmt, ap);
    va_end(ap);
}

static void client_gone(rfbClientPtr cl)
{
    struct vnc_client *c = cl->clientData;
    if (!c)
        return;
    atomic_fetch_sub(&c->v->clients, 1);
    free(c);
    cl->clientData = NULL;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static rfbBool check_password(rfbClientPtr cl, const char *response, int len)
{
    struct vnc_server *v = cl->screen->screenData;
    pthread_mutex_lock(&v->auth_lock);
    double now = mono_s(), wait = v->blocked_until - now;
    pthread_mutex_unlock(&v->auth_lock);
    if (wait > 0) {
        vmm_log("vnc: refused a password attempt from %s: too many wrong ones, blocked %.0f s more",
                cl->host, wait);
        return FALSE;
    }
    rfbBool ok = rfbCheckPasswordByList(cl, response, len);
    pthread_mutex_lock(&v->auth_lock);
    if (ok) {
        v->failures = 0;
    } else if (++v->failures >= AUTH_FREE_FAILURES) {
        double block = AUTH_BLOCK_S;
        for (unsigned i = AUTH_FREE_FAILURES; i < v->failures && block < AUTH_BLOCK_MAX_S; i++)
            block *= 2;
        if (block > AUTH_BLOCK_MAX_S)
            block = AUTH_BLOCK_MAX_S;
        v->blocked_until = now + block;
        vmm_log("vnc: %u wrong passwords in a row (the last from %s): every attempt is refused "
                "for %.0f s",
                v->failures, cl->host, block);
    }
    pthread_mutex_unlock(&v->auth_lock);
    return ok;
}

static enum rfbNewClientAction new_client(rfbClientPtr cl)
{
    struct vnc_server *v = cl->screen->screenData;
#ifdef LIBVNCSERVER_WITH_WEBSOCKETS
    if (cl->wsctx) { /* a browser: any web page could open ws://127.0.0.1:PORT */
        vmm_log("vnc: refused a WebSocket client from %s", cl->host);
        /* libvncserver frees the WebSocket state (one 45 KB calloc) only of clients it
         * accepted: a refused one leaked it (LeakSanitizer, test_display.py), so a page that
         * kept knocking grew the VMM. Freed here; libvncserver skips a NULL wsctx. */
        free(cl->wsctx);
        cl->wsctx = NULL;
        return RFB_CLIENT_REFUSE;
    }
#endif
    struct vnc_client *c = calloc(1, sizeof(*c));
    if (!c)
        return RFB_CLIENT_REFUSE;
    c->v = v;
    cl->clientData = c;
    cl->clientGoneHook = client_gone;
    atomic_fetch_add(&v->clients, 1);
    display_wake(v->d); /* the refresh thread starts polling */
    return RFB_CLIENT_ACCEPT;
}

static void key_event(rfbBool down, rfbKeySym keysym, rfbClientPtr cl)
{
    struct vnc_client *c = cl->clientData;
    if (!c)
        return;
    unsigned usb = keymap_keysym_to_usb((uint32_t)keysym);
    if (usb)
        display_key_usb(c->v->d, usb, down);
}

/* RFB pointers are absolute; the PS/2 mouse is relative, so send the difference. */
static void pointer_event(int mask, int x, int y, rfbClientPtr cl)
{
    struct vnc_client *c = cl->clientData;
    if (!c)
        return;
    int dx = c->have_pos ? x - c->last_x : 0, dy = c->have_pos ? y - c->last_y : 0;
    int dz = (mask & 8) ? -1 : (mask & 16) ? 1 : 0;
    c->last_x = x;
    c->last_y = y;
    c->have_pos = true;
    unsigned buttons = (mask & 1 ? 1u : 0) | (mask & 4 ? 2u : 0) | (mask & 2 ? 4u : 0);
    display_mouse(c->v->d, dx, dy, dz, buttons);
}

/* True if PORT may be picked: any in 5900..5999, or in the KVM box (app/cli_boxed.c) only
 * those $VMWS_VNC_PORTS lists, which the host forwards to the box. */
static bool port_allowed(int port)
{
    const char *list = getenv("VMWS_IN_BOX") ? getenv("VMWS_VNC_PORTS") : NULL;
    if (!list)
        return true;
    for (const char *p = list; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            return false;
        if (v == port)
            return true;
        p = *end == ',' ? end + 1 : end;
    }
    return false;
}

/* The first free port in 5900..5999 on HOST (the server binds it right after). */
static int pick_port(in_addr_t host)
{
    for (int port = VNC_FIRST_PORT; port <= VNC_LAST_PORT; port++) {
        if (!port_allowed(port))
            continue;
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            return -errno;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = host;
        int ok = bind(s, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(s);
        if (ok)
            return port;
    }
    return -EADDRINUSE;
}

static struct vnc_server *vnc_server_start(struct display *d, char *err, size_t errlen)
{
    bool on_unix = d->cfg.vnc_socket[0] != '\0';
    struct in_addr host = {0};
    if (!on_unix && inet_pton(AF_INET, d->cfg.vnc_host, &host) != 1) {
        snprintf(err, errlen, "VNC listen address '%s' is not an IPv4 address", d->cfg.vnc_host);
        return NULL;
    }
    /* In the KVM box the host's 127.0.0.1:PORT arrives on the box's own network address
     * (QEMU's port forwarding cannot reach its loopback): $VMWS_VNC_BIND names it. What the
     * user connects to is still the listen address, on the host. */
    const char *bind_to = getenv("VMWS_IN_BOX") ? getenv("VMWS_VNC_BIND") : NULL;
    struct in_addr boxed;
    if (bind_to && strcmp(d->cfg.vnc_host, "127.0.0.1") == 0 &&
        inet_pton(AF_INET, bind_to, &boxed) == 1)
        host = boxed;
    struct vnc_server *v = calloc(1, sizeof(*v));
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    v->d = d;
    v->unix_listener.fd = -1;
    v->unix_stop_fd = -1;
    atomic_init(&v->clients, 0);
    pthread_mutex_init(&v->auth_lock, NULL);
    rfbLog = vnc_log;
    rfbErr = vnc_err;
    int argc = 0;
    v->screen = rfbGetScreen(&argc, NULL, (int)d->width, (int)d->height, 8, 3, 4);
    if (!v->screen) {
        snprintf(err, errlen, "libvncserver could not set up a screen");
        free(v);
        return NULL;
    }
    rfbScreenInfoPtr s = v->screen;
    s->screenData = v;
    s->desktopName = d->cfg.vm_name;
    s->frameBuffer = (char *)d->fb;
    s->paddedWidthInBytes = (int)d->stride;
    s->serverFormat.redShift = 16; /* XRGB8888, little endian */
    s->serverFormat.greenShift = 8;
    s->serverFormat.blueShift = 0;
    s->alwaysShared = TRUE; /* several clients at once */
    s->cursor = NULL;       /* the guest draws its own; no cursor updates on a still screen */
    s->newClientHook = new_client;
    s->kbdAddEvent = key_event;
    s->ptrAddEvent = pointer_event;
    s->permitFileTransfer = FALSE;
    s->httpDir = NULL;
    s->httpPort = 0;
    s->listenInterface = host.s_addr;
    s->ipv6port = 0;
    s->listen6Interface = NULL;
    /* libvncserver's per-client output thread sleeps this long (ms) in a loop until the client
     * has authenticated, and before each update: 0 made every viewer still in its handshake (a
     * password prompt left open, any local process holding the port) spin a host core. */
    s->deferUpdateTime = 1;
    if (d->cfg.vnc_password[0]) {
        v->passwords[0] = d->cfg.vnc_password;
        s->authPasswdData = v->passwords;
        s->passwordCheck = check_password;
    }
    int port = on_unix ? 0 : d->cfg.vnc_port; /* 0 with autoPort off: no TCP listener */
    if (!on_unix && port == 0) {
        port = pick_port(host.s_addr);
        if (port < 0) {
            snprintf(err, errlen, "no free VNC port in %d..%d on %s", VNC_FIRST_PORT, VNC_LAST_PORT,
                     d->cfg.vnc_host);
            goto fail;
        }
    }
    s->port = port;
    s->autoPort = FALSE;
    rfbInitServer(s);
    if (!on_unix && s->listenSock == RFB_INVALID_SOCKET) {
        snprintf(err, errlen, "cannot listen for VNC on %s:%d (in use?)", d->cfg.vnc_host, port);
        goto fail;
    }
    rfbRunEventLoop(s, -1, TRUE); /* returns at once: a listener thread, threads per client */
    if (on_unix && unix_listen(v, err, errlen) < 0) {
        unix_close(v);
        rfbShutdownServer(s, TRUE);
        goto fail;
    }
    if (on_unix)
        vmm_log("vnc: listening on %s (mode 0600)%s", d->cfg.vnc_socket,
                d->cfg.vnc_password[0] ? " (password required)" : "");
    else
        vmm_log("vnc: listening on %s:%d%s", d->cfg.vnc_host, port,
                d->cfg.vnc_password[0] ? " (password required)" : "");
    return v;
fail:
    rfbScreenCleanup(s);
    free(v);
    return NULL;
}

static void vnc_server_update(struct vnc_server *v, unsigned y0, unsigned y1)
{
    if (atomic_load(&v->clients))
        rfbMarkRectAsModified(v->screen, 0, (int)y0, (int)v->d->width, (int)y1);
}

static unsigned vnc_server_clients(const struct vnc_server *v)
{
    return atomic_load(&((struct vnc_server *)v)->clients);
}

static int vnc_server_port(const struct vnc_server *v)
{
    return v->screen->port;
}

static void vnc_server_stop(struct vnc_server *v)
{
    unix_close(v); /* no new clients from the socket; those it had end with the others */
    rfbShutdownServer(v->screen, TRUE);
    rfbScreenCleanup(v->screen);
    free(v);
}

const struct vnc_ops vmws_module_vnc = {
    .start = vnc_server_start,
    .update = vnc_server_update,
    .clients = vnc_server_clients,
    .port = vnc_server_port,
    .stop = vnc_server_stop,
};
