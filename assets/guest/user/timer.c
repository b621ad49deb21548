/* Short busy-wait delays, needed only while starting secondary CPUs (INIT, then SIPI). They
 * poll the ACPI PM timer (3.579545 MHz, port from the FADT) or, without one, PIT channel 2
 * gated through port 0x61. Both run as plain port reads at CPL 3. Every loop is bounded, so
 * a machine without either timer just gets shorter delays, never a hang. */
#include "assets/guest/user/guest.h"

#define PM_TIMER_HZ 3579545ULL
#define PIT_HZ 1193182ULL
#define PIT_CH2 0x42
#define PIT_CMD 0x43
#define PIT_GATE 0x61
#define SPIN_LIMIT 50000000

static bool pm_timer_delay(uint32_t us)
{
    uint32_t mask = acpi.pm_tmr_32bit ? 0xffffffffu : 0xffffffu;
    uint64_t ticks = us * PM_TIMER_HZ / 1000000 + 1;
    uint32_t last = inl(acpi.pm_tmr) & mask;
    uint64_t elapsed = 0;
    unsigned stuck = 0;
    while (elapsed < ticks) {
        uint32_t now = inl(acpi.pm_tmr) & mask;
        if (now == last) {
            if (++stuck > 1000000)
                return false; /* not ticking: not a PM timer after all */
            continue;
        }
        stuck = 0;
        elapsed += (now - last) & mask;
        last = now;
    }
    return true;
}

static void pit_delay(uint32_t us)
{
    while (us) {
        uint32_t chunk = us > 50000 ? 50000 : us;
        uint32_t count = (uint32_t)(chunk * PIT_HZ / 1000000) + 1;
        outb(PIT_GATE, (inb(PIT_GATE) & ~0x02) | 0x01); /* gate on, speaker off */
        outb(PIT_CMD, 0xb0);                           /* channel 2, lo/hi, mode 0 */
        outb(PIT_CH2, count & 0xff);
        outb(PIT_CH2, (count >> 8) & 0xff);
        for (int i = 0; i < SPIN_LIMIT && !(inb(PIT_GATE) & 0x20); i++)
            cpu_relax();
        us -= chunk;
    }
}

void delay_us(uint32_t us)
{
    static bool pm_timer_broken;
    if (acpi.pm_tmr && !pm_timer_broken) {
        if (pm_timer_delay(us))
            return;
        pm_timer_broken = true;
    }
    pit_delay(us);
}
