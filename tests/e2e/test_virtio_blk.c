/* End-to-end: the built-in guest's virtio-blk driver and file store against vmws's virtio-pci
 * virtio-blk, through the real CLI. Asserts on what a user sees: file contents after a power
 * cycle, the guest's bytes at the offsets its file store's layout puts them in the image (see
 * assets/guest/user/fs.c), a random write/flush workload read back equal by the guest and by
 * the host, and malformed descriptor chains leaving the device NEEDS_RESET and the VM alive. */
#include <check.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config/vmconfig.h"
#include "tests/e2e/e2e.h"

#define BOOT_MS 20000
#define SECTOR 512
#define FS_DATA_SECTOR 64
#define FS_FILE_SECTORS 8

static char out[1 << 16];

static void create_vm(const char *name)
{
    int r =
        vmws_cmd(out, sizeof(out), 30, "create", name, "--memory", "64M", "--disk", "16M", NULL);
    ck_assert_msg(r == 0, "vmws create %s --disk 16M failed (%d): %s", name, r, out);
}

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

static void poweroff(struct console *c, const char *name)
{
    pid_t pid = vm_pid(name);
    console_send(c, "poweroff\n");
    ck_assert_msg(console_expect(c, "powering off", 5000), "poweroff: %s", console_tail(c));
    ck_assert_msg(wait_pid_gone(pid, 10000), "VMM of %s still running after poweroff", name);
    console_close(c);
}

/* `qemu-img check` on the VM's disk.qcow2 must be clean; its contents come from
 * `qemu-img convert -O raw`, so what we compare is what another implementation reads. */
static uint8_t *read_image(const char *name, size_t *len)
{
    char img[512], path[600], cmd[2048];
    snprintf(img, sizeof(img), "%s/%s/disk.qcow2", e2e_home(), name);
    snprintf(path, sizeof(path), "%s/%s/converted.raw", e2e_home(), name);
    snprintf(cmd, sizeof(cmd), "qemu-img check -f qcow2 '%s' > '%s.check' 2>&1", img, path);
    int rc = system(cmd);
    snprintf(cmd, sizeof(cmd), "%s.check", path);
    FILE *f = fopen(cmd, "r");
    size_t n = f ? fread(out, 1, sizeof(out) - 1, f) : 0;
    out[n] = 0;
    if (f)
        fclose(f);
    ck_assert_msg(rc == 0, "qemu-img check %s (status %d): %s", img, rc, out);
    snprintf(cmd, sizeof(cmd), "qemu-img convert -f qcow2 -O raw '%s' '%s'", img, path);
    ck_assert_msg(system(cmd) == 0, "%s failed", cmd);
    f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "converted image %s missing", path);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*len);
    ck_assert_msg(buf && fread(buf, 1, *len, f) == *len, "cannot read %s", path);
    fclose(f);
    return buf;
}

/* The data of file NAME as the file store's layout places it: directory entry i (64 bytes
 * from sector 1: name[48], u32 size, u32 used) owns sectors 64 + 8i. */
static const uint8_t *image_file(const uint8_t *img, const char *name, uint32_t *size)
{
    for (unsigned i = 0; i < 64; i++) {
        const uint8_t *e = img + SECTOR + 64 * i;
        uint32_t used;
        memcpy(&used, e + 52, 4);
        if (used && strncmp((const char *)e, name, 48) == 0) {
            memcpy(size, e + 48, 4);
            return img + (FS_DATA_SECTOR + FS_FILE_SECTORS * (size_t)i) * SECTOR;
        }
    }
    return NULL;
}

