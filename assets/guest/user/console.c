/* COM1 (8250/16550 at 0x3f8): output through the kernel's console_write syscall (one `rep
 * outsb` per FIFO-full), input interrupt-driven. Waiting for a key is race-free without
 * spinning: read the kernel's IRQ count, drain the UART, and only if it was empty ask the
 * kernel to sleep until the count moves. An IRQ that lands between the drain and the
 * syscall changed the count, so the syscall returns at once. */
#include "assets/guest/user/guest.h"

#define COM1 COM1_PORT
#define UART_RBR 0
#define UART_THR 0
#define UART_DLL 0
#define UART_IER 1
#define UART_DLM 1
#define UART_IIR 2
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_DATA_READY 0x01
#define LSR_TX_EMPTY 0x40
#define SPIN_LIMIT 100000

static unsigned tx_burst = 1; /* bytes we may write per THR-empty: 16 with a 16550 FIFO */

void console_init(void)
{
    outb(COM1 + UART_IER, 0x00);
    outb(COM1 + UART_LCR, 0x80); /* DLAB: 115200 baud */
    outb(COM1 + UART_DLL, 0x01);
    outb(COM1 + UART_DLM, 0x00);
    outb(COM1 + UART_LCR, 0x03); /* 8N1 */
    outb(COM1 + UART_FCR, 0x01); /* FIFOs on, receive trigger at 1 byte */
    outb(COM1 + UART_MCR, 0x0b); /* DTR, RTS, OUT2 (gates the IRQ line) */
    if ((inb(COM1 + UART_IIR) & 0xc0) == 0xc0)
        tx_burst = 16;
    outb(COM1 + UART_IER, 0x01); /* interrupt on received data */
}

static void write_raw(const char *s, size_t n)
{
    if (n)
        sys_console_write(s, n, tx_burst);
}

void console_write(const char *s, size_t n)
{
    fb_write(s, n); /* the framebuffer console mirrors the serial line */
    char buf[128];
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (len + 2 > sizeof buf) {
            write_raw(buf, len);
            len = 0;
        }
        if (s[i] == '\n')
            buf[len++] = '\r';
        buf[len++] = s[i];
    }
    write_raw(buf, len);
}

void console_puts(const char *s)
{
    console_write(s, strlen(s));
}

void console_flush(void)
{
    for (int i = 0; i < SPIN_LIMIT && !(inb(COM1 + UART_LSR) & LSR_TX_EMPTY); i++)
        cpu_relax();
}

int console_getc(void)
{
    for (;;) {
        uint32_t seen = irq_serial_count;
        if (inb(COM1 + UART_LSR) & LSR_DATA_READY)
            return inb(COM1 + UART_RBR);
        int k = kbd_getc(); /* IRQ 1 bumps the same counter */
        if (k >= 0)
            return k;
        fb_idle();
        sys_wait_input(seen);
    }
}
