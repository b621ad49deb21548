/* i8042 PS/2 controller (ports 0x60 data, 0x64 status/command) with a keyboard behind it:
 * controller self tests, command byte, keyboard reset/identify/LED/scancode-set commands, and
 * the CPU reset line (command 0xFE) that OSes use to reboot. Bytes for the guest wait in an
 * output queue; IRQ 1 is raised while one is ready and keyboard interrupts are enabled. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/devices/devices.h"
#include "core/util/log.h"

#define STAT_OBF 0x01
#define STAT_SYS 0x04
#define STAT_CMD 0x08
#define STAT_UNLOCKED 0x10 /* the keylock input: 1 = keyboard not inhibited */
#define STAT_AUX_OBF 0x20
#define CB_KBD_INT 0x01
#define CB_AUX_INT 0x02
#define CB_SYS 0x04
#define CB_KBD_DISABLE 0x10
#define CB_AUX_DISABLE 0x20
#define CB_XLATE 0x40
#define KBD_IRQ 1
#define AUX_IRQ 12
#define QUEUE 256

/* The PS/2 mouse behind the aux port (commands arrive through controller command 0xD4). */
struct i8042_mouse {
    uint8_t pending;   /* command waiting for its argument (0xE8 resolution, 0xF3 rate) */
    uint8_t reporting; /* 0xF4 enable: stream packets */
    uint8_t rate, resolution, scaling, buttons;
};

struct i8042 {
    struct machine *m;
    pthread_mutex_t lock;
    uint8_t cmdbyte;
    uint8_t status;
    uint8_t pending_cmd; /* controller command waiting for its data byte on 0x60 */
    uint8_t kbd_pending; /* keyboard command waiting for its argument */
    uint8_t queue[QUEUE];
    uint8_t queue_aux[QUEUE]; /* 1 if the byte came from the aux (mouse) port */
    unsigned head, count;
    int irq1, irq12;
    struct i8042_mouse mouse;
};

static void update_irq(struct i8042 *k)
{
    int kbd = 0, aux = 0;
    if (k->count) {
        bool from_aux = k->queue_aux[k->head];
        kbd = !from_aux && (k->cmdbyte & CB_KBD_INT);
        aux = from_aux && (k->cmdbyte & CB_AUX_INT);
    }
    if (kbd != k->irq1) {
        k->irq1 = kbd;
        machine_set_irq(k->m, KBD_IRQ, kbd);
    }
    if (aux != k->irq12) {
        k->irq12 = aux;
        machine_set_irq(k->m, AUX_IRQ, aux);
    }
}

/* The 8042 holds one byte at a time and raises IRQ 1 or 12 when it loads the next: each byte
 * read from 0x60 drops the lines, so update_irq() makes a new edge for the next queued byte
 * (the pins are edge-triggered; a line held high would deliver only the first byte). */
static void lower_irqs(struct i8042 *k)
{
    if (k->irq1 == 1) {
        k->irq1 = 0;
        machine_set_irq(k->m, KBD_IRQ, 0);
    }
    if (k->irq12 == 1) {
        k->irq12 = 0;
        machine_set_irq(k->m, AUX_IRQ, 0);
    }
}

static void enqueue(struct i8042 *k, uint8_t byte, bool aux)
{
    if (k->count == QUEUE)
        return; /* a real controller drops too */
    unsigned i = (k->head + k->count) % QUEUE;
    k->queue[i] = byte;
    k->queue_aux[i] = aux;
    k->count++;
}

static void keyboard_command(struct i8042 *k, uint8_t v)
{
    if (k->kbd_pending) { /* argument of 0xED (LEDs), 0xF0 (scancode set), 0xF3 (typematic) */
        uint8_t cmd = k->kbd_pending;
        k->kbd_pending = 0;
        enqueue(k, 0xfa, false);
        if (cmd == 0xf0 && v == 0)
            enqueue(k, 0x02, false); /* current set: 2 (translated to set 1) */
        return;
    }
    switch (v) {
    case 0xff: /* reset */
        enqueue(k, 0xfa, false);
        enqueue(k, 0xaa, false);
        break;
    case 0xf2: /* identify: MF2 keyboard with translation */
        enqueue(k, 0xfa, false);
        enqueue(k, 0xab, false);
        enqueue(k, 0x83, false);
        break;
    case 0xed:
    case 0xf0:
    case 0xf3:
        k->kbd_pending = v;
        enqueue(k, 0xfa, false);
        break;
    case 0xee: /* echo */
        enqueue(k, 0xee, false);
        break;
    default: /* enable, disable, set defaults and the rest: acknowledge */
        enqueue(k, 0xfa, false);
        break;
    }
}

