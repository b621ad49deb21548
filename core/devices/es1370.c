/* Ensoniq ES1370 (AudioPCI), the card Linux's snd-ens1370 drives: PCI 1274:5000, one 64-byte
 * I/O BAR, three DMA channels (DAC1, DAC2 playback, ADC capture), each with a frame address and
 * size in a paged register window, a sample counter that raises the INTx line at the end of
 * every period, and an AK4531 codec behind a write-only register. The one idea: the registers
 * are plain state; es1370_render(), called by the mixer thread, is the card's clock — it walks
 * each running channel through guest RAM at the programmed rate and counts periods. Every
 * guest-programmed rate, address and size is checked in channel_check() before any DMA; a
 * nonsensical value marks the card broken (logged once), the VM runs on. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/devices/devices.h"
#include "core/devices/sound.h"
#include "core/util/log.h"
#include "core/util/state.h"
#include "core/vm/machine.h"

/* Register offsets and bits (names after Linux's sound/pci/ens1370.c and the datasheet). */
#define REG_CONTROL 0x00
#define CTRL_ADC_STOP (1u << 31)
#define CTRL_PCLKDIV(v) (((v) >> 16) & 0x1fff) /* DAC2/ADC clock: 1411200 / (div + 2) */
#define CTRL_WTSRSEL(v) (((v) >> 12) & 3)      /* DAC1: 5512, 11025, 22050, 44100 Hz */
#define CTRL_DAC1_EN (1u << 6)
#define CTRL_DAC2_EN (1u << 5)
#define CTRL_ADC_EN (1u << 4)
#define REG_STATUS 0x04
#define STAT_INTR (1u << 31)
#define STAT_DAC1 (1u << 2)
#define STAT_DAC2 (1u << 1)
#define STAT_ADC (1u << 0)
#define REG_UART 0x08 /* data, status/control, reserved */
#define UART_TXRDY 0x02
#define REG_MEM_PAGE 0x0c
#define REG_CODEC 0x10 /* write: (register << 8) | value */
#define REG_SERIAL 0x20
#define SCTL_P1_PAUSE (1u << 11)
#define SCTL_P2_PAUSE (1u << 12)
#define SCTL_P1_LOOP_SEL (1u << 13) /* 1 = stop at the end of the buffer */
#define SCTL_P2_LOOP_SEL (1u << 14)
#define SCTL_R1_LOOP_SEL (1u << 15)
#define SCTL_P1_INT_EN (1u << 8)
#define SCTL_P2_INT_EN (1u << 9)
#define SCTL_R1_INT_EN (1u << 10)
#define SCTL_P2_DAC_SEN (1u << 6) /* stop mode: repeat the last sample instead of zeros */
#define REG_DAC1_COUNT 0x24       /* low 16: frames per period - 1; high 16: current */
#define REG_WINDOW 0x30           /* 0x30-0x3f: four dwords of the page in REG_MEM_PAGE */
#define PAGE_DAC 0x0c             /* DAC1 frame, DAC1 size, DAC2 frame, DAC2 size */
#define PAGE_ADC 0x0d             /* ADC frame, ADC size, phantom frame, phantom count */
#define IO_SIZE 0x40

#define ES1370_CLOCK 1411200u
#define RATE_MIN 3500u /* Linux asks for 4000-48000 Hz; anything far outside is nonsense */
#define RATE_MAX 50000u

enum { DAC1, DAC2, ADC, NCHAN };

struct chan {
    uint32_t frame_addr; /* guest-physical */
    uint32_t frame_size; /* low 16: buffer dwords - 1; high 16: current dword */
    uint32_t count;      /* low 16: period frames - 1; high 16: frames left - 1 */
    uint32_t pos;        /* byte offset of the next frame in the buffer */
    uint64_t phase;      /* 32.32 position between guest frames while resampling */
    int16_t prev[2], cur[2];
    bool stopped; /* stop mode reached the end of the buffer */
};

