/* The VMM's own memory cgroup, and admission control (see memcg.h). The one idea: everything
 * is a small file write in cgroupfs (memory.min, memory.max, cgroup.procs), done in an order
 * where a failure at any step leaves the process where it was, with one sentence saying why. */
#include "core/vm/memcg.h"

#include "core/config/paths.h"
#include "core/config/vmconfig.h"
#include "core/vm/memtruth.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MIB ((uint64_t)1 << 20)

static int write_str(const char *dir, const char *file, const char *val)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/%s", dir, file);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, val, strlen(val));
    int e = n < 0 ? -errno : 0;
    close(fd);
    return e;
}

/* Reads the first line of DIR/FILE into BUF; 0 or -errno. */
static int read_line(const char *dir, const char *file, char *buf, size_t len)
{
    char p[PATH_MAX + 64];
    snprintf(p, sizeof(p), "%s/%s", dir, file);
    FILE *f = fopen(p, "re");
    if (!f)
        return -errno;
    if (!fgets(buf, (int)len, f))
        buf[0] = '\0'; /* an empty file: cgroup.subtree_control with nothing enabled */
    int rc = ferror(f) ? -EIO : 0;
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    return rc;
}

static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *s = list; (s = strstr(s, word)); s += n)
        if ((s == list || s[-1] == ' ') && (s[n] == '\0' || s[n] == ' '))
            return true;
    return false;
}

/* The cgroup2 mount point, from /proc/self/mountinfo. */
static int cgroup2_mount(char *out, size_t len)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -errno;
    char line[1024];
    int rc = -ENOENT;
    while (rc < 0 && fgets(line, sizeof(line), f)) {
        char mnt[512], fstype[64];
        const char *dash = strstr(line, " - ");
        if (dash && sscanf(dash, " - %63s", fstype) == 1 && !strcmp(fstype, "cgroup2") &&
            sscanf(line, "%*s %*s %*s %*s %511s", mnt) == 1) {
            snprintf(out, len, "%s", mnt);
            rc = 0;
        }
    }
    fclose(f);
    return rc;
}

/* This process's cgroup v2 path ("0::PATH" in /proc/self/cgroup). */
static int own_cgroup(char *out, size_t len)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return -errno;
    char line[512];
    int rc = -ENOENT;
    while (rc < 0 && fgets(line, sizeof(line), f))
        if (!strncmp(line, "0::", 3)) {
            line[strcspn(line, "\n")] = '\0';
            snprintf(out, len, "%s", line + 3);
            rc = 0;
        }
    fclose(f);
    return rc;
}

/* Why not, as "cgroup v2 memory controller not available: WHAT (ERRNO)"; FMT has one %s, ARG. */
static int fail(struct memcg *cg, int rc, const char *fmt, const char *arg)
{
    char what[400];
    snprintf(what, sizeof(what), fmt, arg);
    snprintf(cg->why, sizeof(cg->why), "cgroup v2 memory controller not available: %s%s%s%s", what,
             rc == -ENOTSUP ? "" : " (", rc == -ENOTSUP ? "" : strerror(-rc),
             rc == -ENOTSUP ? "" : ")");
    cg->enforced = false;
    return rc;
}

