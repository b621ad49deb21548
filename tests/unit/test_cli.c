/* End-to-end tests of the vmws command line that need no running VM: create, list, status,
 * mem, delete and the error paths, through the real binary (./vmws in the build directory,
 * or $VMWS_BIN) with VMWS_HOME and VMWS_RUNTIME_DIR in a temp dir. Each test asserts on what
 * the user sees: stdout, stderr and the exit status (0 ok, 1 failure, 2 usage error). */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[64];
static char bin[4096];
static char out[65536], err[65536];

static void setup(void)
{
    const char *b = getenv("VMWS_BIN");
    if (!b || !*b)
        b = "./vmws";
    ck_assert_ptr_nonnull(realpath(b, bin));
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/vmws-test-cli.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static void slurp(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, len - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
}

/* Runs `vmws ARGS` (a shell word list) and returns its exit status; fills out/err. */
static int vmws(const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof(cmd),
             "VMWS_HOME='%s/home' VMWS_RUNTIME_DIR='%s/run' '%s' %s >'%s/out' 2>'%s/err' "
             "</dev/null",
             tmpdir, tmpdir, bin, args, tmpdir, tmpdir);
    int st = system(cmd);
    char path[128];
    snprintf(path, sizeof(path), "%s/out", tmpdir);
    slurp(path, out, sizeof(out));
    snprintf(path, sizeof(path), "%s/err", tmpdir);
    slurp(path, err, sizeof(err));
    ck_assert_msg(WIFEXITED(st), "vmws %s did not exit normally", args);
    return WEXITSTATUS(st);
}

#define ASSERT_HAS(buf, s) ck_assert_msg(strstr(buf, s), "expected '%s' in:\n%s", s, buf)

START_TEST(test_create_list_delete)
{
    ck_assert_int_eq(vmws("list"), 0);
    ASSERT_HAS(out, "no VMs yet");

    ck_assert_int_eq(vmws("create vm1 --memory 512M --cpus 2"), 0);
    ASSERT_HAS(out, "created vm1 (512M, 2 vCPUs, built-in guest, file memory)");
    ck_assert_int_eq(vmws("create vmnet --forward tcp:8080:80 --forward udp:5353:53"), 0);
    ck_assert_int_eq(vmws("status vmnet"), 0);
    ASSERT_HAS(out, "net:             virtio-net, MAC 52:54:00:");
    ASSERT_HAS(out, "forward:         tcp 127.0.0.1:8080 -> guest port 80");
    ASSERT_HAS(out, "forward:         udp 127.0.0.1:5353 -> guest port 53");
    char vmconf[256];
    snprintf(vmconf, sizeof(vmconf), "%s/home/vmnet/vm.conf", tmpdir);
    char conftext[4096];
    slurp(vmconf, conftext, sizeof(conftext));
    ASSERT_HAS(conftext, "[net]\nenabled = yes\nmac = 52:54:00:");
    ASSERT_HAS(conftext, "forward = tcp:8080:80\nforward = udp:5353:53\n");
    ck_assert_int_eq(vmws("create vmoff --net none"), 0);
    ck_assert_int_eq(vmws("status vmoff"), 0);
    ASSERT_HAS(out, "net:             none");
    ck_assert_int_eq(vmws("delete vmnet"), 0);
    ck_assert_int_eq(vmws("delete vmoff"), 0);
    char conf[128];
    snprintf(conf, sizeof(conf), "%s/home/vm1/vm.conf", tmpdir);
    struct stat st;
    ck_assert_int_eq(stat(conf, &st), 0);
    char text[4096];
    slurp(conf, text, sizeof(text));
    ASSERT_HAS(text, "memory = 512M\n");
    ASSERT_HAS(text, "cpus = 2\n");
    snprintf(conf, sizeof(conf), "%s/home/vm1", tmpdir);
    ck_assert_int_eq(stat(conf, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0700);

    ck_assert_int_eq(vmws("create vm1"), 1);
    ASSERT_HAS(err, "vmws: VM 'vm1' already exists");

    ck_assert_int_eq(vmws("create def --kernel /nonexistent/bzImage"), 1);
    ASSERT_HAS(err, "kernel '/nonexistent/bzImage': No such file or directory");

    ck_assert_int_eq(vmws("list"), 0);
    ASSERT_HAS(out, "NAME");
    ASSERT_HAS(out, "STATE");
    ck_assert_msg(strstr(out, "vm1") && strstr(out, " off ") && strstr(out, "512M"), "%s", out);

    ck_assert_int_eq(vmws("list --json"), 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    ck_assert_msg(json_is_array(j), "not a JSON array: %s", out);
    ck_assert_int_eq(json_array_size(j), 1);
    json_t *vm = json_array_get(j, 0);
    ck_assert_str_eq(json_string_value(json_object_get(vm, "name")), "vm1");
    ck_assert_str_eq(json_string_value(json_object_get(vm, "state")), "off");
    ck_assert_int_eq(json_integer_value(json_object_get(vm, "memory")), 512 << 20);
    ck_assert(json_is_null(json_object_get(vm, "pid")));
    json_decref(j);

    ck_assert_int_eq(vmws("status vm1"), 0);
    ASSERT_HAS(out, "state:           off");
    ASSERT_HAS(out, "cpus:            2");

    ck_assert_int_eq(vmws("mem vm1 --json"), 0);
    j = json_loads(out, 0, &je);
    ck_assert_msg(j != NULL, "not JSON: %s", out);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "vm"), "configured")),
                     512 << 20);
    ck_assert(json_integer_value(json_object_get(json_object_get(j, "host"), "total")) > 0);
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "off");
    json_decref(j);
    ck_assert_int_eq(vmws("mem vm1"), 0);
    ASSERT_HAS(out, "configured");
    ASSERT_HAS(out, "free says used");
    ASSERT_HAS(out, "not in used");

    ck_assert_int_eq(vmws("kill vm1"), 1);
    ASSERT_HAS(err, "VM 'vm1' is not running");
    ck_assert_int_eq(vmws("stop vm1"), 1);
    ASSERT_HAS(err, "VM 'vm1' is not running (start it with 'vmws start vm1')");
    ck_assert_int_eq(vmws("console vm1"), 1);
    ASSERT_HAS(err, "VM 'vm1' is not running");

    ck_assert_int_eq(vmws("delete vm1"), 0);
    ASSERT_HAS(out, "deleted vm1");
    ck_assert_int_eq(stat(conf, &st), -1);
    ck_assert_int_eq(vmws("delete vm1"), 1);
    ASSERT_HAS(err, "vmws: VM 'vm1' does not exist (see 'vmws list')");
}
END_TEST

