/* The guest's screen: a linear framebuffer in its own KVM memory slot, shown in an SDL2 window
 * and served over VNC, with keyboard and mouse going back through the i8042. The one idea: KVM's
 * dirty log on the framebuffer slot says which pages the guest wrote, so a still screen costs a
 * dirty-log query per frame and sends nothing, and a change costs only the rows it touched.
 * The display outlives reboots (the VM's machine is rebuilt on reset); attach/detach follow it. */
#ifndef VMWS_DISPLAY_H
#define VMWS_DISPLAY_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config/dconfig.h"

/* Where the framebuffer sits in guest-physical space: in the 32-bit PCI hole, above the BARs
 * core/devices/pci.c assigns from 0xE0000000, below the IOAPIC (0xFEC00000). */
#define DISPLAY_FB_GPA 0xfc000000ULL
#define DISPLAY_FB_SLOT 2

struct machine;
struct i8042;
struct boot_framebuffer;
struct state_writer;
struct state_reader;

struct display;

/* Creates the framebuffer (a memfd) and starts the refresh thread, the VNC server and the SDL
 * window as configured. Returns NULL with ERR set. */
struct display *display_create(const struct display_config *cfg, char *err, size_t errlen);
/* Maps the framebuffer into M as DISPLAY_FB_SLOT with dirty logging; keyboard and mouse go to
 * KBD from now on. Returns 0 or -errno with ERR set. */
int display_attach(struct display *d, struct machine *m, struct i8042 *kbd, char *err,
                   size_t errlen);
/* Before the machine is destroyed: no more dirty-log queries or input into it. */
void display_detach(struct display *d);
/* What the boot loader writes into boot_params.screen_info. */
void display_boot_framebuffer(const struct display *d, struct boot_framebuffer *fb);
/* "running", "paused", ...: shown in the window title. Any thread. */
void display_set_state(struct display *d, const char *state);
/* VNC: the address actually listened on (port 0 if VNC is off) and connected clients. */
int display_vnc_port(const struct display *d);
const char *display_vnc_host(const struct display *d);
unsigned display_vnc_clients(const struct display *d);
bool display_vnc_auth(const struct display *d); /* a password is required */
bool display_sdl_open(const struct display *d);
unsigned display_width(const struct display *d);
unsigned display_height(const struct display *d);
/* Updates sent so far (rectangles handed to SDL/VNC after dirty-log queries); for tests. */
uint64_t display_updates(const struct display *d);
void display_destroy(struct display *d);

/* Snapshots keep the framebuffer's pages in their page deltas, like RAM (page numbers after
 * RAM's): display_collect_dirty() ORs into BITMAP the pages written since its last call (and
 * re-shows the screen, whose dirty bits it consumed). display_save() writes the geometry
 * ('F','B','C','F'); display_save_contents() adds the whole framebuffer ('F','B','M','M') for
 * suspend, whose state must stand alone. display_load() checks the geometry, loads contents if
 * present and redraws. After the framebuffer's bytes were replaced, call display_redraw(). */
int display_save(struct display *d, struct state_writer *w);
int display_save_contents(struct display *d, struct state_writer *w);
int display_load(struct display *d, const struct state_reader *r);
uint8_t *display_fb_host(struct display *d);
uint64_t display_fb_pages(const struct display *d);
void display_collect_dirty(struct display *d, uint64_t *bitmap);
/* All pages count as changed since the last snapshot (after a resume). */
void display_mark_all_dirty(struct display *d);
void display_redraw(struct display *d);

/* --- input, from the SDL window and VNC clients (any thread) --- */
/* KEY is a USB HID usage (== SDL_Scancode); sends its set-1 make or break code. */
void display_key_usb(struct display *d, unsigned usage, bool down);
/* Relative motion (pixels, y down) with buttons (bit 0 left, 1 right, 2 middle), wheel DZ. */
void display_mouse(struct display *d, int dx, int dy, int dz, unsigned buttons);

#endif