int memcg_enter(struct memcg *cg, const char *name, uint64_t min, uint64_t max)
{
    memset(cg, 0, sizeof(*cg));
    cg->min = min;
    cg->max = max;
    char mnt[512], own[512], parent[PATH_MAX], grand[PATH_MAX], buf[512];
    int rc = cgroup2_mount(mnt, sizeof(mnt));
    if (rc < 0)
        return fail(cg, rc, "no cgroup2 file system is mounted%.300s", "");
    rc = own_cgroup(own, sizeof(own));
    if (rc < 0)
        return fail(cg, rc, "this process has no cgroup v2 path in /proc/self/cgroup%.300s", "");
    const char *env = getenv("VMWS_CGROUP_PARENT");
    if (env && *env) {
        snprintf(parent, sizeof(parent), "%s", env);
    } else {
        /* A sibling of our own cgroup (a process may not sit in a cgroup with children, so
         * not below it); at the root, /vmws. */
        char *slash = strrchr(own, '/');
        if (slash)
            *slash = '\0';
        snprintf(parent, sizeof(parent), "%s%s/vmws", mnt, own);
        if (slash)
            *slash = '/';
    }
    snprintf(grand, sizeof(grand), "%s", parent);
    *strrchr(grand, '/') = '\0';
    snprintf(cg->origin, sizeof(cg->origin), "%s%s", mnt, strcmp(own, "/") ? own : "");
    if ((rc = read_line(grand, "cgroup.controllers", buf, sizeof(buf))) < 0)
        return fail(cg, rc, "cannot read %.300s/cgroup.controllers", grand);
    if (!has_word(buf, "memory")) {
        char what[400];
        snprintf(what, sizeof(what),
                 "%.200s offers '%.60s' only (the memory controller is on cgroup v1 here)", grand,
                 buf);
        return fail(cg, -ENOTSUP, "%.300s", what);
    }
    if ((rc = read_line(grand, "cgroup.subtree_control", buf, sizeof(buf))) < 0 ||
        (!has_word(buf, "memory") &&
         (rc = write_str(grand, "cgroup.subtree_control", "+memory")) < 0))
        return fail(cg, rc, "cannot enable +memory in %.300s/cgroup.subtree_control", grand);
    if (mkdir(parent, 0755) < 0 && errno != EEXIST)
        return fail(cg, -errno, "cannot create %.300s", parent);
    if ((rc = write_str(parent, "cgroup.subtree_control", "+memory")) < 0)
        return fail(cg, rc, "cannot enable +memory in %.300s/cgroup.subtree_control", parent);
    int n = snprintf(cg->path, sizeof(cg->path), "%s/%s", parent, name);
    if (n < 0 || (size_t)n >= sizeof(cg->path))
        return fail(cg, -ENAMETOOLONG, "the cgroup path under %.300s", parent);
    if (mkdir(cg->path, 0755) < 0 && errno != EEXIST)
        return fail(cg, -errno, "cannot create %.300s", cg->path);
    char v[32];
    snprintf(v, sizeof(v), "%" PRIu64, min);
    if ((rc = write_str(cg->path, "memory.min", v)) < 0) {
        rmdir(cg->path);
        return fail(cg, rc, "cannot write %.300s/memory.min", cg->path);
    }
    if (max)
        snprintf(v, sizeof(v), "%" PRIu64, max);
    else
        snprintf(v, sizeof(v), "max");
    if ((rc = write_str(cg->path, "memory.max", v)) < 0) {
        rmdir(cg->path);
        return fail(cg, rc, "cannot write %.300s/memory.max", cg->path);
    }
    snprintf(v, sizeof(v), "%ld", (long)getpid());
    if ((rc = write_str(cg->path, "cgroup.procs", v)) < 0) {
        rmdir(cg->path);
        return fail(cg, rc, "cannot move the VMM into %.300s", cg->path);
    }
    cg->enforced = true;
    return 0;
}

void memcg_leave(struct memcg *cg)
{
    if (!cg->enforced)
        return;
    char v[32];
    snprintf(v, sizeof(v), "%ld", (long)getpid());
    if (write_str(cg->origin, "cgroup.procs", v) == 0)
        rmdir(cg->path);
    cg->enforced = false;
}

