/* End-to-end: the disk inside the snapshot tree, through the CLI, checked by what a user and
 * QEMU see: the guest's `ls` and `cat` after a revert and after a cold boot (the disk itself,
 * not the guest's memory), `qemu-img info --backing-chain` against `vmws snapshot list`,
 * `qemu-img check` on every image, the disk's content (`qemu-img convert`) unchanged by a
 * delete, the merge a delete chose and the space it said it needed, disk-only snapshots of a
 * powered-off VM, and kill -9 in the middle of a merge and during heavy writes. */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/e2e/e2e.h"

static char out[1 << 16];
static char seen[1 << 16];

static void vmws_ok(const char *what, int r)
{
    ck_assert_msg(r == 0, "%s failed (%d): %s", what, r, out);
}

static void guest(const char *vm, const char *cmd, const char *expect)
{
    ck_assert_msg(e2e_guest(vm, cmd, expect, seen, sizeof(seen)), "guest '%s': expected '%s'", cmd,
                  expect);
}

/* `ls` in the guest: every name in WANT shows, no name in UNWANTED does. */
static void guest_ls(const char *vm, const char *const *want, const char *const *unwanted)
{
    guest(vm, "ls", " file");
    for (; want && *want; want++)
        ck_assert_msg(strstr(seen, *want), "ls lacks %s: %s", *want, seen);
    for (; unwanted && *unwanted; unwanted++)
        ck_assert_msg(!strstr(seen, *unwanted), "ls shows %s: %s", *unwanted, seen);
}

static void start(const char *vm)
{
    vmws_ok("start", vmws_cmd(out, sizeof(out), 60, "start", vm, "--display", "none", NULL));
}

static void boot(const char *vm)
{
    vmws_ok("create",
            vmws_cmd(out, sizeof(out), 30, "create", vm, "--memory", "64M", "--disk", "16M", NULL));
    start(vm);
    guest(vm, "ls", "0 files");
}

static void poweroff(const char *vm)
{
    pid_t pid = vm_pid(vm);
    struct console *c = console_open(vm);
    ck_assert_msg(c && console_run(c, "poweroff", "powering off", 10000), "poweroff");
    console_close(c);
    ck_assert_msg(wait_pid_gone(pid, 10000), "VMM of %s still running after poweroff", vm);
}

static void snap(const char *sub, const char *vm, const char *label)
{
    vmws_ok(sub, vmws_cmd(out, sizeof(out), 120, "snapshot", sub, vm, label, NULL));
}

static void vm_file(const char *vm, const char *rel, char *path, size_t len)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s/%s", e2e_home(), vm, rel);
    if (!realpath(p, path))
        snprintf(path, len, "%s", p);
}

/* The image the VM writes, from the tree (vm.conf's disk.qcow2 until a snapshot exists). */
static void active_image(json_t *tree, const char *vm, char *path, size_t len)
{
    json_t *a = json_object_get(tree, "disk_active");
    vm_file(vm, json_is_string(a) ? json_string_value(a) : "disk.qcow2", path, len);
}

static json_t *find_node(json_t *tree, const char *id)
{
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(tree, "snapshots"), i, n)
    {
        if (strcmp(json_string_value(json_object_get(n, "id")), id) == 0)
            return n;
    }
    return NULL;
}

/* The chain `qemu-img info --backing-chain` reports equals the tree's path from the current
 * node to the root (the active image first), as real paths. */
