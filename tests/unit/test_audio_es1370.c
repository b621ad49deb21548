/* Unit tests of the ES1370 model without KVM: a machine with guest RAM in a buffer and the port
 * bus, driven exactly the way Linux's snd-ens1370 drives the card (PCI probe, DAC2 prepare,
 * trigger, pointer, interrupt acknowledge), with es1370_render() standing in for the mixer
 * thread. Checks the PCM that comes out, the sample counter and period interrupts, the position
 * register, rates and formats, the ADC, nonsense marking the card broken, save/load, and no DMA
 * while the devices are quiesced for a snapshot. */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/devices/devices.h"
#include "core/devices/sound.h"
#include "core/util/state.h"
#include "core/vm/iobus.h"
#include "core/vm/machine.h"

#define RAM_SIZE (16u << 20)
#define BUF_GPA 0x100000u
#define IO 0xc000u

/* Register offsets and bits (as in Linux's ens1370.c). */
#define CONTROL 0x00
#define STATUS 0x04
#define MEM_PAGE 0x0c
#define SERIAL 0x20
#define DAC2_COUNT 0x28
#define ADC_COUNT 0x2c
#define DAC2_FRAME 0x38
#define DAC2_SIZE 0x3c
#define ADC_FRAME 0x30
#define ADC_SIZE 0x34
#define CODEC 0x10 /* AK4531: (register << 8) | value */
#define CDC_EN (1u << 1)
#define DAC2_EN (1u << 5)
#define ADC_EN (1u << 4)
#define PCLKDIV(d) ((uint32_t)(d) << 16)
#define P2_INT_EN (1u << 9)
#define R1_INT_EN (1u << 10)
#define P2_MODE(m) ((uint32_t)(m) << 2)
#define R1_MODE(m) ((uint32_t)(m) << 4)
#define P2_LOOP_SEL (1u << 14)
#define P2_END_INC(x) ((uint32_t)(x) << 19)

static uint8_t *ram;
static struct guest_mem gm;
static struct machine m;
static struct pci_bus *bus;
static struct es1370 *es;
static int32_t mix[2 * 4096];

static void out32(uint64_t port, uint32_t v)
{
    uint8_t d[4];
    io_data_put(d, 4, v);
    iobus_access(&m.pio, port, d, 4, true);
}

static uint32_t in32(uint64_t port)
{
    uint8_t d[4];
    iobus_access(&m.pio, port, d, 4, false);
    return (uint32_t)io_data_get(d, 4);
}

static uint32_t cfg_read(unsigned off)
{
    out32(0xcf8, 0x80000000u | 5u << 11 | off);
    return in32(0xcfc);
}

static void cfg_write(unsigned off, uint32_t v)
{
    out32(0xcf8, 0x80000000u | 5u << 11 | off);
    out32(0xcfc, v);
}

static void setup(void)
{
    ram = calloc(1, RAM_SIZE);
    ck_assert_int_eq(guest_mem_init_buffer(&gm, ram, RAM_SIZE), 0);
    memset(&m, 0, sizeof(m));
    m.mem = &gm;
    m.vm_fd = -1; /* interrupts go nowhere; the status register tells */
    pthread_mutex_init(&m.lock, NULL);
    iobus_init(&m.pio, "port");
    iobus_init(&m.mmio, "mmio");
    bus = pci_create(&m);
    ck_assert_ptr_nonnull(bus);
    es = es1370_create(&m, bus, ES1370_PCI_SLOT);
    ck_assert_ptr_nonnull(es);
    cfg_write(0x04, 0x5); /* pci_enable_device + pci_set_master */
}

static void teardown(void)
{
    es1370_destroy(es);
    pci_destroy(bus);
    iobus_destroy(&m.pio);
    iobus_destroy(&m.mmio);
    guest_mem_close(&gm);
    free(ram);
}

static unsigned render(unsigned n)
{
    memset(mix, 0, sizeof(int32_t) * 2 * n);
    return es1370_render(es, mix, n);
}

