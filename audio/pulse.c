/* PulseAudio output: one playback stream per VM, named after it, on libpulse's threaded main
 * loop (asynchronous API). The mixer thread hands frames to pulse_out_write(), which queues them
 * in a small ring and writes what the server asks for; nothing here ever waits for the server.
 * The one idea: the connection is disposable. If no server answers, one warning is logged and a
 * timer retries every 2 s in silence; if the server goes away, the same timer reconnects.
 * The server's buffer starts small (40 ms, for a low latency) and doubles, up to 320 ms, each
 * time the server runs dry while a sound plays: on a loaded or slow host (the KVM box) the
 * mixer thread is sometimes late, and a longer buffer hears that as latency, not as gaps.
 * That is what PulseAudio's own ALSA sinks do for late hardware; the size holds for the
 * process's life and shows in `vmws volume` and vmm.log. */
#include <pulse/pulseaudio.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/audio.h"
#include "core/util/log.h"

#define RING_FRAMES (AUDIO_RATE / 5) /* 200 ms beyond the server's buffer, then drop */
#define TARGET_LATENCY_US 40000      /* what the server buffers for us, at first */
#define MAX_LATENCY_US 320000        /* ... after underruns at the most */
#define MIN_REQUEST_US 10000 /* server wakes us at most every 10 ms */
#define RETRY_US 2000000

enum pulse_state { PULSE_CONNECTING, PULSE_READY, PULSE_UNAVAILABLE };

struct pulse_out {
    pa_threaded_mainloop *ml;
    pa_mainloop_api *api;
    pa_context *ctx;
    pa_stream *st;
    pa_time_event *retry;
    char name[128];
    enum pulse_state state;
    bool ever_ready;
    bool corked; /* idle: corked and flushed, so a restart never plays stale data */
    /* The ring and the counters are guarded by the main loop's lock. */
    int16_t ring[RING_FRAMES * AUDIO_CHANNELS];
    size_t head, len; /* in frames */
    uint64_t underruns, dropped, written;
    unsigned latency_us; /* the server's buffer (tlength); playback (re)starts at half of it */
};

/* One warning per process, however often the VM reboots and reconnects. */
static bool warned_unreachable;

static const pa_sample_spec sample_spec = {
    .format = PA_SAMPLE_S16LE, .rate = AUDIO_RATE, .channels = AUDIO_CHANNELS};

static void connect_context(struct pulse_out *p);

static void drain_locked(struct pulse_out *p)
{
    if (!p->st || pa_stream_get_state(p->st) != PA_STREAM_READY)
        return;
    size_t writable = pa_stream_writable_size(p->st);
    if (writable == (size_t)-1)
        return;
    size_t frames = writable / (2 * AUDIO_CHANNELS);
    if (frames > p->len)
        frames = p->len;
    while (frames) {
        size_t chunk = RING_FRAMES - p->head < frames ? RING_FRAMES - p->head : frames;
        if (pa_stream_write(p->st, &p->ring[p->head * AUDIO_CHANNELS], chunk * 2 * AUDIO_CHANNELS,
                            NULL, 0, PA_SEEK_RELATIVE) < 0)
            return;
        p->head = (p->head + chunk) % RING_FRAMES;
        p->len -= chunk;
        p->written += chunk;
        frames -= chunk;
    }
}

static void retry_cb(pa_mainloop_api *api, pa_time_event *e, const struct timeval *tv, void *ud)
{
    struct pulse_out *p = ud;
    (void)tv;
    api->time_free(e);
    p->retry = NULL;
    connect_context(p);
}

/* The context or stream failed: drop both and try again later (from the timer, not from
 * inside their own callbacks). */
static void connection_lost(struct pulse_out *p, const char *why)
{
    if (p->retry)
        return;
    if (p->ever_ready && p->state == PULSE_READY)
        vmm_log("audio: lost the PulseAudio server (%s); reconnecting every %d s", why,
                RETRY_US / 1000000);
    else if (!p->ever_ready && !warned_unreachable) {
        const char *server = getenv("PULSE_SERVER");
        vmm_log("audio: warning: no PulseAudio server reachable (%s%s%s): the VM runs without "
                "sound, its sound card keeps time; retrying every %d s",
                why, server ? ", PULSE_SERVER=" : "", server ? server : "", RETRY_US / 1000000);
        warned_unreachable = true;
    }
    p->state = p->ever_ready ? PULSE_CONNECTING : PULSE_UNAVAILABLE;
    p->len = 0;
    struct timeval tv;
    p->retry =
        p->api->time_new(p->api, pa_timeval_add(pa_gettimeofday(&tv), RETRY_US), retry_cb, p);
}

