/* Secondary CPUs, started from CPL 3 through the memory-mapped local APIC (mapped user-
 * accessible like all of the low 4 GiB): copy the real-mode trampoline below 1 MiB, send every
 * enabled MADT processor INIT, SIPI, SIPI, and wait for the APs to count themselves in
 * (kernel/head.S ap_entry64). All APs are started in parallel, so the delays are paid once;
 * like Linux, modern CPUs and hypervisors get 10 us ones instead of the legacy 10 ms + 200 us.
 * The APs then sleep in CPL 0 with interrupts off. */
#include "assets/guest/user/guest.h"

#define LAPIC_ID 0x020
#define LAPIC_SVR 0x0f0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define ICR_INIT 0x00004500    /* INIT, level assert */
#define ICR_STARTUP 0x00004600 /* start-up IPI, vector = page number */
#define ICR_BUSY (1u << 12)
#define FIRST_WAIT_US 1000000
#define RETRY_WAIT_US 3000000

static uint64_t lapic;

static void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

/* Linux's smp_quirk_init_udelay(): no INIT delay on Intel family 6, AMD family >= 0xf, or
 * under a hypervisor, where INIT takes effect at once. */
static bool legacy_init_delay(void)
{
    uint32_t a, b, c, d, vendor_b;
    cpuid(0, &a, &vendor_b, &c, &d);
    cpuid(1, &a, &b, &c, &d);
    unsigned family = (a >> 8) & 0xf;
    if (family == 0xf)
        family += (a >> 20) & 0xff;
    bool hypervisor = c & (1u << 31);
    bool intel = vendor_b == 0x756e6547; /* "Genu" */
    bool amd = vendor_b == 0x68747541;   /* "Auth" */
    return !(hypervisor || (intel && family == 6) || (amd && family >= 0xf));
}

static void lapic_write(uint32_t reg, uint32_t v)
{
    mmio_write32(lapic + reg, v);
}

static uint32_t lapic_read(uint32_t reg)
{
    return mmio_read32(lapic + reg);
}

static void send_ipi(uint32_t apic_id, uint32_t icr)
{
    lapic_write(LAPIC_ICR_HI, apic_id << 24);
    lapic_write(LAPIC_ICR_LO, icr);
    for (int i = 0; i < 100000 && (lapic_read(LAPIC_ICR_LO) & ICR_BUSY); i++)
        cpu_relax();
}

static void start_aps(const uint32_t *aps, unsigned n, bool legacy)
{
    uint32_t vector = TRAMPOLINE_ADDR >> 12;
    for (unsigned i = 0; i < n; i++)
        send_ipi(aps[i], ICR_INIT);
    delay_us(legacy ? 10000 : 0);
    for (unsigned i = 0; i < n; i++)
        send_ipi(aps[i], ICR_STARTUP | vector);
    delay_us(legacy ? 200 : 10);
    for (unsigned i = 0; i < n; i++) /* ignored by an AP the first one started */
        send_ipi(aps[i], ICR_STARTUP | vector);
}

static bool wait_online(unsigned want, uint32_t timeout_us)
{
    for (uint32_t waited = 0; cpus_online < want && waited < timeout_us; waited += 100)
        delay_us(100);
    return cpus_online >= want;
}

void smp_start(void)
{
    lapic = acpi.lapic_addr;
    uint32_t self = lapic_read(LAPIC_ID) >> 24;
    cpu_apic_ids[0] = self;
    /* Virtual-wire mode as a BIOS leaves it: APIC on, 8259 through LINT0, NMI on LINT1. */
    lapic_write(LAPIC_SVR, 0x100 | VEC_SPURIOUS);
    lapic_write(LAPIC_LVT_LINT0, 0x700);
    lapic_write(LAPIC_LVT_LINT1, 0x400);

    uint32_t aps[MAX_CPUS];
    unsigned n = 0;
    for (unsigned i = 0; i < acpi.ncpus && n < MAX_CPUS - 1; i++)
        if (acpi.apic_ids[i] != self)
            aps[n++] = acpi.apic_ids[i];
    if (!n)
        return;

    memcpy((void *)(uintptr_t)TRAMPOLINE_ADDR, trampoline_start,
           (size_t)(trampoline_end - trampoline_start));
    start_aps(aps, n, legacy_init_delay());
    if (wait_online(1 + n, FIRST_WAIT_US))
        return;
    /* Someone did not come up: once more, only for those, with the full legacy delays. */
    unsigned missing = 0;
    for (unsigned i = 0; i < n; i++) {
        bool online = false;
        for (unsigned j = 1; j < cpus_online; j++)
            online |= cpu_apic_ids[j] == aps[i];
        if (!online)
            aps[missing++] = aps[i];
    }
    start_aps(aps, missing, true);
    wait_online(1 + n, RETRY_WAIT_US);
}

unsigned smp_online(uint32_t *ids, unsigned max)
{
    unsigned n = cpus_online;
    if (n > max)
        n = max;
    for (unsigned i = 0; i < n; i++) {
        uint32_t id = cpu_apic_ids[i];
        unsigned j = i;
        while (j > 0 && ids[j - 1] > id) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = id;
    }
    return n;
}