/* snd_ensoniq_playback2_prepare + trigger: 16-bit stereo at DIV, PERIOD frames per interrupt. */
static void start_dac2(unsigned div, unsigned bytes, unsigned period, unsigned mode)
{
    out32(IO + CONTROL, CDC_EN | PCLKDIV(div));
    out32(IO + MEM_PAGE, 0x0c);
    out32(IO + DAC2_FRAME, BUF_GPA);
    out32(IO + DAC2_SIZE, (bytes >> 2) - 1);
    out32(IO + SERIAL, P2_INT_EN | P2_MODE(mode) | P2_END_INC(mode & 2 ? 2 : 1));
    out32(IO + DAC2_COUNT, period - 1);
    out32(IO + CONTROL, CDC_EN | PCLKDIV(div) | DAC2_EN);
}

START_TEST(pci_identity_and_resources)
{
    ck_assert_uint_eq(cfg_read(0x00), 0x50001274);
    ck_assert_uint_eq(cfg_read(0x08) >> 8, 0x040100); /* multimedia audio */
    ck_assert_uint_eq(cfg_read(0x10), IO | 1);        /* I/O BAR, 64 bytes */
    cfg_write(0x10, 0xffffffff);
    ck_assert_uint_eq(cfg_read(0x10), 0xffffffc1);
    cfg_write(0x10, IO | 1);
    ck_assert_uint_eq(cfg_read(0x3c) & 0xffff, 0x010b); /* INTA#, IRQ 11 (odd slot) */
    ck_assert_uint_eq(in32(IO + STATUS), 0);
}
END_TEST

START_TEST(dac2_plays_counts_and_interrupts_like_linux_expects)
{
    int16_t *buf = (int16_t *)(ram + BUF_GPA);
    for (int i = 0; i < 400; i++) {
        buf[2 * i] = (int16_t)(i * 10);
        buf[2 * i + 1] = (int16_t)(-i * 10);
    }
    start_dac2(30, 400 * 4, 100, 3); /* 44100 Hz: one guest frame per output frame */
    ck_assert(render(99));
    for (int i = 1; i < 99; i++) {
        ck_assert_int_eq(mix[2 * i], (i - 1) * 10);
        ck_assert_int_eq(mix[2 * i + 1], -(i - 1) * 10);
    }
    ck_assert_uint_eq(in32(IO + STATUS), 0); /* 99 frames: no period yet */
    render(1);
    ck_assert_uint_eq(in32(IO + STATUS), 0x80000002u); /* INTR | DAC2 */
    /* snd_ensoniq_playback2_pointer: page 0x0c, DAC2_SIZE bits 16+ are the dword position. */
    out32(IO + MEM_PAGE, 0x0c);
    ck_assert_uint_eq(in32(IO + DAC2_SIZE) >> 16, 100);
    ck_assert_uint_eq(in32(IO + DAC2_SIZE) & 0xffff, 399);
    ck_assert_uint_eq(in32(IO + DAC2_COUNT), (99u << 16) | 99u);
    /* The interrupt handler acknowledges by clearing and setting the enable bit. */
    uint32_t sctl = in32(IO + SERIAL);
    out32(IO + SERIAL, sctl & ~P2_INT_EN);
    out32(IO + SERIAL, sctl);
    ck_assert_uint_eq(in32(IO + STATUS), 0);
    /* Loop mode wraps at the end of the buffer, a period boundary every 100 frames. */
    render(300);
    ck_assert_uint_eq(in32(IO + DAC2_SIZE) >> 16, 0);
    ck_assert_uint_eq(in32(IO + STATUS), 0x80000002u);
    json_t *j = es1370_status_json(es);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "dac2_periods")), 4);
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "playing");
    json_decref(j);
    /* Stop: DAC2_EN off, nothing more is consumed. */
    out32(IO + CONTROL, CDC_EN | PCLKDIV(30));
    ck_assert(!render(100));
    ck_assert_uint_eq(in32(IO + DAC2_SIZE) >> 16, 0);
}
END_TEST

/* The AK4531 mixer as alsamixer sets it: sound passes at 0 dB until the guest programs the
 * codec, then master attenuation, the PCM (DAC2) input's gain and mute, and its output switch
 * shape what DAC2 plays, per side. */