/* Saved as the 'ES13' record; fixed-size fields only. */
struct es1370_regs {
    uint32_t version;
    uint32_t ctl, status, sctl, uart;
    uint32_t mempage;
    uint32_t pages[16][4]; /* pages other than PAGE_DAC/PAGE_ADC's channel registers */
    uint8_t codec[32];
    struct chan chan[NCHAN];
    uint8_t cfg[256];
    uint32_t broken;
};

struct es1370 {
    struct pci_device pci;
    struct machine *m;
    struct pci_bus *bus;
    pthread_mutex_t lock;
    uint64_t io_base; /* 0 = not decoding */
    struct es1370_regs r;
    bool irq_level;
    unsigned quiesced; /* es1370_quiesce's count: no DMA while non-zero */
    char broken_reason[200];
    uint64_t frames[NCHAN], periods[NCHAN];
};

/* AK4531 registers the playback path obeys (names after Linux's ak4531_codec.h): master L/R
 * (bit 7 mute, bits 0-4 attenuation 0 to -62 dB in 2 dB steps), the inputs DAC2 ("voice") and
 * DAC1 ("FM") feed (bit 7 mute, bits 0-4 gain +12 to -50 dB in 2 dB steps), and the output
 * mixer's switches for them. Until the guest writes them they pass sound at 0 dB, as the card
 * did before it had a mixer; Linux's driver programs them all (muted) and unmutes what the
 * user turns up. */
#define AK_LMASTER 0x00
#define AK_LVOICE 0x02
#define AK_LFM 0x04
#define AK_OUT_SW1 0x10 /* bits 6/5: FM left/right to the output */
#define AK_OUT_SW2 0x11 /* bits 3/2: voice left/right to the output */
#define AK_MUTE 0x80
#define AK_INPUT_0DB 0x06

static void codec_defaults(uint8_t *codec)
{
    memset(codec, 0, 32);
    codec[AK_LVOICE] = codec[AK_LVOICE + 1] = AK_INPUT_0DB;
    codec[AK_LFM] = codec[AK_LFM + 1] = AK_INPUT_0DB;
    codec[AK_OUT_SW1] = 0x60;
    codec[AK_OUT_SW2] = 0x0c;
}

/* Q16 gain of DAC C's side K (0 left, 1 right) through the codec: 65536 is 0 dB. */
static int32_t codec_gain(const uint8_t *codec, int c, int k)
{
    uint8_t master = codec[AK_LMASTER + k], in = codec[(c == DAC2 ? AK_LVOICE : AK_LFM) + k];
    uint8_t sw = c == DAC2 ? codec[AK_OUT_SW2] >> (3 - k) : codec[AK_OUT_SW1] >> (6 - k);
    if ((master & AK_MUTE) || (in & AK_MUTE) || !(sw & 1))
        return 0;
    int db = 12 - 2 * (in & 0x1f) - 2 * (master & 0x1f); /* +12 .. -112 dB */
    return (int32_t)lround(65536.0 * pow(10.0, db / 20.0));
}

static const uint32_t stat_bit[NCHAN] = {STAT_DAC1, STAT_DAC2, STAT_ADC};
static const uint32_t int_en_bit[NCHAN] = {SCTL_P1_INT_EN, SCTL_P2_INT_EN, SCTL_R1_INT_EN};
static const uint32_t enable_bit[NCHAN] = {CTRL_DAC1_EN, CTRL_DAC2_EN, CTRL_ADC_EN};
static const uint32_t loop_sel_bit[NCHAN] = {SCTL_P1_LOOP_SEL, SCTL_P2_LOOP_SEL, SCTL_R1_LOOP_SEL};
static const char *const chan_names[NCHAN] = {"DAC1", "DAC2", "ADC"};

/* ---- interrupts ---- */