static void chain_agrees(const char *vm)
{
    json_t *tree = vmws_json("snapshot", "list", vm, "--json", NULL);
    ck_assert_ptr_nonnull(tree);
    char want[8192] = "", path[PATH_MAX], cmd[PATH_MAX + 128];
    active_image(tree, vm, path, sizeof(path));
    snprintf(want, sizeof(want), "%s\n", path);
    snprintf(cmd, sizeof(cmd), "qemu-img info -U --backing-chain --output=json '%s'", path);
    json_t *cur = json_object_get(tree, "current");
    for (json_t *n = json_is_string(cur) ? find_node(tree, json_string_value(cur)) : NULL; n;) {
        vm_file(vm, json_string_value(json_object_get(n, "disk")), path, sizeof(path));
        strncat(want, path, sizeof(want) - strlen(want) - 2);
        strcat(want, "\n");
        json_t *p = json_object_get(n, "parent");
        n = json_is_string(p) ? find_node(tree, json_string_value(p)) : NULL;
    }
    json_decref(tree);
    FILE *f = popen(cmd, "r");
    size_t got = f ? fread(out, 1, sizeof(out) - 1, f) : 0;
    out[got] = 0;
    ck_assert_msg(f && pclose(f) == 0, "%s failed: %s", cmd, out);
    json_error_t je;
    json_t *chain = json_loads(out, 0, &je);
    ck_assert_msg(json_is_array(chain), "qemu-img info: %s", out);
    char have[8192] = "";
    size_t i;
    json_t *img;
    json_array_foreach(chain, i, img)
    {
        const char *fn = json_string_value(json_object_get(img, "filename"));
        if (!realpath(fn, path))
            snprintf(path, sizeof(path), "%s", fn);
        strncat(have, path, sizeof(have) - strlen(have) - 2);
        strcat(have, "\n");
    }
    json_decref(chain);
    ck_assert_msg(strcmp(have, want) == 0, "qemu-img's chain:\n%sthe tree's:\n%s", have, want);
}

/* `qemu-img check` is clean (leaks allowed: 3) on every image in the VM's folder, and the
 * snapshots folder holds no image the tree does not use (COUNT images in all). */
static void images_clean(const char *vm, int count)
{
    char dir[PATH_MAX], cmd[PATH_MAX * 2];
    int n = 0;
    for (int pass = 0; pass < 2; pass++) {
        snprintf(dir, sizeof(dir), "%s/%s%s", e2e_home(), vm, pass ? "/snapshots" : "");
        DIR *d = opendir(dir);
        ck_assert_ptr_nonnull(d);
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strstr(e->d_name, ".qcow2"))
                continue;
            n++;
            snprintf(cmd, sizeof(cmd), "qemu-img check -U '%s/%s' > /dev/null 2>&1", dir,
                     e->d_name);
            int rc = system(cmd);
            ck_assert_msg(WIFEXITED(rc) && (WEXITSTATUS(rc) == 0 || WEXITSTATUS(rc) == 3),
                          "qemu-img check %s/%s: status %d", dir, e->d_name, rc);
        }
        closedir(d);
    }
    if (count >= 0)
        ck_assert_msg(n == count, "%d disk images in %s's folder, expected %d", n, vm, count);
}

/* What the guest's disk reads, as QEMU reads the VM's active image: an md5 of its raw form. */
static void disk_digest(const char *vm, char *md5, size_t len)
{
    json_t *tree = vmws_json("snapshot", "list", vm, "--json", NULL);
    ck_assert_ptr_nonnull(tree);
    char path[PATH_MAX], cmd[PATH_MAX * 2];
    active_image(tree, vm, path, sizeof(path));
    json_decref(tree);
    snprintf(cmd, sizeof(cmd),
             "qemu-img convert -U -O raw '%s' '%s/digest.raw' && md5sum < '%s/digest.raw' && "
             "rm '%s/digest.raw'",
             path, e2e_home(), e2e_home(), e2e_home());
    FILE *f = popen(cmd, "r");
    ck_assert_msg(f && fgets(md5, (int)len, f) && strlen(md5) > 32, "%s", cmd);
    ck_assert_msg(pclose(f) == 0, "%s failed", cmd);
}

START_TEST(seed_002_experiment)
{
    e2e_setup();
    boot("s002");
    guest("s002", "touch snap-before", "vmws> ");
    snap("take", "s002", "before");
    guest("s002", "rm snap-before", "vmws> ");
    guest("s002", "touch snap-after", "vmws> ");
    guest("s002", "sync", "sync: done");
    snap("revert", "s002", "before");
    const char *before[] = {"snap-before", NULL}, *after[] = {"snap-after", NULL};
    guest_ls("s002", before, after);
    chain_agrees("s002");
    /* The disk itself, read by a freshly booted guest, not its memory. */
    poweroff("s002");
    start("s002");
    guest_ls("s002", before, after);
    /* The present before the revert was kept, disk and all. */
    snap("revert", "s002", "auto-before-before");
    guest_ls("s002", after, before);
    chain_agrees("s002");
    poweroff("s002");
    images_clean("s002", -1);
    e2e_teardown();
}
END_TEST

