/* Saving and restoring the whole machine while its vCPUs are paused: for every vCPU the
 * registers, system registers, FPU/SSE/AVX state (xsave), XCRs, every MSR KVM lists that can be
 * read, the local APIC, pending events, MP state and debug registers; for the VM the in-kernel
 * PICs, IOAPIC, PIT and KVM clock; then each device model's own records. Restore applies them in
 * the order KVM needs (APIC base with the sregs before the LAPIC, MSRs after the sregs). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "core/util/errfmt.h"
#include "core/util/state.h"
#include "core/vm/machine.h"

#define T_REGS STATE_TAG('R', 'E', 'G', 'S')
#define T_SREGS STATE_TAG('S', 'R', 'E', 'G')
#define T_XSAVE STATE_TAG('X', 'S', 'A', 'V')
#define T_XCRS STATE_TAG('X', 'C', 'R', 'S')
#define T_MSRS STATE_TAG('M', 'S', 'R', 'S')
#define T_LAPIC STATE_TAG('L', 'A', 'P', 'I')
#define T_EVENTS STATE_TAG('E', 'V', 'N', 'T')
#define T_MPSTATE STATE_TAG('M', 'P', 'S', 'T')
#define T_DEBUGREGS STATE_TAG('D', 'R', 'E', 'G')
#define T_IRQCHIP STATE_TAG('I', 'R', 'Q', 'C')
#define T_PIT STATE_TAG('P', 'I', 'T', '2')
#define T_CLOCK STATE_TAG('C', 'L', 'O', 'K')
#define T_WALL STATE_TAG('W', 'A', 'L', 'L') /* the host's CLOCK_REALTIME at the save, ns */
#define T_MACHINE STATE_TAG('M', 'A', 'C', 'H')

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct machine_header {
    uint32_t ncpus;
    uint32_t xsave_size;
    uint64_t ram_size;
};

static size_t xsave_size(struct machine *m)
{
    int n = ioctl(m->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    return n > (int)sizeof(struct kvm_xsave) ? (size_t)n : sizeof(struct kvm_xsave);
}

static int msr_index_list(struct machine *m, struct kvm_msr_list **out)
{
    struct kvm_msr_list probe = {.nmsrs = 0};
    if (ioctl(m->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
        return -errno;
    struct kvm_msr_list *l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(uint32_t));
    if (!l)
        return -ENOMEM;
    l->nmsrs = probe.nmsrs;
    if (ioctl(m->kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
        free(l);
        return -errno;
    }
    *out = l;
    return 0;
}

/* Reads every listed MSR that KVM will return; KVM_GET_MSRS stops at the first it can't. */
static int save_msrs(struct machine *m, struct vcpu *v, struct state_writer *w)
{
    struct kvm_msr_list *list = NULL;
    int r = msr_index_list(m, &list);
    if (r < 0)
        return r;
    struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + list->nmsrs * sizeof(struct kvm_msr_entry));
    struct kvm_msrs *one = calloc(1, sizeof(*one) + sizeof(struct kvm_msr_entry));
    if (!msrs || !one) {
        free(list);
        free(msrs);
        free(one);
        return -ENOMEM;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < list->nmsrs; i++) {
        one->nmsrs = 1;
        one->entries[0] = (struct kvm_msr_entry){.index = list->indices[i]};
        if (ioctl(v->fd, KVM_GET_MSRS, one) == 1)
            msrs->entries[n++] = one->entries[0];
    }
    state_put(w, T_MSRS, v->index, msrs->entries, n * sizeof(struct kvm_msr_entry));
    free(list);
    free(msrs);
    free(one);
    return 0;
}

static int save_vcpu(struct machine *m, struct vcpu *v, struct state_writer *w, size_t xsz)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xcrs xcrs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp;
    struct kvm_debugregs dregs;
    if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0 ||
        ioctl(v->fd, KVM_GET_LAPIC, &lapic) < 0 || ioctl(v->fd, KVM_GET_VCPU_EVENTS, &events) < 0 ||
        ioctl(v->fd, KVM_GET_MP_STATE, &mp) < 0 || ioctl(v->fd, KVM_GET_DEBUGREGS, &dregs) < 0)
        return -errno;
    state_put(w, T_REGS, v->index, &regs, sizeof(regs));
    state_put(w, T_SREGS, v->index, &sregs, sizeof(sregs));
    state_put(w, T_LAPIC, v->index, &lapic, sizeof(lapic));
    state_put(w, T_EVENTS, v->index, &events, sizeof(events));
    state_put(w, T_MPSTATE, v->index, &mp, sizeof(mp));
    state_put(w, T_DEBUGREGS, v->index, &dregs, sizeof(dregs));

    struct kvm_xsave *xs = calloc(1, xsz);
    if (!xs)
        return -ENOMEM;
    unsigned long req = xsz > sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;
    int r = ioctl(v->fd, req, xs) < 0 ? -errno : 0;
    if (r == 0)
        state_put(w, T_XSAVE, v->index, xs, xsz);
    free(xs);
    if (r < 0)
        return r;
    if (ioctl(v->fd, KVM_GET_XCRS, &xcrs) == 0)
        state_put(w, T_XCRS, v->index, &xcrs, sizeof(xcrs));
    return save_msrs(m, v, w);
}

