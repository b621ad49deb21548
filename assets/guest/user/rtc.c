/* The CMOS real-time clock (ports 0x70/0x71), which holds UTC. A consistent reading needs the
 * update-in-progress flag clear and two identical passes in a row; register B says whether
 * values are BCD or binary and whether hours are 12- or 24-hour. The century comes from the
 * CMOS register the FADT names, when it holds something sensible; otherwise 20xx. */
#include "assets/guest/user/guest.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define RTC_SEC 0x00
#define RTC_MIN 0x02
#define RTC_HOUR 0x04
#define RTC_DAY 0x07
#define RTC_MONTH 0x08
#define RTC_YEAR 0x09
#define RTC_REG_A 0x0a
#define RTC_REG_B 0x0b
#define REG_A_UIP 0x80
#define REG_B_24H 0x02
#define REG_B_BINARY 0x04
#define HOUR_PM 0x80

static uint8_t cmos_read(uint8_t reg)
{
    outb(CMOS_INDEX, reg);
    return inb(CMOS_DATA);
}

static unsigned from_bcd(uint8_t v)
{
    return (v >> 4) * 10 + (v & 15);
}

struct raw_time {
    uint8_t sec, min, hour, day, month, year, century;
};

static bool read_raw(struct raw_time *t)
{
    int spins = 0;
    while (cmos_read(RTC_REG_A) & REG_A_UIP)
        if (++spins > 1000000)
            return false;
    t->sec = cmos_read(RTC_SEC);
    t->min = cmos_read(RTC_MIN);
    t->hour = cmos_read(RTC_HOUR);
    t->day = cmos_read(RTC_DAY);
    t->month = cmos_read(RTC_MONTH);
    t->year = cmos_read(RTC_YEAR);
    t->century = acpi.century_reg ? cmos_read(acpi.century_reg) : 0;
    return true;
}

bool rtc_read(struct rtc_time *out)
{
    struct raw_time a, b;
    int tries = 0;
    if (!read_raw(&a))
        return false;
    for (;;) {
        if (!read_raw(&b))
            return false;
        if (!memcmp(&a, &b, sizeof a))
            break;
        if (++tries > 100)
            return false;
        a = b;
    }
    uint8_t reg_b = cmos_read(RTC_REG_B);
    bool pm = !(reg_b & REG_B_24H) && (a.hour & HOUR_PM);
    a.hour &= (uint8_t)~HOUR_PM;
    unsigned sec = a.sec, min = a.min, hour = a.hour, day = a.day, month = a.month, year = a.year,
             century = a.century;
    if (!(reg_b & REG_B_BINARY)) {
        sec = from_bcd(a.sec);
        min = from_bcd(a.min);
        hour = from_bcd(a.hour);
        day = from_bcd(a.day);
        month = from_bcd(a.month);
        year = from_bcd(a.year);
        century = from_bcd(a.century);
    }
    if (!(reg_b & REG_B_24H))
        hour = hour % 12 + (pm ? 12 : 0);
    if (century < 19 || century > 29)
        century = 20;
    out->year = century * 100 + year;
    out->month = month;
    out->day = day;
    out->hour = hour;
    out->min = min;
    out->sec = sec;
    return true;
}
