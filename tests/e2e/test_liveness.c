/* End-to-end: one disk request whose storage hangs must not wedge the VM (issue 14, finding 10).
 * The VMM runs with VMWS_STALL_AT=disk-write:FILE (core/util/crashpoint.h): while FILE exists,
 * the disk image's writes block, as on storage that stopped answering. While the guest's write
 * is stuck, what a user sees is asserted: `vmws status` and `vmws mem` answer, the guest's
 * console answers a command that needs no disk, `vmws snapshot take` ends within its bound
 * (done, or a clear error), and SIGTERM ends the VMM; once FILE goes, the write completes and its
 * bytes are in the image, as qemu-img reads it. A snapshot delete whose merge hangs the same way
 * holds up no other command. Built-in guest, natively. */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/e2e/e2e.h"

#define BOOT_MS 20000
#define SECTOR 512
#define FS_DATA_SECTOR 64 /* file 0's data (assets/guest/user/fs.c's layout) */
#define PAYLOAD "written-while-the-storage-hung"

static char out[1 << 16];
static char stall_file[600];

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

static void run(struct console *c, const char *cmd, const char *expect)
{
    if (!console_run(c, cmd, expect, 20000))
        ck_abort_msg("'%s': expected '%s', console showed: %s", cmd, expect, console_tail(c));
    if (!console_expect(c, "vmws> ", 20000))
        ck_abort_msg("'%s': no prompt after it: %s", cmd, console_tail(c));
}

/* A VM whose file store has file 0 ("stuck") already, so that the write below is one request:
 * its data. The VMM inherits VMWS_STALL_AT; the stall file does not exist yet. */
static struct console *start_stallable_vm(const char *name)
{
    int r =
        vmws_cmd(out, sizeof(out), 30, "create", name, "--memory", "64M", "--disk", "16M", NULL);
    ck_assert_msg(r == 0, "vmws create %s failed (%d): %s", name, r, out);
    snprintf(stall_file, sizeof(stall_file), "%s/stall-%s", e2e_home(), name);
    char env[700];
    snprintf(env, sizeof(env), "disk-write:%s", stall_file);
    setenv("VMWS_STALL_AT", env, 1);
    r = vmws_cmd(out, sizeof(out), 60, "start", name, "--display", "none", NULL);
    unsetenv("VMWS_STALL_AT");
    ck_assert_msg(r == 0, "vmws start %s failed (%d): %s", name, r, out);
    struct console *c = console_open(name);
    ck_assert_ptr_nonnull(c);
    console_send(c, "\n");
    if (!console_expect(c, "vmws> ", BOOT_MS))
        ck_abort_msg("no prompt from %s: %s", name, console_tail(c));
    run(c, "touch stuck", "");
    run(c, "ls", "1 file");
    return c;
}

/* Makes the storage hang and starts the guest's write into it. */
static long stalled_at;

static void stall_a_write(struct console *c)
{
    FILE *f = fopen(stall_file, "w");
    ck_assert_msg(f != NULL, "cannot create %s", stall_file);
    fclose(f);
    console_send(c, "write stuck " PAYLOAD "\n");
    stalled_at = now_ms();
    usleep(500 * 1000); /* the request reaches the image and blocks there */
}

/* Runs a vmws command that must answer within LIMIT_MS; returns its exit status. */
static int answers_within(long limit_ms, const char *what, const char *a1, const char *a2,
                          const char *a3, const char *a4)
{
    long t0 = now_ms();
    int r = vmws_cmd(out, sizeof(out), (int)(limit_ms / 1000) + 5, a1, a2, a3, a4, NULL);
    long took = now_ms() - t0;
    fprintf(stderr, "%s: exit %d after %ld ms\n", what, r, took);
    ck_assert_msg(r >= 0 && took <= limit_ms,
                  "%s did not answer within %ld ms while a disk write hangs (exit %d after %ld "
                  "ms): %s",
                  what, limit_ms, r, took, out);
    return r;
}