START_TEST(codec_volume_mute_and_switches_shape_dac2)
{
    int16_t *buf = (int16_t *)(ram + BUF_GPA);
    for (int i = 0; i < 400; i++)
        buf[2 * i] = buf[2 * i + 1] = 10000;
    start_dac2(30, 400 * 4, 100, 3);
    render(10);
    ck_assert_int_eq(mix[10], 10000);
    ck_assert_int_eq(mix[11], 10000);
    out32(IO + CODEC, 0x00u << 8 | 3); /* left master -6 dB */
    out32(IO + CODEC, 0x03u << 8 | 9); /* right PCM 12 - 18 = -6 dB */
    render(10);
    ck_assert_int_eq(mix[10], 5012); /* 10000 * 10^(-6/20) */
    ck_assert_int_eq(mix[11], 5012);
    out32(IO + CODEC, 0x02u << 8 | 0); /* left PCM +12 dB on top of the master's -6 */
    render(10);
    ck_assert_int_eq(mix[10], 19953);
    out32(IO + CODEC, 0x03u << 8 | 0x86); /* right PCM muted */
    render(10);
    ck_assert_int_eq(mix[10], 19953);
    ck_assert_int_eq(mix[11], 0);
    out32(IO + CODEC, 0x11u << 8 | 0x04); /* output switch: PCM left off */
    render(10);
    ck_assert_int_eq(mix[10], 0);
    /* Linux's snd_ak4531_mixer starts from everything muted: silence until unmuted. */
    for (unsigned r = 0; r < 4; r++)
        out32(IO + CODEC, r << 8 | 0x9f);
    out32(IO + CODEC, 0x11u << 8 | 0x0c);
    ck_assert(render(10));
    ck_assert_int_eq(mix[10], 0);
    ck_assert_int_eq(mix[11], 0);
}
END_TEST

START_TEST(rates_and_formats)
{
    /* 22050 Hz (divider 62), 8-bit mono: each guest frame lasts two output frames. */
    uint8_t *buf = ram + BUF_GPA;
    for (int i = 0; i < 256; i++)
        buf[i] = (uint8_t)(0x80 + (i & 0x3f));
    start_dac2(62, 256, 50, 0);
    render(100);
    out32(IO + MEM_PAGE, 0x0c);
    ck_assert_uint_eq(in32(IO + DAC2_SIZE) >> 16, 50 / 4); /* 50 bytes consumed */
    ck_assert_uint_eq(in32(IO + STATUS), 0x80000002u);
    /* Linear interpolation between 8-bit samples scaled to 16 bits, both channels. */
    ck_assert_int_eq(mix[2 * 10], mix[2 * 10 + 1]);
    ck_assert_int_ge(mix[2 * 41], 19 << 8);
    ck_assert_int_le(mix[2 * 41], 20 << 8);
}
END_TEST

START_TEST(stop_mode_and_adc_capture)
{
    memset(ram + BUF_GPA, 0x11, 4096);
    start_dac2(30, 64, 1000, 3);
    out32(IO + SERIAL, in32(IO + SERIAL) | P2_LOOP_SEL); /* stop at the end */
    render(100);
    out32(IO + MEM_PAGE, 0x0c);
    ck_assert_uint_eq(in32(IO + DAC2_SIZE) >> 16, 15); /* stopped on the last frame */
    ck_assert_int_eq(mix[2 * 50], 0);                  /* then zeros */

    /* The ADC "records" silence into the guest's buffer and counts periods. */
    out32(IO + MEM_PAGE, 0x0d);
    out32(IO + ADC_FRAME, BUF_GPA + 8192);
    out32(IO + ADC_SIZE, 1024 / 4 - 1);
    memset(ram + BUF_GPA + 8192, 0x55, 1024);
    out32(IO + SERIAL, R1_INT_EN | R1_MODE(3));
    out32(IO + ADC_COUNT, 63);
    out32(IO + CONTROL, CDC_EN | PCLKDIV(30) | ADC_EN);
    render(64);
    ck_assert_uint_eq(in32(IO + STATUS), 0x80000001u);
    for (int i = 0; i < 256; i++)
        ck_assert_uint_eq(ram[BUF_GPA + 8192 + i], 0);
    ck_assert_uint_eq(ram[BUF_GPA + 8192 + 256], 0x55);
}
END_TEST

