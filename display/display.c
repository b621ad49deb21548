/* The framebuffer and its refresh loop (see display.h). The framebuffer is a memfd mapped both
 * here and into the guest as its own KVM slot with KVM_MEM_LOG_DIRTY_PAGES. While a viewer is
 * open, the refresh thread asks KVM at 60 Hz (20 Hz once the screen has been still for a
 * second) which framebuffer pages the guest wrote, turns runs of dirty pages into row bands and
 * hands those to the SDL window and the VNC server. With no viewer it sleeps on an eventfd and
 * costs nothing at all. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/boot/linuxboot.h"
#include "core/devices/devices.h"
#include "core/snapshot/state.h"
#include "core/util/log.h"
#include "core/vm/machine.h"
#include "core/vmm/module.h"
#include "display/display_priv.h"

#define REFRESH_NS 16666666L      /* 60 Hz while the screen changes */
#define IDLE_REFRESH_NS 50000000L /* 20 Hz once it has been still for IDLE_FRAMES */
#define IDLE_FRAMES 60
#define FB_PAGE 4096u
#define TAG_FBCF STATE_TAG('F', 'B', 'C', 'F')
#define TAG_FBMM STATE_TAG('F', 'B', 'M', 'M')

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

/* One frame: fetch (and reset) the slot's dirty bitmap, publish each run of dirty pages. */
static bool refresh_once(struct display *d, uint64_t *bitmap, size_t words)
{
    unsigned npages = (unsigned)(d->fb_size / FB_PAGE);
    pthread_mutex_lock(&d->lock);
    int r = -1;
    if (d->m) {
        struct kvm_dirty_log log = {.slot = DISPLAY_FB_SLOT, .dirty_bitmap = bitmap};
        memset(bitmap, 0, words * 8);
        r = ioctl(d->m->vm_fd, KVM_GET_DIRTY_LOG, &log);
        for (size_t i = 0; r == 0 && i < words; i++)
            d->snap_dirty[i] |= bitmap[i]; /* snapshots need these pages too */
    }
    pthread_mutex_unlock(&d->lock);
    if (atomic_exchange(&d->full_refresh, false)) {
        publish(d, 0, d->height);
        return true;
    }
    if (r < 0)
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
    size_t words = (d->fb_size / FB_PAGE + 63) / 64;
    uint64_t *bitmap = calloc(words, 8);
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
        if (refresh_once(d, bitmap, words))
            still = 0;
        else if (still < IDLE_FRAMES)
            still++;
    }
    free(bitmap);
    return NULL;
}

struct display *display_create(const struct display_config *cfg, char *err, size_t errlen)
{
    if (display_check_size(cfg->width, cfg->height, err, errlen) < 0)
        return NULL;
    struct display *d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->cfg = *cfg;
    d->width = cfg->width;
    d->height = cfg->height;
    d->stride = cfg->width * (DISPLAY_BPP / 8);
    d->fb_size = ((size_t)d->stride * d->height + FB_PAGE - 1) & ~(size_t)(FB_PAGE - 1);
    d->fb_fd = -1;
    d->wake_fd = -1;
    snprintf(d->state, sizeof(d->state), "booting");
    pthread_mutex_init(&d->lock, NULL);
    atomic_init(&d->stopping, false);
    atomic_init(&d->full_refresh, true);
    atomic_init(&d->updates, 0);

    d->fb_fd = memfd_create("vmws-framebuffer", MFD_CLOEXEC);
    if (d->fb_fd < 0 || ftruncate(d->fb_fd, (off_t)d->fb_size) < 0) {
        snprintf(err, errlen, "cannot create a %zu-byte framebuffer (memfd): %s", d->fb_size,
                 strerror(errno));
        goto fail;
    }
    d->fb = mmap(NULL, d->fb_size, PROT_READ | PROT_WRITE, MAP_SHARED, d->fb_fd, 0);
    if (d->fb == MAP_FAILED) {
        d->fb = NULL;
        snprintf(err, errlen, "cannot map the framebuffer: %s", strerror(errno));
        goto fail;
    }
    d->snap_dirty = calloc((d->fb_size / FB_PAGE + 63) / 64, 8);
    d->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->wake_fd < 0 || !d->snap_dirty) {
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
    return d;
fail:
    display_destroy(d);
    return NULL;
}

int display_attach(struct display *d, struct machine *m, struct i8042 *kbd, char *err,
                   size_t errlen)
{
    int r = machine_add_memory_slot(m, DISPLAY_FB_SLOT, DISPLAY_FB_GPA, d->fb_size, d->fb,
                                    KVM_MEM_LOG_DIRTY_PAGES);
    if (r < 0) {
        snprintf(err, errlen, "cannot map the framebuffer at guest address 0x%llx: %s",
                 DISPLAY_FB_GPA, strerror(-r));
        return r;
    }
    pthread_mutex_lock(&d->lock);
    d->m = m;
    d->kbd = kbd;
    pthread_mutex_unlock(&d->lock);
    atomic_store(&d->full_refresh, true);
    display_wake(d);
    return 0;
}

void display_detach(struct display *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    d->m = NULL;
    d->kbd = NULL;
    pthread_mutex_unlock(&d->lock);
}

