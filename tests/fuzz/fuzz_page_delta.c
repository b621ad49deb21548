/* A snapshot's page delta (snapshots/ID.mem): the input is node 2's file in a two-node tree
 * (root 1 holds a valid delta), used as vmws uses it - opened and every page read, reverted to
 * on a machine of 16 pages (a buffer, no KVM), listed, and its parent deleted (1's pages merged
 * into it). Byte 0 asks for fix-ups so the fuzzer gets past the checksums: bit 0 the index CRC,
 * bit 1 the file's size from its header (and its entries' zero flags), bit 2 the pages' CRCs.
 * A refusal is fine. */
#include <sys/stat.h>
#include <zlib.h>

#include "core/snapshot/snapshot.h"
#include "core/util/fsutil.h"
#include "tests/fuzz/fuzz.h"

#define PAGE 4096u
#define HEADER 64
#define ENTRY 16
#define RAM_PAGES 16

static int no_dirty(void *opaque, uint64_t *bitmap)
{
    (void)opaque;
    (void)bitmap;
    return 0;
}

static int no_save(void *opaque, struct state_writer *w)
{
    (void)opaque;
    (void)w;
    return 0;
}

static int no_load(void *opaque, const struct state_reader *r, char *err, size_t errlen)
{
    (void)opaque;
    (void)r;
    (void)err;
    (void)errlen;
    return 0;
}

/* The fuzzed file, with the fix-ups MODE asks for. *LEN in and out; returns a malloc'd copy.
 * An entry whose flags (bytes 12-15) have bit 0 set is a zero page: it has no data slot. */
static uint8_t *fix_up(uint8_t mode, const uint8_t *data, size_t *len)
{
    uint64_t npages = 0, ndata = 0;
    if (*len >= HEADER)
        memcpy(&npages, data + 16, 8);
    bool small = *len >= HEADER && npages <= 15;
    bool zero[16] = {false};
    for (uint64_t i = 0; small && i < npages; i++) {
        size_t at = HEADER + i * ENTRY + 12;
        zero[i] = at < *len && (data[at] & 1);
        ndata += !zero[i];
    }
    size_t out_len = *len;
    if (mode & 2 && small) /* the size the header and the zero flags imply */
        out_len = page_delta_file_bytes(npages, ndata);
    uint8_t *f = calloc(1, out_len + 1);
    if (!f)
        abort();
    memcpy(f, data, *len < out_len ? *len : out_len);
    *len = out_len;
    if (mode & 2 && small) {
        uint64_t data_off = page_delta_file_bytes(npages, 0);
        memcpy(f + 24, &data_off, 8);
        static const uint8_t zero_page[PAGE];
        for (uint64_t i = 0, slot = 0; mode & 4 && i < npages; i++) {
            const uint8_t *page = zero[i] ? zero_page : f + data_off + slot++ * PAGE;
            uint32_t crc = (uint32_t)crc32(0L, page, PAGE);
            memcpy(f + HEADER + i * ENTRY + 8, &crc, 4);
        }
    }
    if (mode & 1 && out_len >= HEADER && npages <= (out_len - HEADER) / ENTRY) {
        uint32_t crc = (uint32_t)crc32(0L, f + HEADER, (uInt)(npages * ENTRY));
        memcpy(f + 32, &crc, 4);
    }
    return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    size_t len = size - 1;
    uint8_t *file = fix_up(mode, data + 1, &len);
    char err[1024];

    struct snap_tree t;
    memset(&t, 0, sizeof(t));
    snprintf(t.dir, sizeof(t.dir), "%s/snapshots", fuzz_dir());
    mkdir(t.dir, 0700);
    t.next_id = 1;
    struct snap_node *one = snap_add(&t, "one", NULL);
    struct snap_node *two = one ? snap_add(&t, "two", "1") : NULL;
    if (!two)
        abort();
    snprintf(t.current, sizeof(t.current), "1");
    static uint8_t pages[2 * PAGE];
    memset(pages, 0x11, PAGE);
    memset(pages + PAGE, 0x55, PAGE);
    const uint64_t root_pages[2] = {1, 5};
    char path[PATH_MAX];
    snap_path(&t, "1", "mem", path, sizeof(path));
    if (page_delta_write(path, root_pages, 2, pages, NULL, err, sizeof(err)) < 0)
        abort();
    struct state_writer w;
    uint8_t *state;
    size_t state_len;
    state_writer_init(&w);
    if (state_writer_finish(&w, &state, &state_len) < 0)
        abort();
    state_writer_free(&w);
    snap_path(&t, "2", "state", path, sizeof(path));
    if (fs_write_atomic(path, state, state_len) < 0)
        abort();
    free(state);
    snap_path(&t, "2", "mem", path, sizeof(path));
    fuzz_file("snapshots/2.mem", file, len);
    free(file);

    /* Opened on its own, every page read (as a revert or a merge reads them). */
    struct page_delta d;
    if (page_delta_open(path, &d, err, sizeof(err)) == 0) {
        uint8_t page[PAGE];
        for (uint64_t i = 0; i < d.npages && i < 64; i++) {
            page_delta_read(&d, i, page);
            page_delta_find(&d, d.pages[i]);
        }
        page_delta_find(&d, 5);
        page_delta_close(&d);
    }

    /* Reverted to, listed, and its parent deleted. */
    static uint8_t ram[RAM_PAGES * PAGE];
    static struct guest_mem gm;
    if (!gm.host && guest_mem_init_buffer(&gm, ram, sizeof(ram)) < 0)
        abort();
    uint64_t carry[1] = {0};
    struct snapshot_host h = {.mem = &gm,
                              .carry = carry,
                              .collect_dirty = no_dirty,
                              .save_state = no_save,
                              .load_state = no_load};
    uint64_t written;
    bool applied;
    snapshot_revert(&t, &h, snap_find(&t, "2"), &written, &applied, err, sizeof(err));
    json_decref(snapshot_tree_json(&t, NULL));
    snapshot_delete(&t, snap_find(&t, "1"), NULL, carry, RAM_PAGES, err, sizeof(err));
    snap_tree_free(&t);
    return 0;
}