START_TEST(delete_commits_or_streams_whichever_needs_less)
{
    e2e_setup();
    boot("del");
    guest("del", "disk stress 400 1", "verified"); /* ~1 MiB of clusters in disk.qcow2 */
    guest("del", "write f1 one", "vmws> ");
    snap("take", "del", "s1");
    guest("del", "write f2 two", "vmws> ");
    snap("take", "del", "s2");
    guest("del", "write f3 three", "vmws> ");
    guest("del", "sync", "sync: done");
    chain_agrees("del");
    images_clean("del", 3);

    /* s1 (disk.qcow2, the stress data) has one image based on it, s2's, which holds a few
     * clusters: committing s2's into it needs less than streaming 1 MiB up. Live. */
    char before[64], after[64];
    disk_digest("del", before, sizeof(before));
    snap("delete", "del", "s1");
    ck_assert_msg(strstr(out, "committed into it"), "delete s1 chose: %s", out);
    disk_digest("del", after, sizeof(after));
    ck_assert_str_eq(before, after);
    chain_agrees("del");
    images_clean("del", 2);

    /* s3 gets its own 1 MiB; revert to it leaves two images on it (the kept present and the
     * new overlay): only streaming can remove it, and it says what that needs first. */
    /* (a second run over the same region reports the first run's sectors as mismatches) */
    guest("del", "disk stress 400 2", "disk stress: 400 writes");
    snap("take", "del", "s3");
    snap("revert", "del", "s3");
    poweroff("del");
    disk_digest("del", before, sizeof(before));
    /* The plan first: only streaming can remove s3, and it says what that needs. Then kill -9
     * after streaming into the first of the two images (before it stops naming s3's as its
     * backing file), and after the second (the first one already rebased): every image checks
     * clean, the chain still matches the tree, the disk reads the same, and the delete run
     * again finishes the job. */
    for (int k = 1; k <= 2; k++) {
        char at[32];
        snprintf(at, sizeof(at), "disk-streamed:%d", k);
        setenv("VMWS_CRASH_AT", at, 1);
        int r = vmws_cmd(out, sizeof(out), 60, "snapshot", "delete", "del", "s3", NULL);
        unsetenv("VMWS_CRASH_AT");
        ck_assert_msg(r != 0, "the delete was to be killed at %s: %s", at, out);
        if (k == 1) {
            ck_assert_msg(strstr(out, "streamed into the images based on it"), "delete s3: %s",
                          out);
            double mib = 0;
            const char *disk = strstr(out, ", disk ");
            ck_assert_msg(disk && sscanf(disk, ", disk %lf MiB", &mib) == 1 && mib >= 1.0,
                          "delete s3 should need over 1 MiB for two images: %s", out);
        }
        images_clean("del", -1);
        chain_agrees("del");
        disk_digest("del", after, sizeof(after));
        ck_assert_msg(strcmp(before, after) == 0, "killed at %s, the disk reads differently", at);
    }
    snap("delete", "del", "s3");
    ck_assert_msg(strstr(out, "deleted snapshot s3"), "delete s3 again: %s", out);
    disk_digest("del", after, sizeof(after));
    ck_assert_str_eq(before, after);
    chain_agrees("del");
    images_clean("del", 3);
    /* Every node still reads as it did: s2 has f1 and f2, not f3; the kept node has f3. */
    const char *s2_has[] = {"f1", "f2", NULL}, *s2_lacks[] = {"f3", NULL};
    snap("revert", "del", "s2");
    guest_ls("del", s2_has, s2_lacks);
    chain_agrees("del");
    poweroff("del");
    e2e_teardown();
}
END_TEST

