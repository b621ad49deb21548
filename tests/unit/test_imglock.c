/* Image locks against real QEMU (core/storage/imglock.c): while vmws has an image open, qemu-io,
 * qemu-img and qemu-system-x86_64 refuse what they would refuse if a QEMU VM had it open, and
 * vmws refuses images QEMU is writing, with a message that says so. Read-only opens (backing
 * files, a snapshot's frozen image) never get in each other's way, and a closed image is free
 * again. Every verdict here is QEMU's own exit status and message. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/storage/disk.h"
#include "core/storage/imglock.h"

static char tmpdir[64];
static char out[8192]; /* the last sh() command's output */

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/vmws-test-imglock.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static const char *tpath(const char *name)
{
    static char bufs[8][256];
    static unsigned next;
    char *b = bufs[next++ % 8];
    snprintf(b, 256, "%s/%s", tmpdir, name);
    return b;
}

/* Runs a shell command in tmpdir; its output (stdout and stderr) lands in `out`. Returns the
 * exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048], full[2300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "cd '%s' && (%s) 2>&1", tmpdir, cmd);
    FILE *p = popen(full, "r");
    ck_assert_ptr_nonnull(p);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs CMD, which must fail with MESSAGE in its output (QEMU's lock error). */
static void assert_qemu_refuses(const char *cmd, const char *message)
{
    int st = sh("%s", cmd);
    ck_assert_msg(st != 0, "'%s' succeeded; it should have been refused: %s", cmd, out);
    ck_assert_msg(strstr(out, message), "'%s' failed without '%s': %s", cmd, message, out);
}

static void assert_qemu_allows(const char *cmd)
{
    int st = sh("%s", cmd);
    ck_assert_msg(st == 0, "'%s' failed (%d): %s", cmd, st, out);
}

/* Which of QEMU's lock bytes (100-103: permissions held, 200-203: not shared) other processes
 * hold on PATH, one bit each. */
static unsigned lock_bytes_held(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    unsigned held = 0;
    for (unsigned i = 0; i < 8; i++) {
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 1};
        fl.l_start = (i < 4 ? 100 : 196) + i;
        ck_assert_int_eq(fcntl(fd, F_OFD_GETLK, &fl), 0);
        if (fl.l_type != F_UNLCK)
            held |= 1u << i;
    }
    close(fd);
    return held;
}

/* Waits (10 s at most) until another process has IMAGE open: it holds byte 100 (every QEMU
 * opener that reads does) and its locks have not changed for 200 ms (QEMU adjusts them in
 * steps while it builds its block graph). PID must keep running meanwhile. */
static void wait_opened(pid_t pid, const char *image)
{
    unsigned last = 0, stable = 0;
    for (int i = 0; i < 1000 && !((last & 1) && stable >= 20); i++) {
        int st;
        ck_assert_msg(waitpid(pid, &st, WNOHANG) == 0, "QEMU exited before opening %s", image);
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
        unsigned now = lock_bytes_held(tpath(image));
        stable = now == last ? stable + 1 : 0;
        last = now;
    }
    ck_assert_msg((last & 1) && stable >= 20, "QEMU did not open %s in 10 s", image);
}

/* Starts CMD (in tmpdir, under `timeout` so a failed test leaves nothing running for long) in
 * the background and waits until it has IMAGE (and BACKING, if not NULL) open. */
static pid_t start_qemu(const char *image, const char *backing, const char *cmd)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (chdir(tmpdir) < 0)
            _exit(126);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        char full[1024];
        snprintf(full, sizeof(full), "exec timeout 60 %s", cmd);
        execl("/bin/sh", "sh", "-c", full, (char *)NULL);
        _exit(127);
    }
    wait_opened(pid, image);
    if (backing)
        wait_opened(pid, backing);
    return pid;
}

static void stop_qemu(pid_t pid)
{
    kill(pid, SIGTERM);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
}

/* An image whose open must fail: the error names the image and the other process. */
static void assert_vmws_refused(const char *name, bool read_only)
{
    char err[512] = "";
    struct disk *d = disk_open(tpath(name), read_only, err, sizeof(err));
    ck_assert_msg(d == NULL, "vmws opened %s %s while QEMU has it", name,
                  read_only ? "read-only" : "writable");
    ck_assert_msg(strstr(err, "in use by another process (QEMU or another vmws VM)"),
                  "unclear error: %s", err);
    ck_assert_msg(strstr(err, tpath(name)), "error does not name the image: %s", err);
}

static struct disk *vmws_open(const char *name, bool read_only)
{
    char err[512] = "";
    struct disk *d = disk_open(tpath(name), read_only, err, sizeof(err));
    ck_assert_msg(d != NULL, "vmws cannot open %s %s: %s", name,
                  read_only ? "read-only" : "writable", err);
    return d;
}

