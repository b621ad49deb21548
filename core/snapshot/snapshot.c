/* Snapshot take/revert/delete (see snapshot.h). Page numbers are RAM offsets / 4 KiB, the same
 * numbering as the dirty bitmaps, so the guest-physical layout (the PCI hole) never matters here.
 */
#include "core/snapshot/snapshot.h"

#include "core/util/crashpoint.h"
#include "core/util/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u

uint64_t snapshot_host_pages(const struct snapshot_host *h)
{
    return h->mem->size / PAGE + h->extra_pages;
}

static uint8_t *page_ptr(const struct snapshot_host *h, uint64_t p)
{
    uint64_t ram = h->mem->size / PAGE;
    return p < ram ? h->mem->host + p * PAGE : h->extra + (p - ram) * PAGE;
}

static void set_bit(uint64_t *b, uint64_t p)
{
    b[p / 64] |= 1ULL << (p % 64);
}

void snapshot_capture_free(struct snapshot_capture *c)
{
    free(c->pages);
    free(c->data);
    free(c->zero);
    free(c->state);
    memset(c, 0, sizeof(*c));
}

int snapshot_capture(struct snapshot_host *h, struct snapshot_capture *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    int r = h->collect_dirty(h->opaque, h->carry);
    if (r < 0) {
        snprintf(err, errlen, "cannot read the dirty page log: %s", strerror(-r));
        return r;
    }
    uint64_t total = snapshot_host_pages(h), words = (total + 63) / 64, n = 0;
    for (uint64_t w = 0; w < words; w++)
        n += (uint64_t)__builtin_popcountll(h->carry[w]);
    c->pages = malloc(n * sizeof(uint64_t) + 8);
    c->data = malloc(n * PAGE + 1);
    c->zero = calloc(n + 1, 1);
    if (!c->pages || !c->data || !c->zero) {
        snapshot_capture_free(c);
        snprintf(err, errlen, "out of memory copying %llu changed pages", (unsigned long long)n);
        return -ENOMEM;
    }
    static const uint8_t zero_page[PAGE];
    struct guest_mem_extent ext = {0};
    uint64_t ram = h->mem->size / PAGE;
    for (uint64_t w = 0; w < words; w++) {
        for (uint64_t bits = h->carry[w]; bits; bits &= bits - 1) {
            uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);
            uint8_t *dst = c->data + c->npages * PAGE;
            /* A hole is not read: reading it could allocate the page again (shmem). */
            bool zero = p < ram && guest_mem_page_is_hole(h->mem, p, &ext);
            if (!zero) {
                memcpy(dst, page_ptr(h, p), PAGE);
                zero = memcmp(dst, zero_page, PAGE) == 0;
            }
            c->zero[c->npages] = zero;
            c->nzero += zero;
            c->pages[c->npages++] = p;
        }
    }
    struct state_writer sw;
    state_writer_init(&sw);
    r = h->save_state(h->opaque, &sw);
    if (r == 0)
        r = state_writer_finish(&sw, &c->state, &c->state_len);
    state_writer_free(&sw);
    if (r < 0) {
        snprintf(err, errlen, "cannot save the machine state: %s", strerror(-r));
        snapshot_capture_free(c);
    }
    return r;
}

int snapshot_commit(struct snap_tree *t, struct snapshot_host *h, struct snapshot_capture *c,
                    const char *label, bool automatic, const char *vm_state, const char *parent,
                    struct snap_node **out, char *err, size_t errlen)
{
    bool becomes_current = parent == NULL;
    struct snap_node *n = snap_add(t, label, becomes_current ? t->current : parent);
    if (!n)
        return -ENOMEM;
    char id[SNAP_ID_MAX];
    snprintf(id, sizeof(id), "%s", n->id);
    n->automatic = automatic;
    snprintf(n->vm_state, sizeof(n->vm_state), "%s", vm_state);
    snprintf(n->disk, sizeof(n->disk), "%s", c->disk);
    n->pages = c->npages;
    n->mem_bytes = page_delta_file_bytes(c->npages, c->npages - c->nzero);
    n->state_bytes = c->state_len;