START_TEST(powered_off_snapshots_are_disk_only)
{
    e2e_setup();
    boot("off");
    guest("off", "write note v1", "vmws> ");
    poweroff("off");
    snap("take", "off", "cold");
    ck_assert_msg(strstr(out, "disk-only"), "take of an off VM: %s", out);
    json_t *tree = vmws_json("snapshot", "list", "off", "--json", NULL);
    json_t *n = json_array_get(json_object_get(tree, "snapshots"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(n, "vm_state")), "off");
    ck_assert_int_le(json_integer_value(json_object_get(n, "memory_bytes")), 4096);
    ck_assert_str_eq(json_string_value(json_object_get(n, "disk")), "disk.qcow2");
    json_decref(tree);
    chain_agrees("off");

    start("off");
    guest("off", "write note v2", "vmws> ");
    guest("off", "sync", "sync: done");
    poweroff("off");
    snap("revert", "off", "cold"); /* off to off: the written disk is kept first */
    ck_assert_msg(strstr(out, "kept the disk as it was"), "revert: %s", out);
    start("off");
    guest("off", "cat note", "v1");
    poweroff("off");
    snap("revert", "off", "auto-before-cold");
    start("off");
    guest("off", "cat note", "v2");
    chain_agrees("off");
    poweroff("off");
    images_clean("off", -1);
    e2e_teardown();
}
END_TEST

START_TEST(kill_9_mid_merge_and_during_writes)
{
    e2e_setup();
    boot("k9");
    guest("k9", "disk stress 400 3", "verified");
    guest("k9", "write keep me", "vmws> ");
    snap("take", "k9", "s1");
    guest("k9", "write later on", "vmws> ");
    snap("take", "k9", "s2");
    poweroff("k9");
    char before[64], after[64];
    disk_digest("k9", before, sizeof(before));

    /* A delete that dies right after copying s2's image into s1's: s1 stays, marked as being
     * deleted, every image is consistent, and deleting it again finishes the job. */
    setenv("VMWS_CRASH_AT", "disk-committed", 1);
    int r = vmws_cmd(out, sizeof(out), 60, "snapshot", "delete", "k9", "s1", NULL);
    unsetenv("VMWS_CRASH_AT");
    ck_assert_msg(r != 0, "the delete was to be killed: %s", out);
    images_clean("k9", -1);
    json_t *tree = vmws_json("snapshot", "list", "k9", "--json", NULL);
    ck_assert_ptr_nonnull(tree);
    json_t *s1 = json_array_get(json_object_get(tree, "snapshots"), 0);
    ck_assert_msg(json_is_true(json_object_get(s1, "deleting")), "s1 not marked as deleting");
    json_decref(tree);
    r = vmws_cmd(out, sizeof(out), 60, "snapshot", "revert", "k9", "s1", NULL);
    ck_assert_msg(r != 0 && strstr(out, "being deleted"), "revert to a half-deleted node: %s", out);
    snap("delete", "k9", "s1");
    disk_digest("k9", after, sizeof(after));
    ck_assert_str_eq(before, after);
    chain_agrees("k9");
    images_clean("k9", 2);

    /* kill -9 while the guest writes into the overlay: images check clean, the tree loads, the
     * VM boots with what it synced. */
    start("k9");
    pid_t pid = vm_pid("k9");
    struct console *c = console_open("k9");
    console_send(c, "disk stress 1000000 4\n");
    usleep(1500 * 1000);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    ck_assert_msg(wait_pid_gone(pid, 10000), "VMM survived SIGKILL");
    console_close(c);
    images_clean("k9", 2);
    vmws_cmd(out, sizeof(out), 30, "kill", "k9", NULL);
    chain_agrees("k9");
    start("k9");
    guest("k9", "cat keep", "me");
    guest("k9", "cat later", "on");
    poweroff("k9");
    e2e_teardown();
}
END_TEST

static size_t count_auto(const char *vm, const char **newest)
{
    static char id[32];
    json_t *tree = vmws_json("snapshot", "list", vm, "--json", NULL);
    ck_assert_ptr_nonnull(tree);
    size_t i, n = 0;
    json_t *node;
    json_array_foreach(json_object_get(tree, "snapshots"), i, node)
    {
        if (json_is_true(json_object_get(node, "auto"))) {
            n++;
            snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(node, "id")));
        }
    }
    json_decref(tree);
    if (newest)
        *newest = id;
    return n;
}

