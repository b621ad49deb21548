/* The sound of one VM: an Ensoniq ES1370 on the PCI bus, the PC speaker on port 0x61 (PIT
 * channel 2 from KVM), a mixer thread that runs both at the rate the guest programmed, and a
 * PulseAudio stream named after the VM that plays the mix. The one idea: the mixer thread is the
 * device's clock — it consumes guest PCM and raises period interrupts on its own schedule
 * whether or not a sound server listens, so a guest never waits on audio and never sees a
 * missing server as a hung card. */
#ifndef VMWS_AUDIO_H
#define VMWS_AUDIO_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/devices/devices.h"
#include "core/snapshot/state.h"
#include "core/vm/machine.h"

/* What every source renders into: interleaved stereo, 44.1 kHz, summed in 32 bits. */
#define AUDIO_RATE 44100
#define AUDIO_CHANNELS 2
#define AUDIO_TICK_NS 5000000LL                 /* the mixer wakes every 5 ms */
#define AUDIO_MAX_TICK_FRAMES (AUDIO_RATE / 10) /* a late wakeup renders at most 100 ms */

#define ES1370_PCI_SLOT 5

struct audio_config {
    const char *vm_name; /* names the PulseAudio stream */
    unsigned volume;     /* 0..100 */
    bool muted;
};

struct audio;
/* Creates the ES1370 on PCI (slot ES1370_PCI_SLOT), claims port 0x61 and starts the mixer thread
 * and the PulseAudio client. No server is not an error (one warning in the log). NULL on
 * failure (out of memory, slot or port taken, thread). */
struct audio *audio_create(struct machine *m, struct pci_bus *pci, const struct audio_config *cfg);
/* Stops the mixer thread (no more DMA or interrupts); call before the machine goes away. */
void audio_stop(struct audio *a);
void audio_destroy(struct audio *a);
/* Software volume applied to the mix (perceptual: gain = (volume/100)^3). Any thread. */
void audio_set_volume(struct audio *a, unsigned volume, bool muted);
/* {"volume", "muted", "server", "es1370", "pcspk", "frames_played", ...} for query-audio. */
json_t *audio_status_json(struct audio *a);
/* Device state for suspend/snapshots: records 'ES13' and 'PCSP'. */
int audio_save(struct audio *a, struct state_writer *w);
int audio_load(struct audio *a, const struct state_reader *r);

/* --- sources, each in its own file; the mixer calls render() every tick --- */
struct es1370;
struct es1370 *es1370_create(struct machine *m, struct pci_bus *pci, unsigned slot);
void es1370_destroy(struct es1370 *e);
/* Adds N frames of the card's output to MIX (stereo int32), consuming guest PCM at the
 * programmed rates and raising period interrupts. Returns true if a DAC was running. */
bool es1370_render(struct es1370 *e, int32_t *mix, unsigned n);
json_t *es1370_status_json(struct es1370 *e);
int es1370_save(struct es1370 *e, struct state_writer *w);
int es1370_load(struct es1370 *e, const struct state_reader *r);

struct pcspk;
struct pcspk *pcspk_create(struct machine *m);
void pcspk_destroy(struct pcspk *p);
bool pcspk_render(struct pcspk *p, int32_t *mix, unsigned n);
json_t *pcspk_status_json(struct pcspk *p);
int pcspk_save(struct pcspk *p, struct state_writer *w);
int pcspk_load(struct pcspk *p, const struct state_reader *r);

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
    void (*stats)(struct pulse_out *p, uint64_t *underruns, uint64_t *dropped_frames,
                  uint64_t *written_frames);
    void (*destroy)(struct pulse_out *p);
};

#endif
