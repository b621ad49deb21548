/* Unit tests of the formats that must survive crashes and refuse corruption: the machine-state
 * container (state.c), page deltas and the snapshot tree file (snapstore.c), on real files. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/devices/devices.h"
#include "core/snapshot/snapstore.h"
#include "core/util/state.h"
#include "core/vm/machine.h"

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/vmws-state-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static size_t write_sample(const char *path)
{
    struct state_writer w;
    state_writer_init(&w);
    uint64_t regs[4] = {1, 2, 3, 0xdeadbeef};
    state_put(&w, STATE_TAG('R', 'E', 'G', 'S'), 0, regs, sizeof(regs));
    state_put(&w, STATE_TAG('R', 'E', 'G', 'S'), 1, "abc", 3);
    ck_assert_int_eq(state_writer_save(&w, path), 0);
    state_writer_free(&w);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (size_t)st.st_size;
}

static int load(const char *path, char *err, size_t errlen)
{
    struct state_reader r;
    int rc = state_reader_load(&r, path, err, errlen);
    state_reader_free(&r);
    return rc;
}

static void patch(const char *path, long off, int whence, const void *bytes, size_t n)
{
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, off, whence);
    fwrite(bytes, 1, n, f);
    fclose(f);
}

START_TEST(state_round_trip)
{
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/s.state", dir);
    write_sample(path);
    struct state_reader r;
    ck_assert_int_eq(state_reader_load(&r, path, err, sizeof(err)), 0);
    uint64_t regs[4];
    ck_assert_int_eq(state_get_exact(&r, STATE_TAG('R', 'E', 'G', 'S'), 0, regs, sizeof(regs)), 0);
    ck_assert_uint_eq(regs[3], 0xdeadbeef);
    const struct state_record *rec = state_get(&r, STATE_TAG('R', 'E', 'G', 'S'), 1);
    ck_assert(rec && rec->len == 3 && memcmp(rec->data, "abc", 3) == 0);
    ck_assert_int_eq(state_get_exact(&r, STATE_TAG('R', 'E', 'G', 'S'), 1, regs, 8), -EINVAL);
    ck_assert_int_eq(state_get_exact(&r, STATE_TAG('N', 'O', 'N', 'E'), 0, regs, 8), -ENOENT);
    state_reader_free(&r);
}
END_TEST

/* Parses what W holds (frees W). */
static void reader_of(struct state_writer *w, struct state_reader *r)
{
    uint8_t *buf;
    size_t len;
    char err[256];
    ck_assert_int_eq(state_writer_finish(w, &buf, &len), 0);
    state_writer_free(w);
    ck_assert_int_eq(state_reader_parse(r, buf, len, err, sizeof(err)), 0);
}

/* A record's version: 1 when the file names none (files from before versions), else the one
 * written. The ACPI PM block reads its version 1 record (with the old port 0x61 word) and its
 * version 2 one, and refuses a record whose size doesn't match its version. */
START_TEST(record_versions)
{
    const uint32_t acpm = STATE_TAG('A', 'C', 'P', 'M');
    static struct machine m;
    memset(&m, 0, sizeof(m));
    m.vm_fd = -1;
    iobus_init(&m.pio, "port");
    struct pm *p = pm_create(&m);
    ck_assert_ptr_nonnull(p);

    struct state_writer w;
    struct state_reader r;
    uint16_t v1[4] = {0x1, 0x100, 0x2000, 0x5};
    state_writer_init(&w);
    state_put(&w, acpm, 0, v1, sizeof(v1));
    reader_of(&w, &r);
    ck_assert_uint_eq(state_version(&r, acpm), 1);
    ck_assert_int_eq(pm_load(p, &r), 0);
    state_reader_free(&r);

    state_writer_init(&w);
    ck_assert_int_eq(pm_save(p, &w), 0);
    state_put_version(&w, acpm, 2);
    reader_of(&w, &r);
    ck_assert_uint_eq(state_version(&r, acpm), 2);
    const struct state_record *rec = state_get(&r, acpm, 0);
    ck_assert(rec && rec->len == 6);
    uint16_t back[3];
    memcpy(back, rec->data, sizeof(back));
    ck_assert_uint_eq(back[1], 0x100); /* what the version 1 record set */
    ck_assert_int_eq(pm_load(p, &r), 0);
    state_reader_free(&r);

    state_writer_init(&w); /* version 2's size, but no version: read as version 1 */
    state_put(&w, acpm, 0, back, sizeof(back));
    reader_of(&w, &r);
    ck_assert_int_eq(pm_load(p, &r), -EINVAL);
    state_reader_free(&r);
    pm_destroy(p);
    iobus_destroy(&m.pio);
}
END_TEST