static void write_cb(pa_stream *s, size_t nbytes, void *ud)
{
    (void)s;
    (void)nbytes;
    drain_locked(ud);
}

static pa_buffer_attr buffer_attr(unsigned latency_us)
{
    return (pa_buffer_attr){
        .maxlength = (uint32_t)-1,
        .tlength = (uint32_t)pa_usec_to_bytes(latency_us, &sample_spec),
        .prebuf = (uint32_t)pa_usec_to_bytes(latency_us / 2, &sample_spec),
        .minreq = (uint32_t)pa_usec_to_bytes(MIN_REQUEST_US, &sample_spec),
        .fragsize = (uint32_t)-1,
    };
}

/* The server played all we gave it. A corked stream never runs dry, and the mixer writes a tail
 * of silence before it corks, so here a sound was playing and we were late. */
static void underflow_cb(pa_stream *s, void *ud)
{
    struct pulse_out *p = ud;
    p->underruns++;
    if (p->latency_us >= MAX_LATENCY_US)
        return;
    p->latency_us *= 2;
    pa_buffer_attr ba = buffer_attr(p->latency_us);
    pa_operation *o = pa_stream_set_buffer_attr(s, &ba, NULL, NULL);
    if (o)
        pa_operation_unref(o);
    vmm_log("audio: PulseAudio ran dry (underrun %llu): its buffer is now %u ms",
            (unsigned long long)p->underruns, p->latency_us / 1000);
}

static void stream_state_cb(pa_stream *s, void *ud)
{
    struct pulse_out *p = ud;
    switch (pa_stream_get_state(s)) {
    case PA_STREAM_READY:
        if (!p->ever_ready || p->state != PULSE_READY)
            vmm_log("audio: playing through PulseAudio as stream '%s' (%u ms buffer)", p->name,
                    p->latency_us / 1000);
        p->state = PULSE_READY;
        p->ever_ready = true;
        break;
    case PA_STREAM_FAILED:
        connection_lost(p, pa_strerror(pa_context_errno(p->ctx)));
        break;
    default:
        break;
    }
}

static void create_stream(struct pulse_out *p)
{
    pa_proplist *pl = pa_proplist_new();
    pa_proplist_sets(pl, PA_PROP_MEDIA_NAME, p->name);
    pa_proplist_sets(pl, PA_PROP_MEDIA_ROLE, "game");
    p->st = pa_stream_new_with_proplist(p->ctx, p->name, &sample_spec, NULL, pl);
    pa_proplist_free(pl);
    if (!p->st) {
        connection_lost(p, pa_strerror(pa_context_errno(p->ctx)));
        return;
    }
    pa_stream_set_state_callback(p->st, stream_state_cb, p);
    pa_stream_set_write_callback(p->st, write_cb, p);
    pa_stream_set_underflow_callback(p->st, underflow_cb, p);
    pa_buffer_attr ba = buffer_attr(p->latency_us);
    p->corked = true; /* until there is something to play */
    if (pa_stream_connect_playback(
            p->st, NULL, &ba, PA_STREAM_ADJUST_LATENCY | PA_STREAM_START_CORKED, NULL, NULL) < 0)
        connection_lost(p, pa_strerror(pa_context_errno(p->ctx)));
}

static void context_state_cb(pa_context *c, void *ud)
{
    struct pulse_out *p = ud;
    switch (pa_context_get_state(c)) {
    case PA_CONTEXT_READY:
        create_stream(p);
        break;
    case PA_CONTEXT_FAILED:
    case PA_CONTEXT_TERMINATED:
        connection_lost(p, pa_strerror(pa_context_errno(c)));
        break;
    default:
        break;
    }
}

static void drop_connection(struct pulse_out *p)
{
    if (p->st) {
        pa_stream_set_state_callback(p->st, NULL, NULL);
        pa_stream_set_write_callback(p->st, NULL, NULL);
        pa_stream_set_underflow_callback(p->st, NULL, NULL);
        pa_stream_disconnect(p->st);
        pa_stream_unref(p->st);
        p->st = NULL;
    }
    if (p->ctx) {
        pa_context_set_state_callback(p->ctx, NULL, NULL);
        pa_context_disconnect(p->ctx);
        pa_context_unref(p->ctx);
        p->ctx = NULL;
    }
}

