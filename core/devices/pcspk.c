/* The PC speaker: the square wave of PIT channel 2 while system control port B (0x61) gates it
 * (bit 0) and connects it to the speaker (bit 1). KVM owns all of it - the PIT and port 0x61
 * (KVM_PIT_SPEAKER_DUMMY, core/vm/machine.c) - so the guest's writes to either never leave the
 * kernel and this file never writes the PIT while the guest runs: the mixer's tick reads
 * KVM_GET_PIT2 and plays 1193182 / count Hz while the speaker sounds (see pcspk_sounding). */
#include <errno.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "core/devices/devices.h"
#include "core/devices/sound.h"
#include "core/util/log.h"
#include "core/util/state.h"
#include "core/vm/machine.h"

#define PIT_HZ 1193182ull
#define PORT61_GATE2 0x01
#define PORT61_SPEAKER 0x02
#define SPEAKER_AMPLITUDE 0x2000
#define AUDIBLE_MIN_HZ 20
#define AUDIBLE_MAX_HZ 20000

#ifndef KVM_PIT_FLAGS_SPEAKER_DATA_ON
#define KVM_PIT_FLAGS_SPEAKER_DATA_ON 0x00000002
#endif

/* Record 'PCSP'. Version 1 (vmws trapped port 0x61 then) kept the port's bits 0-3 here and
 * KVM's PIT had no speaker bit and a stale gate; version 2 keeps only the phase: the gate and
 * the speaker bit are in the machine's PIT record (KVM_GET_PIT2's channel 2 gate and flags). */
struct pcspk_regs {
    uint32_t version;
    uint32_t port61; /* version 1: bits 0-3 as the guest wrote them; version 2: 0 */
    uint64_t phase;  /* 32.32 PIT ticks into the current square-wave period */
};

struct pcspk {
    struct machine *m;
    pthread_mutex_t lock;
    uint64_t phase;  /* as in the record */
    int v1_port61;   /* a version-1 record's gate and speaker bits, for the PIT, or -1 */
    uint64_t frames; /* output frames with the speaker sounding */
    bool pit_error_logged;
};

static int get_pit(struct pcspk *p, struct kvm_pit_state2 *ps)
{
    if (ioctl(p->m->vm_fd, KVM_GET_PIT2, ps) == 0)
        return 0;
    if (!p->pit_error_logged)
        vmm_log("pcspk: KVM_GET_PIT2: %s; the PC speaker stays silent", strerror(errno));
    p->pit_error_logged = true;
    return -1;
}

/* Whether the speaker sounds: port 0x61 bits 0 and 1 both on, which KVM keeps as channel 2's
 * gate and KVM_PIT_FLAGS_SPEAKER_DATA_ON. KVM_GET_PIT2 reports that flag wherever the uapi
 * header defines it: Debian 12's 6.1 (the box's kernel) does, and this host's 6.18 does
 * (test_audio hears `beep`). Linux's pcspkr and our guest's `beep` set both bits together and
 * clear both; Linux's PIT calibration raises the gate alone (a mode-0 one-shot), as does our
 * guest's calibration fallback (mode 2): both stay silent, as on hardware. A kernel without
 * the flag never reports it, and the speaker stays silent there rather than guess from the
 * gate and mode, which would sound the calibrations. */
static bool pcspk_sounding(const struct kvm_pit_state2 *ps)
{
    return ps->channels[2].gate && (ps->flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON);
}

bool pcspk_render(struct pcspk *p, int32_t *mix, unsigned n)
{
    pthread_mutex_lock(&p->lock);
    struct kvm_pit_state2 ps;
    if (get_pit(p, &ps) < 0 || !pcspk_sounding(&ps)) {
        p->phase = 0;
        pthread_mutex_unlock(&p->lock);
        return false;
    }
    uint32_t count = ps.channels[2].count ? ps.channels[2].count : 0x10000;
    uint64_t hz = PIT_HZ / count;
    /* Modes 2 and 3 (and their aliases 6, 7) are periodic; a one-shot mode or an inaudible
     * rate is a click at most. */
    unsigned mode = ps.channels[2].mode & 3;
    if (hz < AUDIBLE_MIN_HZ || hz > AUDIBLE_MAX_HZ || (mode != 2 && mode != 3)) {
        pthread_mutex_unlock(&p->lock);
        return true;
    }
    uint64_t step = (PIT_HZ << 32) / AUDIO_RATE, period = (uint64_t)count << 32;
    uint64_t high = period / 2;
    for (unsigned i = 0; i < n; i++) {
        p->phase = (p->phase + step) % period;
        int32_t s = p->phase < high ? SPEAKER_AMPLITUDE : -SPEAKER_AMPLITUDE;
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
    p->v1_port61 = -1;
    pthread_mutex_init(&p->lock, NULL);
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
    struct kvm_pit_state2 ps;
    bool on = get_pit(p, &ps) == 0 && pcspk_sounding(&ps);
    uint32_t count = on ? (ps.channels[2].count ? ps.channels[2].count : 0x10000) : 0;
    json_t *j =
        json_pack("{s:b, s:I, s:I}", "sounding", on, "hz", (json_int_t)(count ? PIT_HZ / count : 0),
                  "frames", (json_int_t)p->frames);
    pthread_mutex_unlock(&p->lock);
    return j;
}

int pcspk_save(struct pcspk *p, struct state_writer *w)
{
    pthread_mutex_lock(&p->lock);
    struct pcspk_regs regs = {.version = 2, .phase = p->phase};
    state_put(w, STATE_TAG('P', 'C', 'S', 'P'), 0, &regs, sizeof(regs));
    pthread_mutex_unlock(&p->lock);
    return w->error;
}

int pcspk_load(struct pcspk *p, const struct state_reader *rd)
{
    struct pcspk_regs regs;
    int r = state_get_exact(rd, STATE_TAG('P', 'C', 'S', 'P'), 0, &regs, sizeof(regs));
    if (r < 0)
        return r;
    if (regs.version != 1 && regs.version != 2)
        return -EINVAL;
    pthread_mutex_lock(&p->lock);
    p->phase = regs.phase;
    p->v1_port61 = regs.version == 1 ? (int)(regs.port61 & (PORT61_GATE2 | PORT61_SPEAKER)) : -1;
    pthread_mutex_unlock(&p->lock);
    return 0;
}

/* Devices load before the machine's records (core/vmm/vmm.c), so a version-1 record's bits
 * reach the PIT here, once the machine's PIT record is in KVM and while the vCPUs are still
 * stopped: the only KVM_SET_PIT2 this file makes. */
void pcspk_resume(struct pcspk *p)
{
    pthread_mutex_lock(&p->lock);
    struct kvm_pit_state2 ps;
    if (p->v1_port61 >= 0 && get_pit(p, &ps) == 0) {
        ps.channels[2].gate = p->v1_port61 & PORT61_GATE2;
        ps.flags &= ~KVM_PIT_FLAGS_SPEAKER_DATA_ON;
        if (p->v1_port61 & PORT61_SPEAKER)
            ps.flags |= KVM_PIT_FLAGS_SPEAKER_DATA_ON;
        if (ioctl(p->m->vm_fd, KVM_SET_PIT2, &ps) < 0)
            vmm_log("pcspk: KVM_SET_PIT2 of an old state's speaker bits: %s", strerror(errno));
    }
    p->v1_port61 = -1;
    pthread_mutex_unlock(&p->lock);
}
