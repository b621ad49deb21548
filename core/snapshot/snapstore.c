/* The snapshot tree on disk (see snapstore.h). ID.mem layout, little endian:
 *   header (64 bytes): "VMWSPAGE", u32 version, u32 page size, u64 npages, u64 data offset,
 *                      u32 crc32 of the index, 28 bytes zero
 *   index: npages x {u64 page number, u32 crc32 of the page, u32 flags}, page numbers ascending;
 *          flags bit 0: a zero page, stored without data (version 2; version 1 has no flags)
 *   data:  the pages that are not zero, 4 KiB each, in index order, from the data offset (4 KiB
 *          aligned). A delta without zero pages is written as version 1, as before. */
#include "core/snapshot/snapstore.h"

#include "core/storage/disk.h"
#include "core/storage/qcow2.h"
#include "core/util/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define PAGE 4096u
#define MAGIC "VMWSPAGE"
#define HEADER 64
#define ENTRY 16
#define ENTRY_ZERO 1u

struct delta_header {
    char magic[8];
    uint32_t version, page_size;
    uint64_t npages, data_offset;
    uint32_t index_crc;
    uint8_t zero[28];
};
_Static_assert(sizeof(struct delta_header) == HEADER, "header layout");

static uint64_t data_offset_for(uint64_t npages)
{
    return (HEADER + npages * ENTRY + PAGE - 1) / PAGE * PAGE;
}

uint64_t page_delta_file_bytes(uint64_t npages, uint64_t ndata)
{
    return data_offset_for(npages) + ndata * PAGE;
}

/* Writes a delta whose pages come from a callback (0: DST holds the page, 1: it is zero), so
 * merge and plain writes share the code. */
typedef int (*page_source_fn)(void *opaque, uint64_t i, uint8_t *dst);

static int write_delta(const char *path, const uint64_t *pages, uint64_t n, page_source_fn src,
                       void *opaque, uint64_t *ndata_out, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    int fd = fs_tmp_create(path, tmp, sizeof(tmp));
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a temporary file beside %s: %s", path, strerror(-fd));
        return fd;
    }
    uint8_t *index = calloc(n ? n : 1, ENTRY);
    uint8_t *buf = malloc(64 * PAGE);
    int r = index && buf ? 0 : -ENOMEM;
    uint64_t data_off = data_offset_for(n), ndata = 0, nbuf = 0;
    static const uint8_t zero_page[PAGE];
    for (uint64_t i = 0; r == 0 && i < n; i++) {
        int z = src(opaque, i, buf + nbuf * PAGE);
        if (z < 0) {
            r = z;
            break;
        }
        uint32_t crc = (uint32_t)crc32(0L, z ? zero_page : buf + nbuf * PAGE, PAGE);
        uint32_t flags = z ? ENTRY_ZERO : 0;
        memcpy(index + i * ENTRY, &pages[i], 8);
        memcpy(index + i * ENTRY + 8, &crc, 4);
        memcpy(index + i * ENTRY + 12, &flags, 4);
        nbuf += !z;
        if (nbuf == 64 || (i + 1 == n && nbuf)) {
            r = fs_pwrite_all(fd, buf, nbuf * PAGE, data_off + ndata * PAGE);
            ndata += nbuf;
            nbuf = 0;
        }
    }
    struct delta_header h = {.version = ndata < n ? 2 : 1,
                             .page_size = PAGE,
                             .npages = n,
                             .data_offset = data_off};
    memcpy(h.magic, MAGIC, 8);
    if (r == 0) {
        h.index_crc = (uint32_t)crc32(0L, index, (uInt)(n * ENTRY));
        r = fs_pwrite_all(fd, &h, sizeof(h), 0);
    }
    if (r == 0 && n)
        r = fs_pwrite_all(fd, index, n * ENTRY, HEADER);
    if (r == 0 && ftruncate(fd, (off_t)page_delta_file_bytes(n, ndata)) < 0)
        r = -errno;
    free(index);
    free(buf);
    r = fs_tmp_commit(fd, tmp, path, r);
    if (r < 0)
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-r));
    else if (ndata_out)
        *ndata_out = ndata;
    return r;
}

struct buffer_source {
    const uint8_t *data, *zero;
};

