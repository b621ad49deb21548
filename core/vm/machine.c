/* KVM VM and vCPU lifecycle (see machine.h). The one idea to know: a vCPU thread is only ever
 * interrupted by SIGUSR1, whose handler sets kvm_run.immediate_exit, so a pause or stop request
 * can never be lost between checking the flags and entering KVM_RUN. */
#include "core/vm/machine.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/util/deadline.h"
#include "core/util/errfmt.h"
#include "core/util/log.h"

#define KVM_TSS_ADDR 0xfffbd000ULL
#define KVM_IDENTITY_MAP_ADDR 0xfffbc000ULL
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_PHYS_BASE0 0x200
#define MSR_MTRR_PHYS_MASK0 0x201
#define MSR_MTRR_FIX_64K 0x250
#define MSR_MTRR_FIX_16K_80000 0x258
#define MSR_MTRR_FIX_16K_A0000 0x259
#define MSR_MTRR_FIX_4K_C0000 0x268 /* ... 0x26f: 0xC0000-0xFFFFF in 4 KiB steps */
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MTRR_UC 0x00
#define MTRR_WP 0x05
#define MTRR_WB 0x06
#define MTRR_BYTES(t) (0x0101010101010101ULL * (t))
#define PCI_HOLE_START 0xc0000000ULL /* core/vm/guestmem.h: RAM below 3 GiB, the hole up to 4 */
#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_MODE_EXTINT 0x700
#define APIC_MODE_NMI 0x400

static __thread struct kvm_run *tls_run;

static void kick_handler(int sig)
{
    (void)sig;
    if (tls_run)
        tls_run->immediate_exit = 1;
}

static struct kvm_cpuid2 *supported_cpuid(int kvm_fd)
{
    for (int n = 128; n <= 4096; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (size_t)n * sizeof(c->entries[0]));
        if (!c)
            return NULL;
        c->nent = (uint32_t)n;
        if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
            return c;
        free(c);
        if (errno != E2BIG)
            return NULL;
    }
    return NULL;
}

/* Each vCPU sees its own APIC id and the machine's CPU count, and that it runs on a hypervisor. */
static void cpuid_for_vcpu(struct kvm_cpuid2 *c, unsigned index, unsigned ncpus)
{
    for (uint32_t i = 0; i < c->nent; i++) {
        struct kvm_cpuid_entry2 *e = &c->entries[i];
        switch (e->function) {
        case 1:
            e->ebx = (e->ebx & 0xffff) | ((ncpus & 0xff) << 16) | (index << 24);
            e->ecx |= 1u << 31; /* hypervisor present */
            if (ncpus > 1)
                e->edx |= 1u << 28; /* HTT: EBX[23:16] is valid */
            break;
        case 0xb:
        case 0x1f:
            e->edx = index; /* x2APIC id */
            break;
        }
    }
}

/* The XSAVE state components CPUID leaf 0xD offers (x87, SSE, AVX, ...), or 0 without XSAVE. */
static uint64_t supported_xcr0(const struct kvm_cpuid2 *c)
{
    bool xsave = false;
    uint64_t mask = 0;
    for (uint32_t i = 0; i < c->nent; i++) {
        const struct kvm_cpuid_entry2 *e = &c->entries[i];
        if (e->function == 1)
            xsave = e->ecx & (1u << 26);
        else if (e->function == 0xd && e->index == 0)
            mask = e->eax | (uint64_t)e->edx << 32;
    }
    return xsave ? mask : 0;
}

/* The guest's physical address width (CPUID 0x80000008), 36 if it doesn't say. */
static unsigned phys_bits(const struct kvm_cpuid2 *c)
{
    for (uint32_t i = 0; i < c->nent; i++)
        if (c->entries[i].function == 0x80000008 && (c->entries[i].eax & 0xff))
            return c->entries[i].eax & 0xff;
    return 36;
}

/* MTRRs as a PC BIOS leaves them: memory write-back by default; the legacy VGA window
 * 0xA0000-0xBFFFF uncached, the option ROM and BIOS area 0xC0000-0xFFFFF write-protected; the
 * 32-bit PCI hole (3-4 GiB: BARs, the framebuffer, the APICs) uncached. Without them Linux
 * disables PAT and the framebuffer gets no write-combining. */
