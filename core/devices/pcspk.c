/* The PC speaker: system control port B (0x61) and the square wave of PIT channel 2. Bit 0 of
 * 0x61 gates channel 2, bit 1 connects its output to the speaker, bit 5 reads that output back
 * and bit 4 toggles with "DRAM refresh". The PIT itself lives in KVM: the gate is kept here and
 * given to KVM (KVM_SET_PIT2) only where it restarts the count (see port61_io) and, while both
 * bits are on, the mixer asks KVM_GET_PIT2 for channel 2's count every tick and plays a square
 * wave of 1193182 / count Hz. */
#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "core/devices/devices.h"
#include "core/devices/sound.h"
#include "core/util/log.h"
#include "core/util/state.h"
#include "core/vm/machine.h"

#define PIT_HZ 1193182ull
#define PORT61_GATE2 0x01
#define PORT61_SPEAKER 0x02
#define PORT61_REFRESH 0x10
#define PORT61_OUT2 0x20
#define SPEAKER_AMPLITUDE 0x2000
#define AUDIBLE_MIN_HZ 20
#define AUDIBLE_MAX_HZ 20000

struct pcspk_regs {
    uint32_t version;
    uint32_t port61; /* bits 0-3 as the guest wrote them */
    uint64_t phase;  /* 32.32 PIT ticks into the current square-wave period */
};

struct pcspk {
    struct machine *m;
    pthread_mutex_t lock;
    struct pcspk_regs r;
    uint32_t last_count; /* channel 2's count at the last tick, for status */
    uint64_t frames;     /* output frames with the speaker sounding */
    bool pit_error_logged;
};

static int64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int get_pit(struct pcspk *p, struct kvm_pit_state2 *ps)
{
    if (ioctl(p->m->vm_fd, KVM_GET_PIT2, ps) == 0)
        return 0;
    if (!p->pit_error_logged)
        vmm_log("pcspk: KVM_GET_PIT2: %s; the PC speaker stays silent", strerror(errno));
    p->pit_error_logged = true;
    return -1;
}

/* Channel 2's output line now (the 8254's OUT as a function of time since the count was
 * loaded; KVM keeps count_load_time on CLOCK_MONOTONIC). */
static bool pit_out2(const struct kvm_pit_channel_state *c)
{
    uint64_t count = c->count ? c->count : 0x10000;
    int64_t ns = monotonic_ns() - c->count_load_time;
    uint64_t d = ns > 0 ? (uint64_t)ns * PIT_HZ / 1000000000ull : 0;
    switch (c->mode) {
    case 0:
    case 1:
        return d >= count;
    case 2:
    case 6:
        return d % count != count - 1;
    case 3:
    case 7:
        return d % count < (count + 1) / 2;
    default:
        return d != count;
    }
}

/* Whether a rising edge of the gate restarts channel 2's count (8254 modes 1, 2, 3 and 5; 6
 * and 7 are 2 and 3), which in KVM's PIT only a new count load does. */
static bool gate_edge_restarts(uint8_t mode)
{
    switch (mode) {
    case 1:
    case 2:
    case 3:
    case 5:
    case 6:
    case 7:
        return true;
    default:
        return false;
    }
}

/* The gate and KVM's PIT (issue 14, finding 11). KVM has no call that sets one channel's gate:
 * KVM_SET_PIT2 replaces the whole PIT, and another vCPU may program it (ports 0x40-0x43, in the
 * kernel, under no lock of ours) between our KVM_GET_PIT2 and that KVM_SET_PIT2 - which would
 * then undo it, and restart channel 0's period as well. So the whole-PIT write is made only
 * when it changes something the guest can see: on a rising edge in a mode where the 8254
 * restarts the count (KVM's own gate emulation does nothing else with the gate; its PIT never
 * reads it). Every other change (falling edges, modes 0 and 4, the beeper's on/off in bit 1)
 * stays in port61 here, which is what rendering and reads of 0x61 use. That leaves the race to
 * a guest that starts a square wave on one vCPU while reprogramming the PIT on another within
 * microseconds - QEMU's in-kernel-PIT speaker has the same window; closing it needs KVM to own
 * port 0x61 (KVM_PIT_SPEAKER_DUMMY, reading KVM_PIT_FLAGS_SPEAKER_DATA_ON back). No test can
 * make the two vCPUs meet in that window deterministically. */
