/* Unit tests for the i8042's keyboard and PS/2 mouse as a guest driver sees them through ports
 * 0x60/0x64 (core/devices/i8042.c): viewer keys queue as set-1 bytes; the mouse answers reset and
 * identify, sends nothing until the guest enables reporting, then standard 3-byte packets
 * (sign bits, y up, big motions split), flagged as aux data in the status register. The
 * machine here has no VM (interrupt ioctls fail harmlessly): only the port protocol is tested. */
#include <check.h>
#include <limits.h>
#include <string.h>

#include "core/devices/devices.h"
#include "core/vm/machine.h"

static struct machine m;
static struct i8042 *k;

static void setup(void)
{
    memset(&m, 0, sizeof(m));
    m.vm_fd = -1;
    iobus_init(&m.pio, "port");
    k = i8042_create(&m);
    ck_assert_ptr_nonnull(k);
}

static void teardown(void)
{
    i8042_destroy(k);
    iobus_destroy(&m.pio);
}

static uint8_t in(uint16_t port)
{
    uint8_t v = 0;
    iobus_access(&m.pio, port, &v, 1, false);
    return v;
}

static void out(uint16_t port, uint8_t v)
{
    iobus_access(&m.pio, port, &v, 1, true);
}

/* Reads one byte the guest would see; checks whether it came from the aux port. */
static uint8_t read_byte(bool aux)
{
    uint8_t st = in(0x64);
    ck_assert_msg(st & 0x01, "no byte waiting (status %02x)", st);
    ck_assert_msg(!!(st & 0x20) == aux, "byte from the %s port expected (status %02x)",
                  aux ? "aux" : "keyboard", st);
    return in(0x60);
}

static void mouse_cmd(uint8_t cmd)
{
    out(0x64, 0xd4);
    out(0x60, cmd);
}

START_TEST(test_keyboard_bytes)
{
    const uint8_t make_up[] = {0xe0, 0x48};
    i8042_keyboard_bytes(k, make_up, 2);
    ck_assert_uint_eq(read_byte(false), 0xe0);
    ck_assert_uint_eq(read_byte(false), 0x48);
    ck_assert_uint_eq(in(0x64) & 0x01, 0);
    /* The keylock input reads "not inhibited" (Linux warns "Keylock active" otherwise). */
    ck_assert_uint_eq(in(0x64) & 0x10, 0x10);
}
END_TEST

START_TEST(test_mouse_protocol)
{
    out(0x64, 0xa8); /* enable aux */
    mouse_cmd(0xff); /* reset */
    ck_assert_uint_eq(read_byte(true), 0xfa);
    ck_assert_uint_eq(read_byte(true), 0xaa);
    ck_assert_uint_eq(read_byte(true), 0x00);
    mouse_cmd(0xf2); /* identify */
    ck_assert_uint_eq(read_byte(true), 0xfa);
    ck_assert_uint_eq(read_byte(true), 0x00);
    mouse_cmd(0xf3); /* sample rate 40 */
    ck_assert_uint_eq(read_byte(true), 0xfa);
    mouse_cmd(40);
    ck_assert_uint_eq(read_byte(true), 0xfa);
    mouse_cmd(0xe9); /* status: disabled, rate 40 */
    ck_assert_uint_eq(read_byte(true), 0xfa);
    ck_assert_uint_eq(read_byte(true) & 0x20, 0);
    read_byte(true);
    ck_assert_uint_eq(read_byte(true), 40);

    /* Not enabled yet: motion is dropped. */
    i8042_mouse_event(k, 10, 10, 0, 1);
    ck_assert_uint_eq(in(0x64) & 0x01, 0);

    mouse_cmd(0xf4);
    ck_assert_uint_eq(read_byte(true), 0xfa);
    i8042_mouse_event(k, 5, 3, 0, 1);                       /* right 5, down 3, left button */
    ck_assert_uint_eq(read_byte(true), 0x08 | 0x01 | 0x20); /* y negative: PS/2 y is up */
    ck_assert_uint_eq(read_byte(true), 5);
    ck_assert_uint_eq(read_byte(true), (uint8_t)-3);
    i8042_mouse_event(k, -300, 0, 0, 0); /* beyond 9 bits: two packets */
    ck_assert_uint_eq(read_byte(true), 0x08 | 0x10);
    ck_assert_uint_eq(read_byte(true), (uint8_t)-256);
    ck_assert_uint_eq(read_byte(true), 0);
    ck_assert_uint_eq(read_byte(true), 0x08 | 0x10);
    ck_assert_uint_eq(read_byte(true), (uint8_t)-44);
    ck_assert_uint_eq(read_byte(true), 0);
    ck_assert_uint_eq(in(0x64) & 0x01, 0);
    /* A viewer's nonsense (a VNC client can send any position): INT_MIN moves the most a
     * queue holds, without undefined arithmetic (UBSan, make check-sanitizers). */
    i8042_mouse_event(k, INT_MIN, INT_MIN, 0, 0);
    ck_assert_uint_eq(read_byte(true), 0x08 | 0x10);
    ck_assert_uint_eq(read_byte(true), (uint8_t)-256);
    ck_assert_uint_eq(read_byte(true), 255); /* y up by the most: PS/2 y is up */
    while (in(0x64) & 0x01)
        read_byte(true);

    /* Keyboard and mouse bytes keep their order and their source. */
    const uint8_t a = 0x1e;
    i8042_keyboard_bytes(k, &a, 1);
    i8042_mouse_event(k, 1, 0, 0, 2);
    ck_assert_uint_eq(read_byte(false), 0x1e);
    ck_assert_uint_eq(read_byte(true), 0x08 | 0x02);

    /* The aux port disabled by the guest: nothing more. */
    read_byte(true);
    read_byte(true);
    out(0x64, 0xa7);
    i8042_mouse_event(k, 1, 1, 0, 0);
    ck_assert_uint_eq(in(0x64) & 0x01, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ps2");
    TCase *t = tcase_create("i8042");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, test_keyboard_bytes);
    tcase_add_test(t, test_mouse_protocol);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
