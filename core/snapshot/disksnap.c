/* The VM's disk inside the snapshot tree: overlays, and merging a deleted node's image away. */
#include "core/snapshot/disksnap.h"

#include "core/util/bytes.h"
#include "core/util/crashpoint.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_RUN (1u << 20) /* bytes copied per read/write */

const char *disksnap_active(const struct snap_tree *t, const char *configured)
{
    return t->disk_active[0] ? t->disk_active : configured;
}

const char *disksnap_format(const struct snap_tree *t, const char *rel)
{
    if (strncmp(rel, "snapshots/", 10) == 0)
        return "qcow2"; /* ours */
    return t->base_format[0] ? t->base_format : NULL;
}

void disksnap_path(const struct snap_tree *t, const char *rel, char *out, size_t len)
{
    if (rel[0] == '/') {
        snprintf(out, len, "%s", rel);
        return;
    }
    /* t->dir is VMDIR/snapshots */
    const char *slash = strrchr(t->dir, '/');
    int dirlen = slash ? (int)(slash - t->dir) : (int)strlen(t->dir);
    snprintf(out, len, "%.*s/%s", dirlen, t->dir, rel);
}

/* How an image at FROM (absolute) names TARGET (absolute) as its backing file: by base name
 * in the same folder, "../NAME" one folder up (the VM's folder seen from snapshots/), else the
 * absolute path, so a VM's folder can be moved as a whole. */
static void backing_ref(const char *from, const char *target, char *out, size_t len)
{
    char fd[PATH_MAX], td[PATH_MAX], tb[PATH_MAX], up[PATH_MAX];
    snprintf(fd, sizeof(fd), "%s", from);
    snprintf(td, sizeof(td), "%s", target);
    snprintf(tb, sizeof(tb), "%s", target);
    const char *from_dir = dirname(fd), *target_dir = dirname(td), *base = basename(tb);
    snprintf(up, sizeof(up), "%s", from_dir);
    const char *from_parent = dirname(up);
    if (strcmp(from_dir, target_dir) == 0)
        snprintf(out, len, "%s", base);
    else if (strcmp(from_parent, target_dir) == 0)
        snprintf(out, len, "../%s", base);
    else
        snprintf(out, len, "%s", target);
}

int disksnap_overlay(struct snap_tree *t, const char *backing, char *out, size_t len, char *err,
                     size_t errlen)
{
    char base[PATH_MAX], path[PATH_MAX], ref[PATH_MAX];
    disksnap_path(t, backing, base, sizeof(base));
    for (unsigned k = 1; k < 100000; k++) {
        snprintf(out, len, "snapshots/disk-%u.qcow2", k);
        disksnap_path(t, out, path, sizeof(path));
        backing_ref(path, base, ref, sizeof(ref));
        int r = disk_create_qcow2(path, 0, ref, disksnap_format(t, backing));
        if (r == 0)
            return 0;
        if (r != -EEXIST) {
            snprintf(err, errlen, "cannot create the disk overlay %s on %s: %s", path, base,
                     strerror(-r));
            return r;
        }
    }
    snprintf(err, errlen, "no free name for a disk overlay in %s", t->dir);
    return -EEXIST;
}

void disksnap_discard(const struct snap_tree *t, const char *rel)
{
    if (strncmp(rel, "snapshots/", 10) != 0)
        return;
    char path[PATH_MAX];
    disksnap_path(t, rel, path, sizeof(path));
    unlink(path);
}

/* The format of the image at ABS (an absolute path): ours in snapshots/ are qcow2, the base is
 * what vm.conf says. */