    char mem_path[PATH_MAX], state_path[PATH_MAX];
    snap_path(t, id, "mem", mem_path, sizeof(mem_path));
    snap_path(t, id, "state", state_path, sizeof(state_path));
    int r = page_delta_write(mem_path, c->pages, c->npages, c->data, c->zero, err, errlen);
    if (r == 0) {
        r = fs_write_atomic(state_path, c->state, c->state_len);
        if (r < 0)
            snprintf(err, errlen, "cannot write %s: %s", state_path, strerror(-r));
    }
    char prev_current[SNAP_ID_MAX];
    snprintf(prev_current, sizeof(prev_current), "%s", t->current);
    if (r == 0) {
        crash_point("take-files-written");
        if (becomes_current)
            snprintf(t->current, sizeof(t->current), "%s", id);
        r = snap_tree_save(t, err, errlen);
        crash_point("take-tree-saved");
    }
    if (r < 0) { /* the tree on disk still lacks the node; its files are orphans */
        snprintf(t->current, sizeof(t->current), "%s", prev_current);
        snap_remove(t, snap_find(t, id));
        unlink(mem_path);
        unlink(state_path);
        return r;
    }
    /* Stored pages no longer differ from the (new) current node. */
    for (uint64_t i = 0; becomes_current && i < c->npages; i++)
        h->carry[c->pages[i] / 64] &= ~(1ULL << (c->pages[i] % 64));
    if (out)
        *out = snap_find(t, id);
    return 0;
}

/* Marks in SET every page of every node from N up to (not including) STOP. */
static int mark_path(struct snap_tree *t, struct snap_node *n, const struct snap_node *stop,
                     uint64_t *set, uint64_t total, char *err, size_t errlen)
{
    for (; n && n != stop; n = snap_parent(t, n)) {
        struct page_delta *d = snap_delta(t, n, err, errlen);
        if (!d)
            return -EINVAL;
        if (d->npages && d->pages[d->npages - 1] >= total) {
            snprintf(err, errlen,
                     "snapshot %s holds memory beyond this VM's %llu pages (was its "
                     "memory or display size changed?)",
                     n->label, (unsigned long long)total);
            return -EINVAL;
        }
        for (uint64_t i = 0; i < d->npages; i++)
            set_bit(set, d->pages[i]);
    }
    return 0;
}

void snapshot_fresh_boot(struct snap_tree *t, struct snapshot_host *h)
{
    char err[256];
    uint64_t total = snapshot_host_pages(h);
    struct snap_node *cur = t->current[0] ? snap_find(t, t->current) : NULL;
    if (mark_path(t, cur, NULL, h->carry, total, err, sizeof(err)) < 0)
        memset(h->carry, 0xff, (total + 63) / 64 * sizeof(uint64_t));
}

static bool is_ancestor_or_self(struct snap_tree *t, const struct snap_node *a, struct snap_node *n)
{
    for (; n; n = snap_parent(t, n))
        if (n == a)
            return true;
    return false;
}

/* Content of page P at node N: the nearest node on the way to the root that has it, else zero.
 * Returns 0, 1 if the page is zero (DST zeroed), or -errno with ERR. */
static int page_at(struct snap_tree *t, struct snap_node *n, uint64_t p, uint8_t *dst, char *err,
                   size_t errlen)
{
    for (; n; n = snap_parent(t, n)) {
        struct page_delta *d = snap_delta(t, n, err, errlen);
        if (!d)
            return -EINVAL;
        int64_t i = page_delta_find(d, p);
        if (i >= 0) {
            int r = page_delta_read(d, (uint64_t)i, dst);
            if (r < 0)
                snprintf(err, errlen, "snapshot %s: page %llu is %s", n->id, (unsigned long long)p,
                         r == -EBADMSG ? "corrupt (CRC mismatch)" : "unreadable");
            return r;
        }
    }
    memset(dst, 0, PAGE);
    return 1;
}