static int from_buffer(void *opaque, uint64_t i, uint8_t *dst)
{
    const struct buffer_source *b = opaque;
    if (b->zero && b->zero[i])
        return 1;
    memcpy(dst, b->data + i * PAGE, PAGE);
    return 0;
}

int page_delta_write(const char *path, const uint64_t *pages, size_t n, const uint8_t *data,
                     const uint8_t *zero, char *err, size_t errlen)
{
    struct buffer_source b = {data, zero};
    return write_delta(path, pages, n, from_buffer, &b, NULL, err, errlen);
}

int page_delta_open(const char *path, struct page_delta *d, char *err, size_t errlen)
{
    memset(d, 0, sizeof(*d));
    d->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    struct delta_header h;
    if (d->fd < 0 || fstat(d->fd, &st) < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open snapshot memory %s: %s", path, strerror(e));
        page_delta_close(d);
        return -e;
    }
    if (pread(d->fd, &h, sizeof(h), 0) != sizeof(h) || memcmp(h.magic, MAGIC, 8) != 0 ||
        (h.version != 1 && h.version != 2) || h.page_size != PAGE ||
        h.npages > (uint64_t)st.st_size / ENTRY || h.data_offset != data_offset_for(h.npages) ||
        (uint64_t)st.st_size < page_delta_file_bytes(h.npages, 0)) {
        snprintf(err, errlen, "snapshot memory %s is corrupt or truncated (bad header or size)",
                 path);
        page_delta_close(d);
        return -EINVAL;
    }
    d->npages = h.npages;
    d->data_offset = h.data_offset;
    uint8_t *index = malloc(h.npages * ENTRY + 1);
    d->pages = malloc(h.npages * 8 + 8);
    d->crcs = malloc(h.npages * 4 + 4);
    d->slots = malloc(h.npages * 8 + 8);
    if (!index || !d->pages || !d->crcs || !d->slots) {
        free(index);
        page_delta_close(d);
        return -ENOMEM;
    }
    int r = 0;
    if (pread(d->fd, index, h.npages * ENTRY, HEADER) != (ssize_t)(h.npages * ENTRY) ||
        (uint32_t)crc32(0L, index, (uInt)(h.npages * ENTRY)) != h.index_crc)
        r = -EINVAL;
    for (uint64_t i = 0; r == 0 && i < h.npages; i++) {
        uint32_t flags;
        memcpy(&d->pages[i], index + i * ENTRY, 8);
        memcpy(&d->crcs[i], index + i * ENTRY + 8, 4);
        memcpy(&flags, index + i * ENTRY + 12, 4);
        if ((i && d->pages[i] <= d->pages[i - 1]) || flags & ~ENTRY_ZERO ||
            (flags && h.version < 2))
            r = -EINVAL;
        d->slots[i] = flags & ENTRY_ZERO ? PAGE_DELTA_ZERO : d->ndata++;
    }
    free(index);
    if (r == 0 && (uint64_t)st.st_size != page_delta_file_bytes(h.npages, d->ndata)) {
        snprintf(err, errlen, "snapshot memory %s is truncated (%llu pages of data expected)",
                 path, (unsigned long long)d->ndata);
        page_delta_close(d);
        return -EINVAL;
    }
    if (r < 0) {
        snprintf(err, errlen, "snapshot memory %s has a corrupt page index", path);
        page_delta_close(d);
    }
    return r;
}

void page_delta_close(struct page_delta *d)
{
    if (d->fd >= 0)
        close(d->fd);
    free(d->pages);
    free(d->crcs);
    free(d->slots);
    memset(d, 0, sizeof(*d));
    d->fd = -1;
}

int64_t page_delta_find(const struct page_delta *d, uint64_t page)
{
    uint64_t lo = 0, hi = d->npages;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (d->pages[mid] < page)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < d->npages && d->pages[lo] == page ? (int64_t)lo : -1;
}

int page_delta_read(const struct page_delta *d, uint64_t idx, void *dst)
{
    if (idx >= d->npages)
        return -EINVAL;
    if (d->slots[idx] == PAGE_DELTA_ZERO) {
        memset(dst, 0, PAGE);
        return 1;
    }
    if (pread(d->fd, dst, PAGE, (off_t)(d->data_offset + d->slots[idx] * PAGE)) != PAGE)
        return -EIO;
    return (uint32_t)crc32(0L, dst, PAGE) == d->crcs[idx] ? 0 : -EBADMSG;
}