int memcg_usage_read(const struct memcg *cg, struct memcg_usage *u)
{
    memset(u, 0, sizeof(*u));
    if (!cg->enforced)
        return -ENOENT;
    char buf[64];
    int rc = read_line(cg->path, "memory.current", buf, sizeof(buf));
    if (rc < 0)
        return rc;
    u->current = strtoull(buf, NULL, 10);
    struct {
        const char *file, *key;
        uint64_t *dst;
    } keys[] = {
        {"memory.stat", "file", &u->file},        {"memory.stat", "anon", &u->anon},
        {"memory.stat", "shmem", &u->shmem},      {"memory.events", "high", &u->events_high},
        {"memory.events", "max", &u->events_max}, {"memory.events", "oom", &u->events_oom},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (i && !strcmp(keys[i].file, keys[i - 1].file))
            continue;
        char p[PATH_MAX + 32];
        snprintf(p, sizeof(p), "%s/%s", cg->path, keys[i].file);
        FILE *f = fopen(p, "re");
        if (!f)
            continue;
        char k[64];
        unsigned long long val;
        while (fscanf(f, "%63s %llu", k, &val) == 2)
            for (size_t j = i; j < sizeof(keys) / sizeof(keys[0]); j++)
                if (!strcmp(keys[j].file, keys[i].file) && !strcmp(keys[j].key, k))
                    *keys[j].dst = val;
        fclose(f);
    }
    return 0;
}

json_t *memcg_json(const struct memcg *cg)
{
    json_t *o = json_pack("{s:b, s:I, s:I}", "enforced", cg->enforced, "min", (json_int_t)cg->min,
                          "max", (json_int_t)cg->max);
    struct memcg_usage u;
    if (!cg->enforced) {
        json_object_set_new(o, "why", json_string(cg->why));
    } else {
        json_object_set_new(o, "path", json_string(cg->path));
        if (memcg_usage_read(cg, &u) == 0) {
            json_object_set_new(o, "current", json_integer((json_int_t)u.current));
            json_object_set_new(o, "file", json_integer((json_int_t)u.file));
            json_object_set_new(o, "anon", json_integer((json_int_t)u.anon));
            json_object_set_new(o, "shmem", json_integer((json_int_t)u.shmem));
            json_object_set_new(o, "events_max", json_integer((json_int_t)u.events_max));
            json_object_set_new(o, "events_oom", json_integer((json_int_t)u.events_oom));
        }
    }
    return o;
}

uint64_t memcg_host_margin(uint64_t host_total)
{
    uint64_t m = host_total / 10;
    if (m < 256 * MIB)
        m = 256 * MIB;
    if (m > 2048 * MIB)
        m = 2048 * MIB;
    return m;
}

int memcg_admit(const struct memcg_admission *a, char *err, size_t errlen)
{
    uint64_t used = a->others + a->margin;
    uint64_t room = a->host_total > used ? a->host_total - used : 0;
    if (a->want <= room)
        return 0;
    snprintf(err, errlen,
             "its reservation of %" PRIu64 " MiB cannot be met: the host has %" PRIu64
             " MiB of RAM, %u running VM(s) reserve %" PRIu64 " MiB and the host keeps %" PRIu64
             " MiB for itself, which leaves %" PRIu64
             " MiB (lower [memory] reservation in vm.conf, or stop a VM)",
             a->want / MIB, a->host_total / MIB, a->others_count, a->others / MIB, a->margin / MIB,
             room / MIB);
    return -ENOMEM;
}

int memcg_admission_gather(struct memcg_admission *a, const char *self, uint64_t want)
{
    memset(a, 0, sizeof(*a));
    a->want = want;
    struct memtruth_host h;
    int rc = memtruth_host_measure(&h, NULL);
    if (rc < 0)
        return rc;
    a->host_total = h.total;
    a->margin = memcg_host_margin(h.total);
    char home[PATH_MAX];
    if ((rc = paths_home(home, sizeof(home))) < 0)
        return rc;
    DIR *d = opendir(home);
    if (!d)
        return -errno;
    struct dirent *e;
    while ((e = readdir(d))) {
        struct vm_paths p;
        struct vm_config cfg;
        char err[512];
        if (!vm_name_valid(e->d_name) || !strcmp(e->d_name, self) ||
            paths_for_vm(e->d_name, &p) < 0 || pidfile_live_pid(p.pidfile) <= 0)
            continue;
        vmconfig_defaults(&cfg, e->d_name);
        if (vmconfig_load(p.config, &cfg, err, sizeof(err)) == 0 && cfg.memory.reservation) {
            a->others += cfg.memory.reservation;
            a->others_count++;
        }
    }
    closedir(d);
    return 0;
}