void display_boot_framebuffer(const struct display *d, struct boot_framebuffer *fb)
{
    fb->base = DISPLAY_FB_GPA;
    fb->size = (uint32_t)d->fb_size;
    fb->width = d->width;
    fb->height = d->height;
    fb->stride = d->stride;
    fb->bpp = DISPLAY_BPP;
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

int display_vnc_port(const struct display *d)
{
    return d && d->vnc ? d->vnc_ops->port(d->vnc) : 0;
}

const char *display_vnc_host(const struct display *d)
{
    return d ? d->cfg.vnc_host : "";
}

unsigned display_vnc_clients(const struct display *d)
{
    return d && d->vnc ? d->vnc_ops->clients(d->vnc) : 0;
}

bool display_vnc_auth(const struct display *d)
{
    return d && d->cfg.vnc_password[0];
}

bool display_sdl_open(const struct display *d)
{
    return d && d->sdl && d->sdl_ops->open(d->sdl);
}

unsigned display_width(const struct display *d)
{
    return d->width;
}

unsigned display_height(const struct display *d)
{
    return d->height;
}

uint64_t display_updates(const struct display *d)
{
    return atomic_load(&((struct display *)d)->updates);
}

void display_destroy(struct display *d)
{
    if (!d)
        return;
    atomic_store(&d->stopping, true);
    if (d->refresh_started) {
        display_wake(d);
        pthread_join(d->refresh_thread, NULL);
    }
    if (d->sdl)
        d->sdl_ops->stop(d->sdl);
    if (d->vnc)
        d->vnc_ops->stop(d->vnc);
    if (d->fb)
        munmap(d->fb, d->fb_size);
    if (d->fb_fd >= 0)
        close(d->fb_fd);
    if (d->wake_fd >= 0)
        close(d->wake_fd);
    pthread_mutex_destroy(&d->lock);
    free(d->snap_dirty);
    free(d);
}

/* ---- snapshots ---- */

struct fb_geometry {
    uint32_t width, height, stride, bpp;
    uint64_t size;
};

int display_save(struct display *d, struct state_writer *w)
{
    struct fb_geometry g = {d->width, d->height, d->stride, DISPLAY_BPP, d->fb_size};
    state_put(w, TAG_FBCF, 0, &g, sizeof(g));
    return w->error;
}

int display_save_contents(struct display *d, struct state_writer *w)
{
    state_put(w, TAG_FBMM, 0, d->fb, d->fb_size);
    return w->error;
}

uint8_t *display_fb_host(struct display *d)
{
    return d->fb;
}

uint64_t display_fb_pages(const struct display *d)
{
    return d->fb_size / FB_PAGE;
}

void display_collect_dirty(struct display *d, uint64_t *bitmap)
{
    size_t words = (d->fb_size / FB_PAGE + 63) / 64;
    uint64_t *fresh = calloc(words, 8);
    bool any = false;
    pthread_mutex_lock(&d->lock);
    if (fresh && d->m) {
        struct kvm_dirty_log log = {.slot = DISPLAY_FB_SLOT, .dirty_bitmap = fresh};
        if (ioctl(d->m->vm_fd, KVM_GET_DIRTY_LOG, &log) == 0)
            for (size_t i = 0; i < words; i++) {
                d->snap_dirty[i] |= fresh[i];
                any |= fresh[i] != 0;
            }
    }
    for (size_t i = 0; i < words; i++) {
        bitmap[i] |= d->snap_dirty[i];
        d->snap_dirty[i] = 0;
    }
    pthread_mutex_unlock(&d->lock);
    free(fresh);
    if (any) /* the refresh thread did not see these bits: show the whole screen again */
        display_redraw(d);
}

void display_mark_all_dirty(struct display *d)
{
    size_t words = (d->fb_size / FB_PAGE + 63) / 64;
    pthread_mutex_lock(&d->lock);
    memset(d->snap_dirty, 0xff, words * 8);
    pthread_mutex_unlock(&d->lock);
}

void display_redraw(struct display *d)
{
    atomic_store(&d->full_refresh, true);
    display_wake(d);
}

int display_load(struct display *d, const struct state_reader *r)
{
    struct fb_geometry g;
    int rc = state_get_exact(r, TAG_FBCF, 0, &g, sizeof(g));
    if (rc < 0)
        return rc;
    if (g.width != d->width || g.height != d->height || g.stride != d->stride ||
        g.bpp != DISPLAY_BPP || g.size != d->fb_size)
        return -EINVAL; /* the VM's display size changed since the state was saved */
    const struct state_record *fb = state_get(r, TAG_FBMM, 0);
    if (fb && fb->len != d->fb_size)
        return -EINVAL;
    if (fb) /* a suspend state; snapshots restore the framebuffer's pages themselves */
        memcpy(d->fb, fb->data, d->fb_size);
    display_redraw(d);
    return 0;
}

/* ---- input ---- */

void display_key_usb(struct display *d, unsigned usage, bool down)
{
    uint8_t bytes[6];
    size_t n = keymap_usb_to_set1(usage, down, bytes);
    if (!n)
        return;
    pthread_mutex_lock(&d->lock);
    if (d->kbd)
        i8042_keyboard_bytes(d->kbd, bytes, n);
    pthread_mutex_unlock(&d->lock);
}

void display_mouse(struct display *d, int dx, int dy, int dz, unsigned buttons)
{
    pthread_mutex_lock(&d->lock);
    if (d->kbd)
        i8042_mouse_event(d->kbd, dx, dy, dz, buttons);
    d->mouse_buttons = buttons;
    pthread_mutex_unlock(&d->lock);
}