int machine_save_state(struct machine *m, struct state_writer *w)
{
    size_t xsz = xsave_size(m);
    struct machine_header h = {
        .ncpus = m->ncpus, .xsave_size = (uint32_t)xsz, .ram_size = m->mem->size};
    state_put(w, T_MACHINE, 0, &h, sizeof(h));
    for (uint32_t chip = 0; chip < 3; chip++) {
        struct kvm_irqchip ic = {.chip_id = chip};
        if (ioctl(m->vm_fd, KVM_GET_IRQCHIP, &ic) < 0)
            return -errno;
        state_put(w, T_IRQCHIP, chip, &ic, sizeof(ic));
    }
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
    memset(&clock, 0, sizeof(clock));
    if (ioctl(m->vm_fd, KVM_GET_PIT2, &pit) < 0 || ioctl(m->vm_fd, KVM_GET_CLOCK, &clock) < 0)
        return -errno;
    state_put(w, T_PIT, 0, &pit, sizeof(pit));
    state_put(w, T_CLOCK, 0, &clock, sizeof(clock));
    uint64_t wall = realtime_ns();
    state_put(w, T_WALL, 0, &wall, sizeof(wall));
    for (unsigned i = 0; i < m->ncpus; i++) {
        int r = save_vcpu(m, &m->vcpus[i], w, xsz);
        if (r < 0)
            return r;
    }
    return w->error;
}

static int set(int fd, unsigned long req, const void *arg, const char *what, char *err,
               size_t errlen)
{
    return ioctl(fd, req, arg) < 0 ? err_set_errno(err, errlen, "restoring %s", what) : 0;
}

#define GET(tag, inst, var)                                                                        \
    do {                                                                                           \
        if (state_get_exact(r, tag, inst, &(var), sizeof(var)) < 0) {                              \
            snprintf(err, errlen, "state has no valid %s record for %u", #var, (unsigned)(inst));  \
            return -EINVAL;                                                                        \
        }                                                                                          \
    } while (0)

static int load_vcpu(struct vcpu *v, const struct state_reader *r, size_t xsz, char *err,
                     size_t errlen)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp;
    struct kvm_debugregs dregs;
    unsigned i = v->index;
    GET(T_REGS, i, regs);
    GET(T_SREGS, i, sregs);
    GET(T_LAPIC, i, lapic);
    GET(T_EVENTS, i, events);
    GET(T_MPSTATE, i, mp);
    GET(T_DEBUGREGS, i, dregs);
    const struct state_record *xs = state_get(r, T_XSAVE, i);
    const struct state_record *msrs = state_get(r, T_MSRS, i);
    if (!xs || xs->len != xsz || !msrs || msrs->len % sizeof(struct kvm_msr_entry)) {
        snprintf(err, errlen, "state has no valid xsave/MSR records for vCPU %u", i);
        return -EINVAL;
    }
    int rc = set(v->fd, KVM_SET_REGS, &regs, "registers", err, errlen);
    if (!rc) {
        void *buf = malloc(xsz);
        if (!buf)
            return -ENOMEM;
        memcpy(buf, xs->data, xsz);
        rc = set(v->fd, KVM_SET_XSAVE, buf, "xsave", err, errlen);
        free(buf);
    }
    struct kvm_xcrs xcrs;
    if (!rc && state_get_exact(r, T_XCRS, i, &xcrs, sizeof(xcrs)) == 0)
        rc = set(v->fd, KVM_SET_XCRS, &xcrs, "XCRs", err, errlen);
    if (!rc)
        rc = set(v->fd, KVM_SET_SREGS, &sregs, "system registers", err, errlen);
    if (!rc) {
        size_t n = msrs->len / sizeof(struct kvm_msr_entry);
        struct kvm_msrs *ms = calloc(1, sizeof(*ms) + msrs->len);
        if (!ms)
            return -ENOMEM;
        ms->nmsrs = (uint32_t)n;
        memcpy(ms->entries, msrs->data, msrs->len);
        /* Set one by one: KVM stops at the first MSR it refuses, and a host that lacks a feature
         * the saving host had should not lose every MSR after it. */
        for (size_t k = 0; k < n; k++) {
            struct {
                struct kvm_msrs h;
                struct kvm_msr_entry e;
            } one = {.h.nmsrs = 1, .e = ms->entries[k]};
            ioctl(v->fd, KVM_SET_MSRS, &one);
        }
        free(ms);
    }
    if (!rc)
        rc = set(v->fd, KVM_SET_MP_STATE, &mp, "MP state", err, errlen);
    if (!rc)
        rc = set(v->fd, KVM_SET_LAPIC, &lapic, "local APIC", err, errlen);
    if (!rc)
        rc = set(v->fd, KVM_SET_VCPU_EVENTS, &events, "vCPU events", err, errlen);
    if (!rc)
        rc = set(v->fd, KVM_SET_DEBUGREGS, &dregs, "debug registers", err, errlen);
    return rc;
}