START_TEST(files_survive_a_power_cycle_at_their_offsets)
{
    e2e_setup();
    create_vm("d1");
    struct console *c = start_vm("d1");
    run(c, "ls", "0 files");
    json_t *st = vmws_json("status", "d1", "--json", NULL);
    ck_assert_ptr_nonnull(st);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(st, "disk"), "format")),
                     "qcow2");
    json_decref(st);
    run(c, "write greeting hello from the guest", "");
    run(c, "write numbers 1 2 3 4 5 6 7 8 9 10 11 12", "");
    run(c, "touch empty", "");
    run(c, "touch doomed", "");
    run(c, "rm doomed", "");
    run(c, "cat doomed", "cat: doomed: no such file");
    run(c, "sync", "sync: done");
    poweroff(c, "d1");

    c = start_vm("d1");
    run(c, "cat greeting", "hello from the guest\r\n");
    run(c, "cat numbers", "1 2 3 4 5 6 7 8 9 10 11 12\r\n");
    run(c, "ls", "3 files");
    poweroff(c, "d1");

    size_t len;
    uint8_t *img = read_image("d1", &len);
    ck_assert_uint_eq(len, 16 << 20);
    ck_assert_msg(memcmp(img, "VMWSFS01", 8) == 0, "no file store superblock in sector 0");
    uint32_t size = 0;
    const uint8_t *data = image_file(img, "greeting", &size);
    ck_assert_msg(data, "no directory entry for greeting in the image");
    ck_assert_uint_eq(size, strlen("hello from the guest\n"));
    ck_assert_msg(memcmp(data, "hello from the guest\n", size) == 0, "greeting's bytes differ");
    ck_assert_msg(image_file(img, "empty", &size) && size == 0, "empty is not an empty file");
    ck_assert_msg(!image_file(img, "doomed", &size), "doomed is still in the directory");
    free(img);
    e2e_teardown();
}
END_TEST

START_TEST(random_writes_and_flushes_read_back_equal)
{
    e2e_setup();
    create_vm("d2");
    struct console *c = start_vm("d2");
    if (!console_run(c, "disk stress 3000 12345", "verified, fnv1a ", 60000))
        ck_abort_msg("disk stress: %s", console_tail(c));
    size_t at = c->mark;
    ck_assert_msg(console_expect(c, "vmws> ", 5000), "disk stress: %s", console_tail(c));
    char hash[17] = {0};
    memcpy(hash, c->buf + at, 16);
    run(c, "disk info", "requests");
    poweroff(c, "d2");

    /* The guest's last writes to [1 MiB, 2 MiB) are in the image: same FNV-1a as it read. */
    size_t len;
    uint8_t *img = read_image("d2", &len);
    uint64_t fnv = 0xcbf29ce484222325ull;
    for (size_t i = 1 << 20; i < 2 << 20; i++)
        fnv = (fnv ^ img[i]) * 0x100000001b3ull;
    char mine[17];
    snprintf(mine, sizeof(mine), "%016" PRIx64, fnv);
    ck_assert_msg(strcmp(mine, hash) == 0, "image region hashes to %s, the guest read %s", mine,
                  hash);
    free(img);
    e2e_teardown();
}
END_TEST

START_TEST(kill_9_during_heavy_writes_leaves_a_clean_image)
{
    e2e_setup();
    create_vm("d4");
    struct console *c = start_vm("d4");
    run(c, "write survivor written before the storm", "");
    run(c, "sync", "sync: done");
    pid_t pid = vm_pid("d4");
    console_send(c, "disk stress 1000000 77\n");
    usleep(1500 * 1000); /* thousands of writes and flushes in flight */
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    ck_assert_msg(wait_pid_gone(pid, 10000), "VMM survived SIGKILL");
    console_close(c);
    char img[512], cmd[1200];
    snprintf(img, sizeof(img), "%s/d4/disk.qcow2", e2e_home());
    snprintf(cmd, sizeof(cmd), "qemu-img check -f qcow2 '%s' > /dev/null 2>&1", img);
    int rc = system(cmd);
    /* 0: clean; 3: leaked clusters only, which a crash may leave (no corruption). */
    ck_assert_msg(WIFEXITED(rc) && (WEXITSTATUS(rc) == 0 || WEXITSTATUS(rc) == 3),
                  "qemu-img check after kill -9: status %d", rc);
    /* The VM boots again from the image, and what was synced before is there. */
    vmws_cmd(out, sizeof(out), 30, "kill", "d4", NULL); /* clears the dead VMM's leftovers */
    c = start_vm("d4");
    run(c, "cat survivor", "written before the storm");
    poweroff(c, "d4");
    e2e_teardown();
}
END_TEST