/* Makes pages [FIRST, FIRST+N) zero: RAM is given back to the host (a hole, as the guest left
 * it), the extra region is cleared. */
static void zero_pages(struct snapshot_host *h, uint64_t first, uint64_t n)
{
    uint64_t ram = h->mem->size / PAGE;
    for (uint64_t p = first; p < first + n; p++)
        if (p >= ram)
            memset(page_ptr(h, p), 0, PAGE);
    uint64_t ram_n = first >= ram ? 0 : (first + n > ram ? ram - first : n);
    if (ram_n && guest_mem_discard(h->mem, first * PAGE, ram_n * PAGE, NULL) < 0)
        memset(page_ptr(h, first), 0, ram_n * PAGE); /* cannot punch: zero them by hand */
}

static int load_state_file(struct snap_tree *t, struct snap_node *n, struct state_reader *rd,
                           char *err, size_t errlen)
{
    char path[PATH_MAX];
    snap_path(t, n->id, "state", path, sizeof(path));
    return state_reader_load(rd, path, err, errlen);
}

int snapshot_revert(struct snap_tree *t, struct snapshot_host *h, struct snap_node *target,
                    uint64_t *pages_written, bool *applied, char *err, size_t errlen)
{
    *applied = false;
    /* Everything is read and checked before anything is changed. */
    struct state_reader rd;
    int r = load_state_file(t, target, &rd, err, errlen);
    if (r < 0)
        return r;
    uint64_t total = snapshot_host_pages(h), words = (total + 63) / 64;
    uint64_t *set = calloc(words, sizeof(uint64_t));
    if (!set) {
        state_reader_free(&rd);
        return -ENOMEM;
    }
    r = h->collect_dirty(h->opaque, h->carry);
    memcpy(set, h->carry, words * sizeof(uint64_t));

    /* The lowest common ancestor of the current node and the target. */
    struct snap_node *cur = t->current[0] ? snap_find(t, t->current) : NULL;
    struct snap_node *lca = cur;
    while (lca && !is_ancestor_or_self(t, lca, target))
        lca = snap_parent(t, lca);
    if (r == 0)
        r = mark_path(t, cur, lca, set, total, err, errlen);
    if (r == 0)
        r = mark_path(t, target, lca, set, total, err, errlen);

    uint64_t n = 0;
    uint8_t *pages = NULL, *zero = NULL;
    if (r == 0) {
        for (uint64_t w = 0; w < words; w++)
            n += (uint64_t)__builtin_popcountll(set[w]);
        pages = malloc(n * PAGE + 1); /* a zero page's slot is never touched */
        zero = malloc(n + 1);
        if (!pages || !zero)
            r = -ENOMEM;
    }
    uint64_t k = 0;
    for (uint64_t w = 0; r == 0 && w < words; w++)
        for (uint64_t bits = set[w]; r == 0 && bits; bits &= bits - 1, k++) {
            r = page_at(t, target, w * 64 + (uint64_t)__builtin_ctzll(bits), pages + k * PAGE, err,
                        errlen);
            zero[k] = r == 1;
            r = r < 0 ? r : 0;
        }
    if (r == 0)
        r = h->load_state(h->opaque, &rd, err, errlen);
    if (r == 0) {
        /* Zero pages are given back to the host in runs, the others copied. */
        uint64_t run_first = 0, run_n = 0;
        k = 0;
        for (uint64_t w = 0; w < words; w++)
            for (uint64_t bits = set[w]; bits; bits &= bits - 1, k++) {
                uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(bits);
                if (run_n && (!zero[k] || p != run_first + run_n)) {
                    zero_pages(h, run_first, run_n);
                    run_n = 0;
                }
                if (zero[k]) {
                    run_first = run_n ? run_first : p;
                    run_n++;
                } else {
                    memcpy(page_ptr(h, p), pages + k * PAGE, PAGE);
                }
                if (k == n / 2)
                    crash_point("revert-half-written");
            }
        if (run_n)
            zero_pages(h, run_first, run_n);
        /* Our own writes must not count as guest changes: drop them from the logs. */
        uint64_t *scratch = calloc(words, sizeof(uint64_t));
        if (scratch)
            h->collect_dirty(h->opaque, scratch);
        free(scratch);
        memset(h->carry, 0, words * sizeof(uint64_t));
        snprintf(t->current, sizeof(t->current), "%s", target->id);
        *applied = true;
        crash_point("revert-applied");
        r = snap_tree_save(t, err, errlen);
        if (pages_written)
            *pages_written = n;
    }
    free(pages);
    free(zero);
    free(set);
    state_reader_free(&rd);
    return r;
}