/* Runs on the main loop's thread or with its lock held. */
static void connect_context(struct pulse_out *p)
{
    drop_connection(p);
    pa_proplist *pl = pa_proplist_new();
    pa_proplist_sets(pl, PA_PROP_APPLICATION_NAME, "vmws");
    pa_proplist_sets(pl, PA_PROP_APPLICATION_ID, "vmws");
    p->ctx = pa_context_new_with_proplist(p->api, "vmws", pl);
    pa_proplist_free(pl);
    if (!p->ctx) {
        connection_lost(p, "out of memory");
        return;
    }
    pa_context_set_state_callback(p->ctx, context_state_cb, p);
    if (pa_context_connect(p->ctx, NULL, PA_CONTEXT_NOAUTOSPAWN, NULL) < 0)
        connection_lost(p, pa_strerror(pa_context_errno(p->ctx)));
}

static void pulse_out_destroy(struct pulse_out *p);

static struct pulse_out *pulse_out_create(const char *stream_name)
{
    struct pulse_out *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    snprintf(p->name, sizeof(p->name), "%s", stream_name);
    p->latency_us = TARGET_LATENCY_US;
    p->ml = pa_threaded_mainloop_new();
    if (!p->ml) {
        free(p);
        return NULL;
    }
    p->api = pa_threaded_mainloop_get_api(p->ml);
    pa_threaded_mainloop_set_name(p->ml, "vmws-pulse");
    pa_threaded_mainloop_lock(p->ml);
    connect_context(p);
    pa_threaded_mainloop_unlock(p->ml);
    if (pa_threaded_mainloop_start(p->ml) < 0) {
        pulse_out_destroy(p);
        return NULL;
    }
    return p;
}

static void pulse_out_write(struct pulse_out *p, const int16_t *frames, unsigned n)
{
    pa_threaded_mainloop_lock(p->ml);
    if (p->state == PULSE_READY) {
        for (unsigned i = 0; i < n; i++) {
            if (p->len == RING_FRAMES) { /* the server fell behind: drop the oldest */
                p->head = (p->head + 1) % RING_FRAMES;
                p->len--;
                p->dropped++;
            }
            size_t tail = (p->head + p->len) % RING_FRAMES;
            memcpy(&p->ring[tail * AUDIO_CHANNELS], &frames[i * AUDIO_CHANNELS],
                   sizeof(int16_t) * AUDIO_CHANNELS);
            p->len++;
        }
        drain_locked(p);
        if (p->corked && p->st && pa_stream_get_state(p->st) == PA_STREAM_READY) {
            pa_operation *o = pa_stream_cork(p->st, 0, NULL, NULL);
            if (o)
                pa_operation_unref(o);
            p->corked = false;
        }
    }
    pa_threaded_mainloop_unlock(p->ml);
}

static void pulse_out_idle(struct pulse_out *p)
{
    pa_threaded_mainloop_lock(p->ml);
    if (!p->corked && p->st && pa_stream_get_state(p->st) == PA_STREAM_READY) {
        pa_operation *o = pa_stream_cork(p->st, 1, NULL, NULL);
        if (o)
            pa_operation_unref(o);
        o = pa_stream_flush(p->st, NULL, NULL);
        if (o)
            pa_operation_unref(o);
        p->corked = true;
    }
    p->len = 0;
    pa_threaded_mainloop_unlock(p->ml);
}

static const char *pulse_out_state(struct pulse_out *p)
{
    static const char *const names[] = {"connecting", "connected", "unavailable"};
    pa_threaded_mainloop_lock(p->ml);
    const char *s = names[p->state];
    pa_threaded_mainloop_unlock(p->ml);
    return s;
}

static void pulse_out_stats(struct pulse_out *p, uint64_t *underruns, uint64_t *dropped_frames,
                            uint64_t *written_frames, unsigned *buffer_ms)
{
    pa_threaded_mainloop_lock(p->ml);
    *buffer_ms = p->latency_us / 1000;
    *underruns = p->underruns;
    *dropped_frames = p->dropped;
    *written_frames = p->written;
    pa_threaded_mainloop_unlock(p->ml);
}

static void pulse_out_destroy(struct pulse_out *p)
{
    if (!p)
        return;
    pa_threaded_mainloop_lock(p->ml);
    if (p->retry) {
        p->api->time_free(p->retry);
        p->retry = NULL;
    }
    drop_connection(p);
    pa_threaded_mainloop_unlock(p->ml);
    pa_threaded_mainloop_stop(p->ml);
    pa_threaded_mainloop_free(p->ml);
    free(p);
}

const struct pulse_ops vmws_module_pulse = {
    .create = pulse_out_create,
    .write = pulse_out_write,
    .idle = pulse_out_idle,
    .state = pulse_out_state,
    .stats = pulse_out_stats,
    .destroy = pulse_out_destroy,
};
