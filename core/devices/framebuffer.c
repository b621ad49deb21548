/* The framebuffer device (see framebuffer.h): a memfd mapped here and into the guest. */
#include "core/devices/framebuffer.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/boot/linuxboot.h"
#include "core/config/dconfig.h"
#include "core/devices/devices.h"
#include "core/util/state.h"
#include "core/vm/machine.h"

#define FB_PAGE 4096u
#define TAG_FBCF STATE_TAG('F', 'B', 'C', 'F')
#define TAG_FBMM STATE_TAG('F', 'B', 'M', 'M')

struct framebuffer {
    unsigned width, height, stride;
    size_t size;  /* page-aligned */
    size_t words; /* of a page bitmap */
    int fd;
    uint8_t *pixels;

    pthread_mutex_t lock; /* guards m, kbd, snap_dirty */
    struct machine *m;    /* NULL while detached */
    struct i8042 *kbd;
    uint64_t *snap_dirty; /* pages written since the last snapshot took them */
    atomic_bool full_redraw;
    void (*changed)(void *);
    void *opaque;
};

struct framebuffer *framebuffer_create(unsigned width, unsigned height, char *err, size_t errlen)
{
    if (display_check_size(width, height, err, errlen) < 0)
        return NULL;
    struct framebuffer *fb = calloc(1, sizeof(*fb));
    if (!fb) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    fb->width = width;
    fb->height = height;
    fb->stride = width * (DISPLAY_BPP / 8);
    fb->size = ((size_t)fb->stride * height + FB_PAGE - 1) & ~(size_t)(FB_PAGE - 1);
    fb->words = (fb->size / FB_PAGE + 63) / 64;
    pthread_mutex_init(&fb->lock, NULL);
    atomic_init(&fb->full_redraw, true);
    fb->snap_dirty = calloc(fb->words, 8);
    fb->fd = memfd_create("vmws-framebuffer", MFD_CLOEXEC);
    if (!fb->snap_dirty || fb->fd < 0 || ftruncate(fb->fd, (off_t)fb->size) < 0) {
        snprintf(err, errlen, "cannot create a %zu-byte framebuffer (memfd): %s", fb->size,
                 strerror(errno));
        goto fail;
    }
    fb->pixels = mmap(NULL, fb->size, PROT_READ | PROT_WRITE, MAP_SHARED, fb->fd, 0);
    if (fb->pixels == MAP_FAILED) {
        fb->pixels = NULL;
        snprintf(err, errlen, "cannot map the framebuffer: %s", strerror(errno));
        goto fail;
    }
    return fb;
fail:
    framebuffer_destroy(fb);
    return NULL;
}

void framebuffer_destroy(struct framebuffer *fb)
{
    if (!fb)
        return;
    if (fb->pixels)
        munmap(fb->pixels, fb->size);
    if (fb->fd >= 0)
        close(fb->fd);
    pthread_mutex_destroy(&fb->lock);
    free(fb->snap_dirty);
    free(fb);
}

void framebuffer_set_listener(struct framebuffer *fb, void (*changed)(void *), void *opaque)
{
    pthread_mutex_lock(&fb->lock);
    fb->changed = changed;
    fb->opaque = opaque;
    pthread_mutex_unlock(&fb->lock);
}

void framebuffer_redraw(struct framebuffer *fb)
{
    atomic_store(&fb->full_redraw, true);
    pthread_mutex_lock(&fb->lock);
    if (fb->changed)
        fb->changed(fb->opaque);
    pthread_mutex_unlock(&fb->lock);
}

int framebuffer_attach(struct framebuffer *fb, struct machine *m, struct i8042 *kbd, char *err,
                       size_t errlen)
{
    int r = machine_add_memory_slot(m, DISPLAY_FB_SLOT, DISPLAY_FB_GPA, fb->size, fb->pixels,
                                    KVM_MEM_LOG_DIRTY_PAGES);
    if (r < 0) {
        snprintf(err, errlen, "cannot map the framebuffer at guest address 0x%llx: %s",
                 DISPLAY_FB_GPA, strerror(-r));
        return r;
    }
    pthread_mutex_lock(&fb->lock);
    fb->m = m;
    fb->kbd = kbd;
    pthread_mutex_unlock(&fb->lock);
    framebuffer_redraw(fb);
    return 0;
}

void framebuffer_detach(struct framebuffer *fb)
{
    if (!fb)
        return;
    pthread_mutex_lock(&fb->lock);
    fb->m = NULL;
    fb->kbd = NULL;
    pthread_mutex_unlock(&fb->lock);
}

