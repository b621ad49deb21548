/* Dynamic memory's arithmetic (see mempolicy.h). The one idea: the guest keeps its demand plus
 * a buffer, within [min, max]; a short host takes back first the buffer, then down to the
 * bounds, from each VM in inverse proportion to its shares. Every result says why. */
#include "core/vm/mempolicy.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define MIB ((uint64_t)1 << 20)

uint64_t mempolicy_host_low(uint64_t host_total)
{
    return host_total / 20; /* 5% */
}

uint64_t mempolicy_host_shortfall(uint64_t host_total, uint64_t host_available, double psi)
{
    uint64_t low = mempolicy_host_low(host_total);
    uint64_t gap = host_available < low ? low - host_available : 0;
    /* Stalls with RAM getting scarce: ask for some room ahead. Stalls while a fifth of the
     * host's RAM is available are some cgroup's own limit (a VM's memory.max), not the host. */
    if (psi >= MEMPOLICY_PSI_SHORT && host_available < 4 * low && gap < low / 2)
        gap = low / 2;
    return gap;
}

static uint64_t round_up_mib(uint64_t v)
{
    return (v + MIB - 1) / MIB * MIB;
}

void mempolicy_decide(const struct mempolicy_input *in, struct mempolicy_decision *out)
{
    memset(out, 0, sizeof(*out));
    uint64_t max = in->max && in->max < in->ram ? in->max : in->ram;
    uint64_t min = in->min < max ? in->min : max;
    size_t n = 0;
    if (!in->have_guest) {
        out->keep = max;
        n = (size_t)snprintf(out->reason, sizeof(out->reason),
                             "no statistics from the guest yet: it keeps its max, %" PRIu64 " MiB",
                             max / MIB);
    } else {
        uint64_t used =
            in->guest_total > in->guest_available ? in->guest_total - in->guest_available : 0;
        /* With deflate-on-OOM Linux keeps MemTotal and counts the balloon's pages as used;
         * without it MemTotal shrinks by them. Either way the demand is without the balloon. */
        if (in->guest_total + in->balloon_actual > in->ram)
            used = used > in->balloon_actual ? used - in->balloon_actual : 0;
        out->demand = used;
        uint64_t keep = round_up_mib(used + used / 100 * in->buffer_percent);
        n = (size_t)snprintf(out->reason, sizeof(out->reason),
                             "guest needs %" PRIu64 " MiB + %u%% buffer", used / MIB,
                             in->buffer_percent);
        out->host_short =
            in->reclaim > 0 ||
            mempolicy_host_shortfall(in->host_total, in->host_available, in->psi_some_avg10) > 0;
        if (out->host_short && in->reclaim) {
            /* The host takes the buffer first, and then below the demand (the guest's own
             * reclaim finds it: page cache, then swap), down to min. */
            uint64_t take = in->reclaim < keep ? in->reclaim : keep;
            keep -= take;
            n += (size_t)snprintf(out->reason + n, sizeof(out->reason) - n,
                                  "; host pressure some avg10=%.0f%%, MemAvailable %" PRIu64
                                  " MiB: %" PRIu64 " MiB taken back",
                                  in->psi_some_avg10 < 0 ? 0 : in->psi_some_avg10,
                                  in->host_available / MIB, round_up_mib(take) / MIB);
        }
        out->keep = round_up_mib(keep);
    }
    if (n >= sizeof(out->reason))
        n = sizeof(out->reason) - 1;
    out->at_bound = out->keep >= max || out->keep <= min;
    if (out->keep > max) {
        out->keep = max;
        snprintf(out->reason + n, sizeof(out->reason) - n, " (at max %" PRIu64 " MiB)", max / MIB);
    } else if (out->keep < min) {
        out->keep = min;
        snprintf(out->reason + n, sizeof(out->reason) - n, " (at min %" PRIu64 " MiB)", min / MIB);
    }
    out->target = in->ram - out->keep;
}

bool mempolicy_should_change(uint64_t current, uint64_t proposed, uint64_t ram, bool at_bound)
{
    uint64_t step = ram / 50 > 16 * MIB ? ram / 50 : 16 * MIB;
    uint64_t d = current > proposed ? current - proposed : proposed - current;
    return d > step || (d && (proposed == 0 || proposed == ram || at_bound));
}

uint64_t mempolicy_damp(struct mempolicy_damper *dm, uint64_t current, uint64_t proposed,
                        bool host_short)
{
    if (proposed <= current || host_short) {
        dm->ticks = 0;
        return proposed;
    }
    if (!dm->ticks || proposed < dm->least)
        dm->least = proposed;
    if (++dm->ticks < MEMPOLICY_TAKE_TICKS)
        return current;
    dm->ticks = 0;
    return dm->least;
}

void mempolicy_divide(uint64_t shortfall, const struct mempolicy_peer *peers, size_t n,
                      uint64_t *reclaim)
{
    for (size_t i = 0; i < n; i++)
        reclaim[i] = 0;
    /* Rounds: share what is left among the VMs that can still give, by (held above the
     * floor) / shares; a VM at its floor drops out and the rest take its part. */
    uint64_t left = shortfall;
    for (int round = 0; left && round < 64; round++) {
        double total_w = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t room = peers[i].held > peers[i].floor + reclaim[i]
                                ? peers[i].held - peers[i].floor - reclaim[i]
                                : 0;
            if (room)
                total_w += (double)peers[i].held / (peers[i].shares ? peers[i].shares : 1);
        }
        if (total_w <= 0)
            break;
        uint64_t given = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t room = peers[i].held > peers[i].floor + reclaim[i]
                                ? peers[i].held - peers[i].floor - reclaim[i]
                                : 0;
            if (!room)
                continue;
            double w = (double)peers[i].held / (peers[i].shares ? peers[i].shares : 1);
            uint64_t part = (uint64_t)((double)left * w / total_w);
            if (part == 0)
                part = 1;
            if (part > room)
                part = room;
            if (part > left - given)
                part = left - given;
            reclaim[i] += part;
            given += part;
        }
        if (!given)
            break;
        left -= given;
    }
}
