/* Delays for CPU bring-up (INIT, then SIPI), spun on the TSC at CPL 3 so that they cost no
 * CPL-0 time. The TSC rate is measured once: read a reference clock (the ACPI PM timer at
 * 3.579545 MHz, else PIT channel 2 at 1.193182 MHz), spin a fixed number of TSC cycles, read
 * it again: two or three port reads in all, not a polling loop. */
#include "assets/guest/user/guest.h"

#define PM_TIMER_HZ 3579545ULL
#define PIT_HZ 1193182ULL
#define PIT_CH2 0x42
#define PIT_CMD 0x43
#define PIT_GATE 0x61
#define CALIBRATION_CYCLES 4000000ULL /* ~1-2 ms on anything from 2 to 4 GHz */
#define FALLBACK_TSC_PER_US 4000      /* too high is safe: delays only get longer */

static uint64_t tsc_per_us = FALLBACK_TSC_PER_US;

static void spin_cycles(uint64_t cycles)
{
    uint64_t start = rdtsc();
    while (rdtsc() - start < cycles)
        cpu_relax();
}

static uint64_t calibrate_pm_timer(void)
{
    uint32_t mask = acpi.pm_tmr_32bit ? 0xffffffffu : 0xffffffu;
    uint32_t p0 = inl(acpi.pm_tmr) & mask;
    uint64_t t0 = rdtsc();
    spin_cycles(CALIBRATION_CYCLES);
    uint32_t p1 = inl(acpi.pm_tmr) & mask;
    uint64_t t1 = rdtsc();
    uint64_t ticks = (p1 - p0) & mask;
    return ticks ? (t1 - t0) * PM_TIMER_HZ / ticks / 1000000 : 0;
}

static uint16_t pit_ch2_read(void)
{
    outb(PIT_CMD, 0x80); /* latch channel 2 */
    uint8_t lo = inb(PIT_CH2);
    return (uint16_t)(lo | inb(PIT_CH2) << 8);
}

static uint64_t calibrate_pit(void)
{
    outb(PIT_GATE, (inb(PIT_GATE) & ~0x02) | 0x01); /* gate on, speaker off */
    outb(PIT_CMD, 0xb4);                            /* channel 2, lo/hi, mode 2, binary */
    outb(PIT_CH2, 0xff);
    outb(PIT_CH2, 0xff);
    uint16_t c0 = pit_ch2_read();
    uint64_t t0 = rdtsc();
    spin_cycles(CALIBRATION_CYCLES / 4); /* < 55 ms: the counter must not wrap */
    uint16_t c1 = pit_ch2_read();
    uint64_t t1 = rdtsc();
    uint16_t ticks = (uint16_t)(c0 - c1); /* counts down */
    return ticks && c0 != 0xffff ? (t1 - t0) * PIT_HZ / ticks / 1000000 : 0;
}

void timer_init(void)
{
    uint64_t rate = acpi.pm_tmr ? calibrate_pm_timer() : 0;
    if (!rate)
        rate = calibrate_pit();
    if (rate)
        tsc_per_us = rate + rate / 16; /* round up: a delay may run long, never short */
}

uint64_t timer_tsc_per_us(void)
{
    return tsc_per_us;
}

void delay_us(uint32_t us)
{
    spin_cycles(us * tsc_per_us);
}
