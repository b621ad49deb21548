/* Unit tests for port and MMIO dispatch (core/vm/iobus.c) as devices see it: a handler gets the
 * access's offset in its range, also after the range moved (a PCI BAR); an access that runs
 * past its range's end reaches no handler (reads all ones); and the PCI address register
 * 0xCF8 (a dword) shares its ports with the reset control byte at 0xCF9. And two vCPUs moving
 * one BAR at once leave it decoded where its config says, nowhere else (issue 14, finding 11). */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#include "core/devices/devices.h"
#include "core/vm/machine.h"

struct seen {
    int calls;
    uint64_t offset;
    uint32_t len;
};

static void record(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    struct seen *s = opaque;
    s->calls++;
    s->offset = offset;
    s->len = len;
    if (!is_write)
        memset(data, 0x5a, len);
}

START_TEST(handlers_get_offsets_also_after_a_move)
{
    struct iobus bus;
    struct seen s = {0};
    uint8_t d[4] = {0};
    iobus_init(&bus, "mmio");
    ck_assert_int_eq(iobus_register(&bus, 0x1000, 16, record, &s), 0);
    iobus_access(&bus, 0x100c, d, 4, false);
    ck_assert_int_eq(s.calls, 1);
    ck_assert_uint_eq(s.offset, 12);
    ck_assert_uint_eq(d[3], 0x5a);
    ck_assert_int_eq(iobus_move(&bus, 0x1000, &s, 0x8000, 16), 0);
    iobus_access(&bus, 0x8002, d, 2, true);
    ck_assert_int_eq(s.calls, 2);
    ck_assert_uint_eq(s.offset, 2);
    iobus_access(&bus, 0x1002, d, 2, true); /* the old place is nobody's now */
    ck_assert_int_eq(s.calls, 2);
    iobus_destroy(&bus);
}
END_TEST

START_TEST(an_access_past_the_end_of_a_range_is_unclaimed)
{
    struct iobus bus;
    struct seen s = {0};
    iobus_init(&bus, "port");
    ck_assert_int_eq(iobus_register(&bus, 0x70, 2, record, &s), 0);
    uint8_t d[4] = {0, 0, 0, 0};
    iobus_access(&bus, 0x71, d, 2, false);
    ck_assert_int_eq(s.calls, 0);
    ck_assert_uint_eq(d[0], 0xff);
    ck_assert_uint_eq(d[1], 0xff);
    iobus_access(&bus, 0x71, d, 1, false);
    ck_assert_int_eq(s.calls, 1);
    ck_assert_uint_eq(s.offset, 1);
    iobus_destroy(&bus);
}
END_TEST

/* A machine of port and MMIO buses only, with the PCI host bridge on them. */
static struct pci_bus *machine_with_pci(struct machine *m)
{
    memset(m, 0, sizeof(*m));
    m->vm_fd = -1;
    iobus_init(&m->pio, "port");
    iobus_init(&m->mmio, "mmio");
    struct pci_bus *bus = pci_create(m);
    ck_assert_ptr_nonnull(bus);
    return bus;
}

static void machine_with_pci_destroy(struct machine *m, struct pci_bus *bus)
{
    pci_destroy(bus);
    iobus_destroy(&m->pio);
    iobus_destroy(&m->mmio);
}

START_TEST(pci_address_register_and_reset_control_share_0xcf8)
{
    static struct machine m;
    struct pci_bus *bus = machine_with_pci(&m);
    uint8_t a[4] = {0x00, 0x00, 0x00, 0x80}; /* bus 0, device 0, register 0 */
    iobus_access(&m.pio, 0xcf8, a, 4, true);
    uint8_t back[4] = {0};
    iobus_access(&m.pio, 0xcf8, back, 4, false);
    ck_assert_mem_eq(back, a, 4);
    uint8_t rcr = 0xee;
    iobus_access(&m.pio, 0xcf9, &rcr, 1, false);
    ck_assert_uint_eq(rcr, 0);
    uint8_t id[4] = {0};
    iobus_access(&m.pio, 0xcfc, id, 4, false); /* the host bridge's vendor and device */
    ck_assert(id[0] != 0xff || id[1] != 0xff);
    iobus_access(&m.pio, 0xcfe, id, 2, false); /* the device id through the window's offset */
    ck_assert(id[0] != 0xff || id[1] != 0xff);
    machine_with_pci_destroy(&m, bus);
}
END_TEST

/* A PCI function with one 4 KiB memory BAR whose owner follows bar_changed the way virtio-pci
 * and the ES1370 do: move its range from OLD_ADDR if that is where it is, else register anew.
 * Its first call after "hold" is set waits (up to 300 ms) for another config write to change
 * the BAR before it moves anything: the window between a write's config update and its owner
 * call, made wide enough to hit every time. */
struct racer {
    struct pci_device pci;
    struct machine *m;
    pthread_mutex_t lock; /* the owner's own lock, as a device has */
    uint64_t base;        /* where the owner has its range (0: nowhere) */
    unsigned hits;        /* accesses that reached the function */
    int hold;             /* set by the test; the next call takes it and waits (atomic) */
    int held;             /* that call has started waiting (atomic) */
    int overtook;         /* another write changed the BAR while it waited */
};