static size_t count_children(struct snap_tree *t, const struct snap_node *n)
{
    size_t c = 0;
    for (size_t i = 0; i < t->n; i++)
        c += strcmp(t->nodes[i].parent, n->id) == 0;
    return c;
}

int snapshot_delete_cost(struct snap_tree *t, struct snap_node *n, uint64_t *needs, char *err,
                         size_t errlen)
{
    *needs = 0;
    if (!count_children(t, n))
        return 0;
    struct page_delta *d = snap_delta(t, n, err, errlen);
    if (!d)
        return -EINVAL;
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->nodes[i].parent, n->id) != 0)
            continue;
        struct page_delta *c = snap_delta(t, &t->nodes[i], err, errlen);
        if (!c)
            return -EINVAL;
        *needs += page_delta_merged_bytes(c, d);
    }
    return 0;
}

int snapshot_delete_plan(struct snap_tree *t, struct snap_node *n, struct disk *active,
                         struct snapshot_delete_plan *p, char *err, size_t errlen)
{
    int r = snapshot_delete_cost(t, n, &p->memory_needs, err, errlen);
    return r < 0 ? r : disksnap_plan(t, n, active, &p->disk, err, errlen);
}

int snapshot_delete(struct snap_tree *t, struct snap_node *n, struct disksnap_plan *disk,
                    uint64_t *carry, uint64_t carry_pages, char *err, size_t errlen)
{
    /* Without a machine (CARRY NULL) the VM has no memory that could descend from N. */
    bool is_current = strcmp(t->current, n->id) == 0;
    bool to_carry = is_current && carry;
    uint64_t needs;
    int r = snapshot_delete_cost(t, n, &needs, err, errlen);
    if (r < 0)
        return r;
    /* Seed 004: the space a merge needs is known before it starts, and it starts only if the
     * filesystem has it (plus a margin for the disk images' new tables). */
    uint64_t total = needs + (disk && disk->needs ? disk->needs + (1u << 20) : 0);
    struct statvfs vfs;
    if (total && statvfs(t->dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < total) {
        snprintf(err, errlen,
                 "deleting snapshot %s needs %llu MiB free to merge it into its children; %s has "
                 "only %llu MiB free",
                 n->label, (unsigned long long)((total + (1u << 20) - 1) >> 20), t->dir,
                 (unsigned long long)(((uint64_t)vfs.f_bavail * vfs.f_frsize) >> 20));
        return -ENOSPC;
    }
    /* 0. The disk first: if it fails, the tree is as it was (or N is marked as being deleted). */
    if (disk && (r = disksnap_merge(t, n, disk, err, errlen)) < 0)
        return r;
    struct page_delta *d = needs || to_carry ? snap_delta(t, n, err, errlen) : NULL;
    if ((needs || to_carry) && !d)
        return -EINVAL;
    /* 1. Each child's delta absorbs N's pages (same content for the child: safe to crash). */
    for (size_t i = 0; i < t->n && r == 0; i++) {
        struct snap_node *c = &t->nodes[i];
        if (strcmp(c->parent, n->id) != 0)
            continue;
        struct page_delta *cd = snap_delta(t, c, err, errlen);
        char path[PATH_MAX];
        snap_path(t, c->id, "mem", path, sizeof(path));
        uint64_t bytes = 0;
        r = cd ? page_delta_merge(cd, d, path, &bytes, err, errlen) : -EINVAL;
        if (r == 0) {
            page_delta_close(cd); /* reopened from the merged file on demand */
            free(cd);
            c->delta = NULL;
            c->mem_bytes = bytes;
            struct page_delta *nd = snap_delta(t, c, err, errlen);
            c->pages = nd ? nd->npages : c->pages;
        }
    }
    if (r < 0)
        return r;
    crash_point("delete-merged");
    /* 2. The tree forgets N. */
    if (to_carry) {
        for (uint64_t i = 0; i < d->npages; i++)
            if (d->pages[i] < carry_pages)
                set_bit(carry, d->pages[i]);
    }
    if (is_current)
        snprintf(t->current, sizeof(t->current), "%s", n->parent);
    char id[SNAP_ID_MAX], parent[SNAP_ID_MAX];
    snprintf(id, sizeof(id), "%s", n->id);
    snprintf(parent, sizeof(parent), "%s", n->parent);
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->nodes[i].parent, id) == 0)
            snprintf(t->nodes[i].parent, sizeof(t->nodes[i].parent), "%s", parent);
    snap_remove(t, n);
    r = snap_tree_save(t, err, errlen);
    crash_point("delete-tree-saved");
    /* 3. Its files go (a crash before this leaves orphans, which snap_tree_tidy removes). */
    char path[PATH_MAX];
    snap_path(t, id, "mem", path, sizeof(path));
    unlink(path);
    snap_path(t, id, "state", path, sizeof(path));
    unlink(path);
    if (r == 0 && disk)
        disksnap_finish(t, disk);
    return r;
}

