/* End-to-end: the Linux boot path with Debian's own kernel (linux-image-amd64). Our KVM here
 * emulates guest CPL 0 instruction by instruction, so Linux cannot finish booting; what can be
 * shown is that the real kernel starts at its 64-bit entry with our zero page, page tables and
 * command line: its decompressor parses `earlyprintk=serial` and `nokaslr` from our cmdline and
 * prints on our UART. Also: a file that is not a bzImage is refused with a clear error. */
#include <check.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/e2e/e2e.h"

static char out[1 << 16];

static const char *debian_kernel(void)
{
    static char path[512];
    glob_t g;
    ck_assert_msg(glob("/boot/vmlinuz-*", 0, NULL, &g) == 0 && g.gl_pathc > 0,
                  "no /boot/vmlinuz-*: install Debian's linux-image-amd64 (./bootstrap does)");
    snprintf(path, sizeof(path), "%s", g.gl_pathv[g.gl_pathc - 1]);
    globfree(&g);
    return path;
}

static bool file_contains(const char *path, const char *text, int timeout_s)
{
    for (int i = 0; i < timeout_s * 10; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(out, 1, sizeof(out) - 1, f);
            out[n] = '\0';
            fclose(f);
            if (strstr(out, text))
                return true;
        }
        usleep(100000);
    }
    return false;
}

START_TEST(debian_kernel_runs_its_decompressor_on_our_uart)
{
    e2e_setup();
    const char *kernel = debian_kernel();
    int r = vmws_cmd(out, sizeof(out), 30, "create", "linux", "--memory", "1G", "--kernel", kernel,
                     "--append", "earlyprintk=serial,ttyS0,115200 console=ttyS0 nokaslr", NULL);
    ck_assert_msg(r == 0, "create: %s", out);
    r = vmws_cmd(out, sizeof(out), 60, "start", "linux", NULL);
    ck_assert_msg(r == 0, "start: %s", out);

    char log[512];
    snprintf(log, sizeof(log), "%s/linux/serial.log", e2e_home());
    ck_assert_msg(file_contains(log, "KASLR disabled: 'nokaslr' on cmdline.", 120),
                  "the kernel's decompressor printed nothing recognisable on COM1 in 120 s; "
                  "serial.log: %s",
                  out);

    char vmmlog[512];
    snprintf(vmmlog, sizeof(vmmlog), "%s/linux/vmm.log", e2e_home());
    ck_assert_msg(file_contains(vmmlog, "boot protocol 2.", 1), "vmm.log: %s", out);
    ck_assert_int_eq(vmws_cmd(out, sizeof(out), 30, "stop", "linux", NULL), 0);
    e2e_teardown();
}
END_TEST

START_TEST(non_bzimage_kernel_is_refused)
{
    e2e_setup();
    char fake[512];
    snprintf(fake, sizeof(fake), "%s/not-a-kernel", e2e_home());
    FILE *f = fopen(fake, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 4096; i++)
        fputc(i * 7, f);
    fclose(f);
    int r = vmws_cmd(out, sizeof(out), 30, "create", "fake", "--kernel", fake, NULL);
    ck_assert_msg(r == 0, "create: %s", out);
    r = vmws_cmd(out, sizeof(out), 60, "start", "fake", NULL);
    ck_assert_int_ne(r, 0);
    ck_assert_msg(strstr(out, "bzImage"), "start of a non-bzImage: %s", out);
    e2e_teardown();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("linux");
    TCase *t = tcase_create("boot");
    tcase_set_timeout(t, 200);
    tcase_add_test(t, debian_kernel_runs_its_decompressor_on_our_uart);
    tcase_add_test(t, non_bzimage_kernel_is_refused);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