static void controller_command(struct i8042 *k, uint8_t v)
{
    if (v >= 0x20 && v < 0x40) { /* read internal RAM; 0x20 is the command byte */
        enqueue(k, v == 0x20 ? k->cmdbyte : 0, false);
        return;
    }
    if (v >= 0xf0) { /* pulse output lines; bit 0 clear = CPU reset */
        if (!(v & 1))
            machine_request_stop(k->m, STOP_RESET, "guest reset through the i8042");
        return;
    }
    switch (v) {
    case 0x60: /* write command byte */
    case 0xd1: /* write output port */
    case 0xd2: /* write keyboard output buffer */
    case 0xd3: /* write aux output buffer */
    case 0xd4: /* write to aux device */
        k->pending_cmd = v;
        break;
    case 0xa7:
        k->cmdbyte |= CB_AUX_DISABLE;
        break;
    case 0xa8:
        k->cmdbyte &= (uint8_t)~CB_AUX_DISABLE;
        break;
    case 0xa9:
        enqueue(k, 0x00, false);
        break; /* aux interface test: OK */
    case 0xaa:
        enqueue(k, 0x55, false);
        k->status |= STAT_SYS;
        break; /* self test passed */
    case 0xab:
        enqueue(k, 0x00, false);
        break; /* keyboard interface test: OK */
    case 0xad:
        k->cmdbyte |= CB_KBD_DISABLE;
        break;
    case 0xae:
        k->cmdbyte &= (uint8_t)~CB_KBD_DISABLE;
        break;
    case 0xc0:
        enqueue(k, 0x00, false);
        break; /* input port */
    case 0xd0:
        enqueue(k, 0x01, false);
        break; /* output port: reset line high */
    default:
        break;
    }
}

static void mouse_defaults(struct i8042_mouse *ms)
{
    *ms = (struct i8042_mouse){.rate = 100, .resolution = 2};
}

static void aux_command(struct i8042 *k, uint8_t v)
{
    struct i8042_mouse *ms = &k->mouse;
    if (ms->pending) {
        if (ms->pending == 0xe8)
            ms->resolution = v & 3;
        else
            ms->rate = v;
        ms->pending = 0;
        enqueue(k, 0xfa, true);
        return;
    }
    switch (v) {
    case 0xff: /* reset: ack, self-test passed, id 0 */
        mouse_defaults(ms);
        enqueue(k, 0xfa, true);
        enqueue(k, 0xaa, true);
        enqueue(k, 0x00, true);
        break;
    case 0xf2: /* identify: standard PS/2 mouse */
        enqueue(k, 0xfa, true);
        enqueue(k, 0x00, true);
        break;
    case 0xe9: /* status request */
        enqueue(k, 0xfa, true);
        enqueue(
            k, (uint8_t)((ms->reporting ? 0x20 : 0) | (ms->scaling ? 0x10 : 0) | (ms->buttons & 7)),
            true);
        enqueue(k, ms->resolution, true);
        enqueue(k, ms->rate, true);
        break;
    case 0xe8:
    case 0xf3:
        ms->pending = v;
        enqueue(k, 0xfa, true);
        break;
    case 0xf4:
        ms->reporting = 1;
        enqueue(k, 0xfa, true);
        break;
    case 0xf5:
        ms->reporting = 0;
        enqueue(k, 0xfa, true);
        break;
    case 0xf6:
        mouse_defaults(ms);
        enqueue(k, 0xfa, true);
        break;
    case 0xe6:
        ms->scaling = 0;
        enqueue(k, 0xfa, true);
        break;
    case 0xe7:
        ms->scaling = 1;
        enqueue(k, 0xfa, true);
        break;
    default:
        enqueue(k, 0xfa, true);
        break; /* stream/remote/wrap mode, read data: ack */
    }
}

static void data_write(struct i8042 *k, uint8_t v)
{
    uint8_t cmd = k->pending_cmd;
    k->pending_cmd = 0;
    switch (cmd) {
    case 0x60:
        k->cmdbyte = v;
        k->status = (uint8_t)((k->status & ~STAT_SYS) | (v & CB_SYS));
        break;
    case 0xd1:
        if (!(v & 1))
            machine_request_stop(k->m, STOP_RESET, "guest reset through the i8042 output port");
        break;
    case 0xd2:
        enqueue(k, v, false);
        break;
    case 0xd3:
        enqueue(k, v, true);
        break;
    case 0xd4:
        aux_command(k, v);
        break;
    default:
        keyboard_command(k, v);
        break;
    }
}

static void i8042_access(struct i8042 *k, bool command_port, uint8_t *data, bool is_write)
{
    pthread_mutex_lock(&k->lock);
    if (command_port) {
        if (is_write) {
            k->status |= STAT_CMD;
            controller_command(k, data[0]);
        } else {
            uint8_t st = k->status;
            if (k->count)
                st |= STAT_OBF | (k->queue_aux[k->head] ? STAT_AUX_OBF : 0);
            data[0] = st;
        }
    } else {
        if (is_write) {
            k->status &= (uint8_t)~STAT_CMD;
            data_write(k, data[0]);
        } else if (k->count) {
            data[0] = k->queue[k->head];
            k->head = (k->head + 1) % QUEUE;
            k->count--;
            lower_irqs(k);
        } else {
            data[0] = 0;
        }
    }
    update_irq(k);
    pthread_mutex_unlock(&k->lock);
}

static void data_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    (void)offset, (void)len;
    i8042_access(opaque, false, data, is_write);
}

