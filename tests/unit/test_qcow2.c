/* Tests of the qcow2 library (core/storage/qcow2.c) and the disk front (core/storage/disk.c) with
 * real QEMU as the peer: images made and filled by qemu-img/qemu-io read back right through us;
 * images we write (random I/O over a backing file, 512 B to 2 MiB clusters, L2 and refcount table
 * growth) pass `qemu-img check` and convert to exactly what a raw reference model holds; crashes at
 * every write/flush (and reorderings between flushes) leave at worst leaks; hostile headers
 * and tables give clear errors. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/storage/disk.h"
#include "core/storage/qcow2.h"

#define KIB (1ull << 10)
#define MIB (1ull << 20)

static char tmpdir[64];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/vmws-test-qcow2.XXXXXX");
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

/* Runs a shell command (output kept in tmpdir/out-PID.txt); returns its exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    char full[4400];
    snprintf(full, sizeof(full), "cd '%s' && (%s) >out-%d.txt 2>&1", tmpdir, cmd, (int)getpid());
    int st = system(full);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    if (len)
        *len = (size_t)n;
    return b;
}

/* qemu-img check's verdict: 0 clean, 2 corrupt, 3 leaks only. */
static int qemu_check(const char *img)
{
    int st = sh("qemu-img check '%s'", img);
    if (st != 0 && st != 3) {
        char name[32];
        snprintf(name, sizeof(name), "out-%d.txt", (int)getpid());
        char *out = slurp(tpath(name), NULL);
        fprintf(stderr, "qemu-img check %s -> %d:\n%s\n", img, st, out);
        free(out);
    }
    return st;
}

/* What QEMU says the guest sees: qemu-img convert to raw. */
static uint8_t *qemu_contents(const char *img, uint64_t size)
{
    ck_assert_int_eq(sh("rm -f conv.raw && qemu-img convert -O raw '%s' conv.raw", img), 0);
    size_t n;
    uint8_t *b = (uint8_t *)slurp(tpath("conv.raw"), &n);
    ck_assert_uint_eq(n, size);
    return b;
}

static uint8_t *our_contents(struct disk *d)
{
    uint64_t size = disk_size(d);
    uint8_t *b = malloc(size);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(disk_read(d, 0, b, size), 0);
    return b;
}

static void assert_same(const uint8_t *a, const uint8_t *b, uint64_t size, const char *what)
{
    for (uint64_t i = 0; i < size; i++)
        if (a[i] != b[i])
            ck_abort_msg("%s: first difference at byte %llu (0x%02x vs 0x%02x)", what,
                         (unsigned long long)i, a[i], b[i]);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rnd() >> 24);
}