START_TEST(test_bad_config)
{
    ck_assert_int_eq(vmws("create vm2"), 0);
    char conf[128];
    snprintf(conf, sizeof(conf), "%s/home/vm2/vm.conf", tmpdir);
    FILE *f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fputs("[vm]\nname = vm2\nmemory = 1G\ncpus = 99\n", f);
    fclose(f);
    ck_assert_int_eq(vmws("start vm2"), 1);
    ASSERT_HAS(err, "vm.conf:4: bad cpus '99' (expected a number from 1 to 64)");
    ck_assert_int_eq(vmws("status vm2"), 1);
    ASSERT_HAS(err, "vm.conf:4: bad cpus");
    ck_assert_int_eq(vmws("run vm2"), 1);
    ASSERT_HAS(err, "vm.conf:4: bad cpus");
    ck_assert_int_eq(vmws("list"), 0);
    ASSERT_HAS(out, "bad-config");
    ASSERT_HAS(err, "vm.conf:4: bad cpus");
    /* a broken VM can still be deleted */
    ck_assert_int_eq(vmws("delete vm2"), 0);
}
END_TEST

/* `vmws volume` on a VM that is off changes [audio] in vm.conf and nothing else: the user's
 * comments and layout stay, and volume changes from many processes at once all land in turn,
 * each through its own temporary file (issue 14, finding 9). */
