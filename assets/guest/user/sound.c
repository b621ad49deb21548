/* Sound for the built-in guest: a driver for the Ensoniq ES1370 (PCI 1274:5000) and the PC
 * speaker, and the shell commands that use them. `tone` synthesises a sine in integers (a
 * quarter-wave table and a 32-bit phase accumulator; no FPU), plays it through DAC2 from a ring
 * of four 20 ms periods at 44.1 kHz, 16-bit stereo, and refills each period when the card's
 * period interrupt (IRQ 10/11 via the 8259; kernel/head.S counts it) says it has been played.
 * `beep` programs PIT channel 2 as a square wave and gates it into the speaker via port 0x61;
 * `pit check` shows what a guest sees of channels 1 and 2 and port 0x61 (for the VMM's tests). */
#include "assets/guest/user/sound.h"

/* ES1370 registers (see the VMM's core/devices/es1370.c). */
#define ES_CONTROL 0x00
#define ES_CTRL_PCLKDIV(d) ((uint32_t)(d) << 16)
#define ES_CTRL_DAC2_EN (1u << 5)
#define ES_CTRL_CDC_EN (1u << 1)
#define ES_STATUS 0x04
#define ES_STAT_DAC2 (1u << 1)
#define ES_MEM_PAGE 0x0c
#define ES_CODEC 0x10
#define ES_SERIAL 0x20
#define ES_SCTL_P2_INT_EN (1u << 9)
#define ES_SCTL_P2_MODE_S16 (3u << 2)
#define ES_SCTL_P2_END_INC2 (2u << 19)
#define ES_DAC2_COUNT 0x28
#define ES_DAC2_FRAME 0x38
#define ES_DAC2_SIZE 0x3c
#define ES_PAGE_DAC 0x0c
#define ES_CLOCK 1411200u

#define RATE 44100u
#define PERIOD_FRAMES 882u /* 20 ms */
#define PERIODS 4u
#define AMPLITUDE 16384 /* half of full scale */

#define PIT_HZ 1193182u
#define PIT_CH1 0x41
#define PIT_CH2 0x42
#define PIT_CMD 0x43
#define PORT61 0x61

struct card {
    bool probed, found;
    unsigned slot, irq;
    uint16_t io;
};
static struct card card;
static int16_t dma_ring[PERIODS * PERIOD_FRAMES * 2] __attribute__((aligned(4096)));

static const int16_t quarter_sine[257] = {
    0,     201,   402,   603,   804,   1005,  1206,  1407,  1608,  1809,  2009,  2210,  2410,
    2611,  2811,  3012,  3212,  3412,  3612,  3811,  4011,  4210,  4410,  4609,  4808,  5007,
    5205,  5404,  5602,  5800,  5998,  6195,  6393,  6590,  6786,  6983,  7179,  7375,  7571,
    7767,  7962,  8157,  8351,  8545,  8739,  8933,  9126,  9319,  9512,  9704,  9896,  10087,
    10278, 10469, 10659, 10849, 11039, 11228, 11417, 11605, 11793, 11980, 12167, 12353, 12539,
    12725, 12910, 13094, 13279, 13462, 13645, 13828, 14010, 14191, 14372, 14553, 14732, 14912,
    15090, 15269, 15446, 15623, 15800, 15976, 16151, 16325, 16499, 16673, 16846, 17018, 17189,
    17360, 17530, 17700, 17869, 18037, 18204, 18371, 18537, 18703, 18868, 19032, 19195, 19357,
    19519, 19680, 19841, 20000, 20159, 20317, 20475, 20631, 20787, 20942, 21096, 21250, 21403,
    21554, 21705, 21856, 22005, 22154, 22301, 22448, 22594, 22739, 22884, 23027, 23170, 23311,
    23452, 23592, 23731, 23870, 24007, 24143, 24279, 24413, 24547, 24680, 24811, 24942, 25072,
    25201, 25329, 25456, 25582, 25708, 25832, 25955, 26077, 26198, 26319, 26438, 26556, 26674,
    26790, 26905, 27019, 27133, 27245, 27356, 27466, 27575, 27683, 27790, 27896, 28001, 28105,
    28208, 28310, 28411, 28510, 28609, 28706, 28803, 28898, 28992, 29085, 29177, 29268, 29358,
    29447, 29534, 29621, 29706, 29791, 29874, 29956, 30037, 30117, 30195, 30273, 30349, 30424,
    30498, 30571, 30643, 30714, 30783, 30852, 30919, 30985, 31050, 31113, 31176, 31237, 31297,
    31356, 31414, 31470, 31526, 31580, 31633, 31685, 31736, 31785, 31833, 31880, 31926, 31971,
    32014, 32057, 32098, 32137, 32176, 32213, 32250, 32285, 32318, 32351, 32382, 32412, 32441,
    32469, 32495, 32521, 32545, 32567, 32589, 32609, 32628, 32646, 32663, 32678, 32692, 32705,
    32717, 32728, 32737, 32745, 32752, 32757, 32761, 32765, 32766, 32767,
};

