/* End-to-end: the built-in guest's virtio-net driver against vmws's virtio-net and its
 * user-mode NAT, through the real CLI, natively where /dev/kvm works. Asserts on what a user
 * sees: the guest's ARP request for 10.0.2.2 answered by slirp's MAC; malformed transmit chains
 * (a header asking for an offload, a frame over 65550 bytes or under an Ethernet header, a
 * writable buffer, a loop) leaving the card NEEDS_RESET with the reason in `vmws status`, the VMM
 * alive, the disk still serving files and the card working again once the guest resets it; the
 * card working after a snapshot revert and a suspend/resume; `--net none` leaving no card. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/e2e/e2e.h"

#define BOOT_MS 20000
#define SLIRP_MAC "52:55:0a:00:02:02" /* slirp's gateway, 10.0.2.2 */

static char out[1 << 16];

static struct console *start_vm(const char *name)
{
    int r = vmws_cmd(out, sizeof(out), 60, "start", name, "--display", "none", NULL);
    ck_assert_msg(r == 0, "vmws start %s failed (%d): %s", name, r, out);
    struct console *c = console_open(name);
    ck_assert_ptr_nonnull(c);
    console_send(c, "\n");
    if (!console_expect(c, "vmws> ", BOOT_MS))
        ck_abort_msg("no prompt from %s: %s", name, console_tail(c));
    return c;
}

static void run(struct console *c, const char *cmd, const char *expect)
{
    if (!console_run(c, cmd, expect, 20000))
        ck_abort_msg("'%s': expected '%s', console showed: %s", cmd, expect, console_tail(c));
    if (!console_expect(c, "vmws> ", 20000))
        ck_abort_msg("'%s': no prompt after it: %s", cmd, console_tail(c));
}

static json_t *net_status(const char *name)
{
    json_t *st = vmws_json("status", name, "--json", NULL);
    ck_assert_ptr_nonnull(st);
    json_t *net = json_incref(json_object_get(st, "net"));
    json_decref(st);
    return net;
}

START_TEST(malformed_frames_need_reset_and_the_vm_and_disk_live)
{
    e2e_setup();
    /* A forward of a host port another program listens on stops the start, naming the port. */
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    ck_assert_int_eq(bind(busy, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(busy, 1), 0);
    ck_assert_int_eq(getsockname(busy, (struct sockaddr *)&a, &alen), 0);
    char fw[32], want[96];
    snprintf(fw, sizeof(fw), "tcp:%u:80", ntohs(a.sin_port));
    snprintf(want, sizeof(want), "cannot forward host tcp port 127.0.0.1:%u", ntohs(a.sin_port));
    int r =
        vmws_cmd(out, sizeof(out), 30, "create", "n1", "--memory", "64M", "--forward", fw, NULL);
    ck_assert_msg(r == 0, "vmws create n1 failed (%d): %s", r, out);
    r = vmws_cmd(out, sizeof(out), 60, "start", "n1", "--display", "none", NULL);
    ck_assert_msg(r != 0 && strstr(out, want),
                  "a forward of a busy port should stop the start "
                  "with '%s', said (%d): %s",
                  want, r, out);
    close(busy);
    r = vmws_cmd(out, sizeof(out), 30, "create", "n2", "--memory", "64M", "--disk", "16M", NULL);
    ck_assert_msg(r == 0, "vmws create n2 failed (%d): %s", r, out);
    struct console *c = start_vm("n2");
    run(c, "write keep still here", "");
    run(c, "net info", "link up");
    run(c, "net arp", "10.0.2.2 is at " SLIRP_MAC);
    pid_t pid = vm_pid("n2");
    static const char *const kinds[] = {"header", "big", "short", "writable", "loop"};
    static const char *const why[] = {"no checksum or segmentation offload",
                                      "is 65551 bytes (expected 14 to 65550)",
                                      "is 10 bytes (expected 14 to 65550)",
                                      "device-writable (none allowed)", "longer than the queue"};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "net test-garbage %s", kinds[k]);
        run(c, cmd, "(NEEDS_RESET)");
        json_t *net = net_status("n2");
        ck_assert_msg(json_is_true(json_object_get(net, "needs_reset")),
                      "status does not show needs_reset after %s", kinds[k]);
        const char *broken = json_string_value(json_object_get(net, "broken"));
        ck_assert_msg(broken && strstr(broken, why[k]), "%s: broken is '%s', expected '%s'",
                      kinds[k], broken ? broken : "(none)", why[k]);
        json_decref(net);
        ck_assert_msg(kill(pid, 0) == 0, "the VMM died after %s", kinds[k]);
        run(c, "cat keep", "still here"); /* the disk serves on */
        /* The driver resets the card on its next use, and it works again. */
        run(c, "net arp", "10.0.2.2 is at " SLIRP_MAC);
    }
    json_t *net = net_status("n2");
    ck_assert_msg(!json_is_true(json_object_get(net, "needs_reset")), "still broken after reset");
    ck_assert_int_ge(json_integer_value(json_object_get(net, "rx_bytes")), 6 * 42);
    json_decref(net);
    char log[512];
    snprintf(log, sizeof(log), "%s/n2/vmm.log", e2e_home());
    FILE *f = fopen(log, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = 0;
    fclose(f);
    ck_assert_msg(strstr(out, "virtio-net: device needs reset"), "vmm.log: %s", out);
    console_close(c);
    vmws_cmd(out, sizeof(out), 30, "kill", "n2", NULL);
    e2e_teardown();
}
END_TEST