/* ---- merge ---- */

struct merge {
    const struct page_delta *child, *parent;
    uint64_t *from; /* per output page: child index, or parent index | (1 << 63) */
};

static int from_merge(void *opaque, uint64_t i, uint8_t *dst)
{
    struct merge *mg = opaque;
    uint64_t f = mg->from[i];
    if (f >> 63)
        return page_delta_read(mg->parent, f & ~(1ULL << 63), dst);
    return page_delta_read(mg->child, f, dst);
}

/* The merged index (PAGES and FROM may be NULL); *NDATA gets how many of its pages are data. */
static uint64_t merge_plan(const struct page_delta *c, const struct page_delta *p, uint64_t *pages,
                           uint64_t *from, uint64_t *ndata)
{
    uint64_t i = 0, j = 0, n = 0;
    *ndata = 0;
    while (i < c->npages || j < p->npages) {
        bool take_child = j == p->npages || (i < c->npages && c->pages[i] <= p->pages[j]);
        if (take_child) {
            if (j < p->npages && i < c->npages && c->pages[i] == p->pages[j])
                j++; /* the child's own copy wins */
            if (pages)
                pages[n] = c->pages[i], from[n] = i;
            *ndata += c->slots[i] != PAGE_DELTA_ZERO;
            i++;
        } else {
            if (pages)
                pages[n] = p->pages[j], from[n] = j | (1ULL << 63);
            *ndata += p->slots[j] != PAGE_DELTA_ZERO;
            j++;
        }
        n++;
    }
    return n;
}

uint64_t page_delta_merged_bytes(const struct page_delta *child, const struct page_delta *parent)
{
    uint64_t ndata, n = merge_plan(child, parent, NULL, NULL, &ndata);
    return page_delta_file_bytes(n, ndata);
}

int page_delta_merge(const struct page_delta *child, const struct page_delta *parent,
                     const char *out_path, uint64_t *bytes, char *err, size_t errlen)
{
    uint64_t max = child->npages + parent->npages;
    uint64_t *pages = malloc(max * 8 + 8), *from = malloc(max * 8 + 8);
    if (!pages || !from) {
        free(pages);
        free(from);
        return -ENOMEM;
    }
    uint64_t ndata, n = merge_plan(child, parent, pages, from, &ndata);
    struct merge mg = {child, parent, from};
    int r = write_delta(out_path, pages, n, from_merge, &mg, &ndata, err, errlen);
    if (r == 0 && bytes)
        *bytes = page_delta_file_bytes(n, ndata);
    free(pages);
    free(from);
    return r;
}

/* ---- the tree ---- */

void snap_path(const struct snap_tree *t, const char *id, const char *ext, char *out, size_t len)
{
    snprintf(out, len, "%s/%s.%s", t->dir, id, ext);
}

struct snap_node *snap_find(struct snap_tree *t, const char *key)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->nodes[i].id, key) == 0)
            return &t->nodes[i];
    for (size_t i = t->n; i-- > 0;)
        if (strcmp(t->nodes[i].label, key) == 0)
            return &t->nodes[i];
    return NULL;
}

struct snap_node *snap_parent(struct snap_tree *t, const struct snap_node *n)
{
    return n && n->parent[0] ? snap_find(t, n->parent) : NULL;
}

struct snap_node *snap_add(struct snap_tree *t, const char *label, const char *parent)
{
    if (t->next_id >= SNAP_NEXT_ID_MAX)
        return NULL; /* 10^15 snapshots: its id would not fit */
    struct snap_node *nodes = realloc(t->nodes, (t->n + 1) * sizeof(*nodes));
    if (!nodes)
        return NULL;
    t->nodes = nodes;
    struct snap_node *n = &t->nodes[t->n++];
    memset(n, 0, sizeof(*n));
    snprintf(n->id, sizeof(n->id), "%llu", (unsigned long long)t->next_id++);
    snprintf(n->label, sizeof(n->label), "%s", label);
    snprintf(n->parent, sizeof(n->parent), "%s", parent ? parent : "");
    n->created = (int64_t)time(NULL);
    return n;
}