/* base.qcow2 <- top.qcow2, as a VM's disk after one snapshot; and r.raw. */
static void make_images(void)
{
    ck_assert_int_eq(sh("qemu-img create -q -f qcow2 base.qcow2 16M && "
                        "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 && "
                        "qemu-img create -q -f raw r.raw 16M"),
                     0);
}

#define QEMU_NO_WRITE "Failed to get \"write\" lock"
#define QEMU_NO_SHARED_WRITE "Failed to get shared \"write\" lock"

/* vmws runs a VM on top.qcow2: QEMU may neither write it, nor open it as it normally does to
 * read (that needs the writer to hold still), nor write the backing file under it; -U
 * (force-share) still reads. Closed, the images are QEMU's again. */
START_TEST(test_vmws_writer_keeps_qemu_off_qcow2)
{
    make_images();
    struct disk *d = vmws_open("top.qcow2", false);
    assert_qemu_refuses("qemu-io -c 'write 0 4k' top.qcow2", QEMU_NO_WRITE);
    assert_qemu_refuses("qemu-io -r -c 'read 0 4k' top.qcow2", QEMU_NO_SHARED_WRITE);
    assert_qemu_refuses("qemu-img info top.qcow2", QEMU_NO_SHARED_WRITE);
    assert_qemu_allows("qemu-img info -U top.qcow2");
    assert_qemu_refuses("qemu-img commit top.qcow2", QEMU_NO_WRITE);
    assert_qemu_refuses("qemu-img check top.qcow2", QEMU_NO_SHARED_WRITE);
    /* The backing file is open read-only under the VM: readable, not writable. */
    assert_qemu_refuses("qemu-io -c 'write 0 4k' base.qcow2", QEMU_NO_WRITE);
    assert_qemu_allows("qemu-io -r -c 'read 0 4k' base.qcow2");
    assert_qemu_allows("qemu-img info base.qcow2");
    ck_assert_int_eq(disk_close(d), 0);

    assert_qemu_allows("qemu-io -c 'write -P 0x5a 0 4k' top.qcow2");
    assert_qemu_allows("qemu-img commit top.qcow2");
    assert_qemu_allows("qemu-io -r -c 'read -P 0x5a 0 4k' base.qcow2");
}
END_TEST

/* A raw image has no metadata, so QEMU only keeps writers off it (as against a QEMU VM). */
START_TEST(test_vmws_writer_keeps_qemu_off_raw)
{
    make_images();
    struct disk *d = vmws_open("r.raw", false);
    assert_qemu_refuses("qemu-io -f raw -c 'write 0 4k' r.raw", QEMU_NO_WRITE);
    assert_qemu_allows("qemu-img info r.raw");
    ck_assert_int_eq(disk_close(d), 0);
    assert_qemu_allows("qemu-io -f raw -c 'write 0 4k' r.raw");
}
END_TEST

/* qemu-io is writing: vmws opens it neither writable nor read-only (its reads could see
 * half-written metadata), the same verdict QEMU gives a second reader. */
START_TEST(test_qemu_writer_keeps_vmws_off)
{
    make_images();
    pid_t q = start_qemu("top.qcow2", "base.qcow2", "qemu-io -c 'sleep 30000' top.qcow2");
    assert_vmws_refused("top.qcow2", false);
    assert_vmws_refused("top.qcow2", true);
    assert_qemu_refuses("qemu-io -r -c 'read 0 4k' top.qcow2", QEMU_NO_SHARED_WRITE);
    /* and the backing file it reads is not vmws's to write */
    assert_vmws_refused("base.qcow2", false);
    ck_assert_int_eq(disk_close(vmws_open("base.qcow2", true)), 0);
    stop_qemu(q);
    ck_assert_int_eq(disk_close(vmws_open("top.qcow2", false)), 0);

    q = start_qemu("r.raw", NULL, "qemu-io -f raw -c 'sleep 30000' r.raw");
    assert_vmws_refused("r.raw", false);
    assert_vmws_refused("r.raw", true);
    stop_qemu(q);
    ck_assert_int_eq(disk_close(vmws_open("r.raw", false)), 0);
}
END_TEST

