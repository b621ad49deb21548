/* MC146818 CMOS real-time clock and NVRAM on ports 0x70/0x71. Time is the host's UTC clock plus
 * an offset, so a guest that sets its clock only moves the offset; register B's BCD/binary and
 * 12/24-hour modes are honoured both ways. NVRAM also carries the memory sizes a BIOS reports. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/devices/devices.h"

#define REG_SEC 0x00
#define REG_MIN 0x02
#define REG_HOUR 0x04
#define REG_WDAY 0x06
#define REG_MDAY 0x07
#define REG_MON 0x08
#define REG_YEAR 0x09
#define REG_A 0x0a
#define REG_B 0x0b
#define REG_C 0x0c
#define REG_D 0x0d
#define REG_CENTURY 0x32
#define B_SET 0x80
#define B_24H 0x02
#define B_BINARY 0x04

struct rtc {
    struct machine *m;
    pthread_mutex_t lock;
    uint8_t index;
    uint8_t nvram[128];
    int64_t offset; /* guest time - host time, seconds */
};

static uint8_t to_bcd(const struct rtc *r, int v)
{
    if (r->nvram[REG_B] & B_BINARY)
        return (uint8_t)v;
    return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static int from_bcd(const struct rtc *r, uint8_t v)
{
    if (r->nvram[REG_B] & B_BINARY)
        return v;
    return (v >> 4) * 10 + (v & 0x0f);
}

static void guest_tm(const struct rtc *r, struct tm *tm)
{
    time_t t = time(NULL) + r->offset;
    gmtime_r(&t, tm);
}

static uint8_t encode_hour(const struct rtc *r, int hour)
{
    if (r->nvram[REG_B] & B_24H)
        return to_bcd(r, hour);
    int h12 = hour % 12 == 0 ? 12 : hour % 12;
    return (uint8_t)(to_bcd(r, h12) | (hour >= 12 ? 0x80 : 0));
}

static int decode_hour(const struct rtc *r, uint8_t v)
{
    if (r->nvram[REG_B] & B_24H)
        return from_bcd(r, v);
    int h = from_bcd(r, v & 0x7f) % 12;
    return (v & 0x80) ? h + 12 : h;
}

static uint8_t read_time_reg(const struct rtc *r, unsigned reg)
{
    struct tm tm;
    guest_tm(r, &tm);
    switch (reg) {
    case REG_SEC:
        return to_bcd(r, tm.tm_sec);
    case REG_MIN:
        return to_bcd(r, tm.tm_min);
    case REG_HOUR:
        return encode_hour(r, tm.tm_hour);
    case REG_WDAY:
        return to_bcd(r, tm.tm_wday + 1);
    case REG_MDAY:
        return to_bcd(r, tm.tm_mday);
    case REG_MON:
        return to_bcd(r, tm.tm_mon + 1);
    case REG_YEAR:
        return to_bcd(r, tm.tm_year % 100);
    default:
        return to_bcd(r, (tm.tm_year + 1900) / 100); /* REG_CENTURY */
    }
}

/* The guest sets one field of the clock: keep the others, move the offset. */
static void write_time_reg(struct rtc *r, unsigned reg, uint8_t v)
{
    struct tm tm;
    guest_tm(r, &tm);
    int val = reg == REG_HOUR ? decode_hour(r, v) : from_bcd(r, v);
    switch (reg) {
    case REG_SEC:
        if (val < 60)
            tm.tm_sec = val;
        break;
    case REG_MIN:
        if (val < 60)
            tm.tm_min = val;
        break;
    case REG_HOUR:
        if (val < 24)
            tm.tm_hour = val;
        break;
    case REG_MDAY:
        if (val >= 1 && val <= 31)
            tm.tm_mday = val;
        break;
    case REG_MON:
        if (val >= 1 && val <= 12)
            tm.tm_mon = val - 1;
        break;
    case REG_YEAR:
        if (val < 100)
            tm.tm_year = (tm.tm_year / 100) * 100 + val;
        break;
    case REG_CENTURY:
        if (val >= 19 && val <= 99)
            tm.tm_year = val * 100 - 1900 + tm.tm_year % 100;
        break;
    default:
        return;
    }
    r->offset = (int64_t)timegm(&tm) - (int64_t)time(NULL);
}

static bool is_time_reg(unsigned reg)
{
    return reg == REG_SEC || reg == REG_MIN || reg == REG_HOUR || reg == REG_WDAY ||
           reg == REG_MDAY || reg == REG_MON || reg == REG_YEAR || reg == REG_CENTURY;
}

static void rtc_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct rtc *r = opaque;
    (void)len;
    pthread_mutex_lock(&r->lock);
    if (offset == 0) { /* 0x70: index; 0x71: data */
        if (is_write)
            r->index = data[0] & 0x7f; /* bit 7 masks NMI */
        else
            data[0] = 0xff;
    } else {
        unsigned reg = r->index;
        if (is_write) {
            if (is_time_reg(reg) && reg != REG_WDAY)
                write_time_reg(r, reg, data[0]);
            else if (reg == REG_B)
                r->nvram[REG_B] = data[0] & ~0x08; /* no square wave */
            else if (reg != REG_C && reg != REG_D && reg != REG_A)
                r->nvram[reg] = data[0];
            else if (reg == REG_A)
                r->nvram[REG_A] = (data[0] & 0x7f); /* UIP is read-only */
        } else if (is_time_reg(reg)) {
            data[0] = read_time_reg(r, reg);
        } else if (reg == REG_C) {
            data[0] = 0; /* no interrupt flags: periodic/alarm/update IRQs are not emulated */
        } else {
            data[0] = r->nvram[reg];
        }
    }
    pthread_mutex_unlock(&r->lock);
}