static void free_node(struct snap_node *n)
{
    if (n->delta) {
        page_delta_close(n->delta);
        free(n->delta);
        n->delta = NULL;
    }
}

void snap_remove(struct snap_tree *t, struct snap_node *n)
{
    free_node(n);
    size_t i = (size_t)(n - t->nodes);
    memmove(&t->nodes[i], &t->nodes[i + 1], (t->n - i - 1) * sizeof(*n));
    t->n--;
}

struct page_delta *snap_delta(struct snap_tree *t, struct snap_node *n, char *err, size_t errlen)
{
    if (n->delta)
        return n->delta;
    struct page_delta *d = malloc(sizeof(*d));
    char path[PATH_MAX];
    snap_path(t, n->id, "mem", path, sizeof(path));
    if (!d || page_delta_open(path, d, err, errlen) < 0) {
        free(d);
        return NULL;
    }
    n->delta = d;
    return d;
}

void snap_tree_free(struct snap_tree *t)
{
    for (size_t i = 0; i < t->n; i++)
        free_node(&t->nodes[i]);
    free(t->nodes);
    t->nodes = NULL;
    t->n = 0;
}

static bool id_in_tree(const struct snap_tree *t, const char *id)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->nodes[i].id, id) == 0)
            return true;
    return false;
}

/* Adds to KEEP the base names of the images in snapshots/ on PATH's backing chain. */
static void keep_chain(const struct snap_tree *t, const char *path, char keep[][64], size_t *nkeep,
                       size_t max)
{
    char cur[PATH_MAX];
    if (!path[0])
        return;
    if (path[0] == '/')
        snprintf(cur, sizeof(cur), "%s", path);
    else
        snprintf(cur, sizeof(cur), "%s/../%s", t->dir, path);
    for (int depth = 0; depth < 16 && *nkeep < max; depth++) {
        char *slash = strrchr(cur, '/'), dir[PATH_MAX], name[1024];
        snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - cur) : 1, slash ? cur : ".");
        snprintf(keep[(*nkeep)++], 64, "%.63s", slash ? slash + 1 : cur);
        if (disk_backing_name(cur, name, sizeof(name)) < 0 || !name[0])
            return;
        if (snprintf(cur, sizeof(cur), "%s%s%s", name[0] == '/' ? "" : dir,
                     name[0] == '/' ? "" : "/", name) >= (int)sizeof(cur))
            return;
    }
}

/* Deletes ID.mem/ID.state/temporaries no node names and disk images nothing reads: leftovers
 * of an interrupted operation. */
static void remove_orphans(struct snap_tree *t)
{
    size_t max = 4 * QCOW2_MAX_CHAIN_DEPTH * (t->n + 1), nkeep = 0;
    char(*keep)[64] = calloc(max, 64);
    if (!keep)
        return;
    keep_chain(t, t->disk_active, keep, &nkeep, max);
    for (size_t i = 0; i < t->n; i++)
        keep_chain(t, t->nodes[i].disk, keep, &nkeep, max);
    DIR *dir = opendir(t->dir);
    struct dirent *e;
    while (dir && (e = readdir(dir))) {
        char id[SNAP_ID_MAX];
        const char *dot = strchr(e->d_name, '.');
        if (!dot || strcmp(e->d_name, "tree.json") == 0 || (size_t)(dot - e->d_name) >= sizeof(id))
            continue;
        memcpy(id, e->d_name, (size_t)(dot - e->d_name));
        id[dot - e->d_name] = '\0';
        bool temp = strstr(e->d_name, ".tmp") != NULL, used = false;
        if (strncmp(id, "disk-", 5) == 0)
            for (size_t k = 0; k < nkeep && !used; k++)
                used = strcmp(keep[k], e->d_name) == 0;
        else
            used = id_in_tree(t, id);
        if (temp || !used) {
            char path[PATH_MAX];
            snprintf(path, sizeof(path), "%s/%s", t->dir, e->d_name);
            unlink(path);
        }
    }
    if (dir)
        closedir(dir);
    free(keep);
}