static void racer_io(void *opaque, uint64_t offset, uint8_t *data, uint32_t len, bool is_write)
{
    (void)offset;
    struct racer *r = opaque;
    r->hits++;
    if (!is_write)
        memset(data, 0x5a, len);
}

static uint32_t bar0_now(const struct racer *r)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)pci_cfg_byte(&r->pci, 0x10 + i) << 8 * i;
    return v & ~0xfu;
}

static void racer_bar_changed(struct pci_device *d, int bar, uint64_t old_addr, uint64_t new_addr,
                              int enabled)
{
    struct racer *r = d->opaque;
    if (bar != 0)
        return;
    if (__atomic_exchange_n(&r->hold, 0, __ATOMIC_ACQ_REL)) {
        __atomic_store_n(&r->held, 1, __ATOMIC_RELEASE);
        struct timespec step = {0, 1000000};
        for (int ms = 0; ms < 300 && bar0_now(r) == (uint32_t)new_addr; ms++)
            nanosleep(&step, NULL);
        r->overtook = bar0_now(r) != (uint32_t)new_addr;
    }
    pthread_mutex_lock(&r->lock);
    uint64_t base = enabled ? new_addr : 0;
    int rc = 0;
    if (old_addr && r->base == old_addr)
        rc = iobus_move(&r->m->mmio, old_addr, r, base, base ? 0x1000 : 0);
    else if (base)
        rc = iobus_register(&r->m->mmio, base, 0x1000, racer_io, r);
    r->base = rc == 0 ? base : 0;
    pthread_mutex_unlock(&r->lock);
}

struct bar_write {
    struct machine *m;
    uint32_t addr;
};

/* What a vCPU's two port writes do: select 00:01.0's BAR 0, write the new address. */
static void *write_bar0(void *arg)
{
    struct bar_write *w = arg;
    uint8_t sel[4] = {0x10, 0x08, 0x00, 0x80};
    uint8_t val[4] = {(uint8_t)w->addr, (uint8_t)(w->addr >> 8), (uint8_t)(w->addr >> 16),
                      (uint8_t)(w->addr >> 24)};
    iobus_access(&w->m->pio, 0xcf8, sel, 4, true);
    iobus_access(&w->m->pio, 0xcfc, val, 4, true);
    return NULL;
}

static unsigned reaches(struct racer *r, uint64_t addr)
{
    unsigned before = r->hits;
    uint8_t d[4];
    iobus_access(&r->m->mmio, addr, d, 4, false);
    return r->hits - before;
}

START_TEST(a_bar_moved_by_two_vcpus_at_once_is_decoded_where_its_config_says)
{
    static struct machine m;
    struct pci_bus *bus = machine_with_pci(&m);
    static struct racer r;
    memset(&r, 0, sizeof(r));
    r.m = &m;
    pthread_mutex_init(&r.lock, NULL);
    pci_device_init(&r.pci, 0x1af4, 0x10ff, 0xff0000, 0);
    r.pci.bar_size[0] = 0x1000;
    r.pci.bar_changed = racer_bar_changed;
    r.pci.opaque = &r;
    ck_assert_int_eq(pci_register(bus, &r.pci, 1), 0);
    const uint64_t x = pci_bar_address(bus, &r.pci, 0), y = 0xe0100000, z = 0xe0200000;
    ck_assert_uint_eq(r.base, x);
    ck_assert_uint_eq(reaches(&r, x), 1);

    /* vCPU A moves the BAR from X to Y and is held between its config write and its owner
     * call; vCPU B then moves it from Y to Z. */
    r.hold = 1;
    struct bar_write a = {&m, (uint32_t)y}, b = {&m, (uint32_t)z};
    pthread_t ta, tb;
    ck_assert_int_eq(pthread_create(&ta, NULL, write_bar0, &a), 0);
    while (!__atomic_load_n(&r.held, __ATOMIC_ACQUIRE))
        sched_yield();
    ck_assert_int_eq(pthread_create(&tb, NULL, write_bar0, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);

    /* The function is decoded at Z, where its config says, and no longer at X or Y: B's write
     * waited for A's move to reach the owner. (Before bar_lock, B overtook A: its owner call
     * found nothing at Y and registered Z, then A's moved X to Y, and all three decoded.) */
    ck_assert_uint_eq(pci_bar_address(bus, &r.pci, 0), z);
    ck_assert_msg(reaches(&r, x) == 0, "the BAR's first address still reaches the function");
    ck_assert_msg(reaches(&r, y) == 0, "the BAR's second address still reaches the function");
    ck_assert_msg(reaches(&r, z) == 1, "the BAR's config address reaches nothing");
    ck_assert_uint_eq(r.base, z);
    ck_assert_msg(!r.overtook, "a second BAR write took effect before the first one's owner call");
    machine_with_pci_destroy(&m, bus);
    pthread_mutex_destroy(&r.lock);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("iobus");
    TCase *tc = tcase_create("dispatch");
    tcase_add_test(tc, handlers_get_offsets_also_after_a_move);
    tcase_add_test(tc, an_access_past_the_end_of_a_range_is_unclaimed);
    tcase_add_test(tc, pci_address_register_and_reset_control_share_0xcf8);
    suite_add_tcase(s, tc);
    TCase *race = tcase_create("races");
    tcase_add_test(race, a_bar_moved_by_two_vcpus_at_once_is_decoded_where_its_config_says);
    suite_add_tcase(s, race);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