static void outl(uint16_t port, uint32_t v)
{
    syscall3(SYS_OUT32, port, v, 0);
}

static bool parse_arg(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    return parse_u64(s, out) && *out >= lo && *out <= hi;
}

/* Finds the card, turns on its I/O decoding and bus mastering, and puts it in a quiet state. */
static bool card_probe(void)
{
    if (card.probed)
        return card.found;
    card.probed = true;
    if (!pci_find(0x1274, 0x5000, &card.slot))
        return false;
    uint32_t bar = pci_read32(card.slot, 0x10);
    if (!(bar & 1))
        return false;
    card.io = (uint16_t)(bar & 0xfffc);
    card.irq = pci_read32(card.slot, 0x3c) & 0xff;
    /* Our IRQ handler (kernel/head.S) assumes an edge-triggered 8259 input; firmware (SeaBIOS
     * under QEMU) sets PCI lines to level in the ELCR, which would re-interrupt until CPL 3
     * acknowledges the card. */
    if (card.irq >= 3 && card.irq < 16) {
        uint16_t elcr = (uint16_t)(0x4d0 + (card.irq >> 3));
        outb(elcr, (uint8_t)(inb(elcr) & ~(1u << (card.irq & 7))));
    }
    uint32_t cmd = pci_read32(card.slot, 0x04);
    pci_write32(card.slot, 0x04, (cmd & 0xffff) | 0x5); /* I/O space, bus master */
    outl(card.io + ES_CONTROL, ES_CTRL_CDC_EN);
    outl(card.io + ES_SERIAL, 0);
    outl(card.io + ES_CODEC, 0x0000); /* AK4531 master volume L: 0 dB */
    outl(card.io + ES_CODEC, 0x0100); /* master volume R */
    card.found = true;
    return true;
}

/* sin(2*pi*phase/2^32) * AMPLITUDE from the quarter-wave table. */
static int16_t sine(uint32_t phase)
{
    unsigned idx = (phase >> 22) & 1023, q = idx >> 8, i = idx & 255;
    int32_t v = (q & 1) ? quarter_sine[256 - i] : quarter_sine[i];
    v = v * AMPLITUDE / 32767;
    return (int16_t)(q & 2 ? -v : v);
}

struct tone {
    uint32_t phase, step;
    uint64_t frames_left;
};

static void fill_period(struct tone *t, unsigned slot)
{
    int16_t *p = &dma_ring[slot * PERIOD_FRAMES * 2];
    for (unsigned i = 0; i < PERIOD_FRAMES; i++) {
        int16_t s = 0;
        if (t->frames_left) {
            s = sine(t->phase);
            t->phase += t->step;
            t->frames_left--;
        }
        p[2 * i] = p[2 * i + 1] = s;
    }
}