START_TEST(a_hung_disk_write_wedges_nothing)
{
    e2e_setup();
    struct console *c = start_stallable_vm("hang");
    int r = vmws_cmd(out, sizeof(out), 60, "snapshot", "take", "hang", "before", NULL);
    ck_assert_msg(r == 0, "snapshot take before the stall: %s", out);
    json_t *st = vmws_json("status", "hang", "--json", NULL);
    ck_assert_ptr_nonnull(st);
    char img[600]; /* the image the guest writes now: the snapshot's overlay */
    snprintf(img, sizeof(img), "%s",
             json_string_value(json_object_get(json_object_get(st, "disk"), "path")));
    json_decref(st);
    stall_a_write(c);

    r = answers_within(3000, "vmws status", "status", "hang", "--json", NULL);
    ck_assert_msg(r == 0 && strstr(out, "\"running\""), "vmws status: %s", out);
    r = answers_within(5000, "vmws mem", "mem", "hang", NULL, NULL);
    ck_assert_msg(r == 0, "vmws mem failed (%d): %s", r, out);
    /* The list reads the running image's cluster map for its delete costs: it waits 1 s for
     * the image, then answers without them. */
    r = answers_within(4000, "vmws snapshot list", "snapshot", "list", "hang", NULL);
    ck_assert_msg(r == 0 && strstr(out, "before"), "snapshot list: %s", out);
    /* A snapshot cannot include a request that has not finished: it may fail, but clearly and
     * within its bound, and the VM runs on. */
    r = answers_within(20000, "vmws snapshot take", "snapshot", "take", "hang", "during");
    ck_assert_msg(r == 0 || strstr(out, "in flight") || strstr(out, "did not stop"),
                  "snapshot take failed without saying why (%d): %s", r, out);

    /* The guest's driver gives up after 5 s, at its next interrupt (a key, here); its shell
     * then answers what needs no disk. Its 5 s are its own clock's (the TSC, calibrated at
     * boot: on a loaded host a little slow), so a key a second until it has given up. */
    long left = 5500 - (now_ms() - stalled_at);
    if (left > 0)
        usleep((useconds_t)left * 1000);
    bool gave_up = false;
    for (int i = 0; i < 10 && !gave_up; i++) {
        console_send(c, "\n");
        gave_up = console_expect(c, "no completion after 5 s", 1000);
    }
    ck_assert_msg(gave_up, "the guest's vCPU is stuck: %s", console_tail(c));
    ck_assert_msg(console_expect(c, "vmws> ", 5000), "no prompt: %s", console_tail(c));
    run(c, "version", "built-in guest of vmws");
    r = answers_within(3000, "vmws status", "status", "hang", "--json", NULL);
    ck_assert_msg(r == 0 && strstr(out, "\"running\""), "vmws status: %s", out);

    /* The storage comes back: the write completes, and its bytes are in the image. */
    st = vmws_json("status", "hang", "--json", NULL);
    ck_assert_ptr_nonnull(st);
    json_int_t writes = json_integer_value(json_object_get(json_object_get(st, "disk"), "writes"));
    json_decref(st);
    unlink(stall_file);
    json_int_t now = writes;
    for (int i = 0; i < 100 && now == writes; i++) {
        usleep(50 * 1000);
        st = vmws_json("status", "hang", "--json", NULL);
        ck_assert_ptr_nonnull(st);
        now = json_integer_value(json_object_get(json_object_get(st, "disk"), "writes"));
        json_decref(st);
    }
    ck_assert_msg(now > writes, "the write did not complete after the storage came back");
    pid_t pid = vm_pid("hang");
    ck_assert_int_eq(vmws_cmd(out, sizeof(out), 30, "stop", "hang", NULL), 0);
    ck_assert_msg(wait_pid_gone(pid, 15000), "VMM still running after vmws stop");
    console_close(c);

    char raw[700], cmd[2000];
    snprintf(raw, sizeof(raw), "%s/hang.raw", e2e_home());
    /* The overlay, read through its backing file as another implementation reads it. */
    snprintf(cmd, sizeof(cmd), "qemu-img convert -f qcow2 -O raw '%s' '%s'", img, raw);
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
    FILE *f = fopen(raw, "rb");
    ck_assert_ptr_nonnull(f);
    char data[sizeof(PAYLOAD)] = "";
    ck_assert_int_eq(fseek(f, FS_DATA_SECTOR * SECTOR, SEEK_SET), 0);
    ck_assert_uint_eq(fread(data, 1, sizeof(PAYLOAD) - 1, f), sizeof(PAYLOAD) - 1);
    fclose(f);
    ck_assert_msg(memcmp(data, PAYLOAD, sizeof(PAYLOAD) - 1) == 0,
                  "file 0's data in the image is '%.*s', not the write's", (int)sizeof(PAYLOAD) - 1,
                  data);
    e2e_teardown();
}
END_TEST

