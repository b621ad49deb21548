/* The refresh loop (see display.h). While a viewer is open, the refresh thread asks the
 * framebuffer device at 60 Hz (20 Hz once the screen has been still for a second) which pages
 * the guest wrote, turns runs of dirty pages into row bands and hands those to the SDL window and
 * the VNC server. With no viewer it sleeps on an eventfd and costs nothing at all. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/devices/framebuffer.h"
#include "core/util/log.h"
#include "core/vmm/module.h"
#include "display/display_priv.h"

#define REFRESH_NS 16666666L      /* 60 Hz while the screen changes */
#define IDLE_REFRESH_NS 50000000L /* 20 Hz once it has been still for IDLE_FRAMES */
#define IDLE_FRAMES 60
#define FB_PAGE 4096u

void display_wake(struct display *d)
{
    uint64_t one = 1;
    ssize_t w = write(d->wake_fd, &one, sizeof(one));
    (void)w;
}

static bool viewers_active(struct display *d)
{
    return (d->sdl && d->sdl_ops->open(d->sdl)) || (d->vnc && d->vnc_ops->clients(d->vnc) > 0);
}

static void publish(struct display *d, unsigned y0, unsigned y1)
{
    if (y0 >= y1)
        return;
    atomic_fetch_add(&d->updates, 1);
    if (d->sdl)
        d->sdl_ops->update(d->sdl, y0, y1);
    if (d->vnc)
        d->vnc_ops->update(d->vnc, y0, y1);
}

/* One frame: the pages written since the last one, each run of them published as rows. */
static bool refresh_once(struct display *d, uint64_t *bitmap)
{
    unsigned npages = (unsigned)framebuffer_pages(d->device);
    int r = framebuffer_take_dirty(d->device, bitmap);
    if (r == 2) {
        publish(d, 0, d->height);
        return true;
    }
    if (r == 0)
        return false;
    unsigned p = 0;
    bool any = false;
    while (p < npages) {
        if (!(bitmap[p / 64] >> (p % 64) & 1)) {
            p = bitmap[p / 64] >> (p % 64) ? p + 1 : (p / 64 + 1) * 64;
            continue;
        }
        unsigned first = p;
        while (p < npages && (bitmap[p / 64] >> (p % 64) & 1))
            p++;
        uint64_t b0 = (uint64_t)first * FB_PAGE, b1 = (uint64_t)p * FB_PAGE;
        unsigned y0 = (unsigned)(b0 / d->stride);
        unsigned y1 = (unsigned)((b1 + d->stride - 1) / d->stride);
        publish(d, y0, y1 < d->height ? y1 : d->height);
        any = true;
    }
    return any;
}

static void *refresh_main(void *arg)
{
    struct display *d = arg;
    uint64_t *bitmap = calloc((framebuffer_pages(d->device) + 63) / 64, 8);
    if (!bitmap)
        return NULL;
    unsigned still = 0; /* frames without a change */
    while (!atomic_load(&d->stopping)) {
        bool active = viewers_active(d);
        struct pollfd pfd = {.fd = d->wake_fd, .events = POLLIN};
        struct timespec ts = {0, still < IDLE_FRAMES ? REFRESH_NS : IDLE_REFRESH_NS};
        /* With no viewer, sleep until one appears; otherwise one frame: 60 Hz while the
         * screen changes, 20 Hz after a second of stillness (the first change after a pause
         * waits at most 50 ms; a still screen costs a third as many dirty-log queries). */
        int n = ppoll(&pfd, 1, active ? &ts : NULL, NULL);
        if (n > 0) {
            still = 0;
            uint64_t v;
            ssize_t rd = read(d->wake_fd, &v, sizeof(v));
            (void)rd;
            if (d->sdl)
                d->sdl_ops->title(d->sdl);
        }
        if (atomic_load(&d->stopping))
            break;
        if (refresh_once(d, bitmap))
            still = 0;
        else if (still < IDLE_FRAMES)
            still++;
    }
    free(bitmap);
    return NULL;
}