static void update_irq_locked(struct es1370 *e)
{
    bool intx_off = pci_cfg_byte(&e->pci, 0x05) & 0x04;
    bool level = (e->r.status & (STAT_DAC1 | STAT_DAC2 | STAT_ADC)) && !intx_off;
    if (level != e->irq_level) {
        e->irq_level = level;
        pci_set_intx(e->bus, &e->pci, level);
    }
}

static void mark_broken_locked(struct es1370 *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void mark_broken_locked(struct es1370 *e, const char *fmt, ...)
{
    if (e->r.broken)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->broken_reason, sizeof(e->broken_reason), fmt, ap);
    va_end(ap);
    e->r.broken = 1;
    e->r.status &= ~(STAT_DAC1 | STAT_DAC2 | STAT_ADC);
    update_irq_locked(e);
    vmm_log_repeating("es1370: device broken: %s; the card stops (DMA and interrupts) until the VM "
                      "reboots",
                      e->broken_reason);
}

/* ---- the one place guest-programmed DMA parameters are checked ---- */

static unsigned chan_rate(const struct es1370 *e, int c)
{
    static const unsigned dac1_rates[4] = {5512, 11025, 22050, 44100};
    if (c == DAC1)
        return dac1_rates[CTRL_WTSRSEL(e->r.ctl)];
    return ES1370_CLOCK / (CTRL_PCLKDIV(e->r.ctl) + 2);
}

/* Sample format of channel C: bit 0 stereo, bit 1 16-bit. */
static unsigned chan_mode(const struct es1370 *e, int c)
{
    return (e->r.sctl >> (2 * c)) & 3;
}

static unsigned chan_frame_bytes(const struct es1370 *e, int c)
{
    unsigned mode = chan_mode(e, c);
    return ((mode & 1) + 1) * ((mode >> 1) + 1);
}

static uint32_t chan_buffer_bytes(const struct chan *ch)
{
    return ((ch->frame_size & 0xffff) + 1) * 4;
}

/* Returns the host pointer of channel C's whole buffer, or NULL after marking the card broken
 * (impossible rate, a buffer not entirely in guest RAM, a buffer smaller than one frame). */
static uint8_t *channel_check(struct es1370 *e, int c)
{
    struct chan *ch = &e->r.chan[c];
    unsigned rate = chan_rate(e, c);
    uint32_t len = chan_buffer_bytes(ch);
    if (rate < RATE_MIN || rate > RATE_MAX) {
        mark_broken_locked(e, "%s programmed to %u Hz (clock divider %u; %u-%u Hz is sane)",
                           chan_names[c], rate, CTRL_PCLKDIV(e->r.ctl), RATE_MIN, RATE_MAX);
        return NULL;
    }
    if (len < chan_frame_bytes(e, c)) {
        mark_broken_locked(e, "%s buffer of %u bytes holds no whole frame", chan_names[c], len);
        return NULL;
    }
    uint8_t *p = guest_mem_ptr(e->m->mem, ch->frame_addr, len);
    if (!p)
        mark_broken_locked(e, "%s buffer at guest address 0x%x (%u bytes) is not all RAM",
                           chan_names[c], ch->frame_addr, len);
    return p;
}

/* ---- DMA ---- */

/* One guest frame consumed (or, for the ADC, produced): advance the buffer position and the
 * sample counter, raising the channel's interrupt at the end of a period. */
static void advance_frame_locked(struct es1370 *e, int c, unsigned fbytes, uint32_t len)
{
    struct chan *ch = &e->r.chan[c];
    ch->pos += fbytes;
    if (ch->pos + fbytes > len) {
        if (e->r.sctl & loop_sel_bit[c]) { /* stop mode: stay on the last frame */
            ch->pos -= fbytes;
            ch->stopped = true;
        } else {
            ch->pos = 0;
        }
    }
    ch->frame_size = (ch->frame_size & 0xffff) | (ch->pos >> 2) << 16;
    uint32_t left = ch->count >> 16;
    if (left == 0) {
        ch->count = (ch->count & 0xffff) | (ch->count & 0xffff) << 16;
        e->periods[c]++;
        if (e->r.sctl & int_en_bit[c]) {
            e->r.status |= stat_bit[c];
            update_irq_locked(e);
        }
    } else {
        ch->count = (ch->count & 0xffff) | (left - 1) << 16;
    }
    e->frames[c]++;
}