static void command_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    (void)offset, (void)len;
    i8042_access(opaque, true, data, is_write);
}

void i8042_keyboard_bytes(struct i8042 *k, const uint8_t *bytes, size_t n)
{
    pthread_mutex_lock(&k->lock);
    if (!(k->cmdbyte & CB_KBD_DISABLE))
        for (size_t i = 0; i < n; i++)
            enqueue(k, bytes[i], false);
    update_irq(k);
    pthread_mutex_unlock(&k->lock);
}

/* Movement and buttons from a viewer, as standard 3-byte packets (only while the guest has
 * enabled reporting and the aux port; deltas split to fit 9-bit two's complement). */
void i8042_mouse_event(struct i8042 *k, int dx, int dy, int dz, unsigned buttons)
{
    (void)dz; /* a standard (id 0) mouse has no wheel */
    pthread_mutex_lock(&k->lock);
    k->mouse.buttons = (uint8_t)(buttons & 7);
    if (k->mouse.reporting && !(k->cmdbyte & CB_AUX_DISABLE)) {
        /* A viewer may send anything; a queue holds at most 85 packets of 256 anyway. */
        dx = dx < -QUEUE * 256 ? -QUEUE * 256 : dx > QUEUE * 256 ? QUEUE * 256 : dx;
        dy = dy < -QUEUE * 256 ? QUEUE * 256 : dy > QUEUE * 256 ? -QUEUE * 256 : -dy; /* y is up */
        do {
            int x = dx < -256 ? -256 : dx > 255 ? 255 : dx;
            int y = dy < -256 ? -256 : dy > 255 ? 255 : dy;
            dx -= x;
            dy -= y;
            if (k->count + 3 > QUEUE)
                break;
            enqueue(k, (uint8_t)(0x08 | (buttons & 7) | (x < 0 ? 0x10 : 0) | (y < 0 ? 0x20 : 0)),
                    true);
            enqueue(k, (uint8_t)x, true);
            enqueue(k, (uint8_t)y, true);
        } while (dx || dy);
    }
    update_irq(k);
    pthread_mutex_unlock(&k->lock);
}

struct i8042_saved {
    uint8_t cmdbyte, status, pending_cmd, kbd_pending;
    uint32_t count;
    uint8_t queue[QUEUE], queue_aux[QUEUE];
};

int i8042_save(struct i8042 *k, struct state_writer *w)
{
    struct i8042_saved st;
    memset(&st, 0, sizeof(st));
    pthread_mutex_lock(&k->lock);
    st.cmdbyte = k->cmdbyte;
    st.status = k->status;
    st.pending_cmd = k->pending_cmd;
    st.kbd_pending = k->kbd_pending;
    st.count = k->count;
    for (unsigned i = 0; i < k->count; i++) {
        st.queue[i] = k->queue[(k->head + i) % QUEUE];
        st.queue_aux[i] = k->queue_aux[(k->head + i) % QUEUE];
    }
    struct i8042_mouse ms = k->mouse;
    pthread_mutex_unlock(&k->lock);
    state_put(w, STATE_TAG('8', '0', '4', '2'), 0, &st, sizeof(st));
    state_put(w, STATE_TAG('8', '0', '4', 'M'), 0, &ms, sizeof(ms));
    return 0;
}

int i8042_load(struct i8042 *k, const struct state_reader *r)
{
    struct i8042_saved st;
    if (state_get_exact(r, STATE_TAG('8', '0', '4', '2'), 0, &st, sizeof(st)) < 0 ||
        st.count > QUEUE)
        return -EINVAL;
    struct i8042_mouse ms;
    if (state_get_exact(r, STATE_TAG('8', '0', '4', 'M'), 0, &ms, sizeof(ms)) < 0)
        mouse_defaults(&ms); /* state saved before the mouse existed */
    pthread_mutex_lock(&k->lock);
    k->mouse = ms;
    k->cmdbyte = st.cmdbyte;
    k->status = st.status;
    k->pending_cmd = st.pending_cmd;
    k->kbd_pending = st.kbd_pending;
    k->head = 0;
    k->count = st.count;
    memcpy(k->queue, st.queue, QUEUE);
    memcpy(k->queue_aux, st.queue_aux, QUEUE);
    k->irq1 = k->irq12 = -1;
    update_irq(k);
    pthread_mutex_unlock(&k->lock);
    return 0;
}

struct i8042 *i8042_create(struct machine *m)
{
    struct i8042 *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->m = m;
    pthread_mutex_init(&k->lock, NULL);
    k->cmdbyte = CB_KBD_INT | CB_SYS | CB_XLATE;
    mouse_defaults(&k->mouse);
    k->status = STAT_SYS | STAT_UNLOCKED;
    if (iobus_register(&m->pio, 0x60, 1, data_io, k) < 0 ||
        iobus_register(&m->pio, 0x64, 1, command_io, k) < 0) {
        i8042_destroy(k);
        return NULL;
    }
    return k;
}

void i8042_destroy(struct i8042 *k)
{
    if (!k)
        return;
    pthread_mutex_destroy(&k->lock);
    free(k);
}