void cmd_tone(int argc, char **argv)
{
    uint64_t hz, ms;
    if (argc != 3 || !parse_arg(argv[1], 20, 20000, &hz) || !parse_arg(argv[2], 1, 600000, &ms)) {
        console_puts("usage: tone FREQ MS (20-20000 Hz, 1-600000 ms)\n");
        return;
    }
    if (!card_probe()) {
        console_puts("tone: no ES1370 sound card found\n");
        return;
    }
    struct tone t = {.step = (uint32_t)((hz << 32) / RATE), .frames_left = ms * RATE / 1000};
    uint64_t periods = (t.frames_left + PERIOD_FRAMES - 1) / PERIOD_FRAMES;
    for (unsigned k = 0; k < PERIODS; k++)
        fill_period(&t, k);
    uint16_t io = card.io;
    uint32_t sctl = ES_SCTL_P2_INT_EN | ES_SCTL_P2_MODE_S16 | ES_SCTL_P2_END_INC2;
    uint32_t ctl = ES_CTRL_CDC_EN | ES_CTRL_PCLKDIV(ES_CLOCK / RATE - 2);
    outl(io + ES_CONTROL, ctl);
    outl(io + ES_MEM_PAGE, ES_PAGE_DAC);
    outl(io + ES_DAC2_FRAME, (uint32_t)(uintptr_t)dma_ring);
    outl(io + ES_DAC2_SIZE, sizeof(dma_ring) / 4 - 1);
    outl(io + ES_DAC2_COUNT, PERIOD_FRAMES - 1);
    outl(io + ES_SERIAL, sctl);
    printf("tone: playing %lu Hz for %lu ms\n", hz, ms);
    console_flush();
    outl(io + ES_CONTROL, ctl | ES_CTRL_DAC2_EN);

    /* One interrupt per period played. Until the first arrives, poll the status register
     * (a card whose interrupt does not reach us still finishes, just less efficiently). */
    uint64_t deadline = rdtsc() + (ms + 1000) * 1000 * timer_tsc_per_us();
    uint64_t done = 0;
    bool irq_works = false;
    uint32_t seen = irq_sound_count;
    while (done < periods) {
        if (rdtsc() > deadline)
            break;
        if (irq_sound_count == seen) {
            if (irq_works)
                sys_wait_sound(seen);
            else
                delay_us(1000);
        }
        uint32_t now = irq_sound_count;
        irq_works |= now != seen;
        seen = now;
        if (!(inl(io + ES_STATUS) & ES_STAT_DAC2))
            continue;
        outl(io + ES_SERIAL, sctl & ~ES_SCTL_P2_INT_EN); /* acknowledge */
        outl(io + ES_SERIAL, sctl);
        fill_period(&t, (unsigned)(done % PERIODS)); /* the period just played: refill */
        done++;
    }
    outl(io + ES_CONTROL, ctl);
    outl(io + ES_SERIAL, 0);
    if (done < periods)
        printf("tone: timed out after %lu of %lu periods (card status 0x%x)\n", done, periods,
               inl(io + ES_STATUS));
    else
        printf("tone: done (%lu periods, %s)\n", periods, irq_works ? "irq" : "polled");
}

void cmd_beep(int argc, char **argv)
{
    uint64_t hz, ms;
    if (argc != 3 || !parse_arg(argv[1], 20, 20000, &hz) || !parse_arg(argv[2], 1, 600000, &ms)) {
        console_puts("usage: beep FREQ MS (20-20000 Hz, 1-600000 ms)\n");
        return;
    }
    unsigned count = (unsigned)((PIT_HZ + hz / 2) / hz);
    outb(PIT_CMD, 0xb6); /* channel 2, lo/hi byte, mode 3 (square wave), binary */
    outb(PIT_CH2, (uint8_t)count);
    outb(PIT_CH2, (uint8_t)(count >> 8));
    printf("beep: %lu Hz for %lu ms\n", hz, ms);
    console_flush();
    uint8_t gate = inb(PORT61);
    outb(PORT61, (gate & 0x0c) | 0x03); /* gate channel 2, speaker on */
    delay_us((uint32_t)(ms * 1000));
    outb(PORT61, gate & 0x0c);
    console_puts("beep: done\n");
}

static uint16_t pit_latched_count(unsigned channel)
{
    outb(PIT_CMD, (uint8_t)(channel << 6)); /* counter latch */
    uint8_t lo = inb((uint16_t)(0x40 + channel));
    return (uint16_t)(lo | inb((uint16_t)(0x40 + channel)) << 8);
}

/* pit check: (1) channel 1 (mode 2, 65536) keeps counting across a rising edge of channel 2's
 * gate in mode 3 - a VMM that rewrites the whole PIT on that edge restarts every channel, and
 * channel 1 then counts far fewer ticks than the time says; (2) port 0x61 bit 5 follows channel
 * 2's OUT, a 100 Hz square wave (a change every 5 ms), and what a read of port 0x61 costs. The
 * speaker stays off throughout (bit 1 clear): silent. */