/* A QEMU VM (stopped with -S, drive attached) on top.qcow2 keeps vmws off the same way. */
START_TEST(test_qemu_vm_keeps_vmws_off)
{
    if (system("qemu-system-x86_64 --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "qemu-system-x86_64 not installed: QEMU VM case not run\n");
        return;
    }
    make_images();
    pid_t q = start_qemu("top.qcow2", "base.qcow2",
                         "qemu-system-x86_64 -S -display none -nodefaults "
                         "-machine accel=tcg -monitor none -serial none "
                         "-drive file=top.qcow2,if=virtio,format=qcow2");
    assert_vmws_refused("top.qcow2", false);
    assert_vmws_refused("top.qcow2", true);
    assert_vmws_refused("base.qcow2", false);
    ck_assert_int_eq(disk_close(vmws_open("base.qcow2", true)), 0);
    stop_qemu(q);
    ck_assert_int_eq(disk_close(vmws_open("top.qcow2", false)), 0);
}
END_TEST

/* A reader (qemu-io -r) of a qcow2 image lets vmws read along but not write. (A raw image's
 * read-only user in QEMU lets writers in, and so does vmws's lock against it.) */
START_TEST(test_qemu_reader_allows_vmws_readers_only)
{
    make_images();
    pid_t q = start_qemu("base.qcow2", NULL, "qemu-io -r -c 'sleep 30000' base.qcow2");
    assert_vmws_refused("base.qcow2", false);
    struct disk *r = vmws_open("base.qcow2", true);
    struct disk *top = vmws_open("top.qcow2", false); /* base only as its backing file */
    ck_assert_int_eq(disk_close(top), 0);
    ck_assert_int_eq(disk_close(r), 0);
    stop_qemu(q);
}
END_TEST

/* Within one vmws process, two opens are two lockers: read-only ones (a snapshot's frozen image
 * read while the VM runs on an overlay above it) coexist; a writer waits for all of them. */
START_TEST(test_vmws_readers_share)
{
    make_images();
    struct disk *top = vmws_open("top.qcow2", false);
    struct disk *a = vmws_open("base.qcow2", true);
    struct disk *b = vmws_open("base.qcow2", true);
    assert_qemu_allows("qemu-io -r -c 'read 0 4k' base.qcow2");
    char err[512] = "";
    ck_assert_ptr_null(disk_open(tpath("base.qcow2"), false, err, sizeof(err)));
    ck_assert_msg(strstr(err, "in use by another process"), "%s", err);
    ck_assert_ptr_null(disk_open(tpath("top.qcow2"), true, err, sizeof(err)));
    ck_assert_int_eq(disk_close(top), 0);
    ck_assert_int_eq(disk_close(a), 0);
    ck_assert_ptr_null(disk_open(tpath("base.qcow2"), false, err, sizeof(err)));
    ck_assert_int_eq(disk_close(b), 0);
    ck_assert_int_eq(disk_close(vmws_open("base.qcow2", false)), 0);

    struct disk *r1 = vmws_open("r.raw", true), *r2 = vmws_open("r.raw", true);
    assert_qemu_refuses("qemu-io -f raw -c 'write 0 4k' r.raw", QEMU_NO_WRITE);
    ck_assert_int_eq(disk_close(r1), 0);
    ck_assert_int_eq(disk_close(r2), 0);
    assert_qemu_allows("qemu-io -f raw -c 'write 0 4k' r.raw");
}
END_TEST

/* A refused acquire leaves its fd holding nothing, so the fd does not keep QEMU out later. */
START_TEST(test_refused_acquire_leaves_no_locks)
{
    make_images();
    pid_t q = start_qemu("base.qcow2", NULL, "qemu-io -r -c 'sleep 30000' base.qcow2");
    int fd = open(tpath("base.qcow2"), O_RDWR | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    char err[512] = "";
    ck_assert_int_eq(imglock_acquire(fd, tpath("base.qcow2"), true, err, sizeof(err)), -EAGAIN);
    ck_assert_msg(strstr(err, "does not let others write it"), "%s", err);
    stop_qemu(q);
    assert_qemu_allows("qemu-io -c 'write 0 4k' base.qcow2");
    close(fd);
}
END_TEST

static void add_case(Suite *s, const char *name, const TTest *test)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test);
    suite_add_tcase(s, tc);
}

int main(void)
{
    if (system("qemu-img --version >/dev/null 2>&1 && qemu-io --version >/dev/null 2>&1") != 0) {
        fprintf(stderr, "SKIP: qemu-img/qemu-io not installed (Debian: qemu-utils)\n");
        return 77;
    }
    Suite *s = suite_create("imglock");
    add_case(s, "vmws-writer-qcow2", test_vmws_writer_keeps_qemu_off_qcow2);
    add_case(s, "vmws-writer-raw", test_vmws_writer_keeps_qemu_off_raw);
    add_case(s, "qemu-writer", test_qemu_writer_keeps_vmws_off);
    add_case(s, "qemu-vm", test_qemu_vm_keeps_vmws_off);
    add_case(s, "qemu-reader", test_qemu_reader_allows_vmws_readers_only);
    add_case(s, "vmws-readers", test_vmws_readers_share);
    add_case(s, "refused-acquire", test_refused_acquire_leaves_no_locks);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