/* Every revert keeps the present as an automatic node, disk image and all; prune deletes all
 * but the newest N of them and their images. */
START_TEST(prune_deletes_automatic_snapshots_and_their_images)
{
    e2e_setup();
    boot("pr");
    guest("pr", "write base b", "vmws> ");
    snap("take", "pr", "a");
    const char *newest = NULL;
    for (int i = 0; i < 3; i++) {
        char cmd[32];
        snprintf(cmd, sizeof(cmd), "write f%d x", i);
        guest("pr", cmd, "vmws> ");
        snap("revert", "pr", "a");
    }
    ck_assert_uint_eq(count_auto("pr", &newest), 3);
    char keep[32];
    snprintf(keep, sizeof(keep), "%s", newest);
    images_clean("pr", 5); /* disk.qcow2 (a), three kept presents, the active overlay */
    vmws_ok("prune",
            vmws_cmd(out, sizeof(out), 120, "snapshot", "prune", "pr", "--keep", "1", NULL));
    ck_assert_msg(strstr(out, "pruned 2 automatic snapshots"), "prune: %s", out);
    ck_assert_uint_eq(count_auto("pr", &newest), 1);
    ck_assert_str_eq(newest, keep);
    images_clean("pr", 3);
    chain_agrees("pr");
    snap("revert", "pr", keep); /* the one kept still holds its disk: f2 */
    guest("pr", "cat f2", "x");
    vmws_ok("prune", vmws_cmd(out, sizeof(out), 120, "snapshot", "prune", "pr", NULL));
    ck_assert_uint_eq(count_auto("pr", NULL), 0);
    chain_agrees("pr");
    poweroff("pr");
    e2e_teardown();
}
END_TEST

/* A tree.json whose disk paths leave the VM's folder is refused as corrupt, and the VM does not
 * start on a guess of which image is current. */
