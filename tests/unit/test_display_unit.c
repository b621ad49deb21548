/* Unit tests for display/: the key tables (USB usages and VNC keysyms to the set-1 bytes a guest
 * reads), the [display] section of vm.conf (values, errors, the password file's rules) and the
 * framebuffer size limits. The end-to-end side is tests/e2e/test_display.py. */
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config/dconfig.h"
#include "core/config/vmconfig.h"
#include "display/display_priv.h"

static size_t set1(unsigned usage, bool down, uint8_t *out)
{
    return keymap_usb_to_set1(usage, down, out);
}

START_TEST(test_set1_codes)
{
    uint8_t b[6];
    ck_assert_uint_eq(set1(0x04, true, b), 1); /* a */
    ck_assert_uint_eq(b[0], 0x1e);
    ck_assert_uint_eq(set1(0x04, false, b), 1);
    ck_assert_uint_eq(b[0], 0x9e);
    ck_assert_uint_eq(set1(0x28, true, b), 1); /* Enter */
    ck_assert_uint_eq(b[0], 0x1c);
    ck_assert_uint_eq(set1(0x52, true, b), 2); /* Up: E0 48 */
    ck_assert_uint_eq(b[0], 0xe0);
    ck_assert_uint_eq(b[1], 0x48);
    ck_assert_uint_eq(set1(0x52, false, b), 2);
    ck_assert_uint_eq(b[1], 0xc8);
    ck_assert_uint_eq(set1(0xe4, true, b), 2); /* right Ctrl */
    ck_assert_uint_eq(b[1], 0x1d);
    ck_assert_uint_eq(set1(0x45, true, b), 1); /* F12 */
    ck_assert_uint_eq(b[0], 0x58);
    ck_assert_uint_eq(set1(0x46, true, b), 4); /* Print Screen */
    ck_assert_uint_eq(b[3], 0x37);
    ck_assert_uint_eq(set1(0x48, true, b), 6); /* Pause: make only */
    ck_assert_uint_eq(b[0], 0xe1);
    ck_assert_uint_eq(set1(0x48, false, b), 0);
    ck_assert_uint_eq(set1(0x00, true, b), 0);
    ck_assert_uint_eq(set1(999, true, b), 0);
}
END_TEST

START_TEST(test_keysyms)
{
    ck_assert_uint_eq(keymap_keysym_to_usb('a'), 0x04);
    ck_assert_uint_eq(keymap_keysym_to_usb('A'), 0x04); /* the client sends Shift itself */
    ck_assert_uint_eq(keymap_keysym_to_usb('!'), keymap_keysym_to_usb('1'));
    ck_assert_uint_eq(keymap_keysym_to_usb('"'), keymap_keysym_to_usb('\''));
    ck_assert_uint_eq(keymap_keysym_to_usb('~'), 0x35);
    ck_assert_uint_eq(keymap_keysym_to_usb(' '), 0x2c);
    ck_assert_uint_eq(keymap_keysym_to_usb(0xff0d), 0x28); /* Return */
    ck_assert_uint_eq(keymap_keysym_to_usb(0xff52), 0x52); /* Up */
    ck_assert_uint_eq(keymap_keysym_to_usb(0xffbe), 0x3a); /* F1 */
    ck_assert_uint_eq(keymap_keysym_to_usb(0xffc9), 0x45); /* F12 */
    ck_assert_uint_eq(keymap_keysym_to_usb(0xffb0), 0x62); /* KP_0 */
    ck_assert_uint_eq(keymap_keysym_to_usb(0xffb9), 0x61); /* KP_9 */
    ck_assert_uint_eq(keymap_keysym_to_usb(0xffe1), 0xe1); /* Shift_L */
    ck_assert_uint_eq(keymap_keysym_to_usb(0x20ac), 0);    /* EuroSign: no US key */
    /* Every printable ASCII character reaches some key. */
    for (unsigned c = 0x20; c < 0x7f; c++)
        ck_assert_msg(keymap_keysym_to_usb(c) != 0, "no key for '%c'", c);
}
END_TEST

START_TEST(test_sizes_and_listen)
{
    char err[256], host[64];
    int port;
    ck_assert_int_eq(display_check_size(1024, 768, err, sizeof(err)), 0);
    ck_assert_int_eq(display_check_size(4096, 2048, err, sizeof(err)), 0);
    ck_assert_int_lt(display_check_size(1020, 768, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "multiples of 8"));
    ck_assert_int_lt(display_check_size(4096, 2160, err, sizeof(err)), 0); /* > 32 MiB */
    ck_assert_int_lt(display_check_size(8, 8, err, sizeof(err)), 0);
    ck_assert_int_eq(display_parse_listen("127.0.0.1", host, sizeof(host), &port), 0);
    ck_assert_str_eq(host, "127.0.0.1");
    ck_assert_int_eq(port, 0);
    ck_assert_int_eq(display_parse_listen("0.0.0.0:5905", host, sizeof(host), &port), 0);
    ck_assert_int_eq(port, 5905);
    ck_assert_int_lt(display_parse_listen("localhost", host, sizeof(host), &port), 0);
    ck_assert_int_lt(display_parse_listen("1.2.3.4:70000", host, sizeof(host), &port), 0);
    ck_assert_int_lt(display_parse_listen("1.2.3.256", host, sizeof(host), &port), 0);
    ck_assert_int_lt(display_parse_listen(":5900", host, sizeof(host), &port), 0);
    bool sdl, vnc, opt;
    ck_assert_int_eq(display_mode_parse("sdl,vnc", &sdl, &vnc, &opt), 0);
    ck_assert(sdl && vnc && !opt);
    ck_assert_int_eq(display_mode_parse("none", &sdl, &vnc, &opt), 0);
    ck_assert(!sdl && !vnc);
    ck_assert_int_lt(display_mode_parse("gtk", &sdl, &vnc, &opt), 0);
}
END_TEST