/* Bytes a disk image really takes (allocated blocks), 0 if it is missing. */
static json_int_t image_bytes(const struct snap_tree *t, const char *rel)
{
    char path[PATH_MAX];
    struct stat st;
    disksnap_path(t, rel, path, sizeof(path));
    return stat(path, &st) == 0 ? (json_int_t)st.st_blocks * 512 : 0;
}

json_t *snapshot_tree_json(struct snap_tree *t, struct disk *active)
{
    json_t *nodes = json_array();
    for (size_t i = 0; i < t->n; i++) {
        struct snap_node *n = &t->nodes[i];
        char when[32];
        struct tm tm;
        time_t c = (time_t)n->created;
        gmtime_r(&c, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        char err[256];
        json_t *j =
            json_pack("{s:s, s:s, s:o, s:s, s:I, s:b, s:s, s:I, s:I, s:I}", "id", n->id, "label",
                      n->label, "parent", n->parent[0] ? json_string(n->parent) : json_null(),
                      "created", when, "created_unix", (json_int_t)n->created, "auto", n->automatic,
                      "vm_state", n->vm_state, "pages", (json_int_t)n->pages, "memory_bytes",
                      (json_int_t)n->mem_bytes, "state_bytes", (json_int_t)n->state_bytes);
        struct snapshot_delete_plan plan;
        if (snapshot_delete_plan(t, n, active, &plan, err, sizeof(err)) == 0) {
            json_object_set_new(j, "delete_needs_bytes",
                                json_integer((json_int_t)(plan.memory_needs + plan.disk.needs)));
            json_object_set_new(j, "delete_disk_merge",
                                json_string(disksnap_how_name(plan.disk.how)));
        }
        if (n->disk[0]) {
            json_object_set_new(j, "disk", json_string(n->disk));
            json_object_set_new(j, "disk_bytes", json_integer(image_bytes(t, n->disk)));
        }
        if (n->deleting)
            json_object_set_new(j, "deleting", json_true());
        if (n->quiesced[0])
            json_object_set_new(j, "quiesced", json_string(n->quiesced));
        json_array_append_new(nodes, j);
    }
    json_t *tree =
        json_pack("{s:o, s:o}", "current", t->current[0] ? json_string(t->current) : json_null(),
                  "snapshots", nodes);
    if (t->disk_active[0])
        json_object_set_new(tree, "disk_active", json_string(t->disk_active));
    return tree;
}