static const char *backing_format(const struct snap_tree *t, const char *abs)
{
    char dir[PATH_MAX], real_dir[PATH_MAX], real_snap[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", abs);
    if (realpath(dirname(dir), real_dir) && realpath(t->dir, real_snap) &&
        strcmp(real_dir, real_snap) == 0)
        return "qcow2";
    return t->base_format[0] ? t->base_format : NULL;
}

/* The image alone (no backing file): its own layer. Raw images have no backing file anyway. */
static struct disk *open_alone(const struct snap_tree *t, const char *rel, char *err, size_t errlen)
{
    char path[PATH_MAX], name[1024];
    disksnap_path(t, rel, path, sizeof(path));
    int r = disk_backing_name(path, name, sizeof(name));
    if (r < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(-r));
        return NULL;
    }
    return name[0] ? disk_open_layer(path, err, errlen)
                   : disk_open_format(path, disksnap_format(t, rel), true, 0, err, errlen);
}

bool disksnap_has_data(const struct snap_tree *t, const char *rel)
{
    char err[256];
    struct disk *d = open_alone(t, rel, err, sizeof(err));
    if (!d)
        return true; /* unknown: keep it */
    uint32_t g = disk_granule(d) ? disk_granule(d) : (64u << 10);
    uint64_t words = (disk_size(d) / g + 64) / 64;
    uint64_t *map = calloc(words, 8);
    bool any = !map || disk_layer_map(d, g, map) < 0;
    for (uint64_t i = 0; map && !any && i < words; i++)
        any = map[i] != 0;
    free(map);
    disk_close(d);
    return any;
}

const char *disksnap_how_name(enum disksnap_how how)
{
    static const char *const names[] = {"none", "drop", "stream", "commit"};
    return names[how];
}

static const char *dep_disk(const struct snap_tree *t, const struct snap_node *dep)
{
    return dep ? dep->disk : t->disk_active;
}

/* The images that have N's as backing file: its children's, and the active one if N is current. */
static int find_deps(struct snap_tree *t, const struct snap_node *n, struct snap_node **deps,
                     size_t *ndeps, char *err, size_t errlen)
{
    *ndeps = 0;
    for (size_t i = 0; i <= t->n; i++) {
        struct snap_node *c = i < t->n ? &t->nodes[i] : NULL;
        bool dep = c ? strcmp(c->parent, n->id) == 0 && c->disk[0]
                     : strcmp(t->current, n->id) == 0 && t->disk_active[0];
        if (!dep)
            continue;
        if (*ndeps == DISKSNAP_MAX_DEPS) {
            snprintf(err, errlen, "snapshot %s has more than %d children with disks", n->label,
                     DISKSNAP_MAX_DEPS);
            return -E2BIG;
        }
        deps[(*ndeps)++] = c;
    }
    return 0;
}

static uint64_t count_and_not(const uint64_t *a, const uint64_t *b, uint64_t words)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < words; i++)
        n += (uint64_t)__builtin_popcountll(a[i] & ~b[i]);
    return n;
}

/* The layer maps of N's image and of the images above it, at one granule that fits all. */
struct maps {
    uint32_t granule;
    uint64_t words;
    uint64_t *n; /* N's own clusters */
    uint64_t *dep[DISKSNAP_MAX_DEPS];
};

static void maps_free(struct maps *m, size_t ndeps)
{
    free(m->n);
    for (size_t i = 0; i < ndeps; i++)
        free(m->dep[i]);
}

/* Layer maps of frozen images, kept while the file is unchanged (same inode, size and mtime):
 * listing a tree's delete costs every second must not rescan every image. */
#define MAP_CACHE 16
static struct map_cache {
    char path[PATH_MAX];
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    uint32_t granule;
    uint64_t words, *map;
} map_cache[MAP_CACHE];
static unsigned map_cache_next;
static pthread_mutex_t map_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static struct map_cache *cache_find(const char *path, const struct stat *st, uint32_t granule)
{
    for (unsigned i = 0; i < MAP_CACHE; i++) {
        struct map_cache *c = &map_cache[i];
        if (c->map && c->granule == granule && c->dev == st->st_dev && c->ino == st->st_ino &&
            c->size == st->st_size && c->mtime.tv_sec == st->st_mtim.tv_sec &&
            c->mtime.tv_nsec == st->st_mtim.tv_nsec && strcmp(c->path, path) == 0)
            return c;
    }
    return NULL;
}