START_TEST(sigterm_ends_a_vmm_whose_disk_write_hangs)
{
    e2e_setup();
    struct console *c = start_stallable_vm("term");
    stall_a_write(c);
    pid_t pid = vm_pid("term");
    ck_assert_int_gt(pid, 0);
    long t0 = now_ms();
    kill(pid, SIGTERM);
    bool gone = wait_pid_gone(pid, 15000);
    fprintf(stderr, "SIGTERM: VMM gone: %d after %ld ms\n", gone, now_ms() - t0);
    unlink(stall_file);
    if (!gone)
        e2e_dump_logs("term");
    ck_assert_msg(gone, "SIGTERM did not end the VMM while its disk write hangs");
    console_close(c);
    e2e_teardown();
}
END_TEST

/* `vmws snapshot delete` merges on a worker: while its disk merge hangs on the storage, the
 * VMM's other commands answer, and `vmws snapshot list` shows the delete in progress. */
START_TEST(a_merge_blocks_no_other_command)
{
    e2e_setup();
    struct console *c = start_stallable_vm("merge");
    int r = vmws_cmd(out, sizeof(out), 60, "snapshot", "take", "merge", "s1", NULL);
    ck_assert_msg(r == 0, "snapshot take: %s", out);
    run(c, "write stuck after-the-snapshot", "");
    FILE *f = fopen(stall_file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);

    char log[700];
    snprintf(log, sizeof(log), "%s/delete.out", e2e_home());
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[] = {(char *)vmws_bin(), "snapshot", "delete", "merge", "s1", NULL};
    extern char **environ;
    pid_t del;
    ck_assert_int_eq(posix_spawn(&del, vmws_bin(), &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    usleep(1500 * 1000); /* the merge reaches the image and hangs there */

    r = answers_within(3000, "vmws snapshot list", "snapshot", "list", "merge", NULL);
    ck_assert_msg(r == 0 && strstr(out, "deleting snapshot"), "snapshot list during a merge: %s",
                  out);
    r = answers_within(3000, "vmws status", "status", "merge", "--json", NULL);
    ck_assert_msg(r == 0 && strstr(out, "\"running\""), "vmws status: %s", out);
    r = answers_within(3000, "vmws snapshot take", "snapshot", "take", "merge", "s2");
    ck_assert_msg(r != 0 && strstr(out, "being deleted"), "take during a delete: %s", out);
    int status;
    ck_assert_int_eq(waitpid(del, &status, WNOHANG), 0); /* still merging */

    unlink(stall_file);
    long t0 = now_ms();
    while (waitpid(del, &status, WNOHANG) == 0 && now_ms() - t0 < 30000)
        usleep(50 * 1000);
    f = fopen(log, "r");
    size_t n = f ? fread(out, 1, sizeof(out) - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0 && strstr(out, "deleted snapshot"),
                  "snapshot delete: %s", out);
    r = vmws_cmd(out, sizeof(out), 10, "snapshot", "list", "merge", NULL);
    ck_assert_msg(r == 0 && !strstr(out, "s1") && !strstr(out, "deleting"), "after: %s", out);
    run(c, "cat stuck", "after-the-snapshot"); /* the disk is back */
    console_close(c);
    e2e_teardown();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("liveness");
    TCase *tc = tcase_create("hung disk");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, a_hung_disk_write_wedges_nothing);
    tcase_add_test(tc, sigterm_ends_a_vmm_whose_disk_write_hangs);
    tcase_add_test(tc, a_merge_blocks_no_other_command);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