static void fetch_frame(struct chan *ch, const uint8_t *buf, unsigned mode)
{
    const uint8_t *p = buf + ch->pos;
    int16_t l, r;
    switch (mode) {
    case 0: /* 8-bit mono, unsigned */
        l = r = (int16_t)((p[0] - 128) * 256);
        break;
    case 1: /* 8-bit stereo */
        l = (int16_t)((p[0] - 128) * 256);
        r = (int16_t)((p[1] - 128) * 256);
        break;
    case 3: /* 16-bit stereo */
        l = (int16_t)(p[0] | p[1] << 8);
        r = (int16_t)(p[2] | p[3] << 8);
        break;
    default: /* 16-bit mono */
        l = r = (int16_t)(p[0] | p[1] << 8);
    }
    ch->prev[0] = ch->cur[0];
    ch->prev[1] = ch->cur[1];
    ch->cur[0] = l;
    ch->cur[1] = r;
}

static bool chan_running(const struct es1370 *e, int c)
{
    static const uint32_t pause_bit[NCHAN] = {SCTL_P1_PAUSE, SCTL_P2_PAUSE, 0};
    return (e->r.ctl & enable_bit[c]) && !(e->r.sctl & pause_bit[c]) && !e->r.chan[c].stopped;
}

/* Plays N output frames of DAC C into MIX, resampling linearly from the channel's rate. */
static void render_dac_locked(struct es1370 *e, int c, int32_t *mix, unsigned n)
{
    struct chan *ch = &e->r.chan[c];
    uint8_t *buf = channel_check(e, c);
    if (!buf)
        return;
    unsigned fbytes = chan_frame_bytes(e, c), mode = chan_mode(e, c);
    uint32_t len = chan_buffer_bytes(ch);
    if (ch->pos + fbytes > len)
        ch->pos = 0;
    uint64_t step = ((uint64_t)chan_rate(e, c) << 32) / AUDIO_RATE;
    bool hold = c == DAC2 && (e->r.sctl & SCTL_P2_DAC_SEN);
    int32_t gain[2] = {codec_gain(e->r.codec, c, 0), codec_gain(e->r.codec, c, 1)};
    for (unsigned i = 0; i < n; i++) {
        ch->phase += step;
        while (ch->phase >> 32 && !ch->stopped) {
            ch->phase -= 1ull << 32;
            fetch_frame(ch, buf, mode);
            advance_frame_locked(e, c, fbytes, len);
        }
        if (ch->stopped && !hold)
            break;
        int64_t frac = (int64_t)((ch->phase >> 16) & 0xffff);
        for (int k = 0; k < 2; k++) {
            int64_t v = ch->prev[k] + (((ch->cur[k] - ch->prev[k]) * frac) >> 16);
            int64_t sum = mix[2 * i + k] + ((v * gain[k] + 32768) >> 16);
            /* saturated: a caller that mixes many periods into one buffer cannot overflow it */
            mix[2 * i + k] = (int32_t)(sum > INT32_MAX ? INT32_MAX : sum < INT32_MIN ? INT32_MIN : sum);
        }
    }
}

/* The ADC records silence (vmws has no capture source) at its rate, so a guest's capture
 * stream runs and gets its period interrupts. */