void cmd_pit(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "check")) {
        console_puts("usage: pit check\n");
        return;
    }
    uint64_t tsc_per_us = timer_tsc_per_us();
    uint8_t keep = inb(PORT61) & 0x0c;
    outb(PORT61, keep); /* channel 2's gate low, speaker off */
    unsigned count = (PIT_HZ + 50) / 100;
    outb(PIT_CMD, 0xb6); /* channel 2, lo/hi byte, mode 3, binary */
    outb(PIT_CH2, (uint8_t)count);
    outb(PIT_CH2, (uint8_t)(count >> 8));
    outb(PIT_CMD, 0x74); /* channel 1, lo/hi byte, mode 2, binary: count 65536 (54.9 ms) */
    outb(PIT_CH1, 0);
    outb(PIT_CH1, 0);
    uint64_t t0 = rdtsc();
    uint16_t c0 = pit_latched_count(1);
    delay_us(10000);
    outb(PORT61, keep | 0x01); /* the rising edge */
    uint16_t c1 = pit_latched_count(1);
    uint64_t us = (rdtsc() - t0) / tsc_per_us;
    printf("pit: channel 1 counted %u ticks in %lu us across a gate edge on channel 2\n",
           (unsigned)(uint16_t)(c0 - c1), us);

    unsigned reads = 0, changes = 0;
    uint8_t last = inb(PORT61) & 0x20;
    t0 = rdtsc();
    while (rdtsc() - t0 < 100000 * tsc_per_us) {
        uint8_t out2 = inb(PORT61) & 0x20;
        changes += out2 != last;
        last = out2;
        reads++;
    }
    us = (rdtsc() - t0) / tsc_per_us;
    outb(PORT61, keep);
    printf("pit: port 0x61 bit 5 changed %u times in %lu us (%u reads, %lu ns each)\n", changes, us,
           reads, reads ? us * 1000 / reads : 0);
}

void cmd_sound(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "info";
    if (!card_probe()) {
        console_puts("sound: no ES1370 sound card found\n");
        return;
    }
    if (!strcmp(sub, "info") && argc <= 2) {
        printf("sound: ES1370 at 00:%02x.0, I/O 0x%x, IRQ %u, status 0x%x\n", card.slot, card.io,
               card.irq, inl(card.io + ES_STATUS));
    } else if (!strcmp(sub, "garbage") && argc == 2) {
        /* What a buggy driver might do: a clock divider of 0 (705.6 kHz) and a one-dword
         * buffer in the PCI hole, then start. The VMM must refuse, not crash. */
        outl(card.io + ES_MEM_PAGE, ES_PAGE_DAC);
        outl(card.io + ES_DAC2_FRAME, 0xfff00000u);
        outl(card.io + ES_DAC2_SIZE, 0);
        outl(card.io + ES_DAC2_COUNT, 0);
        outl(card.io + ES_SERIAL, ES_SCTL_P2_INT_EN | ES_SCTL_P2_MODE_S16);
        outl(card.io + ES_CONTROL, ES_CTRL_PCLKDIV(0) | ES_CTRL_DAC2_EN);
        delay_us(50000);
        outl(card.io + ES_CONTROL, ES_CTRL_CDC_EN);
        outl(card.io + ES_SERIAL, 0);
        console_puts("sound: programmed nonsense (705600 Hz, buffer at 0xfff00000)\n");
    } else if (!strcmp(sub, "irqline") && argc == 3) {
        /* The interrupt line register is the OS's note of where it routed the pin: writing
         * it must not move the card's interrupt (the board wires it). */
        unsigned n = 0;
        for (const char *p = argv[2]; *p >= '0' && *p <= '9' && n < 256; p++)
            n = n * 10 + (unsigned)(*p - '0');
        uint32_t v = pci_read32(card.slot, 0x3c);
        pci_write32(card.slot, 0x3c, (v & ~0xffu) | (n & 0xff));
        printf("sound: interrupt line register set to %u\n", n & 0xff);
    } else {
        console_puts("usage: sound [info|garbage|irqline N]\n");
    }
}
