/* Declarations for the CPL-3 program of the built-in guest: the state it shares with the
 * kernel (head.S), the syscalls (port I/O among them), and the interfaces of the files in
 * user/. Everything is identity mapped, so a physical address is also a valid pointer. */
#ifndef VMWS_GUEST_USER_H
#define VMWS_GUEST_USER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "assets/guest/layout.h"

#define GUEST_VERSION_LINE "vmws-guest " VMWS_GUEST_VERSION " (built-in guest of vmws)"

#define MIB (1024UL * 1024UL)
#define GIB (1024UL * MIB)
#define PAGE_SIZE 4096UL
#define LAPIC_DEFAULT 0xfee00000ULL

/* Kernel state (head.S, pgtables.S, trampoline.S) and linker symbols (guest.lds). */
extern volatile uint32_t irq_serial_count;
extern volatile uint32_t cpus_online;
extern volatile uint32_t cpu_apic_ids[MAX_CPUS];
extern uint64_t pml4[512];
extern const char trampoline_start[], trampoline_end[];
extern char guest_image_end[];

/* --- CPU and syscalls ---------------------------------------------------------------- */
/* A syscall is `ud2` (see layout.h): the kernel's #UD handler dispatches on rax. */
static inline long syscall3(long nr, long a, long b, long c)
{
    long ret;
    register long r_c __asm__("rdx") = c;
    __asm__ volatile("ud2"
                     : "=a"(ret), "+D"(a), "+S"(b), "+r"(r_c)
                     : "a"(nr)
                     : "rcx", "r8", "r9", "r10", "r11", "memory");
    return ret;
}
/* Port I/O is a syscall: kvm_pvm faults CPL-3 in/out regardless of IOPL (layout.h). */
static inline void outb(uint16_t port, uint8_t v)
{
    syscall3(SYS_OUT8, port, v, 0);
}
static inline void outw(uint16_t port, uint16_t v)
{
    syscall3(SYS_OUT16, port, v, 0);
}
static inline uint8_t inb(uint16_t port)
{
    return (uint8_t)syscall3(SYS_IN8, port, 0, 0);
}
static inline uint16_t inw(uint16_t port)
{
    return (uint16_t)syscall3(SYS_IN16, port, 0, 0);
}
static inline uint32_t inl(uint16_t port)
{
    return (uint32_t)syscall3(SYS_IN32, port, 0, 0);
}
/* Writes LEN bytes to COM1, BURST at a time after each THR-empty. */
static inline void sys_console_write(const char *buf, size_t len, unsigned burst)
{
    syscall3(SYS_CONSOLE_WRITE, (long)buf, (long)len, burst);
}
/* Sleeps until the COM1 interrupt count differs from SEEN (returns at once if it already
 * does): the kernel checks with interrupts off and then does sti;hlt. */
static inline void sys_wait_input(uint32_t seen)
{
    syscall3(SYS_WAIT_INPUT, seen, 0, 0);
}
static inline __attribute__((noreturn)) void sys_halt(void)
{
    for (;;)
        syscall3(SYS_HALT, 0, 0, 0);
}
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}
static inline void cpu_relax(void)
{
    __asm__ volatile("pause" ::: "memory");
}
/* MMIO (the local APIC) is plain memory access: all of the low 4 GiB is mapped U=1. */
static inline uint32_t mmio_read32(uint64_t addr)
{
    return *(volatile uint32_t *)(uintptr_t)addr;
}
static inline void mmio_write32(uint64_t addr, uint32_t v)
{
    *(volatile uint32_t *)(uintptr_t)addr = v;
}

/* --- lib.c: freestanding C library bits ----------------------------------------------- */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
char *strncpy_z(char *dst, const char *src, size_t size); /* always NUL-terminates */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool parse_u64(const char *s, uint64_t *out); /* decimal only, no sign, no overflow */

/* --- console.c: COM1 ------------------------------------------------------------------ */
void console_init(void);
void console_write(const char *s, size_t n); /* "\n" goes out as "\r\n" */
void console_puts(const char *s);
int console_getc(void);   /* blocks without spinning */
void console_flush(void); /* until the transmitter is empty */

/* --- boot information, copied out of boot_params before low memory is reused --------- */
#define E820_MAX 128
#define E820_RAM 1
struct e820_entry {
    uint64_t addr, size;
    uint32_t type;
} __attribute__((packed));

struct boot_info {
    struct e820_entry e820[E820_MAX];
    unsigned e820_count;
    uint64_t acpi_rsdp; /* 0 = not given: scan for it */
    char cmdline[2048];
};
extern struct boot_info boot;

/* --- memory.c: usable RAM, mapping above 4 GiB, the mem command's workload ------------- */
void memory_init(void);
uint64_t memory_usable_bytes(void);    /* all e820 RAM */
uint64_t memory_available_bytes(void); /* what `mem alloc` may still take */
uint64_t memory_allocated_bytes(void);
bool memory_is_mapped(uint64_t addr, uint64_t len);
int memory_alloc(uint64_t bytes); /* 0 or -1 (not enough free) */
void memory_free_all(void);
uint64_t memory_pattern_seed(const char *pattern);
void memory_fill(uint64_t seed);
/* Returns true if all allocated memory matches SEED, else the first bad word. */
bool memory_verify(uint64_t seed, uint64_t *bad_addr, uint64_t *expected, uint64_t *found);

/* --- acpi.c: RSDP, MADT, FADT, DSDT \_S5 ------------------------------------------------ */
struct acpi_info {
    bool found; /* an RSDP with valid checksums */
    bool have_madt;
    unsigned ncpus; /* enabled processors in the MADT */
    uint32_t apic_ids[MAX_CPUS];
    uint64_t lapic_addr;
    uint16_t pm1a_cnt; /* from the FADT, else 0x604 */
    uint16_t pm_tmr;   /* 0 = none */
    bool pm_tmr_32bit;
    uint8_t slp_typ_s5;
    uint8_t century_reg; /* CMOS index of the century, 0 = none */
};
extern struct acpi_info acpi;
void acpi_init(void);
void acpi_poweroff(void); /* returns only if powering off did not work */

/* --- timer.c: TSC delays, calibrated once against the ACPI PM timer or PIT channel 2 ---- */
void timer_init(void);
void delay_us(uint32_t us);
uint64_t timer_tsc_per_us(void);

/* --- smp.c: LAPIC and secondary CPUs --------------------------------------------------- */
void smp_start(void);
unsigned smp_online(uint32_t *ids, unsigned max); /* sorted APIC ids of online CPUs */

/* --- rtc.c: the CMOS clock (UTC) ------------------------------------------------------- */
struct rtc_time {
    unsigned year, month, day, hour, min, sec;
};
bool rtc_read(struct rtc_time *t);

/* --- fb.c: text console on the boot loader's linear framebuffer; kbd.c: PS/2 keyboard -- */
void fb_init(const uint8_t *boot_params); /* from screen_info; no-op without a 32-bpp LFB */
void fb_init_raw(uint64_t base, unsigned width, unsigned height, unsigned pitch_bytes);
void fb_probe_bochs(void); /* no LFB given: set up a Bochs VBE display (QEMU -vga std) */
bool fb_present(void);
void fb_write(const char *s, size_t n); /* mirror of console output */
void fb_idle(void);                     /* before sleeping: refresh the status line */
void fb_command(int argc, char **argv); /* the shell's `fb` */
void kbd_init(void);
int kbd_getc(void); /* a character typed on the PS/2 keyboard, or -1 */

/* --- shell.c --------------------------------------------------------------------------- */
void guest_main(const uint8_t *boot_params);

#endif