START_TEST(test_volume_keeps_the_users_vm_conf)
{
    ck_assert_int_eq(vmws("create vm3"), 0);
    char conf[128], text[4096];
    snprintf(conf, sizeof(conf), "%s/home/vm3/vm.conf", tmpdir);
    slurp(conf, text, sizeof(text));
    FILE *f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "; my notes: this VM plays the test tones\n%s", text);
    fclose(f);
    ck_assert_int_eq(vmws("volume vm3 40"), 0);
    ck_assert_int_eq(vmws("volume vm3 mute"), 0);
    slurp(conf, text, sizeof(text));
    ASSERT_HAS(text, "; my notes: this VM plays the test tones\n");
    ASSERT_HAS(text, "volume = 40\n");
    ASSERT_HAS(text, "mute = yes\n");
    /* Ten "up"s at once from 40: every one counts (the VM is off, so each reads the file). */
    ck_assert_int_eq(vmws("volume vm3 unmute"), 0);
    char cmd[8192];
    snprintf(cmd, sizeof(cmd),
             "for i in 1 2 3 4 5 6; do VMWS_HOME='%s/home' VMWS_RUNTIME_DIR='%s/run' '%s' volume "
             "vm3 up >/dev/null 2>&1 & done; wait",
             tmpdir, tmpdir, bin);
    ck_assert_int_eq(system(cmd), 0);
    slurp(conf, text, sizeof(text));
    ASSERT_HAS(text, "volume = 100\n");
    ASSERT_HAS(text, "; my notes: this VM plays the test tones\n");
    snprintf(cmd, sizeof(cmd), "ls -a '%s/home/vm3' | grep -q tmp", tmpdir);
    ck_assert_int_ne(system(cmd), 0); /* no temporary file left behind */
}
END_TEST

START_TEST(test_usage)
{
    ck_assert_int_eq(vmws("help"), 0);
    ASSERT_HAS(out, "commands:");
    ASSERT_HAS(out, "create");
    ck_assert_int_eq(vmws("create --help"), 0);
    ASSERT_HAS(out, "usage: vmws create NAME");
    ASSERT_HAS(out, "--memory-backend");
    ck_assert_int_eq(vmws("version"), 0);
    ASSERT_HAS(out, "vmws ");
    ck_assert_int_eq(vmws("frobnicate"), 2);
    ASSERT_HAS(err, "vmws: unknown command 'frobnicate' (see 'vmws help')");
    ck_assert_int_eq(vmws("create"), 2);
    ASSERT_HAS(err, "vmws create: missing the VM's NAME");
    ck_assert_int_eq(vmws("create x --memory 12Q"), 2);
    ASSERT_HAS(err, "bad --memory '12Q' (expected a size like 512M or 2G)");
    ck_assert_int_eq(vmws("create x --memory 3M"), 2);
    ASSERT_HAS(err, "expected 16M to 1T, a multiple of 2M");
    ck_assert_int_eq(vmws("create x --cpus 65"), 2);
    ck_assert_int_eq(vmws("create x --memory-backend tmpfs"), 2);
    ASSERT_HAS(err, "expected file, shm, anon or hugetlbfs");
    ck_assert_int_eq(vmws("create 'a b'"), 2);
    ASSERT_HAS(err, "is not a valid VM name");
    ck_assert_int_eq(vmws("create x --net bridge"), 2);
    ASSERT_HAS(err, "bad --net 'bridge' (expected user or none)");
    ck_assert_int_eq(vmws("create x --forward tcp:8080"), 2);
    ASSERT_HAS(err, "--forward: bad forward 'tcp:8080' (expected tcp:HOSTPORT:GUESTPORT");
    ck_assert_int_eq(vmws("create x --forward tcp:8080:80 --forward tcp:8080:22"), 2);
    ASSERT_HAS(err, "host tcp port 8080 is already forwarded");
    ck_assert_int_eq(vmws("create x --net none --forward tcp:8080:80"), 2);
    ASSERT_HAS(err, "--forward needs a network (not --net none)");
    ck_assert_int_eq(vmws("list --bogus"), 2);
    ASSERT_HAS(err, "unknown option '--bogus'");
    ck_assert_int_eq(vmws("status"), 2);
    ck_assert_int_eq(vmws("status a b"), 2);
    ASSERT_HAS(err, "unexpected argument 'b'");
    ck_assert_int_eq(vmws("console x --idle soon"), 2);
    ck_assert_int_eq(vmws("create bx"), 0);
    ck_assert_int_eq(vmws("mem bx --balloon abc"), 2);
    ASSERT_HAS(err, "bad size 'abc' for --balloon (expected e.g. 256M, 1G or 0)");
    ck_assert_int_eq(vmws("mem bx --balloon 256M"), 1);
    ASSERT_HAS(err, "VM 'bx' is not running (the balloon is a running guest's)");
    ck_assert_int_eq(vmws("mem bx --balloon"), 2);
    ASSERT_HAS(err, "option '--balloon' needs a value");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_create_list_delete);
    tcase_add_test(tc, test_bad_config);
    tcase_add_test(tc, test_usage);
    tcase_add_test(tc, test_volume_keeps_the_users_vm_conf);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
