/* Internals shared by the display's files: the struct, and the small interfaces of its two
 * viewers (sdl.c, vnc.c) and the key tables (keymap.c). Only display/ includes this. */
#ifndef VMWS_DISPLAY_PRIV_H
#define VMWS_DISPLAY_PRIV_H

#include <pthread.h>
#include <stdatomic.h>

#include "display/display.h"

struct sdl_view;
struct vnc_server;

struct display {
    struct display_config cfg;
    struct framebuffer *device; /* the VMM's (core/devices/framebuffer.h) */
    uint8_t *fb;                /* its pixels */
    unsigned width, height, stride;

    pthread_mutex_t lock; /* guards state */
    char state[32];

    pthread_t refresh_thread;
    bool refresh_started;
    int wake_fd; /* eventfd: a viewer appeared, the state changed, redraw, or we stop */
    atomic_bool stopping;
    atomic_uint_fast64_t updates;

    const struct sdl_ops *sdl_ops; /* the loaded viewer modules (core/vmm/module.h) */
    const struct vnc_ops *vnc_ops;
    struct sdl_view *sdl;
    struct vnc_server *vnc;
};

/* Wakes the refresh thread (a viewer opened, the title changed). */
void display_wake(struct display *d);

/* sdl.c, the module vmws-sdl.so (vmws_module_sdl): a window on its own thread. */
struct sdl_ops {
    /* NULL with ERR if SDL cannot open a window. */
    struct sdl_view *(*start)(struct display *d, char *err, size_t errlen);
    /* Rows [y0, y1) changed. Cheap: coalesced and handed to the window's thread. */
    void (*update)(struct sdl_view *s, unsigned y0, unsigned y1);
    void (*title)(struct sdl_view *s);
    bool (*open)(struct sdl_view *s);
    void (*stop)(struct sdl_view *s);
};

/* vnc.c, the module vmws-vnc.so (vmws_module_vnc): libvncserver in its threaded mode (a
 * listener thread, two threads per client). */
struct vnc_ops {
    struct vnc_server *(*start)(struct display *d, char *err, size_t errlen);
    void (*update)(struct vnc_server *v, unsigned y0, unsigned y1);
    unsigned (*clients)(const struct vnc_server *v);
    int (*port)(const struct vnc_server *v);
    void (*stop)(struct vnc_server *v);
};

/* keymap.c: set-1 scancodes (what the guest reads from the i8042 with translation on). */
/* Writes the make (DOWN) or break code of USB usage USAGE into OUT (up to 6 bytes); returns
 * the count, 0 for keys without a set-1 code. */
size_t keymap_usb_to_set1(unsigned usage, bool down, uint8_t out[6]);
/* X11/RFB keysym -> USB usage (US layout; shifted symbols map to their unshifted key, since
 * VNC clients send Shift themselves). 0 if unknown. */
unsigned keymap_keysym_to_usb(uint32_t keysym);

#endif