static void render_adc_locked(struct es1370 *e, unsigned n)
{
    struct chan *ch = &e->r.chan[ADC];
    uint8_t *buf = channel_check(e, ADC);
    if (!buf)
        return;
    unsigned fbytes = chan_frame_bytes(e, ADC);
    uint32_t len = chan_buffer_bytes(ch);
    if (ch->pos + fbytes > len)
        ch->pos = 0;
    uint8_t silence = chan_mode(e, ADC) & 2 ? 0 : 0x80;
    uint64_t step = ((uint64_t)chan_rate(e, ADC) << 32) / AUDIO_RATE;
    for (unsigned i = 0; i < n && !ch->stopped; i++) {
        ch->phase += step;
        while (ch->phase >> 32 && !ch->stopped) {
            ch->phase -= 1ull << 32;
            if (!(e->r.ctl & CTRL_ADC_STOP)) {
                memset(buf + ch->pos, silence, fbytes);
                guest_mem_mark_dirty(e->m->mem, ch->frame_addr + ch->pos, fbytes);
            }
            advance_frame_locked(e, ADC, fbytes, len);
        }
    }
}

void es1370_quiesce(struct es1370 *e)
{
    pthread_mutex_lock(&e->lock);
    e->quiesced++;
    pthread_mutex_unlock(&e->lock);
}

void es1370_resume(struct es1370 *e)
{
    pthread_mutex_lock(&e->lock);
    if (e->quiesced)
        e->quiesced--;
    pthread_mutex_unlock(&e->lock);
}

bool es1370_render(struct es1370 *e, int32_t *mix, unsigned n)
{
    bool active = false;
    pthread_mutex_lock(&e->lock);
    bool bus_master = (pci_cfg_byte(&e->pci, 0x04) & 0x04) && !e->quiesced;
    for (int c = 0; c < NCHAN && !e->r.broken && bus_master; c++) {
        if (!chan_running(e, c))
            continue;
        active = true;
        if (c == ADC)
            render_adc_locked(e, n);
        else
            render_dac_locked(e, c, mix, n);
    }
    pthread_mutex_unlock(&e->lock);
    return active;
}

/* ---- registers ---- */

static uint32_t *window_reg(struct es1370 *e, unsigned off)
{
    unsigned page = e->r.mempage & 0xf, idx = (off - REG_WINDOW) / 4;
    struct chan *ch = NULL;
    if (page == PAGE_DAC)
        ch = &e->r.chan[idx < 2 ? DAC1 : DAC2];
    else if (page == PAGE_ADC && idx < 2)
        ch = &e->r.chan[ADC];
    if (!ch)
        return &e->r.pages[page][idx];
    return idx % 2 ? &ch->frame_size : &ch->frame_addr;
}

static uint32_t reg_read(struct es1370 *e, unsigned off)
{
    switch (off) {
    case REG_CONTROL:
        return e->r.ctl;
    case REG_STATUS: {
        uint32_t s = e->r.status;
        return s & (STAT_DAC1 | STAT_DAC2 | STAT_ADC) ? s | STAT_INTR : s;
    }
    case REG_UART:
        return (e->r.uart & ~0xff00u) | UART_TXRDY << 8;
    case REG_MEM_PAGE:
        return e->r.mempage;
    case REG_SERIAL:
        return e->r.sctl;
    case REG_DAC1_COUNT:
    case REG_DAC1_COUNT + 4:
    case REG_DAC1_COUNT + 8:
        return e->r.chan[(off - REG_DAC1_COUNT) / 4].count;
    default:
        if (off >= REG_WINDOW)
            return *window_reg(e, off);
        return 0; /* codec (write-only) and reserved */
    }
}

static void control_write(struct es1370 *e, uint32_t v)
{
    uint32_t was = e->r.ctl;
    e->r.ctl = v;
    for (int c = 0; c < NCHAN; c++) {
        if ((v & enable_bit[c]) && !(was & enable_bit[c])) { /* channel starts */
            struct chan *ch = &e->r.chan[c];
            ch->stopped = false;
            ch->phase = 0;
            memset(ch->prev, 0, sizeof(ch->prev));
            memset(ch->cur, 0, sizeof(ch->cur));
        }
    }
}

