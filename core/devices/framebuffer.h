/* The guest's screen as a device: a linear 32 bpp framebuffer in its own KVM memory slot at
 * DISPLAY_FB_GPA, with KVM's dirty log on it, and the keyboard and mouse of whatever machine it
 * is attached to. It outlives reboots (the VMM attaches it to each new machine). Who shows it -
 * the display's refresh loop and viewers (display/) - reads its pixels and asks which pages
 * changed; snapshots keep its pages like RAM. The one idea: KVM's dirty bits are read once and
 * serve both consumers, so neither hides a change from the other. */
#ifndef VMWS_FRAMEBUFFER_H
#define VMWS_FRAMEBUFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* In the 32-bit PCI hole, above the BARs core/devices/pci.c assigns from 0xE0000000, below
 * the IOAPIC (0xFEC00000). */
#define DISPLAY_FB_GPA 0xfc000000ULL
#define DISPLAY_FB_SLOT 2

struct machine;
struct i8042;
struct boot_framebuffer;
struct state_writer;
struct state_reader;
struct framebuffer;

/* A WIDTH x HEIGHT framebuffer (display_check_size() rules), in a memfd. NULL with ERR. */
struct framebuffer *framebuffer_create(unsigned width, unsigned height, char *err, size_t errlen);
void framebuffer_destroy(struct framebuffer *fb);
/* Maps it into M as DISPLAY_FB_SLOT with dirty logging; input goes to KBD from now on.
 * Returns 0 or -errno with ERR set. */
int framebuffer_attach(struct framebuffer *fb, struct machine *m, struct i8042 *kbd, char *err,
                       size_t errlen);
/* Before the machine is destroyed: no more dirty-log queries or input into it. */
void framebuffer_detach(struct framebuffer *fb);
/* What the boot loader writes into boot_params.screen_info. */
void framebuffer_boot_info(const struct framebuffer *fb, struct boot_framebuffer *out);

uint8_t *framebuffer_pixels(struct framebuffer *fb);
unsigned framebuffer_width(const struct framebuffer *fb);
unsigned framebuffer_height(const struct framebuffer *fb);
unsigned framebuffer_stride(const struct framebuffer *fb); /* bytes per row */
uint64_t framebuffer_pages(const struct framebuffer *fb);  /* 4 KiB pages */

/* CHANGED(OPAQUE) is called (any thread) when the whole screen must be shown again: after
 * attach, a load, a snapshot's revert or a snapshot that consumed dirty bits. */
void framebuffer_set_listener(struct framebuffer *fb, void (*changed)(void *), void *opaque);

/* For a viewer: fills BITMAP (framebuffer_pages() bits) with the pages written since the last
 * call and returns 1, or returns 2 if everything must be redrawn, or 0 while detached. */
int framebuffer_take_dirty(struct framebuffer *fb, uint64_t *bitmap);
/* For snapshots: ORs into BITMAP the pages written since the last snapshot took them. */
void framebuffer_collect_dirty(struct framebuffer *fb, uint64_t *bitmap);
/* Its bytes were replaced behind the viewers' backs: show everything again. */
void framebuffer_redraw(struct framebuffer *fb);

/* The geometry ('F','B','C','F'); save_contents adds the whole framebuffer ('F','B','M','M') for
 * suspend, whose state must stand alone. Load checks the geometry and loads contents if
 * present; -EINVAL if the VM's display size changed since the state was saved. */
int framebuffer_save(struct framebuffer *fb, struct state_writer *w);
int framebuffer_save_contents(struct framebuffer *fb, struct state_writer *w);
int framebuffer_load(struct framebuffer *fb, const struct state_reader *r);

/* Input, from the viewers (any thread): set-1 scancode bytes, and relative mouse motion with
 * buttons (bit 0 left, 1 right, 2 middle) and wheel, into the attached machine's i8042. */
void framebuffer_keyboard_bytes(struct framebuffer *fb, const uint8_t *bytes, size_t n);
void framebuffer_mouse(struct framebuffer *fb, int dx, int dy, int dz, unsigned buttons);

#endif
