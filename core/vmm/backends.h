/* What the VMM needs from the host-side backends - the display's refresh loop and viewers
 * (display/) and the sound mixer (audio/) - as a table of operations. The backends depend on
 * core (they show the framebuffer device, clock the sound devices); core does not depend on
 * them: whoever runs the VMM (app/cli_run.c) hands it the table in vmm_options. A NULL table, or
 * a NULL member, means that backend is absent: no window or VNC, or sound devices without a
 * clock (the VMM then leaves them out, as with [audio] enabled = no). */
#ifndef VMWS_BACKENDS_H
#define VMWS_BACKENDS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct display_config;
struct framebuffer;
struct machine;
struct es1370;
struct pcspk;
struct display;
struct audio;

/* How a VM's sound starts: the stream's name and [audio]'s volume. */
struct audio_config {
    const char *vm_name; /* names the PulseAudio stream */
    unsigned volume;     /* 0..100 */
    bool muted;
};

struct vmm_backends {
    struct {
        /* Shows FB as CFG says (SDL window, VNC server); NULL with ERR if a required viewer
         * cannot start. */
        struct display *(*create)(struct framebuffer *fb, const struct display_config *cfg,
                                  char *err, size_t errlen);
        void (*set_state)(struct display *d, const char *state); /* the window's title */
        json_t *(*status_json)(struct display *d);
        void (*destroy)(struct display *d);
    } display;
    struct {
        /* The clock and speaker of M's sound devices; NULL on failure. */
        struct audio *(*create)(struct machine *m, struct es1370 *card, struct pcspk *speaker,
                                const struct audio_config *cfg);
        void (*stop)(struct audio *a); /* no more DMA or interrupts */
        void (*destroy)(struct audio *a);
        void (*set_volume)(struct audio *a, unsigned volume, bool muted);
        json_t *(*status_json)(struct audio *a);
    } audio;
};

#endif
