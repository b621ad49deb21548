/* CPL-0 exception report: the only C in the kernel. An exception means the guest is broken,
 * so it prints "guest panic: exception N at RIP 0x..., error 0x..." (and CR2 for page
 * faults) on COM1 with polled output and the caller halts. Built with -mgeneral-regs-only:
 * no FPU/SSE, and it calls nothing outside this file. */
#include <stdint.h>

#define COM1 0x3f8
#define LSR_THR_EMPTY 0x20

void guest_panic(uint64_t vector, uint64_t error, uint64_t rip, uint64_t cs, uint64_t cr2,
                 uint64_t rsp);

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static void panic_putc(char c)
{
    for (int spins = 0; spins < 100000 && !(inb(COM1 + 5) & LSR_THR_EMPTY); spins++)
        ;
    outb(COM1, (uint8_t)c);
}

static void panic_puts(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            panic_putc('\r');
        panic_putc(*s);
    }
}

static void panic_hex(uint64_t v)
{
    char buf[17];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    panic_puts("0x");
    while (n)
        panic_putc(buf[--n]);
}

static void panic_dec(uint64_t v)
{
    char buf[21];
    int n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        panic_putc(buf[--n]);
}

void guest_panic(uint64_t vector, uint64_t error, uint64_t rip, uint64_t cs, uint64_t cr2,
                 uint64_t rsp)
{
    panic_puts("\nguest panic: exception ");
    panic_dec(vector);
    panic_puts(" at RIP ");
    panic_hex(rip);
    panic_puts(", error ");
    panic_hex(error);
    panic_puts("\n");
    panic_puts("guest panic: cpl ");
    panic_dec(cs & 3);
    panic_puts(", rsp ");
    panic_hex(rsp);
    if (vector == 14) {
        panic_puts(", cr2 ");
        panic_hex(cr2);
    }
    panic_puts("\n");
}