static int tree_error(char *err, size_t errlen, const char *path, const char *what)
{
    snprintf(err, errlen, "snapshot tree %s is corrupt: %s", path, what);
    return -EINVAL;
}

/* A disk image path as the tree stores it: absolute, or inside the VM's folder. */
static bool disk_path_ok(const char *p)
{
    return strlen(p) < SNAP_DISK_MAX &&
           (p[0] == '/' || (strncmp(p, "../", 3) != 0 && !strstr(p, "/../") && strcmp(p, "..")));
}

static int parse_node(json_t *j, struct snap_node *n)
{
    const char *id, *label, *parent, *state;
    json_int_t created, pages, mem, stb;
    int automatic;
    if (json_unpack(j, "{s:s, s:s, s:s, s:I, s:b, s:s, s:I, s:I, s:I}", "id", &id, "label", &label,
                    "parent", &parent, "created", &created, "auto", &automatic, "vm_state", &state,
                    "pages", &pages, "memory_bytes", &mem, "state_bytes", &stb) < 0)
        return -EINVAL;
    if (strlen(id) >= SNAP_ID_MAX || !*id || strchr(id, '/') || strchr(id, '.') ||
        strlen(label) >= SNAP_LABEL_MAX || strlen(parent) >= SNAP_ID_MAX ||
        strlen(state) >= sizeof(n->vm_state) || pages < 0 || mem < 0 || stb < 0)
        return -EINVAL;
    memset(n, 0, sizeof(*n));
    snprintf(n->id, sizeof(n->id), "%s", id);
    snprintf(n->label, sizeof(n->label), "%s", label);
    snprintf(n->parent, sizeof(n->parent), "%s", parent);
    snprintf(n->vm_state, sizeof(n->vm_state), "%s", state);
    n->created = created;
    n->automatic = automatic;
    n->pages = (uint64_t)pages;
    n->mem_bytes = (uint64_t)mem;
    n->state_bytes = (uint64_t)stb;
    const char *disk = "", *quiesced = "";
    int deleting = 0;
    if (json_unpack(j, "{s?:s, s?:b, s?:s}", "disk", &disk, "deleting", &deleting, "quiesced",
                    &quiesced) < 0 ||
        !disk_path_ok(disk))
        return -EINVAL;
    snprintf(n->quiesced, sizeof(n->quiesced), "%s", quiesced);
    snprintf(n->disk, sizeof(n->disk), "%s", disk);
    n->deleting = deleting;
    return 0;
}

/* Every parent exists and following parents never loops. */
static bool tree_is_sane(struct snap_tree *t)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct snap_node *n = &t->nodes[i];
        size_t steps = 0;
        while (n->parent[0]) {
            n = snap_find(t, n->parent);
            if (!n || ++steps > t->n)
                return false;
        }
        for (size_t k = i + 1; k < t->n; k++)
            if (strcmp(t->nodes[i].id, t->nodes[k].id) == 0)
                return false;
    }
    return !t->current[0] || id_in_tree(t, t->current);
}

/* snap_add names a node by next_id in decimal: the ids it makes must fit SNAP_ID_MAX and be
 * new, so next_id must be above every id that is a number. */
static bool next_id_fresh(const struct snap_tree *t)
{
    if (t->next_id >= SNAP_NEXT_ID_MAX)
        return false;
    for (size_t i = 0; i < t->n; i++) {
        char *end;
        unsigned long long id = strtoull(t->nodes[i].id, &end, 10);
        if (!*end && id >= t->next_id)
            return false;
    }
    return true;
}

/* Every image the tree names is one a merge or a revert may write: a relative path (inside the
 * VM's folder, disk_path_ok), or the one absolute path the user chose, vm.conf's [disk]. The
 * first other absolute path, or NULL. */
static const char *outside_disk(const struct snap_tree *t, const char *configured)
{
    for (size_t i = 0; i <= t->n; i++) {
        const char *p = i < t->n ? t->nodes[i].disk : t->disk_active;
        if (p[0] == '/' && (!configured || strcmp(p, configured) != 0))
            return p;
    }
    return NULL;
}

