/* The sound of one VM on the host: a mixer thread that is the sound devices' clock
 * (core/devices/sound.h) - it asks the ES1370 and the PC speaker for the frames due at the
 * rate the guest programmed - and a PulseAudio stream named after the VM that plays the mix.
 * The one idea: the mixer consumes guest PCM and raises period interrupts on its own schedule
 * whether or not a sound server listens, so a guest never waits on audio and never sees a
 * missing server as a hung card. The VMM reaches this through its backend table
 * (core/vmm/backends.h), never by including it. */
#ifndef VMWS_AUDIO_H
#define VMWS_AUDIO_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/devices/sound.h"
#include "core/vmm/backends.h" /* struct audio_config */

#define AUDIO_TICK_NS 5000000LL                 /* the mixer wakes every 5 ms */
#define AUDIO_MAX_TICK_FRAMES (AUDIO_RATE / 10) /* a late wakeup renders at most 100 ms */

struct machine;

struct audio;
/* Starts the mixer thread for the card and speaker of M (which must outlive it) and the
 * PulseAudio client. No server is not an error (one warning in the log). NULL on failure (out
 * of memory, thread). */
struct audio *audio_create(struct machine *m, struct es1370 *card, struct pcspk *speaker,
                           const struct audio_config *cfg);
/* Stops the mixer thread (no more DMA or interrupts); call before the devices go away. */
void audio_stop(struct audio *a);
void audio_destroy(struct audio *a);
/* Software volume applied to the mix (perceptual: gain = (volume/100)^3). Any thread. */
void audio_set_volume(struct audio *a, unsigned volume, bool muted);
/* {"volume", "muted", "server", "es1370", "pcspk", "frames_played", ...} for query-audio. */
json_t *audio_status_json(struct audio *a);

/* --- PulseAudio output: pulse.c, the module vmws-pulse.so (vmws_module_pulse) --- */
struct pulse_out;
struct pulse_ops {
    struct pulse_out *(*create)(const char *stream_name);
    /* Queues N stereo S16 frames; never blocks on the server (drops the oldest beyond
     * ~200 ms). */
    void (*write)(struct pulse_out *p, const int16_t *frames, unsigned n);
    /* Every source went quiet (after a tail of silence): cork and flush the stream. */
    void (*idle)(struct pulse_out *p);
    /* "connected", "connecting", "unavailable" */
    const char *(*state)(struct pulse_out *p);
    /* buffer_ms: the server's buffer now (it grows after underruns). */
    void (*stats)(struct pulse_out *p, uint64_t *underruns, uint64_t *dropped_frames,
                  uint64_t *written_frames, unsigned *buffer_ms);
    void (*destroy)(struct pulse_out *p);
};

#endif
