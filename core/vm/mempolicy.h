/* Dynamic memory (seed 003): how much RAM a guest should keep, from its own demand (the
 * balloon's statistics), a buffer over it, the host's pressure and the VM's bounds - and how a
 * host that is short divides what it takes back among VMs by their shares (seed 001). Pure
 * arithmetic, no I/O: the VMM feeds it what it measured and applies the balloon target it
 * returns, with the reason shown to the user. */
#ifndef VMWS_MEMPOLICY_H
#define VMWS_MEMPOLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mempolicy_input {
    uint64_t ram;            /* the VM's RAM */
    uint64_t min, max;       /* what the guest keeps at least / at most (max 0 = all RAM) */
    unsigned buffer_percent; /* headroom over the demand */
    bool have_guest;         /* the guest's statistics below are known */
    uint64_t guest_total, guest_available; /* its MemTotal and MemAvailable */
    uint64_t balloon_actual;               /* what the balloon holds now */
    uint64_t host_total, host_available;   /* the host's MemTotal and MemAvailable */
    double psi_some_avg10; /* /proc/pressure/memory "some avg10", percent; < 0 unknown */
    uint64_t reclaim;      /* this VM's part of what a short host takes back (mempolicy_divide) */
};

struct mempolicy_decision {
    uint64_t demand;  /* what the guest uses (without the balloon) */
    uint64_t keep;    /* what it should keep */
    uint64_t target;  /* the balloon target: ram - keep */
    bool host_short;  /* the host is under pressure */
    bool at_bound;    /* keep is exactly min or max */
    char reason[200]; /* "guest needs 610 MiB + 20% buffer", "host pressure some avg10=12%" */
};

/* The host is short when MemAvailable falls below mempolicy_host_low(total) (5%), or memory
 * pressure's some avg10 reaches MEMPOLICY_PSI_SHORT with MemAvailable under 4x that: pressure
 * while RAM is plentiful is some cgroup's own limit, not the host's shortage. */
#define MEMPOLICY_PSI_SHORT 10.0
uint64_t mempolicy_host_low(uint64_t host_total);
/* How much a short host wants back: host_low - MemAvailable (0 when not short). */
uint64_t mempolicy_host_shortfall(uint64_t host_total, uint64_t host_available, double psi);

void mempolicy_decide(const struct mempolicy_input *in, struct mempolicy_decision *out);
/* Whether a new target is worth telling the guest: it moved by more than 2% of RAM or 16 MiB,
 * whichever is more (no churn on noise), or it hits a bound exactly: 0, RAM, or (AT_BOUND) the
 * guest's min or max - so a guest whose demand fell ends at its min, not a step above it. */
bool mempolicy_should_change(uint64_t current, uint64_t proposed, uint64_t ram, bool at_bound);

/* Hysteresis, as Hyper-V's dynamic memory does it: memory goes to a guest at once, but is taken
 * back only after the policy has proposed taking it for MEMPOLICY_TAKE_TICKS decisions in a row
 * (a guest's page cache moving no longer moves the balloon every second), and then only the
 * least of those proposals; a short host takes at once. Returns the target to apply now:
 * CURRENT while it waits (DM->ticks says how long it has). */
#define MEMPOLICY_TAKE_TICKS 5
struct mempolicy_damper {
    unsigned ticks; /* decisions in a row that proposed taking memory back */
    uint64_t least; /* the least target among them */
};
uint64_t mempolicy_damp(struct mempolicy_damper *dm, uint64_t current, uint64_t proposed,
                        bool host_short);

/* ESXi's idea of shares: a short host takes from each VM in proportion to what it holds above
 * its floor divided by its shares (fewer shares per MiB held: more taken), never below the
 * floor; what one VM cannot give is taken from the others. RECLAIM[i] gets VM i's part of
 * SHORTFALL (their sum is SHORTFALL, or all there is above the floors). */
struct mempolicy_peer {
    uint64_t held;  /* what the VM's guest keeps now */
    uint64_t floor; /* what it keeps at least (min, reservation, demand) */
    unsigned shares;
};
void mempolicy_divide(uint64_t shortfall, const struct mempolicy_peer *peers, size_t n,
                      uint64_t *reclaim);

#endif