START_TEST(a_tree_naming_images_outside_the_vm_is_refused)
{
    e2e_setup();
    vmws_ok("create", vmws_cmd(out, sizeof(out), 30, "create", "bad", "--memory", "64M", "--disk",
                               "16M", NULL));
    snap("take", "bad", "cold");
    char path[PATH_MAX], cmd[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/bad/snapshots/tree.json", e2e_home());
    snprintf(cmd, sizeof(cmd), "sed -i 's|\"disk\": \"disk.qcow2\"|\"disk\": \"../../x\"|' '%s'",
             path);
    ck_assert_int_eq(system(cmd), 0);
    int r = vmws_cmd(out, sizeof(out), 30, "snapshot", "list", "bad", NULL);
    ck_assert_msg(r != 0 && strstr(out, "corrupt"), "list of a bad tree: %s", out);
    r = vmws_cmd(out, sizeof(out), 30, "start", "bad", "--display", "none", NULL);
    ck_assert_msg(r != 0 && strstr(out, "which disk image is current"), "start: %s", out);
    e2e_teardown();
}
END_TEST

/* A raw disk (qemu-img's, named in vm.conf) in the tree: qcow2 overlays on it, and deletes
 * that commit into the raw file, the guest's data intact and the chain as the tree says. */
START_TEST(a_raw_disk_takes_overlays_and_commits)
{
    e2e_setup();
    vmws_ok("create", vmws_cmd(out, sizeof(out), 30, "create", "raw", "--memory", "64M", NULL));
    char cmd[PATH_MAX * 2];
    snprintf(cmd, sizeof(cmd),
             "cd '%s/raw' && qemu-img create -q -f raw disk.raw 16M && "
             "printf '[disk]\\npath = disk.raw\\nformat = raw\\n' >> vm.conf",
             e2e_home());
    ck_assert_int_eq(system(cmd), 0);
    start("raw");
    guest("raw", "write f1 one", "vmws> ");
    snap("take", "raw", "s1");
    /* The overlay names its backing file's format: nothing is left to probing. */
    snprintf(cmd, sizeof(cmd),
             "qemu-img info -U --output=json '%s/raw/snapshots/disk-1.qcow2' | "
             "grep -q '\"backing-filename-format\": \"raw\"'",
             e2e_home());
    ck_assert_msg(system(cmd) == 0, "the overlay does not say its backing file is raw");
    guest("raw", "write f2 two", "vmws> ");
    snap("take", "raw", "s2");
    guest("raw", "write f3 three", "vmws> ");
    guest("raw", "sync", "sync: done");
    chain_agrees("raw");
    char before[64], after[64];
    disk_digest("raw", before, sizeof(before));
    snap("delete", "raw", "s1"); /* s2's overlay committed into disk.raw */
    ck_assert_msg(strstr(out, "committed into it"), "delete s1: %s", out);
    disk_digest("raw", after, sizeof(after));
    ck_assert_str_eq(before, after);
    chain_agrees("raw");
    snap("delete", "raw", "s2"); /* the running overlay committed into disk.raw */
    disk_digest("raw", after, sizeof(after));
    ck_assert_str_eq(before, after);
    json_t *tree = vmws_json("snapshot", "list", "raw", "--json", NULL);
    ck_assert_str_eq(json_string_value(json_object_get(tree, "disk_active")), "disk.raw");
    json_decref(tree);
    poweroff("raw");
    start("raw");
    guest("raw", "cat f1", "one");
    guest("raw", "cat f3", "three");
    poweroff("raw");
    images_clean("raw", 0);
    e2e_teardown();
}
END_TEST

/* Seed 004: a delete whose merge needs more free space than the filesystem has says so and
 * changes nothing (a 48 MiB tmpfs: two 18 MiB layers leave ~11 MiB, either merge needs 18). */
START_TEST(a_delete_without_the_space_is_refused_and_changes_nothing)
{
    e2e_setup();
    char small[512], cmd[4096], before[64], after[64];
    snprintf(small, sizeof(small), "%s/small", e2e_home());
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && mount -t tmpfs -o size=48M tmpfs '%s'", small,
             small);
    ck_assert_msg(system(cmd) == 0, "cannot mount a small tmpfs (the test needs root)");
    setenv("VMWS_HOME", small, 1);
    vmws_ok("create", vmws_cmd(out, sizeof(out), 30, "create", "sp", "--memory", "64M", "--disk",
                               "40M", NULL));
    snprintf(cmd, sizeof(cmd), "qemu-io -c 'write -P 0x11 0 18M' '%s/sp/disk.qcow2' >/dev/null",
             small);
    ck_assert_int_eq(system(cmd), 0);
    snap("take", "sp", "s1");
    snprintf(cmd, sizeof(cmd),
             "qemu-io -c 'write -P 0x22 18M 18M' '%s/sp/snapshots/disk-1.qcow2' >/dev/null", small);
    ck_assert_int_eq(system(cmd), 0);
    snap("take", "sp", "s2");
    const char *digest = "qemu-img convert -O raw '%s/sp/snapshots/disk-2.qcow2' '%s/d.raw' && "
                         "md5sum < '%s/d.raw' && rm '%s/d.raw'";
    char *sums[2] = {before, after};
    for (int i = 0; i < 2; i++) {
        if (i == 1) {
            int r = vmws_cmd(out, sizeof(out), 60, "snapshot", "delete", "sp", "s1", NULL);
            ck_assert_msg(r != 0 && strstr(out, "needs") && strstr(out, "MiB free"),
                          "delete without the space: %s", out);
        }
        snprintf(cmd, sizeof(cmd), digest, small, e2e_home(), e2e_home(), e2e_home());
        FILE *f = popen(cmd, "r");
        ck_assert_msg(f && fgets(sums[i], 64, f), "%s", cmd);
        pclose(f);
    }
    ck_assert_str_eq(before, after);
    json_t *tree = vmws_json("snapshot", "list", "sp", "--json", NULL);
    json_t *s1 = json_array_get(json_object_get(tree, "snapshots"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(s1, "label")), "s1");
    ck_assert(!json_is_true(json_object_get(s1, "deleting")));
    json_decref(tree);
    snprintf(cmd, sizeof(cmd),
             "qemu-img check '%s/sp/disk.qcow2' >/dev/null && "
             "qemu-img check '%s/sp/snapshots/disk-1.qcow2' >/dev/null && umount '%s'",
             small, small, small);
    ck_assert_int_eq(system(cmd), 0);
    e2e_teardown();
}
END_TEST

