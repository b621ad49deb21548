/* Unit tests for port and MMIO dispatch (core/vm/iobus.c) as devices see it: a handler gets the
 * access's offset in its range, also after the range moved (a PCI BAR); an access that runs
 * past its range's end reaches no handler (reads all ones); and the PCI address register
 * 0xCF8 (a dword) shares its ports with the reset control byte at 0xCF9. */
#include <check.h>
#include <string.h>

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

START_TEST(pci_address_register_and_reset_control_share_0xcf8)
{
    static struct machine m;
    memset(&m, 0, sizeof(m));
    m.vm_fd = -1;
    iobus_init(&m.pio, "port");
    iobus_init(&m.mmio, "mmio");
    struct pci_bus *bus = pci_create(&m);
    ck_assert_ptr_nonnull(bus);
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
    pci_destroy(bus);
    iobus_destroy(&m.pio);
    iobus_destroy(&m.mmio);
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
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