int snap_tree_load(struct snap_tree *t, const char *vm_dir, const char *configured, char *err,
                   size_t errlen)
{
    memset(t, 0, sizeof(*t));
    t->next_id = 1;
    snprintf(t->dir, sizeof(t->dir), "%s/snapshots", vm_dir);
    if (mkdir(t->dir, 0700) < 0 && errno != EEXIST) {
        int e = errno;
        snprintf(err, errlen, "cannot create %s: %s", t->dir, strerror(e));
        return -e;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/tree.json", t->dir);
    if (access(path, F_OK) != 0)
        return 0;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root)
        return tree_error(err, errlen, path, je.text);
    json_t *nodes;
    const char *current;
    json_int_t next_id, version;
    if (json_unpack(root, "{s:I, s:I, s:s, s:o}", "version", &version, "next_id", &next_id,
                    "current", &current, "nodes", &nodes) < 0 ||
        version != 1 || !json_is_array(nodes) || next_id < 1 || strlen(current) >= SNAP_ID_MAX) {
        json_decref(root);
        return tree_error(err, errlen, path, "missing or invalid version/next_id/current/nodes");
    }
    const char *active = "";
    if (json_unpack(root, "{s?:s}", "disk_active", &active) < 0 || !disk_path_ok(active)) {
        json_decref(root);
        return tree_error(err, errlen, path, "invalid disk_active");
    }
    snprintf(t->disk_active, sizeof(t->disk_active), "%s", active);
    t->next_id = (uint64_t)next_id;
    snprintf(t->current, sizeof(t->current), "%s", current);
    size_t count = json_array_size(nodes);
    t->nodes = calloc(count ? count : 1, sizeof(*t->nodes));
    if (!t->nodes) {
        json_decref(root);
        return -ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        if (parse_node(json_array_get(nodes, i), &t->nodes[i]) < 0) {
            json_decref(root);
            snap_tree_free(t);
            return tree_error(err, errlen, path, "a node lacks a field or has a bad value");
        }
        t->n++;
    }
    json_decref(root);
    if (!tree_is_sane(t)) {
        snap_tree_free(t);
        return tree_error(err, errlen, path, "a parent is missing, an id repeats or parents loop");
    }
    if (!next_id_fresh(t)) {
        snap_tree_free(t);
        return tree_error(err, errlen, path,
                          "next_id is not above every node's id, or too large for an id");
    }
    const char *outside = outside_disk(t, configured);
    if (outside) {
        char what[SNAP_DISK_MAX + 128];
        snprintf(what, sizeof(what),
                 "disk image %s is outside the VM's folder and is not vm.conf's [disk] path",
                 outside);
        snap_tree_free(t);
        return tree_error(err, errlen, path, what);
    }
    return 0;
}

void snap_tree_tidy(struct snap_tree *t)
{
    remove_orphans(t);
}

int snap_tree_save(struct snap_tree *t, char *err, size_t errlen)
{
    json_t *nodes = json_array();
    for (size_t i = 0; i < t->n; i++) {
        const struct snap_node *n = &t->nodes[i];
        json_array_append_new(
            nodes, json_pack("{s:s, s:s, s:s, s:I, s:b, s:s, s:I, s:I, s:I}", "id", n->id, "label",
                             n->label, "parent", n->parent, "created", (json_int_t)n->created,
                             "auto", n->automatic, "vm_state", n->vm_state, "pages",
                             (json_int_t)n->pages, "memory_bytes", (json_int_t)n->mem_bytes,
                             "state_bytes", (json_int_t)n->state_bytes));
        json_t *j = json_array_get(nodes, json_array_size(nodes) - 1);
        if (n->disk[0])
            json_object_set_new(j, "disk", json_string(n->disk));
        if (n->deleting)
            json_object_set_new(j, "deleting", json_true());
        if (n->quiesced[0])
            json_object_set_new(j, "quiesced", json_string(n->quiesced));
    }
    json_t *root =
        json_pack("{s:i, s:I, s:s, s:s, s:o}", "version", 1, "next_id", (json_int_t)t->next_id,
                  "current", t->current, "disk_active", t->disk_active, "nodes", nodes);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/tree.json", t->dir);
    char *text = json_dumps(root, JSON_INDENT(1));
    json_decref(root);
    int r = text ? fs_write_atomic(path, text, strlen(text)) : -ENOMEM;
    free(text);
    if (r < 0)
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-r));
    return r;
}