START_TEST(the_card_works_after_a_revert_and_a_resume)
{
    e2e_setup();
    int r = vmws_cmd(out, sizeof(out), 30, "create", "n3", "--memory", "64M", "--forward",
                     "tcp:0:80", NULL);
    ck_assert_msg(r != 0 && strstr(out, "bad forward 'tcp:0:80'"), "port 0 accepted: %s", out);
    r = vmws_cmd(out, sizeof(out), 30, "create", "n3", "--memory", "64M", "--forward",
                 "udp:45353:53", NULL);
    ck_assert_msg(r == 0, "vmws create n3 failed (%d): %s", r, out);
    struct console *c = start_vm("n3");
    run(c, "net arp", "10.0.2.2 is at " SLIRP_MAC);
    r = vmws_cmd(out, sizeof(out), 60, "snapshot", "take", "n3", "a", NULL);
    ck_assert_msg(r == 0, "snapshot take: %s", out);
    run(c, "net arp", "10.0.2.2 is at " SLIRP_MAC);
    r = vmws_cmd(out, sizeof(out), 60, "snapshot", "revert", "n3", "a", NULL);
    ck_assert_msg(r == 0, "snapshot revert: %s", out);
    console_send(c, "\n");
    run(c, "net arp", "10.0.2.2 is at " SLIRP_MAC);
    console_close(c);
    r = vmws_cmd(out, sizeof(out), 60, "suspend", "n3", NULL);
    ck_assert_msg(r == 0, "suspend: %s", out);
    r = vmws_cmd(out, sizeof(out), 60, "resume", "n3", NULL);
    ck_assert_msg(r == 0, "resume: %s", out);
    c = console_open("n3");
    ck_assert_ptr_nonnull(c);
    console_send(c, "\n");
    ck_assert_msg(console_expect(c, "vmws> ", BOOT_MS), "no prompt after resume: %s",
                  console_tail(c));
    run(c, "net arp", "10.0.2.2 is at " SLIRP_MAC);
    r = vmws_cmd(out, sizeof(out), 30, "status", "n3", NULL);
    ck_assert_msg(r == 0 && strstr(out, "forward:         udp 127.0.0.1:45353 -> guest port 53"),
                  "status after resume: %s", out);
    console_close(c);
    vmws_cmd(out, sizeof(out), 30, "kill", "n3", NULL);
    e2e_teardown();
}
END_TEST

START_TEST(net_none_means_no_card)
{
    e2e_setup();
    int r =
        vmws_cmd(out, sizeof(out), 30, "create", "n4", "--memory", "64M", "--net", "none", NULL);
    ck_assert_msg(r == 0, "vmws create --net none failed (%d): %s", r, out);
    r = vmws_cmd(out, sizeof(out), 30, "create", "n5", "--net", "none", "--forward", "tcp:8080:80",
                 NULL);
    ck_assert_msg(r != 0 && strstr(out, "--forward needs a network"), "said: %s", out);
    struct console *c = start_vm("n4");
    run(c, "net info", "no virtio-net device");
    r = vmws_cmd(out, sizeof(out), 30, "status", "n4", NULL);
    ck_assert_msg(r == 0 && strstr(out, "net:             none"), "status: %s", out);
    console_close(c);
    vmws_cmd(out, sizeof(out), 30, "kill", "n4", NULL);
    e2e_teardown();
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("virtio_net");
    TCase *t = tcase_create("e2e");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, malformed_frames_need_reset_and_the_vm_and_disk_live);
    tcase_add_test(t, the_card_works_after_a_revert_and_a_resume);
    tcase_add_test(t, net_none_means_no_card);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