START_TEST(nonsense_marks_the_card_broken)
{
    /* A buffer outside RAM: broken, no DMA, no interrupt. */
    out32(IO + CONTROL, CDC_EN | PCLKDIV(30));
    out32(IO + MEM_PAGE, 0x0c);
    out32(IO + DAC2_FRAME, 0xfff00000u);
    out32(IO + DAC2_SIZE, 0xff);
    out32(IO + SERIAL, P2_INT_EN | P2_MODE(3));
    out32(IO + DAC2_COUNT, 0);
    out32(IO + CONTROL, CDC_EN | PCLKDIV(30) | DAC2_EN);
    render(100);
    ck_assert_uint_eq(in32(IO + STATUS), 0);
    json_t *j = es1370_status_json(es);
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "broken");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(j, "broken")), "not all RAM"));
    json_decref(j);
    /* It stays broken: good values later do not revive it before a reboot. */
    out32(IO + DAC2_FRAME, BUF_GPA);
    ck_assert(!render(100));
    ck_assert_uint_eq(in32(IO + STATUS), 0);
    /* The registers still answer. */
    ck_assert_uint_eq(in32(IO + DAC2_FRAME), BUF_GPA);
}
END_TEST

START_TEST(impossible_rate_marks_the_card_broken)
{
    start_dac2(0, 64, 4, 3); /* divider 0: 705600 Hz */
    render(10);
    json_t *j = es1370_status_json(es);
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(j, "broken")), "705600 Hz"));
    json_decref(j);
    ck_assert_uint_eq(in32(IO + STATUS), 0);
}
END_TEST

/* W's records as a state image parsed into R (W is freed). */
static void saved(struct state_writer *w, struct state_reader *r)
{
    uint8_t *img;
    size_t len;
    char err[256];
    ck_assert_int_eq(state_writer_finish(w, &img, &len), 0);
    state_writer_free(w);
    ck_assert_int_eq(state_reader_parse(r, img, len, err, sizeof(err)), 0);
}

START_TEST(save_and_load_round_trip)
{
    start_dac2(30, 400 * 4, 100, 3);
    render(150);
    struct state_writer w;
    state_writer_init(&w);
    ck_assert_int_eq(es1370_save(es, &w), 0);
    struct state_reader r;
    saved(&w, &r);
    out32(IO + CONTROL, 0); /* change things, then load */
    out32(IO + MEM_PAGE, 0x0c);
    out32(IO + DAC2_SIZE, 7);
    ck_assert_int_eq(es1370_load(es, &r), 0);
    state_reader_free(&r);
    ck_assert_uint_eq(in32(IO + CONTROL), CDC_EN | PCLKDIV(30) | DAC2_EN);
    out32(IO + MEM_PAGE, 0x0c);
    ck_assert_uint_eq(in32(IO + DAC2_SIZE), (150u << 16) | 399u);
    ck_assert_uint_eq(in32(IO + STATUS), 0x80000002u);
    render(50); /* carries on from where it was saved */
    ck_assert_uint_eq(in32(IO + DAC2_SIZE) >> 16, 200);
}
END_TEST

/* A state file is not trusted with what the guest cannot write: a loaded config space keeps the
 * card's identity and its BAR's I/O flag, and restores what the guest can write. */
