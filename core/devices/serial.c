/* 8250/16550A UART as Linux's 8250 driver and the built-in guest expect it: divisor latch,
 * interrupt enable/identification, loopback (Linux probes with it), scratch register. Output
 * is never delayed (THR is always empty); input waits in a 64 KiB ring until the guest reads. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/devices/devices.h"

#define UART_IER_RDI 0x01
#define UART_IER_THRI 0x02
#define UART_IIR_NO_INT 0x01
#define UART_IIR_THRI 0x02
#define UART_IIR_RDI 0x04
#define UART_IIR_FIFO 0xc0
#define UART_LCR_DLAB 0x80
#define UART_MCR_LOOP 0x10
#define UART_LSR_DR 0x01
#define UART_LSR_THRE 0x20
#define UART_LSR_TEMT 0x40
#define INPUT_RING 65536

struct serial {
    struct machine *m;
    uint16_t base;
    unsigned irq;
    serial_output_fn out;
    void *opaque;
    pthread_mutex_t lock;
    uint8_t ier, lcr, mcr, scr, fcr, dll, dlm;
    int thri_pending;
    int irq_level;
    unsigned char ring[INPUT_RING];
    size_t head, count;
};

static void update_irq(struct serial *s)
{
    int level =
        ((s->ier & UART_IER_RDI) && s->count) || ((s->ier & UART_IER_THRI) && s->thri_pending);
    if (level != s->irq_level) {
        s->irq_level = level;
        machine_set_irq(s->m, s->irq, level);
    }
}

static void push_input(struct serial *s, const unsigned char *buf, size_t len)
{
    for (size_t i = 0; i < len && s->count < INPUT_RING; i++) {
        s->ring[(s->head + s->count) % INPUT_RING] = buf[i];
        s->count++;
    }
}

static uint8_t modem_status(const struct serial *s)
{
    if (!(s->mcr & UART_MCR_LOOP))
        return 0xb0; /* DCD, DSR, CTS: a cable is plugged in */
    uint8_t mcr = s->mcr;
    return (uint8_t)(((mcr & 0x02) << 3) | ((mcr & 0x01) << 5) | ((mcr & 0x04) << 4) |
                     ((mcr & 0x08) << 4));
}

static uint8_t serial_read(struct serial *s, unsigned reg)
{
    bool dlab = s->lcr & UART_LCR_DLAB;
    switch (reg) {
    case 0:
        if (dlab)
            return s->dll;
        if (!s->count)
            return 0;
        uint8_t c = s->ring[s->head];
        s->head = (s->head + 1) % INPUT_RING;
        s->count--;
        return c;
    case 1:
        return dlab ? s->dlm : s->ier;
    case 2: {
        uint8_t fifo = (s->fcr & 1) ? UART_IIR_FIFO : 0;
        if ((s->ier & UART_IER_RDI) && s->count)
            return fifo | UART_IIR_RDI;
        if ((s->ier & UART_IER_THRI) && s->thri_pending) {
            s->thri_pending = 0; /* reading IIR acknowledges THRE */
            return fifo | UART_IIR_THRI;
        }
        return fifo | UART_IIR_NO_INT;
    }
    case 3:
        return s->lcr;
    case 4:
        return s->mcr;
    case 5:
        return (s->count ? UART_LSR_DR : 0) | UART_LSR_THRE | UART_LSR_TEMT;
    case 6:
        return modem_status(s);
    default:
        return s->scr;
    }
}