static void wake(void *opaque)
{
    display_wake(opaque);
}

struct display *display_create(struct framebuffer *fb, const struct display_config *cfg, char *err,
                               size_t errlen)
{
    struct display *d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->cfg = *cfg;
    d->device = fb;
    d->fb = framebuffer_pixels(fb);
    d->width = framebuffer_width(fb);
    d->height = framebuffer_height(fb);
    d->stride = framebuffer_stride(fb);
    snprintf(d->state, sizeof(d->state), "booting");
    pthread_mutex_init(&d->lock, NULL);
    atomic_init(&d->stopping, false);
    atomic_init(&d->updates, 0);
    d->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->wake_fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto fail;
    }
    if (cfg->vnc) {
        d->vnc_ops = vmws_module("vnc", err, errlen);
        d->vnc = d->vnc_ops ? d->vnc_ops->start(d, err, errlen) : NULL;
        if (!d->vnc)
            goto fail;
    }
    if (cfg->sdl) {
        char serr[256];
        d->sdl_ops = vmws_module("sdl", serr, sizeof(serr));
        d->sdl = d->sdl_ops ? d->sdl_ops->start(d, serr, sizeof(serr)) : NULL;
        if (!d->sdl) {
            if (!cfg->sdl_optional) {
                snprintf(err, errlen, "cannot open the SDL window: %s", serr);
                goto fail;
            }
            vmm_log("display: no SDL window (%s)", serr);
        }
    }
    int r = pthread_create(&d->refresh_thread, NULL, refresh_main, d);
    if (r) {
        snprintf(err, errlen, "cannot start the display thread: %s", strerror(r));
        goto fail;
    }
    d->refresh_started = true;
    pthread_setname_np(d->refresh_thread, "vmws-display");
    framebuffer_set_listener(fb, wake, d);
    return d;
fail:
    display_destroy(d);
    return NULL;
}

void display_set_state(struct display *d, const char *state)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    snprintf(d->state, sizeof(d->state), "%s", state);
    pthread_mutex_unlock(&d->lock);
    display_wake(d);
}

json_t *display_status_json(struct display *d)
{
    json_t *r = json_pack("{s:b, s:I}", "sdl", d->sdl && d->sdl_ops->open(d->sdl), "updates",
                          (json_int_t)atomic_load(&d->updates));
    int port = d->vnc ? d->vnc_ops->port(d->vnc) : 0;
    if (r && d->vnc && (port || d->cfg.vnc_socket[0])) {
        json_t *v =
            json_pack("{s:s, s:i, s:b, s:s, s:i}", "host", d->cfg.vnc_host, "port", port,
                      "password", d->cfg.vnc_password[0] != '\0', "password_file",
                      d->cfg.vnc_password_file, "clients", (int)d->vnc_ops->clients(d->vnc));
        if (v && d->cfg.vnc_socket[0]) /* vnc_listen = unix: no TCP port (0) */
            json_object_set_new(v, "socket", json_string(d->cfg.vnc_socket));
        json_object_set_new(r, "vnc", v);
    }
    return r;
}

void display_destroy(struct display *d)
{
    if (!d)
        return;
    framebuffer_set_listener(d->device, NULL, NULL);
    atomic_store(&d->stopping, true);
    if (d->refresh_started) {
        display_wake(d);
        pthread_join(d->refresh_thread, NULL);
    }
    if (d->sdl)
        d->sdl_ops->stop(d->sdl);
    if (d->vnc)
        d->vnc_ops->stop(d->vnc);
    if (d->wake_fd >= 0)
        close(d->wake_fd);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* ---- input ---- */

void display_key_usb(struct display *d, unsigned usage, bool down)
{
    uint8_t bytes[6];
    size_t n = keymap_usb_to_set1(usage, down, bytes);
    if (!n)
        return;
    framebuffer_keyboard_bytes(d->device, bytes, n);
}

void display_mouse(struct display *d, int dx, int dy, int dz, unsigned buttons)
{
    framebuffer_mouse(d->device, dx, dy, dz, buttons);
}