static void set_mtrrs(struct vcpu *v, const struct kvm_cpuid2 *cpuid)
{
    uint64_t hole_mask = ((1ULL << phys_bits(cpuid)) - 1) & ~((1ULL << 32) - PCI_HOLE_START - 1);
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e[14];
    } msrs = {0};
    struct kvm_msr_entry *e = msrs.e;
    *e++ = (struct kvm_msr_entry){.index = MSR_MTRR_FIX_64K, .data = MTRR_BYTES(MTRR_WB)};
    *e++ = (struct kvm_msr_entry){.index = MSR_MTRR_FIX_16K_80000, .data = MTRR_BYTES(MTRR_WB)};
    *e++ = (struct kvm_msr_entry){.index = MSR_MTRR_FIX_16K_A0000, .data = MTRR_BYTES(MTRR_UC)};
    for (unsigned i = 0; i < 8; i++)
        *e++ =
            (struct kvm_msr_entry){.index = MSR_MTRR_FIX_4K_C0000 + i, .data = MTRR_BYTES(MTRR_WP)};
    *e++ = (struct kvm_msr_entry){.index = MSR_MTRR_PHYS_BASE0, .data = PCI_HOLE_START | MTRR_UC};
    *e++ = (struct kvm_msr_entry){.index = MSR_MTRR_PHYS_MASK0, .data = hole_mask | 1u << 11};
    /* last: enable (bit 11), fixed ranges on (bit 10), default type */
    *e++ =
        (struct kvm_msr_entry){.index = MSR_MTRR_DEF_TYPE, .data = 1u << 11 | 1u << 10 | MTRR_WB};
    msrs.hdr.nmsrs = (uint32_t)(e - msrs.e);
    if (ioctl(v->fd, KVM_SET_MSRS, &msrs) != (int)msrs.hdr.nmsrs)
        vmm_log("note: could not set the MTRRs of vCPU %u", v->index);
}

static int setup_vcpu(struct machine *m, struct vcpu *v, struct kvm_cpuid2 *cpuid, char *err,
                      size_t errlen)
{
    v->fd = ioctl(m->vm_fd, KVM_CREATE_VCPU, (unsigned long)v->index);
    if (v->fd < 0)
        return err_set_errno(err, errlen, "KVM_CREATE_VCPU");
    v->run = mmap(NULL, m->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
    if (v->run == MAP_FAILED) {
        v->run = NULL;
        return err_set_errno(err, errlen, "mmap of kvm_run");
    }
    cpuid_for_vcpu(cpuid, v->index, m->ncpus);
    if (ioctl(v->fd, KVM_SET_CPUID2, cpuid) < 0)
        return err_set_errno(err, errlen, "KVM_SET_CPUID2");

    /* XCR0 starts as every state component the guest's CPUID offers, the value Linux sets.
     * Under a nested KVM whose host doesn't intercept XSETBV (QEMU's software SVM in the KVM
     * box), KVM never learns the guest's XSETBV and loads its own idea of XCR0 at each entry:
     * with the reset value (x87 only) the guest's XSAVE then drops its processes' SSE
     * registers at every context switch and they crash. */
    uint64_t xcr0 = supported_xcr0(cpuid);
    if (xcr0) {
        struct kvm_xcrs xcrs = {.nr_xcrs = 1, .xcrs = {{.xcr = 0, .value = xcr0}}};
        if (ioctl(v->fd, KVM_SET_XCRS, &xcrs) < 0)
            vmm_log("note: could not set XCR0 to %#llx on vCPU %u", (unsigned long long)xcr0,
                    v->index);
    }

    struct kvm_fpu fpu = {.fcw = 0x37f, .mxcsr = 0x1f80};
    if (ioctl(v->fd, KVM_SET_FPU, &fpu) < 0)
        return err_set_errno(err, errlen, "KVM_SET_FPU");

    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e[1];
    } msrs = {.hdr.nmsrs = 1, .e = {{.index = MSR_IA32_MISC_ENABLE, .data = 1}}};
    if (ioctl(v->fd, KVM_SET_MSRS, &msrs) < 0)
        vmm_log("note: could not set IA32_MISC_ENABLE on vCPU %u", v->index);
    set_mtrrs(v, cpuid);

    /* As a PC BIOS leaves it: LINT0 takes the 8259's ExtINT on the boot CPU, LINT1 is NMI. */
    struct kvm_lapic_state lapic;
    if (ioctl(v->fd, KVM_GET_LAPIC, &lapic) < 0)
        return err_set_errno(err, errlen, "KVM_GET_LAPIC");
    uint32_t lvt0 = v->index == 0 ? APIC_MODE_EXTINT : (1u << 16);
    uint32_t lvt1 = APIC_MODE_NMI;
    memcpy(&lapic.regs[APIC_LVT0], &lvt0, 4);
    memcpy(&lapic.regs[APIC_LVT1], &lvt1, 4);
    if (ioctl(v->fd, KVM_SET_LAPIC, &lapic) < 0)
        return err_set_errno(err, errlen, "KVM_SET_LAPIC");
    return 0;
}