static char tmpdir[64];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/vmws-test-display.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static int load(const char *text, struct vm_config *cfg, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/vm.conf", tmpdir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    vmconfig_defaults(cfg, "");
    return vmconfig_load(path, cfg, err, errlen);
}

START_TEST(test_config_section)
{
    struct vm_config cfg;
    char err[512];
    ck_assert_msg(load("[display]\nmode = vnc\nwidth = 800\nheight = 600\n"
                       "vnc_listen = 127.0.0.1:5999\n",
                       &cfg, err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_str_eq(cfg.display.mode, "vnc");
    ck_assert_uint_eq(cfg.display.width, 800);
    ck_assert_uint_eq(cfg.display.height, 600);
    struct display_config dc;
    ck_assert_msg(display_config_from_vm(&cfg, tmpdir, &dc, err, sizeof(err)) == 0, "%s", err);
    ck_assert(dc.vnc && !dc.sdl);
    ck_assert_int_eq(dc.vnc_port, 5999);
    ck_assert_str_eq(dc.vnc_password, ""); /* no vnc.passwd: no authentication */

    ck_assert_int_eq(load("[display]\nwidth = 801\n", &cfg, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, ":2: bad display width '801'"), "%s", err);
    ck_assert_int_eq(load("[display]\nmode = fancy\n", &cfg, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "expected auto, sdl, vnc, sdl,vnc or none"), "%s", err);
    ck_assert_int_eq(load("[display]\nvnc_listen = example.org\n", &cfg, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "or unix for a socket only you can open"), "%s", err);
    /* vnc_listen = unix: no TCP address, the runtime dir's NAME.vnc instead. */
    ck_assert_msg(load("[display]\nmode = vnc\nvnc_listen = unix\n", &cfg, err, sizeof(err)) == 0,
                  "%s", err);
    snprintf(cfg.name, sizeof(cfg.name), "uv");
    setenv("VMWS_RUNTIME_DIR", tmpdir, 1);
    ck_assert_msg(display_config_from_vm(&cfg, tmpdir, &dc, err, sizeof(err)) == 0, "%s", err);
    char want[PATH_MAX];
    snprintf(want, sizeof(want), "%s/uv.vnc", tmpdir);
    ck_assert_str_eq(dc.vnc_socket, want);
    ck_assert_int_eq(dc.vnc_port, 0);
    ck_assert_int_eq(load("[display]\nvnc_password_file = rel/path\n", &cfg, err, sizeof(err)), -1);
    ck_assert_int_eq(load("[display]\ncolour = red\n", &cfg, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "unknown key 'colour' in [display]"), "%s", err);
}
END_TEST

START_TEST(test_password_file)
{
    struct vm_config cfg;
    struct display_config dc;
    char err[512], path[PATH_MAX];
    vmconfig_defaults(&cfg, "vm1");
    snprintf(path, sizeof(path), "%s/vnc.passwd", tmpdir);
    FILE *f = fopen(path, "w");
    fputs("s3cret\n", f);
    fclose(f);
    chmod(path, 0644);
    ck_assert_int_lt(display_config_from_vm(&cfg, tmpdir, &dc, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "chmod 600"), "%s", err);
    chmod(path, 0600);
    ck_assert_msg(display_config_from_vm(&cfg, tmpdir, &dc, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(dc.vnc_password, "s3cret");
    f = fopen(path, "w");
    fputs("muchtoolongpassword\n", f);
    fclose(f);
    ck_assert_int_lt(display_config_from_vm(&cfg, tmpdir, &dc, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "1 to 8 characters"), "%s", err);
    /* A configured file that does not exist is an error, the default one is optional. */
    snprintf(cfg.display.vnc_password_file, sizeof(cfg.display.vnc_password_file), "%s/missing",
             tmpdir);
    ck_assert_int_lt(display_config_from_vm(&cfg, tmpdir, &dc, err, sizeof(err)), 0);
    /* No VNC: no password file is read at all. */
    snprintf(cfg.display.mode, sizeof(cfg.display.mode), "none");
    ck_assert_int_eq(display_config_from_vm(&cfg, tmpdir, &dc, err, sizeof(err)), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("display");
    TCase *t = tcase_create("keymap");
    tcase_add_test(t, test_set1_codes);
    tcase_add_test(t, test_keysyms);
    tcase_add_test(t, test_sizes_and_listen);
    suite_add_tcase(s, t);
    t = tcase_create("config");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, test_config_section);
    tcase_add_test(t, test_password_file);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
