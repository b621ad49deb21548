/* The guest's screen on the host: the refresh loop that shows the framebuffer device
 * (core/devices/framebuffer.h) in an SDL2 window and serves it over VNC, with keyboard and
 * mouse going back through the device to the guest's i8042. The one idea: KVM's dirty log on the
 * framebuffer slot says which pages the guest wrote, so a still screen costs a dirty-log query
 * per frame and sends nothing, and a change costs only the rows it touched. The VMM reaches
 * this through its backend table (core/vmm/backends.h), never by including it. */
#ifndef VMWS_DISPLAY_H
#define VMWS_DISPLAY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config/dconfig.h"

struct framebuffer;
struct display;

/* Starts the refresh thread, the VNC server and the SDL window as configured, showing FB
 * (which must outlive the display). Returns NULL with ERR set. */
struct display *display_create(struct framebuffer *fb, const struct display_config *cfg, char *err,
                               size_t errlen);
/* "running", "paused", ...: shown in the window title. Any thread. */
void display_set_state(struct display *d, const char *state);
/* {"sdl": window open, "updates": rectangles handed to SDL/VNC so far, "vnc": {"host", "port",
 * "password", "clients"} if VNC listens}. */
json_t *display_status_json(struct display *d);
void display_destroy(struct display *d);

/* --- input, from the SDL window and VNC clients (any thread) --- */
/* KEY is a USB HID usage (== SDL_Scancode); sends its set-1 make or break code. */
void display_key_usb(struct display *d, unsigned usage, bool down);
/* Relative motion (pixels, y down) with buttons (bit 0 left, 1 right, 2 middle), wheel DZ. */
void display_mouse(struct display *d, int dx, int dy, int dz, unsigned buttons);

#endif