static void port61_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct pcspk *p = opaque;
    (void)offset;
    (void)len;
    pthread_mutex_lock(&p->lock);
    struct kvm_pit_state2 ps;
    if (is_write) {
        uint8_t v = data[0] & 0x0f;
        bool rising = v & ~p->r.port61 & PORT61_GATE2;
        p->r.port61 = v;
        if (rising && get_pit(p, &ps) == 0 && gate_edge_restarts(ps.channels[2].mode)) {
            ps.channels[2].gate = 1;
            if (ioctl(p->m->vm_fd, KVM_SET_PIT2, &ps) < 0)
                vmm_log("pcspk: KVM_SET_PIT2: %s", strerror(errno));
        }
        if (!(v & PORT61_SPEAKER))
            p->r.phase = 0;
    } else {
        /* Bit 4 toggles with DRAM refresh (~15 us); some guests time short delays with it. */
        int64_t ns = monotonic_ns();
        uint8_t v = (uint8_t)p->r.port61 | ((ns / 15000) & 1 ? PORT61_REFRESH : 0);
        if (get_pit(p, &ps) == 0 && pit_out2(&ps.channels[2]))
            v |= PORT61_OUT2;
        data[0] = v;
    }
    pthread_mutex_unlock(&p->lock);
}

bool pcspk_render(struct pcspk *p, int32_t *mix, unsigned n)
{
    pthread_mutex_lock(&p->lock);
    bool on = (p->r.port61 & (PORT61_GATE2 | PORT61_SPEAKER)) == (PORT61_GATE2 | PORT61_SPEAKER);
    struct kvm_pit_state2 ps;
    if (!on || get_pit(p, &ps) < 0) {
        pthread_mutex_unlock(&p->lock);
        return false;
    }
    uint32_t count = ps.channels[2].count ? ps.channels[2].count : 0x10000;
    p->last_count = count;
    uint64_t hz = PIT_HZ / count;
    /* Modes 2 and 3 are periodic; a one-shot mode or an inaudible rate is a click at most. */
    unsigned mode = ps.channels[2].mode & 3;
    if (hz < AUDIBLE_MIN_HZ || hz > AUDIBLE_MAX_HZ || (mode != 2 && mode != 3)) {
        pthread_mutex_unlock(&p->lock);
        return true;
    }
    uint64_t step = (PIT_HZ << 32) / AUDIO_RATE, period = (uint64_t)count << 32;
    uint64_t high = period / 2;
    for (unsigned i = 0; i < n; i++) {
        p->r.phase = (p->r.phase + step) % period;
        int32_t s = p->r.phase < high ? SPEAKER_AMPLITUDE : -SPEAKER_AMPLITUDE;
        mix[2 * i] += s;
        mix[2 * i + 1] += s;
    }
    p->frames += n;
    pthread_mutex_unlock(&p->lock);
    return true;
}

struct pcspk *pcspk_create(struct machine *m)
{
    struct pcspk *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->m = m;
    p->r.version = 1;
    pthread_mutex_init(&p->lock, NULL);
    if (iobus_register(&m->pio, 0x61, 1, port61_io, p) < 0) {
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    return p;
}

void pcspk_destroy(struct pcspk *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->lock);
    free(p);
}

json_t *pcspk_status_json(struct pcspk *p)
{
    pthread_mutex_lock(&p->lock);
    bool on = (p->r.port61 & 3) == 3;
    json_t *j = json_pack("{s:b, s:I, s:I}", "sounding", on, "hz",
                          (json_int_t)(on && p->last_count ? PIT_HZ / p->last_count : 0), "frames",
                          (json_int_t)p->frames);
    pthread_mutex_unlock(&p->lock);
    return j;
}

int pcspk_save(struct pcspk *p, struct state_writer *w)
{
    pthread_mutex_lock(&p->lock);
    state_put(w, STATE_TAG('P', 'C', 'S', 'P'), 0, &p->r, sizeof(p->r));
    pthread_mutex_unlock(&p->lock);
    return w->error;
}

int pcspk_load(struct pcspk *p, const struct state_reader *rd)
{
    struct pcspk_regs regs;
    int r = state_get_exact(rd, STATE_TAG('P', 'C', 'S', 'P'), 0, &regs, sizeof(regs));
    if (r < 0)
        return r;
    if (regs.version != 1)
        return -EINVAL;
    pthread_mutex_lock(&p->lock);
    p->r = regs;
    p->r.port61 &= 0x0f;
    pthread_mutex_unlock(&p->lock);
    return 0;
}