START_TEST(malformed_chains_need_reset_and_the_vm_lives)
{
    e2e_setup();
    create_vm("d3");
    struct console *c = start_vm("d3");
    run(c, "write keep still here", "");
    pid_t pid = vm_pid("d3");
    static const char *const kinds[] = {"loop", "addr", "index", "order", "nostatus"};
    static const char *const why[] = {"longer than the queue", "is not guest RAM",
                                      "outside the table", "device-readable after",
                                      "status byte needed"};
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "disk test-garbage %s", kinds[k]);
        run(c, cmd, "(NEEDS_RESET)");
        json_t *st = vmws_json("status", "d3", "--json", NULL);
        ck_assert_ptr_nonnull(st);
        json_t *disk = json_object_get(st, "disk");
        ck_assert_msg(json_is_true(json_object_get(disk, "needs_reset")),
                      "status does not show needs_reset after %s", kinds[k]);
        const char *broken = json_string_value(json_object_get(disk, "broken"));
        ck_assert_msg(broken && strstr(broken, why[k]), "%s: broken is '%s', expected '%s'",
                      kinds[k], broken ? broken : "(none)", why[k]);
        json_decref(st);
        ck_assert_msg(kill(pid, 0) == 0, "the VMM died after %s", kinds[k]);
        run(c, "version", "vmws-guest");
        /* The driver resets the device on next use and the data is still there. */
        run(c, "cat keep", "still here");
    }
    char log[512];
    snprintf(log, sizeof(log), "%s/d3/vmm.log", e2e_home());
    FILE *f = fopen(log, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = 0;
    fclose(f);
    ck_assert_msg(strstr(out, "virtio-blk: device needs reset"), "vmm.log: %s", out);
    poweroff(c, "d3");
    e2e_teardown();
}
END_TEST

START_TEST(disk_section_in_vm_conf)
{
    char dir[] = "/tmp/vmws-vconf-XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/x", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/x/vm.conf", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    const char *good = "[vm]\nname = x\n[disk]\npath = disk.img\n";
    ck_assert_int_eq(write(fd, good, strlen(good)), (int)strlen(good));
    close(fd);
    struct vm_config cfg;
    char err[512];
    vmconfig_defaults(&cfg, "x");
    ck_assert_msg(vmconfig_load(path, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.disk.path, "disk.img");
    ck_assert_int_eq(vmconfig_save(path, &cfg), 0);
    struct vm_config again;
    vmconfig_defaults(&again, "x");
    ck_assert_msg(vmconfig_load(path, &again, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(again.disk.path, "disk.img");
    FILE *f = fopen(path, "w");
    fputs("[disk]\nsize = 1G\n", f);
    fclose(f);
    ck_assert_int_ne(vmconfig_load(path, &cfg, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "unknown key 'size' in [disk]"), "%s", err);
    f = fopen(path, "w");
    fputs("[disk]\npath = ../other/disk.img\n", f);
    fclose(f);
    ck_assert_int_ne(vmconfig_load(path, &cfg, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, "not usable"), "%s", err);
    unlink(path);
    snprintf(path, sizeof(path), "%s/x", dir);
    rmdir(path);
    rmdir(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("virtio_blk");
    TCase *t = tcase_create("e2e");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, disk_section_in_vm_conf);
    tcase_add_test(t, files_survive_a_power_cycle_at_their_offsets);
    tcase_add_test(t, random_writes_and_flushes_read_back_equal);
    tcase_add_test(t, malformed_chains_need_reset_and_the_vm_lives);
    tcase_add_test(t, kill_9_during_heavy_writes_leaves_a_clean_image);
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
