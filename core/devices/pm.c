/* The small chipset ports: the ACPI PM block the FADT describes (PM1a status/enable/control,
 * PM timer at 3.579545 MHz), where writing SLP_EN with the \_S5 sleep type powers the machine
 * off and the fixed-feature power button raises the SCI (IRQ 9, level) while its status and
 * enable bits are both set, and the POST port 0x80 (Linux's I/O delay). Each is a few lines.
 * The reset register 0xCF9 shares its dword with PCI's address register and lives in
 * core/devices/pci.c; port 0x61 is KVM's, with its PIT (core/devices/pcspk.c). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/boot/acpi.h"
#include "core/devices/devices.h"
#include "core/util/log.h"

#define PM1_SCI_EN 0x0001
#define PM1_PWRBTN 0x0100 /* status and enable: the fixed-feature power button */
#define PM1_SLP_EN 0x2000
#define PM_TIMER_HZ 3579545ULL

struct pm {
    struct machine *m;
    pthread_mutex_t lock;
    uint16_t pm1_sts, pm1_en, pm1_cnt;
    bool sci_level;
};

static void update_sci_locked(struct pm *p, bool force)
{
    bool level = p->pm1_sts & p->pm1_en & PM1_PWRBTN;
    if (level != p->sci_level || force) {
        p->sci_level = level;
        machine_set_irq(p->m, ACPI_SCI_IRQ, level);
    }
}

bool pm_power_button(struct pm *p)
{
    pthread_mutex_lock(&p->lock);
    bool listened = p->pm1_en & PM1_PWRBTN;
    p->pm1_sts |= PM1_PWRBTN;
    update_sci_locked(p, false);
    pthread_mutex_unlock(&p->lock);
    return listened;
}

static uint32_t pm_timer(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned __int128 ticks =
        ((unsigned __int128)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) * PM_TIMER_HZ /
        1000000000ULL;
    return (uint32_t)ticks & 0xffffff;
}

static void pm1_cnt_write(struct pm *p, uint16_t v)
{
    p->pm1_cnt = (uint16_t)((v & ~PM1_SLP_EN) | PM1_SCI_EN);
    if (!(v & PM1_SLP_EN))
        return;
    unsigned typ = (v >> 10) & 7;
    if (typ == ACPI_S5_SLP_TYP)
        machine_request_stop(p->m, STOP_POWEROFF, "guest powered off (ACPI S5)");
    else
        vmm_log_repeating(
            "guest asked for ACPI sleep type %u, which vmws does not support: ignored", typ);
}

static void pm_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct pm *p = opaque;
    unsigned off = (unsigned)offset;
    uint64_t v = io_data_get(data, len);
    pthread_mutex_lock(&p->lock);
    /* Registers by byte offset: 0-1 PM1 status, 2-3 enable, 4-5 control, 8-11 timer. */
    if (is_write) {
        uint16_t cnt = p->pm1_cnt;
        bool cnt_written = false;
        for (uint32_t i = 0; i < len; i++) {
            unsigned o = off + i, sh = 8 * (o & 1);
            uint16_t b = (uint16_t)(((v >> (8 * i)) & 0xff) << sh);
            if (o < 2) {
                p->pm1_sts &= (uint16_t)~b; /* write 1 to clear */
            } else if (o < 4) {
                p->pm1_en = (uint16_t)((p->pm1_en & ~(0xff << sh)) | b);
            } else if (o < 6) {
                cnt = (uint16_t)((cnt & ~(0xff << sh)) | b);
                cnt_written = true;
            }
        }
        update_sci_locked(p, false);
        if (cnt_written)
            pm1_cnt_write(p, cnt);
    } else {
        uint8_t regs[12] = {0};
        memcpy(&regs[0], &p->pm1_sts, 2);
        memcpy(&regs[2], &p->pm1_en, 2);
        uint16_t cnt = p->pm1_cnt | PM1_SCI_EN;
        memcpy(&regs[4], &cnt, 2);
        uint32_t t = pm_timer();
        memcpy(&regs[8], &t, 4);
        for (uint32_t i = 0; i < len; i++)
            data[i] = off + i < sizeof(regs) ? regs[off + i] : 0xff;
    }
    pthread_mutex_unlock(&p->lock);
}

static void post_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    (void)opaque;
    (void)offset;
    if (!is_write)
        memset(data, 0xff, len);
}

/* Version 2 of 'ACPM' is PM1 status, enable and control; version 1 also held port 0x61,
 * which KVM owns now (its byte is ignored). */
#define ACPM_TAG STATE_TAG('A', 'C', 'P', 'M')

int pm_save(struct pm *p, struct state_writer *w)
{
    pthread_mutex_lock(&p->lock);
    uint16_t regs[3] = {p->pm1_sts, p->pm1_en, p->pm1_cnt};
    pthread_mutex_unlock(&p->lock);
    state_put(w, ACPM_TAG, 0, regs, sizeof(regs));
    return 0;
}

int pm_load(struct pm *p, const struct state_reader *r)
{
    uint16_t regs[4];
    size_t len = state_version(r, ACPM_TAG) == 1 ? 4 * sizeof(uint16_t) : 3 * sizeof(uint16_t);
    if (state_get_exact(r, ACPM_TAG, 0, regs, len) < 0)
        return -EINVAL;
    pthread_mutex_lock(&p->lock);
    p->pm1_sts = regs[0];
    p->pm1_en = regs[1];
    p->pm1_cnt = regs[2] | PM1_SCI_EN;
    update_sci_locked(p, true);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

struct pm *pm_create(struct machine *m)
{
    struct pm *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->m = m;
    p->pm1_cnt = PM1_SCI_EN;
    pthread_mutex_init(&p->lock, NULL);
    if (iobus_register(&m->pio, ACPI_PM_BASE, 12, pm_io, p) < 0 ||
        iobus_register(&m->pio, 0x80, 1, post_io, p) < 0) {
        pm_destroy(p);
        return NULL;
    }
    return p;
}

void pm_destroy(struct pm *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->lock);
    free(p);
}