static void serial_write(struct serial *s, unsigned reg, uint8_t v)
{
    bool dlab = s->lcr & UART_LCR_DLAB;
    switch (reg) {
    case 0:
        if (dlab) {
            s->dll = v;
            break;
        }
        if (s->mcr & UART_MCR_LOOP)
            push_input(s, &v, 1);
        else
            s->out(s->opaque, &v, 1);
        s->thri_pending = 1;
        break;
    case 1:
        if (dlab) {
            s->dlm = v;
            break;
        }
        if ((v & UART_IER_THRI) && !(s->ier & UART_IER_THRI))
            s->thri_pending = 1; /* THR is empty: enabling THRI interrupts at once */
        s->ier = v & 0x0f;
        break;
    case 2:
        s->fcr = v;
        if (v & 0x02) { /* clear receive FIFO */
            s->head = s->count = 0;
        }
        break;
    case 3:
        s->lcr = v;
        break;
    case 4:
        s->mcr = v & 0x1f;
        break;
    case 7:
        s->scr = v;
        break;
    default: /* LSR and MSR are read-only */
        break;
    }
}

static void serial_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct serial *s = opaque;
    unsigned reg = (unsigned)offset;
    pthread_mutex_lock(&s->lock);
    if (is_write)
        serial_write(s, reg, data[0]);
    else
        data[0] = serial_read(s, reg);
    for (uint32_t i = 1; i < len; i++) /* wider accesses: only the first byte is the register */
        if (!is_write)
            data[i] = 0xff;
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

void serial_input(struct serial *s, const unsigned char *buf, size_t len)
{
    pthread_mutex_lock(&s->lock);
    push_input(s, buf, len);
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

/* Saved: the registers and the input not yet read by the guest. */
struct serial_saved {
    uint8_t ier, lcr, mcr, scr, fcr, dll, dlm, thri_pending;
    uint32_t count;
};

int serial_save(struct serial *s, struct state_writer *w)
{
    pthread_mutex_lock(&s->lock);
    struct serial_saved st = {s->ier,
                              s->lcr,
                              s->mcr,
                              s->scr,
                              s->fcr,
                              s->dll,
                              s->dlm,
                              (uint8_t)s->thri_pending,
                              (uint32_t)s->count};
    unsigned char *in = malloc(s->count ? s->count : 1);
    for (size_t i = 0; in && i < s->count; i++)
        in[i] = s->ring[(s->head + i) % INPUT_RING];
    pthread_mutex_unlock(&s->lock);
    if (!in)
        return -ENOMEM;
    state_put(w, STATE_TAG('U', 'A', 'R', 'T'), s->base, &st, sizeof(st));
    state_put(w, STATE_TAG('U', 'A', 'R', 'I'), s->base, in, st.count);
    free(in);
    return 0;
}

int serial_load(struct serial *s, const struct state_reader *r)
{
    struct serial_saved st;
    if (state_get_exact(r, STATE_TAG('U', 'A', 'R', 'T'), s->base, &st, sizeof(st)) < 0)
        return -EINVAL;
    const struct state_record *in = state_get(r, STATE_TAG('U', 'A', 'R', 'I'), s->base);
    if (!in || in->len != st.count || st.count > INPUT_RING)
        return -EINVAL;
    pthread_mutex_lock(&s->lock);
    s->ier = st.ier & 0x0f;
    s->lcr = st.lcr;
    s->mcr = st.mcr & 0x1f;
    s->scr = st.scr;
    s->fcr = st.fcr;
    s->dll = st.dll;
    s->dlm = st.dlm;
    s->thri_pending = st.thri_pending != 0;
    s->head = 0;
    s->count = st.count;
    memcpy(s->ring, in->data, st.count);
    s->irq_level = -1; /* force the line to be driven from the restored state */
    update_irq(s);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

struct serial *serial_create(struct machine *m, uint16_t base, unsigned irq, serial_output_fn out,
                             void *opaque)
{
    struct serial *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->m = m;
    s->base = base;
    s->irq = irq;
    s->out = out;
    s->opaque = opaque;
    s->lcr = 0x03;
    s->mcr = 0x08;
    s->dll = 0x01; /* 115200 baud */
    pthread_mutex_init(&s->lock, NULL);
    if (iobus_register(&m->pio, base, 8, serial_io, s) < 0) {
        serial_destroy(s);
        return NULL;
    }
    return s;
}

void serial_destroy(struct serial *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s);
}