/* IMG's layer map into MAP (WORDS words); PATH, if not NULL, names a file whose map may be
 * cached. */
static int layer_map(struct disk *img, const char *path, uint32_t granule, uint64_t *map,
                     uint64_t words)
{
    struct stat st;
    bool cacheable = path && stat(path, &st) == 0;
    pthread_mutex_lock(&map_cache_lock);
    struct map_cache *c = cacheable ? cache_find(path, &st, granule) : NULL;
    if (c && c->words == words)
        memcpy(map, c->map, words * 8);
    pthread_mutex_unlock(&map_cache_lock);
    if (c)
        return 0;
    int r = disk_layer_map(img, granule, map);
    uint64_t *copy = r == 0 && cacheable ? malloc(words * 8) : NULL;
    if (!copy)
        return r;
    memcpy(copy, map, words * 8);
    pthread_mutex_lock(&map_cache_lock);
    c = &map_cache[map_cache_next++ % MAP_CACHE];
    free(c->map);
    *c = (struct map_cache){.dev = st.st_dev,
                            .ino = st.st_ino,
                            .size = st.st_size,
                            .mtime = st.st_mtim,
                            .granule = granule,
                            .words = words,
                            .map = copy};
    snprintf(c->path, sizeof(c->path), "%s", path);
    pthread_mutex_unlock(&map_cache_lock);
    return 0;
}

/* CACHED: estimates may use the map cache; a merge reads the images themselves (a write within
 * the filesystem's timestamp granularity would not show in the mtime). */
static int maps_read(struct snap_tree *t, struct snap_node *n, struct disksnap_plan *p,
                     struct disk *active, bool cached, struct maps *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    struct disk *imgs[DISKSNAP_MAX_DEPS + 1] = {0};
    int r = 0;
    imgs[0] = open_alone(t, n->disk, err, errlen);
    for (size_t i = 0; i < p->ndeps && imgs[0] && r == 0; i++) {
        imgs[i + 1] =
            !p->deps[i] && active ? active : open_alone(t, dep_disk(t, p->deps[i]), err, errlen);
        r = imgs[i + 1] ? 0 : -EIO;
    }
    if (!imgs[0])
        r = -EIO;
    uint64_t size = imgs[0] ? disk_size(imgs[0]) : 0;
    m->granule = 64u << 10;
    for (size_t i = 0; r == 0 && i <= p->ndeps; i++) {
        uint32_t g = disk_granule(imgs[i]);
        if (g && g < m->granule)
            m->granule = g;
        if (disk_size(imgs[i]) != size) {
            snprintf(err, errlen, "the images of snapshot %s and of its child differ in size",
                     n->label);
            r = -EINVAL;
        }
    }
    m->words = (size / m->granule + 64) / 64;
    for (size_t i = 0; r == 0 && i <= p->ndeps; i++) {
        uint64_t **map = i ? &m->dep[i - 1] : &m->n;
        char path[PATH_MAX];
        disksnap_path(t, i ? dep_disk(t, p->deps[i - 1]) : n->disk, path, sizeof(path));
        *map = calloc(m->words, 8);
        r = *map ? layer_map(imgs[i], imgs[i] == active || !cached ? NULL : path, m->granule, *map,
                             m->words)
                 : -ENOMEM;
        if (r == -EBUSY)
            snprintf(err, errlen,
                     "the running disk's image is busy: a request on it has been in flight for "
                     "over %d ms (is its storage hanging?); try again",
                     DISK_LOCK_WAIT_MS);
        else if (r < 0)
            snprintf(err, errlen, "cannot read the cluster map of a disk image of snapshot %s: %s",
                     n->label, strerror(-r));
    }
    for (size_t i = 0; i <= p->ndeps; i++)
        if (imgs[i] && imgs[i] != active)
            disk_close(imgs[i]);
    if (r < 0)
        maps_free(m, p->ndeps);
    return r;
}