void framebuffer_boot_info(const struct framebuffer *fb, struct boot_framebuffer *out)
{
    out->base = DISPLAY_FB_GPA;
    out->size = (uint32_t)fb->size;
    out->width = fb->width;
    out->height = fb->height;
    out->stride = fb->stride;
    out->bpp = DISPLAY_BPP;
}

uint8_t *framebuffer_pixels(struct framebuffer *fb)
{
    return fb->pixels;
}

unsigned framebuffer_width(const struct framebuffer *fb)
{
    return fb->width;
}

unsigned framebuffer_height(const struct framebuffer *fb)
{
    return fb->height;
}

unsigned framebuffer_stride(const struct framebuffer *fb)
{
    return fb->stride;
}

uint64_t framebuffer_pages(const struct framebuffer *fb)
{
    return fb->size / FB_PAGE;
}

/* Under lock: fetches (and re-arms) KVM's dirty bits into FRESH and adds them to snap_dirty.
 * Returns whether any page was written, or -1 while detached. */
static int fetch_dirty_locked(struct framebuffer *fb, uint64_t *fresh)
{
    memset(fresh, 0, fb->words * 8);
    if (!fb->m)
        return -1;
    struct kvm_dirty_log log = {.slot = DISPLAY_FB_SLOT, .dirty_bitmap = fresh};
    if (ioctl(fb->m->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
        return -1;
    bool any = false;
    for (size_t i = 0; i < fb->words; i++) {
        fb->snap_dirty[i] |= fresh[i]; /* snapshots need these pages too */
        any |= fresh[i] != 0;
    }
    return any;
}

int framebuffer_take_dirty(struct framebuffer *fb, uint64_t *bitmap)
{
    pthread_mutex_lock(&fb->lock);
    int r = fetch_dirty_locked(fb, bitmap);
    pthread_mutex_unlock(&fb->lock);
    if (atomic_exchange(&fb->full_redraw, false))
        return 2;
    return r < 0 ? 0 : 1;
}

void framebuffer_collect_dirty(struct framebuffer *fb, uint64_t *bitmap)
{
    uint64_t *fresh = calloc(fb->words, 8);
    int any = 0;
    pthread_mutex_lock(&fb->lock);
    if (fresh)
        any = fetch_dirty_locked(fb, fresh);
    for (size_t i = 0; i < fb->words; i++) {
        bitmap[i] |= fb->snap_dirty[i];
        fb->snap_dirty[i] = 0;
    }
    pthread_mutex_unlock(&fb->lock);
    free(fresh);
    if (any > 0) /* the viewers did not see these bits: show the whole screen again */
        framebuffer_redraw(fb);
}

/* ---- state ---- */

struct fb_geometry {
    uint32_t width, height, stride, bpp;
    uint64_t size;
};

int framebuffer_save(struct framebuffer *fb, struct state_writer *w)
{
    struct fb_geometry g = {fb->width, fb->height, fb->stride, DISPLAY_BPP, fb->size};
    state_put(w, TAG_FBCF, 0, &g, sizeof(g));
    return w->error;
}

int framebuffer_save_contents(struct framebuffer *fb, struct state_writer *w)
{
    state_put(w, TAG_FBMM, 0, fb->pixels, fb->size);
    return w->error;
}

int framebuffer_load(struct framebuffer *fb, const struct state_reader *r)
{
    struct fb_geometry g;
    int rc = state_get_exact(r, TAG_FBCF, 0, &g, sizeof(g));
    if (rc < 0)
        return rc;
    if (g.width != fb->width || g.height != fb->height || g.stride != fb->stride ||
        g.bpp != DISPLAY_BPP || g.size != fb->size)
        return -EINVAL;
    const struct state_record *rec = state_get(r, TAG_FBMM, 0);
    if (rec && rec->len != fb->size)
        return -EINVAL;
    if (rec) /* a suspend state; snapshots restore the framebuffer's pages themselves */
        memcpy(fb->pixels, rec->data, fb->size);
    framebuffer_redraw(fb);
    return 0;
}

/* ---- input ---- */

void framebuffer_keyboard_bytes(struct framebuffer *fb, const uint8_t *bytes, size_t n)
{
    pthread_mutex_lock(&fb->lock);
    if (fb->kbd)
        i8042_keyboard_bytes(fb->kbd, bytes, n);
    pthread_mutex_unlock(&fb->lock);
}

void framebuffer_mouse(struct framebuffer *fb, int dx, int dy, int dz, unsigned buttons)
{
    pthread_mutex_lock(&fb->lock);
    if (fb->kbd)
        i8042_mouse_event(fb->kbd, dx, dy, dz, buttons);
    pthread_mutex_unlock(&fb->lock);
}