/* Reads the image through us and through qemu-img convert and compares both with `model`. */
static void assert_image_holds(const char *img, const uint8_t *model, uint64_t size)
{
    char err[512] = "";
    struct disk *d = disk_open(img, true, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    ck_assert_uint_eq(disk_size(d), size);
    uint8_t *ours = our_contents(d);
    ck_assert_int_eq(disk_close(d), 0);
    uint8_t *theirs = qemu_contents(img, size);
    assert_same(theirs, model, size, "qemu-img convert vs model");
    assert_same(ours, model, size, "our read vs model");
    free(ours);
    free(theirs);
}

START_TEST(test_reads_qemu_made_images)
{
    /* A raw base, a qcow2 over nothing, a qcow2 over the raw, a qcow2 over a qcow2 (relative
     * backing name), all filled by qemu-io; 64 KiB clusters (qemu-img's default). */
    ck_assert_int_eq(sh("qemu-img create -q -f raw base.raw 6M && "
                        "qemu-io -f raw -c 'write -P 0x11 0 6M' base.raw"),
                     0);
    ck_assert_int_eq(sh("qemu-img create -q -f qcow2 a.qcow2 8M && qemu-io -f qcow2 "
                        "-c 'write -P 0xab 0 1M' -c 'write -P 0xcd 3M 100k' "
                        "-c 'write -z 512k 64k' -c 'write -P 0x5a 7M 1k' a.qcow2"),
                     0);
    ck_assert_int_eq(sh("qemu-img create -q -f qcow2 -b base.raw -F raw b.qcow2 8M && qemu-io "
                        "-f qcow2 -c 'write -P 0x22 100k 3k' -c 'write -z 2M 128k' "
                        "-c 'discard 4M 64k' b.qcow2"),
                     0);
    ck_assert_int_eq(sh("qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 c.qcow2 && qemu-io "
                        "-f qcow2 -c 'write -P 0x33 1000 5000' -c 'write -P 0x44 3070k 20k' "
                        "c.qcow2"),
                     0);
    const char *imgs[] = {"a.qcow2", "b.qcow2", "c.qcow2"};
    for (unsigned i = 0; i < 3; i++) {
        char err[512] = "";
        struct disk *d = disk_open(tpath(imgs[i]), true, err, sizeof(err));
        ck_assert_msg(d != NULL, "%s", err);
        ck_assert_str_eq(disk_format(d), "qcow2");
        ck_assert_uint_eq(disk_size(d), 8 * MIB);
        uint8_t *ours = our_contents(d);
        uint8_t *theirs = qemu_contents(tpath(imgs[i]), 8 * MIB);
        assert_same(ours, theirs, 8 * MIB, imgs[i]);
        if (i == 0) {
            ck_assert_uint_eq(ours[0], 0xab);
            ck_assert_uint_eq(ours[512 * KIB + 5], 0);
            ck_assert_uint_eq(ours[3 * MIB + 99 * KIB], 0xcd);
            ck_assert_uint_eq(ours[7 * MIB], 0x5a);
        } else if (i == 1) {
            ck_assert_uint_eq(ours[0], 0x11);         /* from the raw backing */
            ck_assert_uint_eq(ours[100 * KIB], 0x22); /* ours */
            ck_assert_uint_eq(ours[2 * MIB + 1], 0);  /* zero cluster over backing data */
            ck_assert_uint_eq(ours[7 * MIB], 0);      /* past the backing file's end */
        } else {
            ck_assert_uint_eq(ours[999], 0xab);
            ck_assert_uint_eq(ours[1000], 0x33);
            ck_assert_uint_eq(ours[3 * MIB + 99 * KIB], 0xcd);
            ck_assert_uint_eq(ours[3 * MIB], 0x44);
        }
        free(ours);
        free(theirs);
        ck_assert_int_eq(disk_close(d), 0);
    }
    /* A raw file is probed as raw. */
    char err[512];
    struct disk *d = disk_open(tpath("base.raw"), true, err, sizeof(err));
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(disk_format(d), "raw");
    ck_assert_uint_eq(disk_size(d), 6 * MIB);
    disk_close(d);
}
END_TEST

START_TEST(test_writes_into_qemu_made_image)
{
    /* Partial writes into qemu's image over a raw backing: copy-on-write from the backing. */
    ck_assert_int_eq(sh("qemu-img create -q -f raw base.raw 4M && "
                        "qemu-io -f raw -c 'write -P 0x77 0 4M' base.raw && "
                        "qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2 && "
                        "qemu-io -f qcow2 -c 'write -P 0x21 64k 64k' top.qcow2"),
                     0);
    uint64_t size = 4 * MIB;
    uint8_t *model = qemu_contents(tpath("top.qcow2"), size);
    char err[512] = "";
    struct disk *d = disk_open(tpath("top.qcow2"), false, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    uint8_t buf[300 * 1024];
    for (int i = 0; i < 40; i++) {
        uint64_t len = 1 + rnd() % sizeof(buf);
        uint64_t off = rnd() % (size - len);
        fill_random(buf, len);
        ck_assert_int_eq(disk_write(d, off, buf, len), 0);
        memcpy(model + off, buf, len);
    }
    ck_assert_int_eq(disk_close(d), 0);
    ck_assert_int_eq(qemu_check(tpath("top.qcow2")), 0);
    assert_image_holds(tpath("top.qcow2"), model, size);
    free(model);
}
END_TEST

/* disk_set_backing is `qemu-img rebase -u`: on an image qemu-img made (with its own header
 * extensions), QEMU then reads the new backing file, format and name, the image stays clean,
 * the image's own clusters keep their data, and what it lacks comes from the new file. */
START_TEST(test_set_backing_as_qemu_reads_it)
{
    ck_assert_int_eq(sh("qemu-img create -q -f raw a.raw 2M && "
                        "qemu-io -f raw -c 'write -P 0x11 0 2M' a.raw && "
                        "qemu-img create -q -f qcow2 b.qcow2 2M && "
                        "qemu-io -f qcow2 -c 'write -P 0x22 0 2M' b.qcow2 && "
                        "qemu-img create -q -f qcow2 -b a.raw -F raw top.qcow2 && "
                        "qemu-io -f qcow2 -c 'write -P 0x33 64k 64k' top.qcow2"),
                     0);
    ck_assert_int_eq(disk_set_backing(tpath("top.qcow2"), "b.qcow2", NULL), 0);
    ck_assert_int_eq(qemu_check(tpath("top.qcow2")), 0);
    ck_assert_int_eq(sh("qemu-img info --output=json top.qcow2 | grep -q "
                        "'\"backing-filename-format\": \"qcow2\"' && qemu-img info "
                        "--output=json top.qcow2 | grep -q '\"backing-filename\": \"b.qcow2\"'"),
                     0);
    uint8_t *got = qemu_contents(tpath("top.qcow2"), 2 * MIB);
    for (uint64_t i = 0; i < 2 * MIB; i++)
        ck_assert_msg(got[i] == (i >= 64 * 1024 && i < 128 * 1024 ? 0x33 : 0x22),
                      "byte %llu is 0x%02x", (unsigned long long)i, got[i]);
    free(got);
    /* And no backing file at all: what it lacks reads as zeroes. */
    ck_assert_int_eq(disk_set_backing(tpath("top.qcow2"), NULL, NULL), 0);
    ck_assert_int_eq(qemu_check(tpath("top.qcow2")), 0);
    got = qemu_contents(tpath("top.qcow2"), 2 * MIB);
    ck_assert_int_eq(got[0], 0);
    ck_assert_int_eq(got[64 * 1024], 0x33);
    free(got);
    char name[64];
    ck_assert_int_eq(disk_backing_name(tpath("top.qcow2"), name, sizeof(name)), 0);
    ck_assert_str_eq(name, "");
}
END_TEST

/* A header that fills cluster 0 (header_length 8 bytes short of a 512-byte cluster) leaves no
 * room for the backing format extension: disk_set_backing says so (-ENOSPC) and changes
 * nothing. It used to write the extension past the end of its cluster buffer first, and then
 * fail on the name (-ENAMETOOLONG): issue 14, finding 3. */
START_TEST(test_set_backing_refuses_a_full_header_cluster)
{
    ck_assert_int_eq(sh("qemu-img create -q -f raw a.raw 1M && "
                        "qemu-img create -q -f qcow2 -o cluster_size=512 full.qcow2 1M && "
                        "printf '\\000\\000\\001\\370' | "
                        "dd of=full.qcow2 bs=1 seek=100 conv=notrunc status=none && "
                        "cp full.qcow2 before.qcow2"),
                     0);
    ck_assert_int_eq(disk_set_backing(tpath("full.qcow2"), "a.raw", NULL), -ENOSPC);
    ck_assert_int_eq(sh("cmp -s full.qcow2 before.qcow2"), 0);
}
END_TEST

/* A raw image opened by probing refuses a write that would make it look like qcow2 next time
 * (whose header could then name any host file as its backing file), also when the magic
 * arrives in pieces; named raw, it takes it. */
START_TEST(test_probed_raw_refuses_a_qcow2_header)
{
    ck_assert_int_eq(sh("qemu-img create -q -f raw r.raw 1M"), 0);
    uint8_t sector[512] = {'Q', 'F', 'I', 0xfb};
    char err[256];
    struct disk *d = disk_open(tpath("r.raw"), false, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    ck_assert_int_eq(disk_write(d, 0, sector, sizeof(sector)), -EPERM);
    ck_assert_int_eq(disk_write(d, 512, sector, sizeof(sector)), 0);
    /* Split across writes, as a guest's descriptors split one request (issue 14, finding 1):
     * "QF" then "I\xfb", or the magic ending in a write at offset 1. */
    ck_assert_int_eq(disk_write(d, 0, "QF", 2), 0);
    ck_assert_int_eq(disk_write(d, 2, "I\xfb", 2), -EPERM);
    ck_assert_int_eq(disk_write(d, 1, "FI\xfb", 3), -EPERM);
    ck_assert_int_eq(disk_write(d, 0, "XF", 2), 0);
    ck_assert_int_eq(disk_write(d, 2, "I\xfb", 2), 0); /* "XFI\xfb" is no qcow2 */
    uint8_t head[4];
    ck_assert_int_eq(disk_read(d, 0, head, sizeof(head)), 0);
    ck_assert_int_eq(memcmp(head, "XFI\xfb", 4), 0);
    ck_assert_int_eq(disk_close(d), 0);
    d = disk_open_format(tpath("r.raw"), "raw", false, 0, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    ck_assert_int_eq(disk_write(d, 0, sector, sizeof(sector)), 0);
    ck_assert_int_eq(disk_close(d), 0);
}
END_TEST

START_TEST(test_compressed_clusters)
{
    /* qemu-img convert -c writes every cluster compressed (zlib); we read them, and writes or
     * zeroes over them move the cluster out and drop the compressed bytes' refcounts. */
    uint64_t size = 4 * MIB;
    ck_assert_int_eq(sh("qemu-img create -q -f raw src.raw 4M && qemu-io -f raw "
                        "-c 'write -P 0x3c 0 1M' -c 'write -P 0x7e 1M 5k' "
                        "-c 'write -P 0x01 3M 1M' src.raw && "
                        "qemu-img convert -c -O qcow2 -o cluster_size=4096 src.raw comp.qcow2"),
                     0);
    uint8_t *model = qemu_contents(tpath("src.raw"), size);
    assert_image_holds(tpath("comp.qcow2"), model, size);
    char err[512] = "";
    struct disk *d = disk_open(tpath("comp.qcow2"), false, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    uint8_t buf[10000];
    for (int i = 0; i < 60; i++) {
        uint64_t len = 1 + rnd() % sizeof(buf);
        uint64_t off = rnd() % (size - len);
        if (i % 4 == 3) {
            ck_assert_int_eq(disk_write_zeroes(d, off, len), 0);
            memset(model + off, 0, len);
        } else {
            fill_random(buf, len);
            ck_assert_int_eq(disk_write(d, off, buf, len), 0);
            memcpy(model + off, buf, len);
        }
    }
    ck_assert_int_eq(disk_close(d), 0);
    ck_assert_int_eq(qemu_check(tpath("comp.qcow2")), 0);
    assert_image_holds(tpath("comp.qcow2"), model, size);
    free(model);
}
END_TEST

/* Random writes, zeroes, discards and flushes on an image we create over a qcow2 backing. */
static void random_workload(uint32_t cluster_size, uint64_t size, int ops, uint64_t max_len,
                            uint64_t big_write)
{
    ck_assert_int_eq(sh("rm -f base.qcow2 top.qcow2 && "
                        "qemu-img create -q -f qcow2 base.qcow2 %llu && qemu-io -f qcow2 "
                        "-c 'write -P 0x5c 0 %llu' -c 'write -P 0x6d %llu 100k' base.qcow2",
                        (unsigned long long)size, (unsigned long long)(size / 3),
                        (unsigned long long)(size / 2)),
                     0);
    /* The backing is named relative to the overlay, as vmws will do. */
    ck_assert_int_eq(qcow2_create(tpath("top.qcow2"), 0, cluster_size, "base.qcow2", "qcow2"), 0);
    ck_assert_int_eq(qemu_check(tpath("top.qcow2")), 0);
    ck_assert_int_eq(sh("qemu-img info top.qcow2 | grep -q 'backing file: base.qcow2'"), 0);
    uint8_t *model = qemu_contents(tpath("base.qcow2"), size);

    char err[512] = "";
    struct disk *d = disk_open(tpath("top.qcow2"), false, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    ck_assert_uint_eq(disk_size(d), size);
    uint8_t *buf = malloc(big_write > max_len ? big_write : max_len);
    ck_assert_ptr_nonnull(buf);
    if (big_write) { /* enough clusters for new refcount blocks and a bigger refcount table */
        fill_random(buf, big_write);
        ck_assert_int_eq(disk_write(d, size - big_write, buf, big_write), 0);
        memcpy(model + size - big_write, buf, big_write);
    }
    for (int i = 0; i < ops; i++) {
        uint64_t len = 1 + rnd() % max_len;
        uint64_t off = rnd() % (size - len + 1);
        unsigned op = (unsigned)(rnd() % 10);
        if (op < 7) {
            fill_random(buf, len);
            ck_assert_int_eq(disk_write(d, off, buf, len), 0);
            memcpy(model + off, buf, len);
        } else if (op == 7) {
            ck_assert_int_eq(disk_write_zeroes(d, off, len), 0);
            memset(model + off, 0, len);
        } else if (op == 8) {
            ck_assert_int_eq(disk_discard(d, off, len), 0);
            memset(model + off, 0, len);
        } else {
            ck_assert_int_eq(disk_flush(d), 0);
        }
        if (i % 50 == 0) { /* read back a random range */
            uint64_t rl = 1 + rnd() % max_len, ro = rnd() % (size - rl + 1);
            ck_assert_int_eq(disk_read(d, ro, buf, rl), 0);
            assert_same(buf, model + ro, rl, "read back while writing");
        }
    }
    /* Out of range is refused. */
    ck_assert_int_eq(disk_write(d, size - 1, buf, 2), -EINVAL);
    ck_assert_int_eq(disk_read(d, size, buf, 1), -EINVAL);
    ck_assert_int_eq(disk_close(d), 0);
    free(buf);
    ck_assert_int_eq(qemu_check(tpath("top.qcow2")), 0);
    assert_image_holds(tpath("top.qcow2"), model, size);
    free(model);
}

START_TEST(test_random_io_64k_clusters)
{
    random_workload(64 * KIB, 24 * MIB, 300, 200 * KIB, 0);
}
END_TEST

START_TEST(test_random_io_512b_clusters_grow_refcounts)
{
    /* 512 B clusters: an L2 table maps 32 KiB, a refcount block counts 128 KiB, the first
     * refcount table 8 MiB; the 9 MiB write needs new blocks and a bigger table. */
    random_workload(512, 12 * MIB, 400, 20 * KIB, 9 * MIB);
}
END_TEST

START_TEST(test_random_io_2m_clusters)
{
    random_workload(2 * MIB, 32 * MIB, 60, 3 * MIB, 0);
}
END_TEST

START_TEST(test_create_plain_and_info)
{
    ck_assert_int_eq(disk_create_qcow2(tpath("new.qcow2"), 1ull << 40, NULL, NULL), 0);
    ck_assert_int_eq(disk_create_qcow2(tpath("new.qcow2"), 1 * MIB, NULL, NULL), -EEXIST);
    ck_assert_int_eq(disk_create_qcow2(tpath("odd.qcow2"), 1000, NULL, NULL), 0);
    ck_assert_int_eq(sh("qemu-img info odd.qcow2 | grep -q '(1024 bytes)'"), 0);
    ck_assert_int_eq(qemu_check(tpath("new.qcow2")), 0);
    ck_assert_int_eq(sh("qemu-img info new.qcow2 | grep -q 'virtual size: 1 TiB' && "
                        "qemu-img info new.qcow2 | grep -q 'cluster_size: 65536'"),
                     0);
    char err[512];
    struct disk *d = disk_open(tpath("new.qcow2"), false, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    uint8_t buf[4096];
    memset(buf, 0xee, sizeof(buf));
    /* Far apart: separate L2 tables. */
    ck_assert_int_eq(disk_write(d, 0, buf, sizeof(buf)), 0);
    ck_assert_int_eq(disk_write(d, (1ull << 40) - 4096, buf, sizeof(buf)), 0);
    ck_assert_int_eq(disk_close(d), 0);
    ck_assert_int_eq(qemu_check(tpath("new.qcow2")), 0);
    /* Header, refcount table and block, 32 KiB of L1, two L2 tables, two data clusters: the
     * clusters reserved for allocation were given back and the file's tail cut off. */
    struct stat st;
    ck_assert_int_eq(stat(tpath("new.qcow2"), &st), 0);
    ck_assert_uint_eq((uint64_t)st.st_size, 8 * 64 * KIB);
    ck_assert_int_eq(sh("qemu-io -f qcow2 -c 'read -P 0xee 0 4k' -c 'read -P 0xee 1099511623680 "
                        "4k' -c 'read -P 0 4k 60k' new.qcow2 | grep -q 'read 4096/4096'"),
                     0);
    ck_assert_int_eq(sh("qemu-io -f qcow2 -c 'read -P 0xee 0 4k' new.qcow2 | grep -q Pattern"), 1);
}
END_TEST

/* ---- crash simulation ---- */

/* Every write and flush of one run, so any crash's leftovers can be rebuilt from a copy of the
 * image as it was before the run. */
struct io_log {
    int n;
    struct io_op {
        enum qcow2_io_kind kind;
        uint64_t offset;
        size_t len;
        uint8_t *data;
    } op[4096];
};

static void log_hook(void *opaque, enum qcow2_io_kind kind, const void *buf, size_t len,
                     uint64_t offset)
{
    struct io_log *l = opaque;
    ck_assert_int_lt(l->n, 4096);
    struct io_op *o = &l->op[l->n++];
    o->kind = kind;
    o->offset = offset;
    o->len = len;
    o->data = NULL;
    if (kind == QCOW2_IO_WRITE) {
        o->data = malloc(len);
        ck_assert_ptr_nonnull(o->data);
        memcpy(o->data, buf, len);
    }
}

/* img = prefilled.qcow2 plus the kept logged operations: prefix mode keeps ops < cut;
 * reorder mode (only >= 0) keeps ops < floor and op `only`. Instead of copying the image each
 * time, the ranges the log touches are restored from prefilled.qcow2 first. */
static void rebuild(const struct io_log *l, const char *img, int cut, int floor, int only)
{
    static uint8_t tmp[256 * 1024];
    int orig = open(tpath("prefilled.qcow2"), O_RDONLY);
    int fd = open(tpath(img), O_RDWR);
    ck_assert_int_ge(orig, 0);
    if (fd < 0) {
        ck_assert_int_eq(sh("cp --sparse=always prefilled.qcow2 %s", img), 0);
        fd = open(tpath(img), O_RDWR);
    }
    ck_assert_int_ge(fd, 0);
    struct stat st;
    ck_assert_int_eq(fstat(orig, &st), 0);
    for (int i = 0; i < l->n; i++) {
        if (l->op[i].kind != QCOW2_IO_WRITE)
            continue;
        ck_assert_uint_le(l->op[i].len, sizeof(tmp));
        ssize_t n = pread(orig, tmp, l->op[i].len, (off_t)l->op[i].offset);
        ck_assert_int_ge(n, 0);
        if (n > 0)
            ck_assert_int_eq(pwrite(fd, tmp, (size_t)n, (off_t)l->op[i].offset), n);
    }
    ck_assert_int_eq(ftruncate(fd, st.st_size), 0);
    close(orig);
    for (int i = 0; i < l->n; i++) {
        bool keep = only >= 0 ? (i < floor || i == only) : i < cut;
        if (keep && l->op[i].kind == QCOW2_IO_WRITE)
            ck_assert_int_eq(pwrite(fd, l->op[i].data, l->op[i].len, (off_t)l->op[i].offset),
                             (ssize_t)l->op[i].len);
        if (keep && l->op[i].kind == QCOW2_IO_EXTEND)
            ck_assert_int_eq(ftruncate(fd, (off_t)l->op[i].offset), 0);
    }
    close(fd);
}

/* What the crash left must pass qemu-img check (leaks allowed) and open and read through us. */
static void assert_crash_harmless(const char *img, const char *what, int a, int b, bool flushed)
{
    int st = qemu_check(tpath(img));
    ck_assert_msg(st == 0 || st == 3, "%s %d/%d: qemu-img check says %d (corrupt)", what, a, b, st);
    char err[512] = "";
    struct qcow2 *r = qcow2_open(tpath(img), true, 0, err, sizeof(err));
    ck_assert_msg(r != NULL, "%s %d/%d: %s", what, a, b, err);
    static uint8_t buf[64 * 1024];
    ck_assert_int_eq(qcow2_read(r, 0, buf, sizeof(buf)), 0);
    ck_assert_int_eq(qcow2_read(r, 2 * MIB, buf, sizeof(buf)), 0);
    /* Backing data shows through where nothing was written; what the first flush covered
     * (and nothing later touched) is there. */
    ck_assert_int_eq(qcow2_read(r, 8192, buf, 4096), 0);
    for (int i = 0; i < 4096; i++)
        ck_assert_uint_eq(buf[i], 0x99);
    if (flushed) {
        ck_assert_int_eq(qcow2_read(r, 1 * MIB + 8192, buf, 11811), 0);
        for (int i = 0; i < 11811; i++)
            ck_assert_msg(buf[i] == 0x42, "%s %d/%d: flushed data lost at %d", what, a, b, i);
    }
    qcow2_close(r);
}

/* Runs `workload` once on a copy of prefilled.qcow2 with every write, size change and flush
 * logged, then checks every crash it could have suffered: each prefix of the operations, and
 * everything up to a flush plus any one later write alone. */
static void crash_matrix(void (*workload)(struct qcow2 *q, int *flush_mark, const struct io_log *),
                         int min_syncs)
{
    ck_assert_int_eq(sh("rm -f c0.qcow2 c1.qcow2 run.qcow2 && cp --sparse=always prefilled.qcow2 "
                        "run.qcow2"),
                     0);
    static struct io_log log;
    memset(&log, 0, sizeof(log));
    char err[512] = "";
    struct qcow2 *q = qcow2_open(tpath("run.qcow2"), false, 0, err, sizeof(err));
    ck_assert_msg(q != NULL, "%s", err);
    qcow2_set_io_hook(q, log_hook, &log);
    int flush_mark = 1 << 30;
    workload(q, &flush_mark, &log);
    ck_assert_int_eq(qcow2_close(q), 0);
    ck_assert_int_eq(qemu_check(tpath("run.qcow2")), 0);
    int syncs = 0;
    for (int i = 0; i < log.n; i++)
        syncs += log.op[i].kind == QCOW2_IO_SYNC;
    ck_assert_int_ge(syncs, min_syncs);

    /* qemu-img check dominates; two workers, each on its own copy. */
    pid_t workers[2];
    for (int w = 0; w < 2; w++) {
        workers[w] = fork();
        ck_assert_int_ge(workers[w], 0);
        if (workers[w] > 0)
            continue;
        char img[32];
        snprintf(img, sizeof(img), "c%d.qcow2", w);
        for (int cut = w; cut <= log.n; cut += 2) {
            rebuild(&log, img, cut, 0, -1);
            assert_crash_harmless(img, "crash after ops", cut, log.n, cut >= flush_mark);
        }
        int floor = 0;
        for (int k = 0; k < log.n; k++) {
            if (log.op[k].kind == QCOW2_IO_SYNC) {
                floor = k + 1;
                continue;
            }
            if (k % 2 != w)
                continue;
            rebuild(&log, img, 0, floor, k);
            assert_crash_harmless(img, "flushed up to op, then only op", floor, k,
                                  floor >= flush_mark);
        }
        _exit(0);
    }
    for (int w = 0; w < 2; w++) {
        int status;
        ck_assert_int_eq(waitpid(workers[w], &status, 0), workers[w]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "crash worker %d failed (its message is above)", w);
    }
    for (int i = 0; i < log.n; i++)
        free(log.op[i].data);
}

static uint8_t crash_buf[256 * 1024];

/* A partial write over the backing (copy-on-write), writes needing new L2 tables and refcount
 * blocks, a flush, zeroes, a discard and a write that may reuse the freed clusters. */
static void workload_allocations(struct qcow2 *q, int *flush_mark, const struct io_log *log)
{
    memset(crash_buf, 0x42, sizeof(crash_buf));
    ck_assert_int_eq(qcow2_write(q, 100, crash_buf, 700), 0);
    ck_assert_int_eq(qcow2_write(q, 1 * MIB + 3, crash_buf, 20000), 0);
    ck_assert_int_eq(qcow2_flush(q), 0);
    *flush_mark = log->n; /* a crash keeping the ops before this keeps the writes above */
    ck_assert_int_eq(qcow2_write_zeroes(q, 0, 4096), 0);
    ck_assert_int_eq(qcow2_write(q, 2 * MIB, crash_buf, 24 * KIB), 0);
    ck_assert_int_eq(qcow2_discard(q, 1 * MIB, 8192), 0);
    ck_assert_int_eq(qcow2_write(q, 1 * MIB, crash_buf, 1024), 0);
}

/* An allocation past what the first refcount table can count: new blocks, a new table. */
static void workload_table_growth(struct qcow2 *q, int *flush_mark, const struct io_log *log)
{
    (void)flush_mark;
    (void)log;
    memset(crash_buf, 0x42, sizeof(crash_buf));
    ck_assert_int_eq(qcow2_write(q, 2 * MIB, crash_buf, 24 * KIB), 0);
}

START_TEST(test_crash_at_every_step)
{
    /* 512 B clusters so that small workloads meet every kind of allocation: an L2 table maps
     * 32 KiB, a refcount block counts 128 KiB, the first refcount table 8 MiB. */
    ck_assert_int_eq(sh("qemu-img create -q -f raw base.raw 4M && "
                        "qemu-io -f raw -c 'write -P 0x99 0 4M' base.raw"),
                     0);
    ck_assert_int_eq(qcow2_create(tpath("prefilled.qcow2"), 4 * MIB, 512, "base.raw", "raw"), 0);
    crash_matrix(workload_allocations, 8);
    /* The same with 64 KiB clusters: the reserved clusters lie past the end of the file. */
    ck_assert_int_eq(sh("rm -f prefilled.qcow2"), 0);
    ck_assert_int_eq(qcow2_create(tpath("prefilled.qcow2"), 4 * MIB, 64 * KIB, "base.raw", "raw"),
                     0);
    crash_matrix(workload_allocations, 4);

    /* Prefill until the file is just short of 8 MiB, then cross it. */
    ck_assert_int_eq(sh("rm -f prefilled.qcow2"), 0);
    ck_assert_int_eq(qcow2_create(tpath("prefilled.qcow2"), 16 * MIB, 512, "base.raw", "raw"), 0);
    char err[512] = "";
    struct qcow2 *q = qcow2_open(tpath("prefilled.qcow2"), false, 0, err, sizeof(err));
    ck_assert_msg(q != NULL, "%s", err);
    memset(crash_buf, 0x17, sizeof(crash_buf));
    struct stat st;
    for (uint64_t off = 4 * MIB;;) {
        ck_assert_int_eq(stat(tpath("prefilled.qcow2"), &st), 0);
        if ((uint64_t)st.st_size >= 8 * MIB - 12 * KIB)
            break;
        size_t n = (uint64_t)st.st_size < 8 * MIB - 200 * KIB ? 32 * KIB : 2 * KIB;
        ck_assert_int_eq(qcow2_write(q, off, crash_buf, n), 0);
        off += n;
    }
    ck_assert_int_eq(qcow2_close(q), 0);
    ck_assert_int_eq(qemu_check(tpath("prefilled.qcow2")), 0);
    crash_matrix(workload_table_growth, 3);
    ck_assert_int_eq(sh("qemu-img info --output=json run.qcow2 | grep -q '\"cluster-size\": 512'"),
                     0);
}
END_TEST

/* ---- hostile images ---- */

static void patch(const char *img, uint64_t off, const void *bytes, size_t n)
{
    int fd = open(img, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, bytes, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static void patch_be32(const char *img, uint64_t off, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    patch(img, off, b, 4);
}

static void patch_be64(const char *img, uint64_t off, uint64_t v)
{
    patch_be32(img, off, (uint32_t)(v >> 32));
    patch_be32(img, off + 4, (uint32_t)v);
}

/* A fresh 1 MiB image with 64 KiB clusters and cluster 0 written: header 0, refcount table
 * at 64k, refcount block 128k, L1 192k, L2 table and data cluster after. */
static const char *fresh(void)
{
    const char *img = tpath("h.qcow2");
    unlink(img);
    ck_assert_int_eq(qcow2_create(img, 1 * MIB, 64 * KIB, NULL, NULL), 0);
    char err[256];
    struct disk *d = disk_open(img, false, err, sizeof(err));
    ck_assert_ptr_nonnull(d);
    uint8_t b[512];
    memset(b, 0x31, sizeof(b));
    ck_assert_int_eq(disk_write(d, 0, b, sizeof(b)), 0);
    ck_assert_int_eq(disk_close(d), 0);
    return img;
}

static void assert_refused(const char *img, bool read_only, const char *needle)
{
    char err[512] = "";
    struct disk *d = disk_open(img, read_only, err, sizeof(err));
    if (d)
        disk_close(d);
    ck_assert_msg(d == NULL, "hostile image (%s) was opened", needle);
    ck_assert_msg(strstr(err, needle) != NULL, "error '%s' does not mention '%s'", err, needle);
}

START_TEST(test_hostile_images)
{
    const char *img = fresh();
    ck_assert_int_eq(truncate(img, 50), 0);
    assert_refused(img, true, "truncated");

    img = fresh();
    patch_be64(img, 40, 1ull << 40); /* L1 offset beyond the file */
    assert_refused(img, true, "L1 table");

    img = fresh();
    patch_be64(img, 48, 0); /* refcount table over the header */
    assert_refused(img, true, "refcount table");

    img = fresh();
    patch_be64(img, 72, 1ull << 20); /* unknown incompatible feature */
    assert_refused(img, true, "unknown incompatible");

    img = fresh();
    patch_be32(img, 20, 40); /* cluster_bits 40 */
    assert_refused(img, true, "cluster_bits");

    img = fresh();
    patch_be32(img, 96, 5); /* 32-bit refcounts */
    assert_refused(img, false, "refcount_order");

    img = fresh();
    patch_be64(img, 72, 1); /* dirty: refused for writing, fine for reading */
    assert_refused(img, false, "dirty");
    char err[512] = "";
    struct disk *d = disk_open(img, true, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    disk_close(d);

    /* Autoclear bits (say, bitmaps we do not keep) are cleared when we open for writing. */
    img = fresh();
    patch_be64(img, 88, 1);
    d = disk_open(img, false, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    disk_close(d);
    ck_assert_int_eq(sh("qemu-img check -q h.qcow2 && od -An -tx1 -j88 -N8 h.qcow2 | "
                        "grep -q '00 00 00 00 00 00 00 00'"),
                     0);

    img = fresh();
    patch_be64(img, 72, 1ull << 4); /* extended L2 */
    assert_refused(img, true, "extended L2");

    img = fresh();
    patch_be32(img, 32, 1); /* encryption */
    assert_refused(img, true, "encrypted");

    img = fresh();
    patch_be32(img, 4, 2);
    assert_refused(img, true, "version 2");

    img = fresh();
    patch_be32(img, 36, 0x10000000); /* L1 of 2 GiB */
    assert_refused(img, true, "L1 table size");

    img = fresh();
    patch_be64(img, 64 * KIB, 0x12345); /* unaligned refcount block */
    assert_refused(img, true, "refcount table entry");

    /* Tables pointing at our own metadata: reads may return garbage, writes are refused and
     * the header survives. */
    img = fresh();
    uint64_t l2 = 256 * KIB;               /* the first cluster allocated after the L1 table */
    patch_be64(img, l2, (1ull << 63) | 0); /* data cluster 0 -> unallocated */
    patch_be64(img, l2 + 8, (1ull << 63) | 128 * KIB); /* cluster 1 -> the refcount block */
    patch_be64(img, l2 + 16, (1ull << 63) | 64 * KIB); /* cluster 2 -> the refcount table */
    d = disk_open(img, false, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    uint8_t b[4096];
    memset(b, 0xff, sizeof(b));
    ck_assert_int_eq(disk_write(d, 64 * KIB, b, sizeof(b)), -EIO);
    ck_assert_int_eq(disk_write(d, 128 * KIB, b, sizeof(b)), -EIO);
    ck_assert_int_eq(disk_close(d), 0);
    d = disk_open(img, true, err, sizeof(err));
    ck_assert_msg(d != NULL, "header damaged: %s", err);
    disk_close(d);

    img = fresh();
    patch_be64(img, 192 * KIB, (1ull << 63) | (256 * KIB + 8)); /* unaligned L2 */
    d = disk_open(img, false, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    ck_assert_int_eq(disk_read(d, 0, b, 512), -EIO);
    ck_assert_int_eq(disk_write(d, 0, b, 512), -EIO);
    disk_close(d);

    img = fresh();
    patch_be64(img, 256 * KIB, (1ull << 62) | 5); /* compressed, pointing into the header */
    d = disk_open(img, true, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    ck_assert_int_eq(disk_read(d, 0, b, 512), -EIO);
    disk_close(d);

    img = fresh();
    patch_be64(img, 256 * KIB, (1ull << 62) | (320 * KIB)); /* compressed garbage */
    d = disk_open(img, true, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    ck_assert_int_eq(disk_read(d, 0, b, 512), -EIO);
    disk_close(d);

    /* A backing file that names itself. */
    ck_assert_int_eq(sh("qemu-img create -q -f raw loop.qcow2 1M && "
                        "qemu-img create -q -f qcow2 -b loop.qcow2 -F raw top.qcow2 && "
                        "cp top.qcow2 loop.qcow2"),
                     0);
    /* top's backing format says raw, so it opens (as qcow2 over a raw view of loop). */
    d = disk_open(tpath("top.qcow2"), true, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    disk_close(d);
    ck_assert_int_eq(sh("qemu-img create -q -f raw r.raw 1M && "
                        "qemu-img create -q -f qcow2 -b r.raw -F raw b.qcow2 && "
                        "qemu-img create -q -f qcow2 -b b.qcow2 -F qcow2 a.qcow2 && "
                        "cp a.qcow2 b.qcow2"),
                     0);
    assert_refused(tpath("a.qcow2"), true, "deeper than");
}
END_TEST

/* A linked clone (`create --os`): a larger overlay on a read-only qcow2 base. The guest's writes
 * land in the overlay only - the base's bytes and stamp stay as they were, qemu-img checks the
 * overlay and reads the same through it -, the overlay reads zeroes past the base's end, its
 * virtual size comes from its header, and disk_base_check notices a base that changed or went. */
START_TEST(test_linked_clone_leaves_its_base_alone)
{
    char err[512], stamp[64], after[64];
    ck_assert_int_eq(sh("qemu-img create -q -f qcow2 base.qcow2 4M && "
                        "qemu-io -c 'write -P 0x5a 0 4M' base.qcow2 && chmod 0444 base.qcow2 && "
                        "md5sum base.qcow2 >base.md5"),
                     0);
    ck_assert_int_eq(disk_stamp(tpath("base.qcow2"), stamp, sizeof(stamp)), 0);
    ck_assert_int_eq(disk_create_qcow2(tpath("vm.qcow2"), 16 * MIB, tpath("base.qcow2"), "qcow2"),
                     0);
    uint64_t virt = 0;
    ck_assert_int_eq(disk_virtual_size(tpath("vm.qcow2"), &virt), 0);
    ck_assert_uint_eq(virt, 16 * MIB);
    struct disk *d = disk_open(tpath("vm.qcow2"), false, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    uint8_t buf[8192];
    memset(buf, 0xc3, sizeof(buf));
    ck_assert_int_eq(disk_write(d, 1 * MIB + 512, buf, sizeof(buf)), 0); /* inside the base */
    ck_assert_int_eq(disk_write(d, 10 * MIB, buf, sizeof(buf)), 0);      /* past its end */
    ck_assert_int_eq(disk_flush(d), 0);
    ck_assert_int_eq(disk_read(d, 1 * MIB, buf, 512), 0);
    ck_assert_uint_eq(buf[0], 0x5a); /* the base's, around the write */
    ck_assert_int_eq(disk_read(d, 8 * MIB, buf, 512), 0);
    ck_assert_uint_eq(buf[0] | buf[511], 0); /* past the base: zeroes */
    ck_assert_int_eq(disk_close(d), 0);
    ck_assert_int_eq(sh("md5sum -c base.md5 && qemu-img check -q vm.qcow2 && "
                        "qemu-io -r -c 'read -P 0xc3 1049088 8192' -c 'read -P 0x5a 0 1M' "
                        "-c 'read -P 0 8M 1M' vm.qcow2 | grep -q 'read 1048576'"),
                     0);
    ck_assert_int_eq(disk_stamp(tpath("base.qcow2"), after, sizeof(after)), 0);
    ck_assert_str_eq(after, stamp);
    ck_assert_int_eq(disk_base_check(tpath("base.qcow2"), stamp, err, sizeof(err)), 0);
    /* Changed (rewritten, same size): refused with both stamps; gone: refused as missing. */
    ck_assert_int_eq(sh("chmod 0644 base.qcow2 && touch -d '2001-01-01' base.qcow2"), 0);
    ck_assert_int_eq(disk_base_check(tpath("base.qcow2"), stamp, err, sizeof(err)), -ESTALE);
    ck_assert_ptr_nonnull(strstr(err, "changed since the VM was made"));
    ck_assert_int_eq(sh("rm base.qcow2"), 0);
    ck_assert_int_eq(disk_base_check(tpath("base.qcow2"), stamp, err, sizeof(err)), -ENOENT);
    ck_assert_ptr_nonnull(strstr(err, "which is missing"));
}
END_TEST

/* One case per test, so CK_RUN_CASE=crash (say) runs just that one. */
static void add_case(Suite *s, const char *name, const TTest *test)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 120);
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
    Suite *s = suite_create("qcow2");
    add_case(s, "qemu-made", test_reads_qemu_made_images);
    add_case(s, "write-qemu-made", test_writes_into_qemu_made_image);
    add_case(s, "compressed", test_compressed_clusters);
    add_case(s, "set-backing", test_set_backing_as_qemu_reads_it);
    add_case(s, "linked-clone", test_linked_clone_leaves_its_base_alone);
    add_case(s, "set-backing-full-header", test_set_backing_refuses_a_full_header_cluster);
    add_case(s, "probed-raw", test_probed_raw_refuses_a_qcow2_header);
    add_case(s, "random-64k", test_random_io_64k_clusters);
    add_case(s, "random-512", test_random_io_512b_clusters_grow_refcounts);
    add_case(s, "random-2m", test_random_io_2m_clusters);
    add_case(s, "create", test_create_plain_and_info);
    add_case(s, "crash", test_crash_at_every_step);
    add_case(s, "hostile", test_hostile_images);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