int disksnap_plan(struct snap_tree *t, struct snap_node *n, struct disk *active,
                  struct disksnap_plan *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    if (!n->disk[0])
        return 0;
    int r = find_deps(t, n, p->deps, &p->ndeps, err, errlen);
    if (r < 0)
        return r;
    if (p->ndeps == 0) {
        p->how = DISKSNAP_DROP;
        snprintf(p->obsolete, sizeof(p->obsolete), "%s", n->disk);
        return 0;
    }
    struct maps m;
    r = maps_read(t, n, p, active, true, &m, err, errlen);
    if (r < 0)
        return r;
    for (size_t i = 0; i < p->ndeps; i++)
        p->stream_needs += count_and_not(m.n, m.dep[i], m.words) * m.granule;
    if (p->ndeps == 1)
        p->commit_needs = count_and_not(m.dep[0], m.n, m.words) * m.granule;
    maps_free(&m, p->ndeps);
    bool commit = p->ndeps == 1 && (n->deleting || p->commit_needs <= p->stream_needs);
    if (n->deleting && !commit) {
        snprintf(err, errlen,
                 "snapshot %s was being deleted by merging its only child's disk "
                 "into it, but it now has %zu; delete those first",
                 n->label, p->ndeps);
        return -EBUSY;
    }
    p->how = commit ? DISKSNAP_COMMIT : DISKSNAP_STREAM;
    p->needs = commit ? p->commit_needs : p->stream_needs;
    return 0;
}

/* Copies SRC's content to DST wherever WANT has a bit (granules of G bytes). */
static int copy_runs(struct disk *src, struct disk *dst, const uint64_t *want, uint64_t words,
                     uint32_t g)
{
    uint8_t *buf = malloc(COPY_RUN);
    if (!buf)
        return -ENOMEM;
    uint64_t size = disk_size(src), nbits = words * 64, per = COPY_RUN / g ? COPY_RUN / g : 1;
    int r = 0;
    for (uint64_t b = 0; r == 0 && b < nbits && b * g < size;) {
        if (!(want[b / 64] >> (b % 64) & 1)) {
            b++;
            continue;
        }
        uint64_t e = b + 1;
        while (e < nbits && e - b < per && (want[e / 64] >> (e % 64) & 1))
            e++;
        uint64_t off = b * g, len = (e - b) * g;
        if (len > size - off)
            len = size - off;
        r = disk_read(src, off, buf, len);
        if (r == 0)
            r = bytes_all_zero(buf, len) ? disk_write_zeroes(dst, off, len)
                                         : disk_write(dst, off, buf, len);
        b = e;
    }
    if (r == 0)
        r = disk_flush(dst);
    free(buf);
    return r;
}

/* Every image above N gets N's clusters it lacks, then N's backing file as its own. */
static int stream(struct snap_tree *t, struct snap_node *n, struct disksnap_plan *p,
                  const struct maps *m, char *err, size_t errlen)
{
    char npath[PATH_MAX], bname[1024], babs[PATH_MAX];
    disksnap_path(t, n->disk, npath, sizeof(npath));
    int r = disk_backing_name(npath, bname, sizeof(bname));
    if (r == 0 && bname[0]) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s", npath);
        snprintf(babs, sizeof(babs), "%s%s%s", bname[0] == '/' ? "" : dirname(dir),
                 bname[0] == '/' ? "" : "/", bname);
    }
    struct disk *src = r == 0 ? open_alone(t, n->disk, err, errlen) : NULL;
    if (!src)
        return r < 0 ? r : -EIO;
    for (size_t i = 0; r == 0 && i < p->ndeps; i++) {
        char dpath[PATH_MAX], ref[PATH_MAX];
        disksnap_path(t, dep_disk(t, p->deps[i]), dpath, sizeof(dpath));
        struct disk *dst = disk_open_format(dpath, "qcow2", false, 0, err, errlen);
        uint64_t *want = dst ? calloc(m->words, 8) : NULL;
        r = want ? disk_layer_map(dst, m->granule, want) : -EIO;
        for (uint64_t w = 0; r == 0 && w < m->words; w++)
            want[w] = m->n[w] & ~want[w];
        if (r == 0)
            r = copy_runs(src, dst, want, m->words, m->granule);
        free(want);
        int cr = dst ? disk_close(dst) : 0;
        if (r == 0)
            r = cr;
        if (r == 0) {
            crash_point("disk-streamed");
            if (bname[0])
                backing_ref(dpath, babs, ref, sizeof(ref));
            r = disk_set_backing(dpath, bname[0] ? ref : NULL, backing_format(t, babs));
        }
        if (r < 0 && !err[0])
            snprintf(err, errlen, "cannot stream %s into %s: %s", npath, dpath, strerror(-r));
    }
    disk_close(src);
    snprintf(p->obsolete, sizeof(p->obsolete), "%s", n->disk);
    return r;
}