/* Writes the bytes of the dword at OFF selected by MASK. */
static void reg_write(struct es1370 *e, unsigned off, uint32_t v, uint32_t mask)
{
    uint32_t merged = (reg_read(e, off) & ~mask) | (v & mask);
    switch (off) {
    case REG_CONTROL:
        control_write(e, merged);
        break;
    case REG_STATUS:
        break; /* read-only */
    case REG_UART:
        e->r.uart = merged;
        break;
    case REG_MEM_PAGE:
        e->r.mempage = merged & 0xf;
        break;
    case REG_CODEC:
        if (mask & 0xffff)
            e->r.codec[(v >> 8) & 0x1f] = (uint8_t)v;
        break;
    case REG_SERIAL:
        /* Clearing a channel's interrupt enable is how a driver acknowledges its interrupt. */
        e->r.sctl = merged;
        for (int c = 0; c < NCHAN; c++)
            if (!(merged & int_en_bit[c]))
                e->r.status &= ~stat_bit[c];
        update_irq_locked(e);
        break;
    case REG_DAC1_COUNT:
    case REG_DAC1_COUNT + 4:
    case REG_DAC1_COUNT + 8: /* programming the period also reloads the counter */
        e->r.chan[(off - REG_DAC1_COUNT) / 4].count = (merged & 0xffff) | (merged & 0xffff) << 16;
        break;
    default:
        if (off >= REG_WINDOW) {
            uint32_t *reg = window_reg(e, off);
            *reg = merged;
            struct chan *ch = &e->r.chan[DAC1];
            for (int c = 0; c < NCHAN; c++, ch++)
                if (reg == &ch->frame_size) /* the driver rewinds by writing the size */
                    ch->pos = (merged >> 16) * 4, ch->stopped = false;
        }
    }
}

static void es1370_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct es1370 *e = opaque;
    unsigned off = (unsigned)offset;
    pthread_mutex_lock(&e->lock);
    for (uint32_t done = 0; done < len;) { /* dword by dword, for accesses that straddle */
        unsigned o = off + done, reg = o & ~3u, sh = 8 * (o & 3);
        uint32_t n = 4 - (o & 3) < len - done ? 4 - (o & 3) : len - done;
        uint32_t mask = (n == 4 ? 0xffffffffu : ((1u << 8 * n) - 1)) << sh;
        if (reg >= IO_SIZE) {
            if (!is_write)
                memset(data + done, 0xff, n);
        } else if (is_write) {
            reg_write(e, reg, (uint32_t)io_data_get(data + done, n) << sh, mask);
        } else {
            io_data_put(data + done, n, reg_read(e, reg) >> sh);
        }
        done += n;
    }
    pthread_mutex_unlock(&e->lock);
}

static void bar_changed(struct pci_device *d, int bar, uint64_t old_addr, uint64_t new_addr,
                        int enabled)
{
    struct es1370 *e = d->opaque;
    (void)bar;
    pthread_mutex_lock(&e->lock);
    uint64_t base = enabled ? new_addr : 0;
    int r = 0;
    if (old_addr && e->io_base == old_addr)
        r = iobus_move(&e->m->pio, old_addr, e, base, base ? IO_SIZE : 0);
    else if (base)
        r = iobus_register(&e->m->pio, base, IO_SIZE, es1370_io, e);
    e->io_base = r == 0 ? base : 0;
    pthread_mutex_unlock(&e->lock);
    if (r < 0)
        vmm_log_repeating("es1370: cannot decode I/O ports at 0x%llx: %s", (unsigned long long)base,
                          strerror(-r));
}