static void set_nvram_memory(struct rtc *r, const struct guest_mem *mem)
{
    /* What a PC BIOS leaves for the OS: base, extended (KiB above 1 MiB, <= 64 MiB), 64 KiB
     * blocks above 16 MiB, and 64 KiB blocks above 4 GiB. */
    uint64_t ext_kib = mem->low_size > (1u << 20) ? (mem->low_size - (1u << 20)) / 1024 : 0;
    if (ext_kib > 0xfc00)
        ext_kib = 0xfc00;
    uint64_t above16 = mem->low_size > (16u << 20) ? (mem->low_size - (16u << 20)) >> 16 : 0;
    if (above16 > 0xffff)
        above16 = 0xffff;
    uint64_t above4g = (mem->size - mem->low_size) >> 16;
    r->nvram[0x15] = 0x80;
    r->nvram[0x16] = 0x02; /* 640 KiB */
    r->nvram[0x17] = r->nvram[0x30] = (uint8_t)ext_kib;
    r->nvram[0x18] = r->nvram[0x31] = (uint8_t)(ext_kib >> 8);
    r->nvram[0x34] = (uint8_t)above16;
    r->nvram[0x35] = (uint8_t)(above16 >> 8);
    r->nvram[0x5b] = (uint8_t)above4g;
    r->nvram[0x5c] = (uint8_t)(above4g >> 8);
    r->nvram[0x5d] = (uint8_t)(above4g >> 16);
}

/* Saved: NVRAM and the index. The clock offset is not: a restored guest's RTC reads the
 * host's time, which is how vmws resyncs guest wall-clock time after resume and revert. */
int rtc_save(struct rtc *r, struct state_writer *w)
{
    pthread_mutex_lock(&r->lock);
    uint8_t img[129];
    memcpy(img, r->nvram, 128);
    img[128] = r->index;
    pthread_mutex_unlock(&r->lock);
    state_put(w, STATE_TAG('C', 'M', 'O', 'S'), 0, img, sizeof(img));
    return 0;
}

int rtc_load(struct rtc *r, const struct state_reader *rd)
{
    uint8_t img[129];
    if (state_get_exact(rd, STATE_TAG('C', 'M', 'O', 'S'), 0, img, sizeof(img)) < 0)
        return -EINVAL;
    pthread_mutex_lock(&r->lock);
    memcpy(r->nvram, img, 128);
    r->index = img[128] & 0x7f;
    r->offset = 0;
    pthread_mutex_unlock(&r->lock);
    return 0;
}

struct rtc *rtc_create(struct machine *m)
{
    struct rtc *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->m = m;
    pthread_mutex_init(&r->lock, NULL);
    r->nvram[REG_A] = 0x26; /* 32.768 kHz time base, 1024 Hz rate */
    r->nvram[REG_B] = B_24H;
    r->nvram[REG_D] = 0x80; /* valid RAM and time */
    set_nvram_memory(r, m->mem);
    if (iobus_register(&m->pio, 0x70, 2, rtc_io, r) < 0) {
        rtc_destroy(r);
        return NULL;
    }
    return r;
}

void rtc_destroy(struct rtc *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->lock);
    free(r);
}
