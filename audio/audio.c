/* The mixer: one thread per VM that wakes every AUDIO_TICK_NS on CLOCK_MONOTONIC, asks each
 * source (ES1370, PC speaker) for the frames due since the last tick, applies the VM's volume
 * and hands the mix to PulseAudio. Because the number of frames comes from the clock, not from
 * the server, the card's DMA and interrupts keep real time with or without a server. While
 * every source is idle nothing is sent, so an idle VM costs the sound server nothing. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audio/audio.h"
#include "core/util/log.h"
#include "core/vm/machine.h"
#include "core/vmm/module.h"

#define IDLE_TAIL_TICKS 20 /* keep sending silence 100 ms after the last sound */

struct audio {
    struct machine *m;
    struct es1370 *es1370;
    struct pcspk *pcspk;
    const struct pulse_ops *pulse; /* vmws-pulse.so, NULL if it did not load */
    struct pulse_out *out;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    atomic_uint gain_q16; /* 0..65536 */
    atomic_uint volume;
    atomic_bool muted;
    atomic_ullong frames_rendered, frames_sent;
    int32_t mix[AUDIO_MAX_TICK_FRAMES * AUDIO_CHANNELS];
    int16_t pcm[AUDIO_MAX_TICK_FRAMES * AUDIO_CHANNELS];
};

static int64_t ns_of(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static void *audio_thread(void *arg)
{
    struct audio *a = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    int64_t start = ns_of(&next);
    uint64_t frames_done = 0;
    unsigned idle_ticks = IDLE_TAIL_TICKS;
    while (!atomic_load(&a->stop)) {
        next.tv_nsec += AUDIO_TICK_NS;
        if (next.tv_nsec >= 1000000000) {
            next.tv_nsec -= 1000000000;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
            ;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        uint64_t due = (uint64_t)(ns_of(&now) - start) * AUDIO_RATE / 1000000000ull - frames_done;
        if (due > AUDIO_MAX_TICK_FRAMES) { /* the host stalled us: skip ahead, not catch up */
            frames_done += due - AUDIO_MAX_TICK_FRAMES;
            due = AUDIO_MAX_TICK_FRAMES;
            next = now;
        }
        if (!due)
            continue;
        unsigned n = (unsigned)due;
        frames_done += n;
        if (machine_is_paused(a->m)) { /* the card's clock stops with the vCPUs */
            idle_ticks = IDLE_TAIL_TICKS + 1;
            if (a->out)
                a->pulse->idle(a->out);
            continue;
        }
        memset(a->mix, 0, sizeof(int32_t) * n * AUDIO_CHANNELS);
        bool active = es1370_render(a->es1370, a->mix, n);
        active |= pcspk_render(a->pcspk, a->mix, n);
        atomic_fetch_add(&a->frames_rendered, n);
        idle_ticks = active ? 0 : idle_ticks + (idle_ticks <= IDLE_TAIL_TICKS);
        if (idle_ticks == IDLE_TAIL_TICKS + 1 && a->out)
            a->pulse->idle(a->out);
        if (idle_ticks > IDLE_TAIL_TICKS)
            continue;
        int64_t gain = atomic_load(&a->gain_q16);
        for (unsigned i = 0; i < n * AUDIO_CHANNELS; i++) {
            int64_t s = (a->mix[i] * gain) >> 16;
            a->pcm[i] = (int16_t)(s > 32767 ? 32767 : s < -32768 ? -32768 : s);
        }
        if (a->out)
            a->pulse->write(a->out, a->pcm, n);
        atomic_fetch_add(&a->frames_sent, n);
    }
    return NULL;
}

void audio_set_volume(struct audio *a, unsigned volume, bool muted)
{
    if (volume > 100)
        volume = 100;
    /* Cubic, like PulseAudio's own volume curve: 50% sounds about half as loud. */
    uint64_t g = (uint64_t)volume * volume * volume * 65536 / 1000000;
    atomic_store(&a->volume, volume);
    atomic_store(&a->muted, muted);
    atomic_store(&a->gain_q16, muted ? 0 : (unsigned)g);
}

struct audio *audio_create(struct machine *m, struct es1370 *card, struct pcspk *speaker,
                           const struct audio_config *cfg)
{
    struct audio *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->m = m;
    a->es1370 = card;
    a->pcspk = speaker;
    audio_set_volume(a, cfg->volume, cfg->muted);
    char err[512];
    a->pulse = vmws_module("pulse", err, sizeof(err));
    a->out = a->pulse ? a->pulse->create(cfg->vm_name) : NULL;
    if (!a->out)
        vmm_log("audio: cannot start the PulseAudio client%s%s: the VM runs without sound",
                a->pulse ? "" : ": ", a->pulse ? "" : err);
    int r = pthread_create(&a->thread, NULL, audio_thread, a);
    if (r) {
        vmm_log("audio: cannot start the mixer thread: %s", strerror(r));
        audio_destroy(a);
        return NULL;
    }
    a->thread_started = true;
    pthread_setname_np(a->thread, "vmws-audio");
    return a;
}

void audio_stop(struct audio *a)
{
    if (!a || !a->thread_started)
        return;
    atomic_store(&a->stop, true);
    pthread_join(a->thread, NULL);
    a->thread_started = false;
}

void audio_destroy(struct audio *a)
{
    if (!a)
        return;
    audio_stop(a);
    if (a->out)
        a->pulse->destroy(a->out);
    free(a);
}

json_t *audio_status_json(struct audio *a)
{
    uint64_t underruns = 0, dropped = 0, written = 0;
    unsigned buffer_ms = 0;
    if (a->out)
        a->pulse->stats(a->out, &underruns, &dropped, &written, &buffer_ms);
    return json_pack("{s:i, s:b, s:s, s:o, s:o, s:I, s:I, s:I, s:I, s:i}", "volume",
                     (int)atomic_load(&a->volume), "muted", atomic_load(&a->muted), "server",
                     a->out ? a->pulse->state(a->out) : "unavailable", "es1370",
                     es1370_status_json(a->es1370), "pcspk", pcspk_status_json(a->pcspk),
                     "frames_rendered", (json_int_t)atomic_load(&a->frames_rendered), "frames_sent",
                     (json_int_t)atomic_load(&a->frames_sent), "frames_played", (json_int_t)written,
                     "underruns", (json_int_t)underruns, "buffer_ms", (int)buffer_ms);
}