struct es1370 *es1370_create(struct machine *m, struct pci_bus *pci, unsigned slot)
{
    struct es1370 *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->m = m;
    e->bus = pci;
    e->r.version = 2;
    codec_defaults(e->r.codec);
    pthread_mutex_init(&e->lock, NULL);
    struct pci_device *d = &e->pci;
    pci_device_init(d, 0x1274, 0x5000, 0x040100, 0); /* multimedia audio */
    d->cfg[0x2c] = 0x42;                             /* subsystem 4942:4c4c, as on QEMU's ES1370 */
    d->cfg[0x2d] = 0x49;
    d->cfg[0x2e] = 0x4c;
    d->cfg[0x2f] = 0x4c;
    d->cfg[0x3d] = 1;    /* INTA# */
    d->cfg[0x3e] = 0x0c; /* min_gnt */
    d->cfg[0x3f] = 0x80; /* max_lat */
    d->cfg[0x06] = 0x00;
    d->cfg[0x07] = 0x04; /* DEVSEL medium */
    d->bar_size[0] = IO_SIZE;
    d->bar_is_io[0] = 1;
    d->bar_changed = bar_changed;
    d->opaque = e;
    if (pci_register(pci, d, slot) < 0) {
        free(e);
        return NULL;
    }
    return e;
}

void es1370_destroy(struct es1370 *e)
{
    if (!e)
        return;
    pthread_mutex_destroy(&e->lock);
    free(e);
}

json_t *es1370_status_json(struct es1370 *e)
{
    pthread_mutex_lock(&e->lock);
    json_t *j = json_pack("{s:s, s:I, s:i, s:b, s:I, s:I, s:I, s:I}", "state",
                          e->r.broken                                      ? "broken"
                          : chan_running(e, DAC2) || chan_running(e, DAC1) ? "playing"
                                                                           : "idle",
                          "io_base", (json_int_t)e->io_base, "irq", (int)pci_irq_line(&e->pci),
                          "irq_level", e->irq_level, "dac1_frames", (json_int_t)e->frames[DAC1],
                          "dac2_frames", (json_int_t)e->frames[DAC2], "dac2_periods",
                          (json_int_t)e->periods[DAC2], "adc_frames", (json_int_t)e->frames[ADC]);
    if (e->r.broken)
        json_object_set_new(j, "broken", json_string(e->broken_reason));
    pthread_mutex_unlock(&e->lock);
    return j;
}

int es1370_save(struct es1370 *e, struct state_writer *w)
{
    pthread_mutex_lock(&e->lock);
    memcpy(e->r.cfg, e->pci.cfg, sizeof(e->r.cfg));
    state_put(w, STATE_TAG('E', 'S', '1', '3'), 0, &e->r, sizeof(e->r));
    pthread_mutex_unlock(&e->lock);
    return w->error;
}

int es1370_load(struct es1370 *e, const struct state_reader *rd)
{
    struct es1370_regs regs;
    int r = state_get_exact(rd, STATE_TAG('E', 'S', '1', '3'), 0, &regs, sizeof(regs));
    if (r < 0)
        return r;
    if (regs.version != 1 && regs.version != 2)
        return -EINVAL;
    if (regs.version == 1) { /* saved before the mixer was applied: it passed sound at 0 dB */
        codec_defaults(regs.codec);
        regs.version = 2;
    }
    uint64_t old = pci_bar_address(e->bus, &e->pci, 0);
    pthread_mutex_lock(&e->lock);
    /* Identity and the BAR's flag bits are ours; the guest-writable rest comes back. */
    for (int i = 0x04; i < 0x40; i++)
        if (e->pci.wmask[i] || (i >= 0x10 && i < 0x14))
            e->pci.cfg[i] = regs.cfg[i];
    e->r = regs;
    if (e->r.broken)
        snprintf(e->broken_reason, sizeof(e->broken_reason), "restored as broken");
    e->irq_level = !e->irq_level; /* force the line to its restored level */
    update_irq_locked(e);
    pthread_mutex_unlock(&e->lock);
    uint64_t now = pci_bar_address(e->bus, &e->pci, 0);
    if (now != old)
        bar_changed(&e->pci, 0, old, now, now != 0);
    return 0;
}