int machine_check_state(struct machine *m, const struct state_reader *r, char *err, size_t errlen)
{
    struct machine_header h;
    GET(T_MACHINE, 0, h);
    if (h.ncpus != m->ncpus || h.ram_size != m->mem->size) {
        snprintf(err, errlen,
                 "state is of a machine with %u vCPU(s) and %llu MiB, this one has %u and %llu MiB",
                 h.ncpus, (unsigned long long)(h.ram_size >> 20), m->ncpus,
                 (unsigned long long)(m->mem->size >> 20));
        return -EINVAL;
    }
    if (h.xsave_size != xsave_size(m)) {
        snprintf(err, errlen, "state has a %u-byte xsave area; this host's KVM uses %zu",
                 h.xsave_size, xsave_size(m));
        return -EINVAL;
    }
    return 0;
}

int machine_load_state(struct machine *m, const struct state_reader *r, bool restore_clock,
                       char *err, size_t errlen)
{
    int rc = machine_check_state(m, r, err, errlen);
    if (rc < 0)
        return rc;
    for (uint32_t chip = 0; chip < 3 && !rc; chip++) {
        struct kvm_irqchip ic;
        GET(T_IRQCHIP, chip, ic);
        rc = set(m->vm_fd, KVM_SET_IRQCHIP, &ic, "interrupt controller", err, errlen);
    }
    struct kvm_pit_state2 pit;
    GET(T_PIT, 0, pit);
    if (!rc)
        rc = set(m->vm_fd, KVM_SET_PIT2, &pit, "PIT", err, errlen);
    if (!rc && restore_clock) {
        struct kvm_clock_data clock;
        GET(T_CLOCK, 0, clock);
        clock.flags = 0; /* the saved realtime/host_tsc fields are not meaningful now */
        /* The guest's clock resumes where the host's is now, not where it was at the save:
         * kvmclock advances by the time the state lay on disk, so a Linux guest's wall clock
         * (boot time + kvmclock) is right again after a resume or a revert (seed 004: resync,
         * as VMware Tools does). States from before this record keep their old clock. */
        uint64_t wall, now = realtime_ns();
        if (state_get_exact(r, T_WALL, 0, &wall, sizeof(wall)) == 0 && now > wall)
            clock.clock += now - wall;
        rc = set(m->vm_fd, KVM_SET_CLOCK, &clock, "KVM clock", err, errlen);
    }
    for (unsigned i = 0; i < m->ncpus && !rc; i++)
        rc = load_vcpu(&m->vcpus[i], r, xsave_size(m), err, errlen);
    /* Tell a kvmclock guest its vCPUs were stopped, so that its soft-lockup and RCU watchdogs
     * excuse the jump (EINVAL: the guest uses no kvmclock, nothing to tell). */
    for (unsigned i = 0; i < m->ncpus && !rc && restore_clock; i++)
        ioctl(m->vcpus[i].fd, KVM_KVMCLOCK_CTRL, 0);
    return rc;
}