int machine_add_memory_slot(struct machine *m, uint32_t slot, uint64_t gpa, uint64_t size,
                            void *host, uint32_t flags)
{
    struct kvm_userspace_memory_region r = {
        .slot = slot,
        .flags = flags,
        .guest_phys_addr = gpa,
        .memory_size = size,
        .userspace_addr = (uintptr_t)host,
    };
    return ioctl(m->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0 ? -errno : 0;
}

int machine_create(struct machine *m, struct guest_mem *mem, unsigned ncpus, char *err,
                   size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->kvm_fd = m->vm_fd = m->stop_notify_fd = -1;
    m->mem = mem;
    m->ncpus = ncpus;
    pthread_mutex_init(&m->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cond, &ca);
    pthread_condattr_destroy(&ca);
    iobus_init(&m->pio, "port");
    iobus_init(&m->mmio, "mmio");

    m->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (m->kvm_fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open /dev/kvm: %s (is KVM enabled and are you in group kvm?)",
                 strerror(e));
        return -e;
    }
    if (ioctl(m->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        snprintf(err, errlen, "/dev/kvm speaks an unsupported API version");
        return -ENOTSUP;
    }
    static const struct {
        int cap;
        const char *name;
    } caps[] = {{KVM_CAP_IRQCHIP, "IRQCHIP"},
                {KVM_CAP_PIT2, "PIT2"},
                {KVM_CAP_IMMEDIATE_EXIT, "IMMEDIATE_EXIT"},
                {KVM_CAP_USER_MEMORY, "USER_MEMORY"},
                {KVM_CAP_SET_TSS_ADDR, "SET_TSS_ADDR"}};
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        if (ioctl(m->kvm_fd, KVM_CHECK_EXTENSION, caps[i].cap) <= 0) {
            snprintf(err, errlen, "this host's KVM lacks KVM_CAP_%s, which vmws needs",
                     caps[i].name);
            return -ENOTSUP;
        }
    }
    int rs = ioctl(m->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (rs < (int)sizeof(struct kvm_run))
        return err_set_errno(err, errlen, "KVM_GET_VCPU_MMAP_SIZE");
    m->run_size = (size_t)rs;

    m->vm_fd = ioctl(m->kvm_fd, KVM_CREATE_VM, 0);
    if (m->vm_fd < 0)
        return err_set_errno(err, errlen, "KVM_CREATE_VM");
    if (ioctl(m->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)KVM_TSS_ADDR) < 0)
        return err_set_errno(err, errlen, "KVM_SET_TSS_ADDR");
    uint64_t idmap = KVM_IDENTITY_MAP_ADDR;
    if (ioctl(m->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
        return err_set_errno(err, errlen, "KVM_SET_IDENTITY_MAP_ADDR");
    if (ioctl(m->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        return err_set_errno(err, errlen, "KVM_CREATE_IRQCHIP");
    /* KVM_PIT_SPEAKER_DUMMY: KVM owns port 0x61 too (channel 2's gate and the speaker bit,
     * under the PIT's own lock); the PC speaker only reads them (core/devices/pcspk.c). */
    struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
    if (ioctl(m->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        return err_set_errno(err, errlen, "KVM_CREATE_PIT2");

    /* Guest RAM: slot 0 below the PCI hole, slot 1 above 4 GiB, both dirty-logged. */
    int r = machine_add_memory_slot(m, 0, 0, mem->low_size, mem->host, KVM_MEM_LOG_DIRTY_PAGES);
    if (r == 0 && mem->size > mem->low_size)
        r = machine_add_memory_slot(m, 1, GUEST_HIGH_RAM_BASE, mem->size - mem->low_size,
                                    mem->host + mem->low_size, KVM_MEM_LOG_DIRTY_PAGES);
    if (r < 0)
        return err_set(err, errlen, r, "KVM_SET_USER_MEMORY_REGION: %s", strerror(-r));

    m->stop_notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->stop_notify_fd < 0)
        return err_set_errno(err, errlen, "eventfd");

    struct kvm_cpuid2 *cpuid = supported_cpuid(m->kvm_fd);
    if (!cpuid)
        return err_set_errno(err, errlen, "KVM_GET_SUPPORTED_CPUID");
    m->vcpus = calloc(ncpus, sizeof(*m->vcpus));
    if (!m->vcpus) {
        free(cpuid);
        return err_set_errno(err, errlen, "allocating vCPUs");
    }
    for (unsigned i = 0; i < ncpus; i++) {
        m->vcpus[i] = (struct vcpu){.m = m, .index = i, .fd = -1};
    }
    for (unsigned i = 0; i < ncpus && r == 0; i++)
        r = setup_vcpu(m, &m->vcpus[i], cpuid, err, errlen);
    free(cpuid);
    return r;
}

int machine_get_boot_sregs(struct machine *m, struct kvm_sregs *sregs)
{
    return ioctl(m->vcpus[0].fd, KVM_GET_SREGS, sregs) < 0 ? -errno : 0;
}

int machine_set_boot_state(struct machine *m, const struct kvm_regs *regs,
                           const struct kvm_sregs *sregs, char *err, size_t errlen)
{
    if (ioctl(m->vcpus[0].fd, KVM_SET_SREGS, sregs) < 0)
        return err_set_errno(err, errlen, "KVM_SET_SREGS");
    if (ioctl(m->vcpus[0].fd, KVM_SET_REGS, regs) < 0)
        return err_set_errno(err, errlen, "KVM_SET_REGS");
    return 0;
}

void machine_request_stop(struct machine *m, enum machine_stop_reason why, const char *fmt, ...)
{
    pthread_mutex_lock(&m->lock);
    bool first = m->stop_reason == STOP_NONE;
    if (first) {
        m->stop_reason = why;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m->stop_detail, sizeof(m->stop_detail), fmt, ap);
        va_end(ap);
    }
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    if (!first)
        return;
    for (unsigned i = 0; i < m->ncpus; i++)
        if (m->vcpus[i].thread_started && !pthread_equal(m->vcpus[i].thread, pthread_self()))
            pthread_kill(m->vcpus[i].thread, SIGUSR1);
    uint64_t one = 1;
    ssize_t w = write(m->stop_notify_fd, &one, sizeof(one));
    (void)w;
}

void machine_set_irq(struct machine *m, unsigned irq, int level)
{
    struct kvm_irq_level l = {.irq = irq, .level = level};
    ioctl(m->vm_fd, KVM_IRQ_LINE, &l);
}

void machine_pulse_irq(struct machine *m, unsigned irq)
{
    machine_set_irq(m, irq, 1);
    machine_set_irq(m, irq, 0);
}

static uint64_t vcpu_rip(struct vcpu *v)
{
    struct kvm_regs regs;
    return ioctl(v->fd, KVM_GET_REGS, &regs) == 0 ? regs.rip : 0;
}

static void handle_io(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    uint32_t size = run->io.size, count = run->io.count;
    uint64_t off = run->io.data_offset;
    if (size == 0 || size > 8 || off + (uint64_t)size * count > v->m->run_size) {
        machine_request_stop(v->m, STOP_ERROR, "vCPU %u: malformed port I/O exit", v->index);
        return;
    }
    uint8_t *data = (uint8_t *)run + off;
    for (uint32_t i = 0; i < count; i++, data += size)
        iobus_access(&v->m->pio, run->io.port, data, size, run->io.direction == KVM_EXIT_IO_OUT);
}

/* Returns false when the vCPU must stop running. */
static bool handle_exit(struct vcpu *v)
{
    struct kvm_run *run = v->run;
    struct machine *m = v->m;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        handle_io(v);
        return true;
    case KVM_EXIT_MMIO:
        if (run->mmio.len == 0 || run->mmio.len > 8) {
            machine_request_stop(m, STOP_ERROR, "vCPU %u: malformed MMIO exit", v->index);
            return false;
        }
        iobus_access(&m->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
                     run->mmio.is_write);
        return true;
    case KVM_EXIT_HLT:
    case KVM_EXIT_INTR:
        return true;
    case KVM_EXIT_SHUTDOWN:
        machine_request_stop(m, STOP_RESET, "triple fault on vCPU %u at RIP 0x%llx", v->index,
                             (unsigned long long)vcpu_rip(v));
        return false;
    case KVM_EXIT_SYSTEM_EVENT:
        switch (run->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN:
            machine_request_stop(m, STOP_POWEROFF, "guest shutdown event");
            break;
        case KVM_SYSTEM_EVENT_RESET:
            machine_request_stop(m, STOP_RESET, "guest reset event");
            break;
        default:
            machine_request_stop(m, STOP_ERROR, "guest system event %u (crash)",
                                 run->system_event.type);
        }
        return false;
    case KVM_EXIT_INTERNAL_ERROR:
        machine_request_stop(m, STOP_ERROR,
                             "KVM internal error on vCPU %u at RIP 0x%llx (suberror %u%s)",
                             v->index, (unsigned long long)vcpu_rip(v), run->internal.suberror,
                             run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                                 ? ": instruction emulation failed"
                                 : "");
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        machine_request_stop(m, STOP_ERROR, "vCPU %u failed to enter the guest (reason 0x%llx)",
                             v->index,
                             (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        return false;
    default:
        machine_request_stop(m, STOP_ERROR, "vCPU %u: unhandled KVM exit reason %u at RIP 0x%llx",
                             v->index, run->exit_reason, (unsigned long long)vcpu_rip(v));
        return false;
    }
}

/* KVM finishes the instruction behind an I/O or MMIO exit (writes an IN's result, advances
 * RIP) only when KVM_RUN is entered again, and that half-done state is in no register
 * userspace can read. So before a paused vCPU's state may be saved or replaced, enter once
 * with immediate_exit set: KVM completes the exit and returns without running the guest. */
static void complete_exit(struct vcpu *v)
{
    v->run->immediate_exit = 1;
    ioctl(v->fd, KVM_RUN, 0); /* -EINTR, by design */
    v->run->immediate_exit = 0;
}

/* Waits while paused; returns false once the machine is stopping. */
static bool vcpu_may_run(struct vcpu *v)
{
    struct machine *m = v->m;
    bool completed = false;
    pthread_mutex_lock(&m->lock);
    while (m->pause_requested && m->stop_reason == STOP_NONE) {
        if (!v->paused && !completed) {
            pthread_mutex_unlock(&m->lock);
            complete_exit(v);
            completed = true;
            pthread_mutex_lock(&m->lock);
            continue; /* the request may have gone meanwhile */
        }
        if (!v->paused) {
            v->paused = true;
            m->paused_count++;
            pthread_cond_broadcast(&m->cond);
        }
        pthread_cond_wait(&m->cond, &m->lock);
    }
    if (v->paused) {
        v->paused = false;
        m->paused_count--;
    }
    bool run = m->stop_reason == STOP_NONE;
    pthread_mutex_unlock(&m->lock);
    return run;
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *v = arg;
    tls_run = v->run;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);

    while (vcpu_may_run(v)) {
        int r = ioctl(v->fd, KVM_RUN, 0);
        int e = errno;
        v->run->immediate_exit = 0;
        if (r < 0) {
            if (e == EINTR || e == EAGAIN)
                continue;
            machine_request_stop(v->m, STOP_ERROR, "KVM_RUN failed on vCPU %u: %s", v->index,
                                 strerror(e));
            break;
        }
        if (!handle_exit(v))
            break;
    }
    /* A stopping vCPU counts as paused for anyone waiting in machine_pause(). */
    pthread_mutex_lock(&v->m->lock);
    if (!v->paused) {
        v->paused = true;
        v->m->paused_count++;
    }
    pthread_cond_broadcast(&v->m->cond);
    pthread_mutex_unlock(&v->m->lock);
    return NULL;
}

int machine_start(struct machine *m, char *err, size_t errlen)
{
    struct sigaction sa = {.sa_handler = kick_handler};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    /* Block SIGUSR1 in the creating thread; vCPU threads unblock it themselves. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    for (unsigned i = 0; i < m->ncpus; i++) {
        struct vcpu *v = &m->vcpus[i];
        int r = pthread_create(&v->thread, NULL, vcpu_thread, v);
        if (r != 0) {
            snprintf(err, errlen, "cannot start vCPU thread %u: %s", i, strerror(r));
            machine_request_stop(m, STOP_ERROR, "vCPU thread creation failed");
            return -r;
        }
        v->thread_started = true;
        char name[16];
        snprintf(name, sizeof(name), "vcpu%u", i);
        pthread_setname_np(v->thread, name);
    }
    return 0;
}

int machine_pause(struct machine *m, unsigned timeout_ms, char *err, size_t errlen)
{
    pthread_mutex_lock(&m->lock);
    m->pause_requested = true;
    pthread_mutex_unlock(&m->lock);
    for (unsigned i = 0; i < m->ncpus; i++)
        if (m->vcpus[i].thread_started)
            pthread_kill(m->vcpus[i].thread, SIGUSR1);
    /* m->cond runs on CLOCK_MONOTONIC (machine_create) */
    struct timespec deadline = deadline_in_ms(timeout_ms);
    pthread_mutex_lock(&m->lock);
    while (m->paused_count < m->ncpus &&
           pthread_cond_timedwait(&m->cond, &m->lock, &deadline) != ETIMEDOUT)
        ;
    unsigned stuck = m->ncpus;
    for (unsigned i = 0; i < m->ncpus && stuck == m->ncpus; i++)
        if (!m->vcpus[i].paused)
            stuck = i;
    if (stuck < m->ncpus) { /* undone: the others run on as if nothing had been asked */
        m->pause_requested = false;
        pthread_cond_broadcast(&m->cond);
    }
    pthread_mutex_unlock(&m->lock);
    if (stuck < m->ncpus) {
        snprintf(err, errlen,
                 "vCPU %u did not stop within %.1f s (it is inside a device's handler: is a "
                 "backend hanging? see vmm.log); the VM runs on",
                 stuck, timeout_ms / 1000.0);
        return -ETIMEDOUT;
    }
    return 0;
}

void machine_resume(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    m->pause_requested = false;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

bool machine_is_paused(struct machine *m)
{
    pthread_mutex_lock(&m->lock);
    bool p = m->pause_requested;
    pthread_mutex_unlock(&m->lock);
    return p;
}

void machine_destroy(struct machine *m)
{
    if (m->vcpus) {
        machine_request_stop(m, STOP_QUIT, "machine destroyed");
        for (unsigned i = 0; i < m->ncpus; i++) {
            struct vcpu *v = &m->vcpus[i];
            if (v->thread_started)
                pthread_join(v->thread, NULL);
            if (v->run)
                munmap(v->run, m->run_size);
            if (v->fd >= 0)
                close(v->fd);
        }
        free(m->vcpus);
        m->vcpus = NULL;
    }
    if (m->vm_fd >= 0)
        close(m->vm_fd);
    if (m->kvm_fd >= 0)
        close(m->kvm_fd);
    if (m->stop_notify_fd >= 0)
        close(m->stop_notify_fd);
    m->vm_fd = m->kvm_fd = m->stop_notify_fd = -1;
    iobus_destroy(&m->pio);
    iobus_destroy(&m->mmio);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cond);
}

static int collect_slot(struct machine *m, uint32_t slot, uint64_t pages, uint64_t *dst)
{
    size_t words = (size_t)((pages + 63) / 64);
    uint64_t *bits = calloc(words, sizeof(uint64_t));
    if (!bits)
        return -ENOMEM;
    struct kvm_dirty_log log = {.slot = slot, .dirty_bitmap = bits};
    int r = ioctl(m->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0 ? -errno : 0;
    for (size_t i = 0; r == 0 && i < words; i++)
        dst[i] |= bits[i];
    free(bits);
    return r;
}

int machine_collect_dirty(struct machine *m, uint64_t *bitmap)
{
    struct guest_mem *mem = m->mem;
    uint64_t low_pages = mem->low_size / GUEST_PAGE_SIZE;
    int r = collect_slot(m, 0, low_pages, bitmap);
    if (r == 0 && mem->size > mem->low_size)
        r = collect_slot(m, 1, (mem->size - mem->low_size) / GUEST_PAGE_SIZE,
                         bitmap + low_pages / 64);
    uint64_t words = (mem->size / GUEST_PAGE_SIZE + 63) / 64;
    for (uint64_t i = 0; i < words; i++)
        bitmap[i] |= __atomic_exchange_n(&mem->vmm_dirty[i], 0, __ATOMIC_RELAXED);
    return r;
}