START_TEST(state_refuses_damage)
{
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/s.state", dir);
    size_t size = write_sample(path);

    ck_assert_int_eq(truncate(path, (off_t)size - 5), 0); /* truncated */
    ck_assert_int_eq(load(path, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "truncated"), "%s", err);

    write_sample(path); /* one flipped payload byte */
    patch(path, -10, SEEK_END, "\x55", 1);
    ck_assert_int_eq(load(path, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "checksum"), "%s", err);

    write_sample(path); /* another version */
    patch(path, 8, SEEK_SET, "\x07\x00\x00\x00", 4);
    ck_assert_int_eq(load(path, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "version 7"), "%s", err);

    write_sample(path); /* not ours */
    patch(path, 0, SEEK_SET, "XXXX", 4);
    ck_assert_int_eq(load(path, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "magic"), "%s", err);
}
END_TEST

START_TEST(page_delta_write_read_merge)
{
    char a[128], b[128], m[128], err[256];
    snprintf(a, sizeof(a), "%s/1.mem", dir);
    snprintf(b, sizeof(b), "%s/2.mem", dir);
    snprintf(m, sizeof(m), "%s/3.mem", dir);
    uint64_t pa[3] = {1, 5, 9}, pb[2] = {5, 7};
    uint8_t *da = calloc(3, 4096), *db = calloc(2, 4096), page[4096];
    for (int i = 0; i < 3; i++)
        memset(da + i * 4096, 'a' + i, 4096);
    for (int i = 0; i < 2; i++)
        memset(db + i * 4096, 'x' + i, 4096);
    ck_assert_int_eq(page_delta_write(a, pa, 3, da, NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(page_delta_write(b, pb, 2, db, NULL, err, sizeof(err)), 0);
    struct page_delta pda, pdb, pdm;
    ck_assert_int_eq(page_delta_open(a, &pda, err, sizeof(err)), 0);
    ck_assert_int_eq(page_delta_open(b, &pdb, err, sizeof(err)), 0);
    ck_assert_int_eq(page_delta_find(&pda, 9), 2);
    ck_assert_int_eq(page_delta_find(&pda, 4), -1);
    ck_assert_int_eq(page_delta_read(&pda, 1, page), 0);
    ck_assert_int_eq(page[100], 'b');
    /* child b absorbs parent a: b's own page 5 wins */
    uint64_t bytes = 0;
    ck_assert_uint_eq(page_delta_merged_bytes(&pdb, &pda), page_delta_file_bytes(4, 4));
    ck_assert_int_eq(page_delta_merge(&pdb, &pda, m, &bytes, err, sizeof(err)), 0);
    ck_assert_int_eq(page_delta_open(m, &pdm, err, sizeof(err)), 0);
    ck_assert_uint_eq(pdm.npages, 4);
    ck_assert_int_eq(page_delta_read(&pdm, (uint64_t)page_delta_find(&pdm, 5), page), 0);
    ck_assert_int_eq(page[0], 'x');
    ck_assert_int_eq(page_delta_read(&pdm, (uint64_t)page_delta_find(&pdm, 9), page), 0);
    ck_assert_int_eq(page[0], 'c');
    page_delta_close(&pdm);
    /* a flipped data byte fails that page's CRC; a flipped index byte fails the open */
    patch(m, -1, SEEK_END, "\x01", 1);
    ck_assert_int_eq(page_delta_open(m, &pdm, err, sizeof(err)), 0);
    ck_assert_int_eq(page_delta_read(&pdm, 3, page), -EBADMSG);
    page_delta_close(&pdm);
    patch(m, 70, SEEK_SET, "\x01", 1);
    ck_assert_int_eq(page_delta_open(m, &pdm, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "corrupt"), "%s", err);
    page_delta_close(&pda);
    page_delta_close(&pdb);
    free(da);
    free(db);
}
END_TEST

static int write_tree(const char *text, char *err, size_t errlen)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/snapshots", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/snapshots/tree.json", dir);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    struct snap_tree t;
    int r = snap_tree_load(&t, dir, "", err, errlen);
    snap_tree_free(&t);
    return r;
}

#define NODE(id, parent)                                                                           \
    "{\"id\":\"" id "\",\"label\":\"l" id "\",\"parent\":\"" parent "\",\"created\":1,"            \
    "\"auto\":false,\"vm_state\":\"running\",\"pages\":0,\"memory_bytes\":64,"                     \
    "\"state_bytes\":0}"