/* The one image above N is copied into N's, which then takes its place. */
static int commit(struct snap_tree *t, struct snap_node *n, struct disksnap_plan *p,
                  const struct maps *m, char *err, size_t errlen)
{
    struct snap_node *d = p->deps[0];
    char npath[PATH_MAX], dpath[PATH_MAX];
    disksnap_path(t, n->disk, npath, sizeof(npath));
    disksnap_path(t, dep_disk(t, d), dpath, sizeof(dpath));
    if (!n->deleting) { /* from here on N's own image stops being N's */
        n->deleting = true;
        int r = snap_tree_save(t, err, errlen);
        if (r < 0) {
            n->deleting = false;
            return r;
        }
    }
    struct disk *src = open_alone(t, dep_disk(t, d), err, errlen);
    struct disk *dst =
        src ? disk_open_format(npath, disksnap_format(t, n->disk), false, 0, err, errlen) : NULL;
    int r = dst ? copy_runs(src, dst, m->dep[0], m->words, m->granule) : -EIO;
    disk_close(src);
    int cr = disk_close(dst);
    if (r == 0)
        r = cr;
    if (r < 0) {
        if (!err[0] || dst)
            snprintf(err, errlen, "cannot commit %s into %s: %s", dpath, npath, strerror(-r));
        return r;
    }
    crash_point("disk-committed");
    /* What had D's image as backing file now reads the same from N's. */
    struct snap_node *above[DISKSNAP_MAX_DEPS];
    size_t nabove = 0;
    if (d)
        r = find_deps(t, d, above, &nabove, err, errlen);
    for (size_t i = 0; r == 0 && i < nabove; i++) {
        char cpath[PATH_MAX], ref[PATH_MAX];
        disksnap_path(t, dep_disk(t, above[i]), cpath, sizeof(cpath));
        backing_ref(cpath, npath, ref, sizeof(ref));
        r = disk_set_backing(cpath, ref, disksnap_format(t, n->disk));
        if (r < 0)
            snprintf(err, errlen, "cannot point %s at %s: %s", cpath, npath, strerror(-r));
    }
    if (r < 0)
        return r;
    snprintf(p->obsolete, sizeof(p->obsolete), "%s", dep_disk(t, d));
    char *slot = d ? d->disk : t->disk_active;
    snprintf(slot, SNAP_DISK_MAX, "%s", n->disk);
    return 0;
}

int disksnap_merge(struct snap_tree *t, struct snap_node *n, struct disksnap_plan *p, char *err,
                   size_t errlen)
{
    err[0] = 0;
    if (p->how == DISKSNAP_NONE || p->how == DISKSNAP_DROP)
        return 0;
    struct maps m;
    int r = maps_read(t, n, p, NULL, false, &m, err, errlen);
    if (r < 0)
        return r;
    r = p->how == DISKSNAP_STREAM ? stream(t, n, p, &m, err, errlen)
                                  : commit(t, n, p, &m, err, errlen);
    maps_free(&m, p->ndeps);
    return r;
}

void disksnap_finish(const struct snap_tree *t, const struct disksnap_plan *p)
{
    if (!p->obsolete[0] || p->obsolete[0] == '/')
        return; /* an image outside the VM's folder is the user's */
    char path[PATH_MAX];
    disksnap_path(t, p->obsolete, path, sizeof(path));
    unlink(path);
}