START_TEST(a_loaded_pci_config_keeps_read_only_bits)
{
    cfg_write(0x3c, 0x0a); /* the interrupt line: the guest's to set */
    struct state_writer w;
    state_writer_init(&w);
    ck_assert_int_eq(pci_save(bus, &w), 0);
    struct state_reader r;
    saved(&w, &r);
    const struct state_record *rec = state_get(&r, STATE_TAG('P', 'C', 'I', 'C'), ES1370_PCI_SLOT);
    ck_assert_ptr_nonnull(rec);
    uint8_t *cfg = (uint8_t *)rec->data;
    cfg[0x00] = 0x86, cfg[0x01] = 0x80; /* another vendor */
    cfg[0x10] &= 0xfe;                   /* the I/O BAR claimed to be memory */
    cfg[0x3d] = 4;                       /* interrupt pin D */
    cfg_write(0x3c, 0x05);
    ck_assert_int_eq(pci_load(bus, &r), 0);
    state_reader_free(&r);
    ck_assert_uint_eq(cfg_read(0x00), 0x50001274);
    ck_assert_uint_eq(cfg_read(0x10), IO | 1);
    ck_assert_uint_eq(cfg_read(0x3c) & 0xffff, 0x010a); /* pin A stays; the line is restored */
}
END_TEST

/* The mixer thread renders on its own clock; a snapshot's take or revert quiesces the devices
 * (vmm_quiesce_devices_locked) and then reads or rewrites guest RAM. From the moment
 * es1370_quiesce() returns - also with a render in flight on the mixer's thread - the card's DMA
 * must not write guest RAM, until es1370_resume() (issue 14, finding 11: the mixer writing guest
 * RAM while a snapshot captures or rewrites pages). */
static int mixer_stop; /* atomic */

static void *mixer(void *arg)
{
    (void)arg;
    static int32_t own[2 * 256];
    while (!__atomic_load_n(&mixer_stop, __ATOMIC_RELAXED))
        es1370_render(es, own, 256);
    return NULL;
}

static bool buffer_is(uint8_t v, uint32_t gpa, unsigned len)
{
    for (unsigned i = 0; i < len; i++)
        if (__atomic_load_n(&ram[gpa + i], __ATOMIC_RELAXED) != v)
            return false;
    return true;
}

START_TEST(no_dma_into_guest_ram_while_quiesced)
{
    /* A capture stream in loop mode over 1 KiB at 0x102000: runs until stopped. */
    const uint32_t adc = BUF_GPA + 8192;
    out32(IO + CONTROL, CDC_EN | PCLKDIV(30));
    out32(IO + MEM_PAGE, 0x0d);
    out32(IO + ADC_FRAME, adc);
    out32(IO + ADC_SIZE, 1024 / 4 - 1);
    out32(IO + SERIAL, R1_MODE(3));
    out32(IO + ADC_COUNT, 63);
    out32(IO + CONTROL, CDC_EN | PCLKDIV(30) | ADC_EN);
    __atomic_store_n(&mixer_stop, 0, __ATOMIC_RELAXED);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, mixer, NULL), 0);
    struct timespec ms10 = {0, 10000000};
    for (int round = 0; round < 20; round++) {
        memset(ram + adc, 0x55, 1024);
        nanosleep(&ms10, NULL);
        ck_assert_msg(!buffer_is(0x55, adc, 1024), "the capture is not running (round %d)", round);
        es1370_quiesce(es);
        /* What a revert does now: the target's pages written into guest RAM. */
        memset(ram + adc, 0xa5, 1024);
        nanosleep(&ms10, NULL);
        ck_assert_msg(buffer_is(0xa5, adc, 1024),
                      "the card wrote guest RAM while quiesced (round %d)", round);
        es1370_resume(es);
    }
    __atomic_store_n(&mixer_stop, 1, __ATOMIC_RELAXED);
    pthread_join(t, NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("es1370");
    TCase *tc = tcase_create("registers");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, pci_identity_and_resources);
    tcase_add_test(tc, dac2_plays_counts_and_interrupts_like_linux_expects);
    tcase_add_test(tc, rates_and_formats);
    tcase_add_test(tc, codec_volume_mute_and_switches_shape_dac2);
    tcase_add_test(tc, stop_mode_and_adc_capture);
    tcase_add_test(tc, nonsense_marks_the_card_broken);
    tcase_add_test(tc, impossible_rate_marks_the_card_broken);
    tcase_add_test(tc, save_and_load_round_trip);
    tcase_add_test(tc, a_loaded_pci_config_keeps_read_only_bits);
    tcase_add_test(tc, no_dma_into_guest_ram_while_quiesced);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