#define NODE_DISK(id, parent, disk)                                                                \
    "{\"id\":\"" id "\",\"label\":\"l" id "\",\"parent\":\"" parent "\",\"created\":1,"            \
    "\"auto\":false,\"vm_state\":\"off\",\"pages\":0,\"memory_bytes\":0,"                          \
    "\"state_bytes\":0,\"disk\":\"" disk "\"}"

START_TEST(tree_round_trip_and_refusals)
{
    char err[256];
    struct snap_tree t;
    ck_assert_int_eq(snap_tree_load(&t, dir, "", err, sizeof(err)), 0); /* none yet: empty */
    struct snap_node *a = snap_add(&t, "first", "");
    snprintf(a->vm_state, sizeof(a->vm_state), "running");
    struct snap_node *b = snap_add(&t, "second", "1");
    snprintf(b->vm_state, sizeof(b->vm_state), "paused");
    snprintf(t.current, sizeof(t.current), "2");
    ck_assert_int_eq(snap_tree_save(&t, err, sizeof(err)), 0);
    snap_tree_free(&t);
    ck_assert_int_eq(snap_tree_load(&t, dir, "", err, sizeof(err)), 0);
    ck_assert_uint_eq(t.n, 2);
    ck_assert_str_eq(snap_find(&t, "second")->parent, "1");
    ck_assert_str_eq(t.current, "2");
    snap_tree_free(&t);

    const char *head = "{\"version\":1,\"next_id\":9,\"current\":\"\",\"nodes\":[";
    char text[1024];
    snprintf(text, sizeof(text), "%s%s]}", head, NODE("1", "7")); /* missing parent */
    ck_assert_int_eq(write_tree(text, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "tree.json") && strstr(err, "parent"), "%s", err);
    snprintf(text, sizeof(text), "%s%s,%s]}", head, NODE("1", "2"), NODE("2", "1")); /* loop */
    ck_assert_int_eq(write_tree(text, err, sizeof(err)), -EINVAL);
    snprintf(text, sizeof(text), "%s%s,%s]}", head, NODE("1", ""), NODE("1", "")); /* repeat */
    ck_assert_int_eq(write_tree(text, err, sizeof(err)), -EINVAL);
    /* next_id names the next node: it must not repeat an id or outgrow one (issue 14, 9). */
    snprintf(text, sizeof(text), "{\"version\":1,\"next_id\":1,\"current\":\"\",\"nodes\":[%s]}",
             NODE("1", ""));
    ck_assert_int_eq(write_tree(text, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "next_id"), "%s", err);
    ck_assert_int_eq(write_tree("{\"version\":1,\"next_id\":1000000000000000,\"current\":\"\","
                                "\"nodes\":[]}",
                                err, sizeof(err)),
                     -EINVAL);
    snprintf(text, sizeof(text), "%s%s]}", head, NODE("../x", "")); /* a path for an id */
    ck_assert_int_eq(write_tree(text, err, sizeof(err)), -EINVAL);
    /* Disk images: inside the VM's folder, or exactly vm.conf's [disk] path (here none): a
     * tree naming another host file would have a merge write into it (issue 14, finding 4). */
    snprintf(text, sizeof(text), "%s%s]}", head, NODE_DISK("1", "", "/etc/passwd"));
    ck_assert_int_eq(write_tree(text, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "/etc/passwd") && strstr(err, "outside"), "%s", err);
    snprintf(text, sizeof(text),
             "{\"version\":1,\"next_id\":9,\"current\":\"\",\"disk_active\":"
             "\"/etc/passwd\",\"nodes\":[]}");
    ck_assert_int_eq(write_tree(text, err, sizeof(err)), -EINVAL);
    snprintf(text, sizeof(text), "%s%s]}", head, NODE_DISK("1", "", "snapshots/disk-1.qcow2"));
    ck_assert_int_eq(write_tree(text, err, sizeof(err)), 0);
    ck_assert_int_eq(write_tree("{\"version\": 2}", err, sizeof(err)), -EINVAL);
    ck_assert_int_eq(write_tree("not json", err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "corrupt"), "%s", err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("state");
    TCase *t = tcase_create("formats");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, state_round_trip);
    tcase_add_test(t, state_refuses_damage);
    tcase_add_test(t, record_versions);
    tcase_add_test(t, page_delta_write_read_merge);
    tcase_add_test(t, tree_round_trip_and_refusals);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