/* A snapshot's disk image that became corrupt: reverting to it fails with a clear error and the
 * VMM lives (the guest's disk, which reads through that image too, reports I/O errors), and a
 * revert to a healthy snapshot brings the disk back. */
START_TEST(a_corrupt_image_is_refused_and_the_vmm_lives)
{
    e2e_setup();
    boot("cor");
    guest("cor", "write a 1", "vmws> ");
    snap("take", "cor", "s1");
    guest("cor", "write b 2", "vmws> ");
    snap("take", "cor", "s2");
    json_t *tree = vmws_json("snapshot", "list", "cor", "--json", NULL);
    json_t *s2 = json_array_get(json_object_get(tree, "snapshots"), 1);
    char path[PATH_MAX];
    vm_file("cor", json_string_value(json_object_get(s2, "disk")), path, sizeof(path));
    json_decref(tree);
    FILE *f = fopen(path, "r+b"); /* the L1 table's offset: far past the end of the file */
    ck_assert_ptr_nonnull(f);
    fseek(f, 40, SEEK_SET);
    fwrite("\xff\xff\xff\xff\xff\xff\xff\xff", 1, 8, f);
    fclose(f);
    pid_t pid = vm_pid("cor");
    int r = vmws_cmd(out, sizeof(out), 60, "snapshot", "revert", "cor", "s2", NULL);
    ck_assert_msg(r != 0 && strstr(out, "L1 table"), "revert to a corrupt image: %s", out);
    ck_assert_msg(kill(pid, 0) == 0, "the VMM died");
    snap("revert", "cor", "s1");
    guest("cor", "cat a", "1");
    guest("cor", "cat b", "no such file");
    ck_assert_msg(kill(pid, 0) == 0, "the VMM died");
    poweroff("cor");
    e2e_teardown();
}
END_TEST

/* Offline work on a powered-off VM holds its pidfile lock as a running VMM does: while another
 * process holds it (a VMM starting, another operation), a snapshot operation refuses. */
START_TEST(offline_operations_lock_the_vm)
{
    e2e_setup();
    vmws_ok("create", vmws_cmd(out, sizeof(out), 30, "create", "lk", "--memory", "64M", "--disk",
                               "16M", NULL));
    char pidfile[PATH_MAX];
    snprintf(pidfile, sizeof(pidfile), "%s/lk/vmm.pid", e2e_home());
    int fd = open(pidfile, O_RDWR | O_CREAT, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(flock(fd, LOCK_EX), 0);
    int r = vmws_cmd(out, sizeof(out), 30, "snapshot", "take", "lk", "a", NULL);
    ck_assert_msg(r != 0 && strstr(out, "is busy"), "take while the VM is locked: %s", out);
    close(fd);
    snap("take", "lk", "a");
    snap("delete", "lk", "a");
    e2e_teardown();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("disk snapshots");
    TCase *tc = tcase_create("e2e");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, seed_002_experiment);
    tcase_add_test(tc, delete_commits_or_streams_whichever_needs_less);
    tcase_add_test(tc, powered_off_snapshots_are_disk_only);
    tcase_add_test(tc, kill_9_mid_merge_and_during_writes);
    tcase_add_test(tc, a_tree_naming_images_outside_the_vm_is_refused);
    tcase_add_test(tc, prune_deletes_automatic_snapshots_and_their_images);
    tcase_add_test(tc, offline_operations_lock_the_vm);
    tcase_add_test(tc, a_corrupt_image_is_refused_and_the_vmm_lives);
    tcase_add_test(tc, a_raw_disk_takes_overlays_and_commits);
    tcase_add_test(tc, a_delete_without_the_space_is_refused_and_changes_nothing);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
