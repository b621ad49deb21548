/* Unit tests for vm.conf (core/config/vmconfig.c) and VM paths (core/config/paths.c): a saved
 * config loads back identical, and every kind of bad line is reported as "PATH:LINE: what (expected
 * ...)" - the text a user sees when a VM refuses to start. */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config/paths.h"
#include "core/config/vmconfig.h"

static char tmpdir[64];
static char vmdir[PATH_MAX + 16];
static char conf[PATH_MAX + 32];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/vmws-test-vmconfig.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    snprintf(vmdir, sizeof(vmdir), "%s/vm1", tmpdir);
    ck_assert_int_eq(mkdir(vmdir, 0700), 0);
    snprintf(conf, sizeof(conf), "%s/vm.conf", vmdir);
}

static void teardown(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static void write_conf(const char *text)
{
    FILE *f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* Loads CONF and expects failure with an error containing "vm.conf:LINE:" and WHAT. */
static void expect_error(const char *text, int line, const char *what)
{
    struct vm_config cfg;
    char err[1024] = "";
    char where[32];
    write_conf(text);
    vmconfig_defaults(&cfg, "vm1");
    ck_assert_int_eq(vmconfig_load(conf, &cfg, err, sizeof(err)), -1);
    snprintf(where, sizeof(where), "vm.conf:%d: ", line);
    ck_assert_msg(strstr(err, where), "error '%s' lacks '%s'", err, where);
    ck_assert_msg(strstr(err, what), "error '%s' lacks '%s'", err, what);
    ck_assert_msg(strncmp(err, conf, strlen(conf)) == 0, "error '%s' does not start with the path",
                  err);
}

/* vmconfig_set edits in place: a key of the section is replaced where it stands, a missing one
 * is added at the end of its section (before the next header), a missing section at the end;
 * comments, blank lines and other sections stay byte for byte. */
START_TEST(test_set_in_place)
{
    write_conf("# mine\n[vm]\nname = vm1\n\n[audio]\n; loud\nvolume = 90\n\n[disk]\npath = d\n");
    const char *k1[] = {"volume", "mute"}, *v1[] = {"30", "yes"};
    ck_assert_int_eq(vmconfig_set(conf, "audio", k1, v1, 2), 0);
    const char *k2[] = {"width"}, *v2[] = {"800"};
    ck_assert_int_eq(vmconfig_set(conf, "display", k2, v2, 1), 0);
    char text[512] = "";
    FILE *f = fopen(conf, "r");
    ck_assert_ptr_nonnull(f);
    text[fread(text, 1, sizeof(text) - 1, f)] = '\0';
    fclose(f);
    ck_assert_str_eq(text,
                     "# mine\n[vm]\nname = vm1\n\n[audio]\n; loud\nvolume = 30\nmute = yes\n\n"
                     "[disk]\npath = d\n[display]\nwidth = 800\n");
    struct vm_config cfg;
    char err[512];
    vmconfig_defaults(&cfg, "vm1");
    ck_assert_int_eq(vmconfig_load(conf, &cfg, err, sizeof(err)), 0);
    ck_assert_uint_eq(cfg.audio.volume, 30);
    ck_assert(cfg.audio.muted);
    /* More keys than it can track: refused, and the file is as it was. */
    const char *many_k[VMCONFIG_SET_MAX + 1], *many_v[VMCONFIG_SET_MAX + 1];
    for (size_t i = 0; i <= VMCONFIG_SET_MAX; i++)
        many_k[i] = "volume", many_v[i] = "1";
    ck_assert_int_eq(vmconfig_set(conf, "audio", many_k, many_v, VMCONFIG_SET_MAX + 1), -E2BIG);
    char again[512] = "";
    f = fopen(conf, "r");
    ck_assert_ptr_nonnull(f);
    again[fread(again, 1, sizeof(again) - 1, f)] = '\0';
    fclose(f);
    ck_assert_str_eq(again, text);
}
END_TEST

START_TEST(test_round_trip)
{
    struct vm_config a, b;
    char err[512];
    vmconfig_defaults(&a, "vm1");
    a.memory_bytes = 3ULL << 29; /* 1536M: not a whole number of GiB */
    a.cpus = 7;
    a.backend = MEM_BACKEND_HUGETLBFS;
    snprintf(a.kernel, sizeof(a.kernel), "/boot/vmlinuz-test");
    snprintf(a.initrd, sizeof(a.initrd), "/boot/initrd.img-test");
    /* a long command line must survive inih's line limit (continuation lines) */
    a.append[0] = '\0';
    for (int i = 0; i < 60; i++) {
        char word[32];
        snprintf(word, sizeof(word), "%sopt%d=value%d", i ? " " : "", i, i);
        strcat(a.append, word);
    }
    ck_assert_int_eq(vmconfig_save(conf, &a), 0);
    struct stat st;
    ck_assert_int_eq(stat(conf, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);

    vmconfig_defaults(&b, "vm1");
    ck_assert_msg(vmconfig_load(conf, &b, err, sizeof(err)) == 0, "load failed: %s", err);
    ck_assert_str_eq(b.name, "vm1");
    ck_assert_uint_eq(b.memory_bytes, 3ULL << 29);
    ck_assert_uint_eq(b.cpus, 7);
    ck_assert_int_eq(b.backend, MEM_BACKEND_HUGETLBFS);
    ck_assert_str_eq(b.kernel, "/boot/vmlinuz-test");
    ck_assert_str_eq(b.initrd, "/boot/initrd.img-test");
    ck_assert_str_eq(b.append, a.append);
    ck_assert(!b.memory_sharing && b.memory_huge_pages); /* the defaults: no KSM, THP */
    ck_assert(b.balloon.enabled && b.balloon.free_page_reporting);

    /* A linked clone's base and stamp come back as saved. */
    snprintf(a.disk.path, sizeof(a.disk.path), "disk.qcow2");
    snprintf(a.disk.base, sizeof(a.disk.base), "/cache/debian-12-v2/base.qcow2");
    snprintf(a.disk.base_stamp, sizeof(a.disk.base_stamp), "1234:5.000000006");
    ck_assert_int_eq(vmconfig_save(conf, &a), 0);
    vmconfig_defaults(&b, "vm1");
    ck_assert_msg(vmconfig_load(conf, &b, err, sizeof(err)) == 0, "load failed: %s", err);
    ck_assert_str_eq(b.disk.base, "/cache/debian-12-v2/base.qcow2");
    ck_assert_str_eq(b.disk.base_stamp, "1234:5.000000006");
    a.disk.path[0] = a.disk.base[0] = a.disk.base_stamp[0] = '\0';

    /* Memory sharing, huge pages and the balloon's keys come back as saved. */
    a.memory_sharing = true;
    a.memory_huge_pages = false;
    a.balloon.free_page_reporting = false;
    ck_assert_int_eq(vmconfig_save(conf, &a), 0);
    vmconfig_defaults(&b, "vm1");
    ck_assert_msg(vmconfig_load(conf, &b, err, sizeof(err)) == 0, "load failed: %s", err);
    ck_assert(b.memory_sharing && !b.memory_huge_pages);
    ck_assert(b.balloon.enabled && !b.balloon.free_page_reporting);

    /* The default config: built-in kernel written as "builtin", loads back as "". */
    vmconfig_defaults(&a, "vm1");
    ck_assert_int_eq(vmconfig_save(conf, &a), 0);
    FILE *f = fopen(conf, "r");
    char text[1024] = "";
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "memory = 1G\n"));
    ck_assert_ptr_nonnull(strstr(text, "kernel = builtin\n"));
    ck_assert_int_eq(vmconfig_load(conf, &b, err, sizeof(err)), 0);
    ck_assert_str_eq(b.kernel, "");
    ck_assert_uint_eq(b.cpus, 1);
    ck_assert_str_eq(b.append, "console=ttyS0");
}
END_TEST

START_TEST(test_example_from_docs)
{
    struct vm_config cfg;
    char err[512];
    write_conf("# vmws VM configuration (edit while the VM is off)\n"
               "[vm]\n"
               "name = vm1\n"
               "memory = 1G\n"
               "cpus = 2\n"
               "memory_backend = file\n"
               "[boot]\n"
               "kernel = builtin\n"
               "initrd =\n"
               "append = console=ttyS0\n");
    vmconfig_defaults(&cfg, "vm1");
    ck_assert_msg(vmconfig_load(conf, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(cfg.memory_bytes, 1ULL << 30);
    ck_assert_uint_eq(cfg.cpus, 2);
    ck_assert_int_eq(cfg.backend, MEM_BACKEND_FILE);
    ck_assert_str_eq(cfg.kernel, "");
    ck_assert_str_eq(cfg.initrd, "");

    /* Keys may be omitted (defaults), and the name then comes from the directory. */
    write_conf("[vm]\nmemory = 64M\n");
    vmconfig_defaults(&cfg, "");
    ck_assert_msg(vmconfig_load(conf, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.name, "vm1");
    ck_assert_uint_eq(cfg.memory_bytes, 64ULL << 20);
    ck_assert_uint_eq(cfg.cpus, 1);
}
END_TEST

START_TEST(test_bad_lines)
{
    expect_error("[vm]\nmemory = 1G\ncolor = blue\n", 3, "unknown key 'color' in [vm]");
    expect_error("[vm]\ncpus = 1\n[network]\nmode = nat\n", 4, "unknown section [network]");
    expect_error("[vm]\nmemory = 12Q\n", 2, "bad memory size '12Q'");
    expect_error("[vm]\nmemory = 0\n", 2, "expected 16M to 1T");
    expect_error("[vm]\nmemory = 1025K\n", 2, "a multiple of 2M");
    expect_error("[vm]\nmemory = 17M\n", 2, "a multiple of 2M");
    expect_error("[vm]\nmemory = 2T\n", 2, "expected 16M to 1T");
    expect_error("[vm]\ncpus = 0\n", 2, "bad cpus '0' (expected a number from 1 to 64)");
    expect_error("[vm]\n\ncpus = 65\n", 3, "bad cpus '65'");
    expect_error("[vm]\ncpus = two\n", 2, "bad cpus 'two'");
    expect_error("[vm]\nmemory_backend = ramdisk\n", 2,
                 "bad memory_backend 'ramdisk' (expected file, shm, anon or hugetlbfs)");
    expect_error("[vm]\nmemory_sharing = maybe\n", 2,
                 "bad memory_sharing 'maybe' (expected yes or no)");
    expect_error("[balloon]\nenabled = yes\nfree_page_reporting = 2\n", 3,
                 "bad balloon free_page_reporting '2' (expected yes or no)");
    expect_error("[balloon]\nsize = 1G\n", 2, "unknown key 'size' in [balloon]");
    expect_error("[vm]\nname = other\n", 2, "name 'other' does not match the VM's directory 'vm1'");
    expect_error("[vm]\ncpus = 1\ncpus = 2\n", 3, "'cpus' is set twice");
    expect_error("[vm]\nthis line is nonsense\n", 2, "cannot parse this line");
    expect_error("[vm\ncpus = 1\n", 1, "cannot parse this line");
    expect_error("[boot]\nkernel = relative/bzImage\n", 2, "not an absolute path");
    expect_error("[boot]\nkernel = /k\nappend = a\nfoo = 1\n", 4, "unknown key 'foo' in [boot]");
    /* The first error wins, even if a later line is also wrong. */
    expect_error("[vm]\ncpus = 100\nmemory = 7\n", 2, "bad cpus");

    /* A line longer than inih's buffer is an error, not two half lines. */
    char text[600];
    int n = snprintf(text, sizeof(text), "[boot]\nkernel = /");
    memset(text + n, 'k', 300);
    strcpy(text + n + 300, "\n");
    expect_error(text, 2, "line too long");
}
END_TEST

/* [net]: forwards repeat and round-trip; a vm.conf without [net] (made before networking) has
 * the network on with the name's MAC; bad values name line and key. */
START_TEST(test_net_section)
{
    struct vm_config cfg, back;
    char err[1024] = "";
    write_conf("[vm]\nname = vm1\n");
    vmconfig_defaults(&cfg, "vm1");
    ck_assert_int_eq(vmconfig_load(conf, &cfg, err, sizeof(err)), 0);
    ck_assert(cfg.net.enabled);
    ck_assert_uint_eq(cfg.net.nforwards, 0);
    char mac[24], mac2[24];
    vmconfig_net_mac_format(cfg.net.mac, mac, sizeof(mac));
    ck_assert_msg(strncmp(mac, "52:54:00:", 9) == 0, "derived MAC %s", mac);
    /* The same name, the same MAC, whatever name the defaults started with. */
    vmconfig_defaults(&back, "other");
    ck_assert_int_eq(vmconfig_load(conf, &back, err, sizeof(err)), 0);
    vmconfig_net_mac_format(back.net.mac, mac2, sizeof(mac2));
    ck_assert_str_eq(mac, mac2);

    write_conf("[vm]\nname = vm1\n[net]\nenabled = yes\nmac = 52:54:00:AB:cd:01\n"
               "forward = tcp:8080:80\nforward = udp:5353:53\nforward = tcp:2222:22\n");
    vmconfig_defaults(&cfg, "vm1");
    ck_assert_int_eq(vmconfig_load(conf, &cfg, err, sizeof(err)), 0);
    ck_assert_uint_eq(cfg.net.nforwards, 3);
    ck_assert(!cfg.net.forwards[0].udp && cfg.net.forwards[0].host_port == 8080 &&
              cfg.net.forwards[0].guest_port == 80);
    ck_assert(cfg.net.forwards[1].udp && cfg.net.forwards[1].host_port == 5353 &&
              cfg.net.forwards[1].guest_port == 53);
    vmconfig_net_mac_format(cfg.net.mac, mac, sizeof(mac));
    ck_assert_str_eq(mac, "52:54:00:ab:cd:01");
    /* Saved and loaded back: the same. */
    ck_assert_int_eq(vmconfig_save(conf, &cfg), 0);
    vmconfig_defaults(&back, "vm1");
    ck_assert_int_eq(vmconfig_load(conf, &back, err, sizeof(err)), 0);
    ck_assert_int_eq(memcmp(&cfg.net, &back.net, sizeof(cfg.net)), 0);

    write_conf("[vm]\nname = vm1\n[net]\nenabled = no\n");
    vmconfig_defaults(&cfg, "vm1");
    ck_assert_int_eq(vmconfig_load(conf, &cfg, err, sizeof(err)), 0);
    ck_assert(!cfg.net.enabled);
    ck_assert_int_eq(vmconfig_save(conf, &cfg), 0);
    vmconfig_defaults(&back, "vm1");
    ck_assert_int_eq(vmconfig_load(conf, &back, err, sizeof(err)), 0);
    ck_assert(!back.net.enabled);

    expect_error("[net]\nenabled = maybe\n", 2, "bad net enabled 'maybe' (expected yes or no)");
    expect_error("[net]\nforward = tcp:8080\n", 2,
                 "bad forward 'tcp:8080' (expected tcp:HOSTPORT:GUESTPORT");
    expect_error("[net]\nforward = sctp:1:2\n", 2, "bad forward 'sctp:1:2'");
    expect_error("[net]\nforward = tcp:0:80\n", 2, "ports 1-65535");
    expect_error("[net]\nforward = tcp:8080:65536\n", 2, "bad forward 'tcp:8080:65536'");
    expect_error("[net]\nforward = tcp:80x:80\n", 2, "bad forward");
    expect_error("[net]\nforward = tcp::80\n", 2, "bad forward");
    expect_error("[net]\nforward = tcp:8080:80:1\n", 2, "bad forward");
    expect_error("[net]\nforward = tcp:8080:80\nforward = tcp:8080:81\n", 3,
                 "host tcp port 8080 is already forwarded");
    expect_error("[net]\nmac = 53:54:00:12:34:56\n", 2, "bad net mac '53:54:00:12:34:56'");
    expect_error("[net]\nmac = 52:54:00:12:34\n", 2, "bad net mac");
    expect_error("[net]\nmac = 00:00:00:00:00:00\n", 2, "bad net mac");
    expect_error("[net]\nmode = nat\n", 2,
                 "unknown key 'mode' in [net] (expected enabled, mac "
                 "or forward)");
    /* The same host port once per protocol: tcp and udp 53 are two forwards. */
    write_conf("[net]\nforward = tcp:5353:53\nforward = udp:5353:53\n");
    vmconfig_defaults(&cfg, "vm1");
    ck_assert_int_eq(vmconfig_load(conf, &cfg, err, sizeof(err)), 0);
    ck_assert_uint_eq(cfg.net.nforwards, 2);
    /* At most VM_NET_FORWARDS_MAX. */
    char text[2048] = "[net]\n";
    for (int i = 0; i <= VM_NET_FORWARDS_MAX; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "forward = tcp:%d:80\n",
                 10000 + i);
    expect_error(text, VM_NET_FORWARDS_MAX + 2, "too many forwards (expected at most 16)");
}
END_TEST

START_TEST(test_missing_file)
{
    struct vm_config cfg;
    char err[512];
    vmconfig_defaults(&cfg, "vm1");
    ck_assert_int_eq(vmconfig_load(conf, &cfg, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "No such file or directory"));
    ck_assert_ptr_nonnull(strstr(err, conf));
}
END_TEST

START_TEST(test_parse_size)
{
    uint64_t v;
    ck_assert_int_eq(parse_size("1G", &v), 0);
    ck_assert_uint_eq(v, 1ULL << 30);
    ck_assert_int_eq(parse_size("512M", &v), 0);
    ck_assert_uint_eq(v, 512ULL << 20);
    ck_assert_int_eq(parse_size("2048K", &v), 0);
    ck_assert_uint_eq(v, 2048ULL << 10);
    ck_assert_int_eq(parse_size("1073741824", &v), 0);
    ck_assert_uint_eq(v, 1073741824ULL);
    ck_assert_int_eq(parse_size("1T", &v), 0);
    ck_assert_uint_eq(v, 1ULL << 40);
    ck_assert_int_eq(parse_size("2GiB", &v), 0);
    ck_assert_uint_eq(v, 2ULL << 30);
    ck_assert_int_eq(parse_size("64m", &v), 0);
    ck_assert_uint_eq(v, 64ULL << 20);
    ck_assert_int_eq(parse_size("0", &v), 0);
    ck_assert_uint_eq(v, 0);
    ck_assert_int_eq(parse_size("12Q", &v), -EINVAL);
    ck_assert_int_eq(parse_size("", &v), -EINVAL);
    ck_assert_int_eq(parse_size("G", &v), -EINVAL);
    ck_assert_int_eq(parse_size("-1G", &v), -EINVAL);
    ck_assert_int_eq(parse_size(" 1G", &v), -EINVAL);
    ck_assert_int_eq(parse_size("1.5G", &v), -EINVAL);
    ck_assert_int_eq(parse_size("1G ", &v), -EINVAL);
    ck_assert_int_eq(parse_size("99999999999999999999", &v), -EINVAL);
    ck_assert_int_eq(parse_size("17179869184G", &v), -EINVAL); /* 2^64: overflows */
}
END_TEST

START_TEST(test_names_and_backends)
{
    ck_assert(vm_name_valid("default"));
    ck_assert(vm_name_valid("vm-1.test_2"));
    ck_assert(!vm_name_valid(""));
    ck_assert(!vm_name_valid(".hidden"));
    ck_assert(!vm_name_valid("-opt"));
    ck_assert(!vm_name_valid("a/b"));
    ck_assert(!vm_name_valid("with space"));
    char longname[80];
    memset(longname, 'a', 64);
    longname[64] = '\0';
    ck_assert(!vm_name_valid(longname));
    longname[63] = '\0';
    ck_assert(vm_name_valid(longname));

    enum mem_backend b;
    for (int i = MEM_BACKEND_FILE; i <= MEM_BACKEND_HUGETLBFS; i++) {
        ck_assert_int_eq(mem_backend_parse(mem_backend_name((enum mem_backend)i), &b), 0);
        ck_assert_int_eq(b, i);
    }
    ck_assert_int_eq(mem_backend_parse("FILE", &b), -EINVAL);
}
END_TEST

START_TEST(test_paths)
{
    char home[PATH_MAX], run[PATH_MAX + 16], got[PATH_MAX];
    snprintf(home, sizeof(home), "%s/home", tmpdir);
    snprintf(run, sizeof(run), "%s/run", tmpdir);
    setenv("VMWS_HOME", home, 1);
    setenv("VMWS_RUNTIME_DIR", run, 1);
    struct vm_paths p;
    ck_assert_int_eq(paths_for_vm("vm1", &p), 0);
    struct stat st;
    ck_assert_int_eq(stat(home, &st), -1); /* paths_for_vm creates nothing */
    char want[PATH_MAX + 64];
    snprintf(want, sizeof(want), "%s/vm1/vm.conf", home);
    ck_assert_str_eq(p.config, want);
    snprintf(want, sizeof(want), "%s/vm1/vm1.vmem", home);
    ck_assert_str_eq(p.vmem, want);
    snprintf(want, sizeof(want), "%s/vm1.ctl", run);
    ck_assert_str_eq(p.ctl_sock, want);
    snprintf(want, sizeof(want), "%s/vm1.console", run);
    ck_assert_str_eq(p.console_sock, want);
    ck_assert_int_eq(paths_for_vm("../etc", &p), -EINVAL);

    ck_assert_int_eq(paths_home(got, sizeof(got)), 0);
    ck_assert_str_eq(got, home);
    ck_assert_int_eq(stat(home, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0700);
    ck_assert_int_eq(chmod(tmpdir, 0755), 0);
    ck_assert_int_eq(paths_runtime(got, sizeof(got)), 0);
    ck_assert_int_eq(stat(run, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0700);
    /* a runtime dir someone opened up is tightened again */
    ck_assert_int_eq(chmod(run, 0777), 0);
    ck_assert_int_eq(paths_runtime(got, sizeof(got)), 0);
    ck_assert_int_eq(stat(run, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0700);
    /* a symlink is refused */
    char link[PATH_MAX + 16];
    snprintf(link, sizeof(link), "%s/runlink", tmpdir);
    ck_assert_int_eq(symlink(run, link), 0);
    setenv("VMWS_RUNTIME_DIR", link, 1);
    ck_assert_int_eq(paths_runtime(got, sizeof(got)), -ENOTDIR);
    /* XDG_RUNTIME_DIR/vmws when VMWS_RUNTIME_DIR is unset */
    unsetenv("VMWS_RUNTIME_DIR");
    setenv("XDG_RUNTIME_DIR", run, 1);
    ck_assert_int_eq(paths_for_vm("vm1", &p), 0);
    snprintf(want, sizeof(want), "%s/vmws/vm1.ctl", run);
    ck_assert_str_eq(p.ctl_sock, want);
    /* socket paths longer than sun_path are refused up front */
    char deep[PATH_MAX];
    snprintf(deep, sizeof(deep), "%s/%0100d", tmpdir, 0);
    setenv("VMWS_RUNTIME_DIR", deep, 1);
    ck_assert_int_eq(paths_for_vm("vm1", &p), -ENAMETOOLONG);
    unsetenv("VMWS_RUNTIME_DIR");
    unsetenv("VMWS_HOME");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("vmconfig");
    TCase *tc = tcase_create("vmconfig");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_set_in_place);
    tcase_add_test(tc, test_example_from_docs);
    tcase_add_test(tc, test_bad_lines);
    tcase_add_test(tc, test_net_section);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_parse_size);
    tcase_add_test(tc, test_names_and_backends);
    tcase_add_test(tc, test_paths);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
