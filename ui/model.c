/* Gathering for the dashboard (see model.h). Every refresh: readdir($VMWS_HOME), one
 * query-status per running VM over a connection kept open between refreshes (no connect and
 * greeting each second), fstat of each .vmem, /proc/meminfo, and query-memory for the
 * selected VM. A VMM that stops answering is dropped and reconnected at the next refresh. */
#include "ui/model.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/config/dconfig.h"
#include "core/control/ctl.h"

#define CTL_TIMEOUT_MS 1500

int64_t model_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct dash_vm *model_find(struct dash_model *m, const char *name)
{
    for (size_t i = 0; name && i < m->n; i++) {
        if (strcmp(m->vms[i]->name, name) == 0)
            return m->vms[i];
    }
    return NULL;
}

bool model_vm_up(const struct dash_vm *v)
{
    return v->live || v->pid > 0;
}

static void vm_free(struct dash_vm *v)
{
    ctl_client_close(v->ctl);
    snaptree_free(&v->snaps);
    free(v);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp((*(struct dash_vm *const *)a)->name, (*(struct dash_vm *const *)b)->name);
}

/* Adds VMs that appeared, drops those whose directory went away, reloads configs. */
static void scan_home(struct dash_model *m)
{
    char home[PATH_MAX];
    for (size_t i = 0; i < m->n; i++)
        m->vms[i]->seen = false;
    if (paths_home(home, sizeof(home)) == 0) {
        DIR *d = opendir(home);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (!vm_name_valid(e->d_name))
                continue;
            struct dash_vm *v = model_find(m, e->d_name);
            if (!v) {
                char conf[PATH_MAX + 300];
                struct stat st;
                snprintf(conf, sizeof(conf), "%s/%s/vm.conf", home, e->d_name);
                if (stat(conf, &st) < 0)
                    continue;
                struct dash_vm **nv = realloc(m->vms, (m->n + 1) * sizeof(*nv));
                v = calloc(1, sizeof(*v));
                if (!nv || !v) {
                    free(v);
                    if (nv)
                        m->vms = nv;
                    break;
                }
                m->vms = nv;
                m->vms[m->n++] = v;
                snprintf(v->name, sizeof(v->name), "%.63s", e->d_name);
                if (paths_for_vm(v->name, &v->paths) < 0)
                    v->paths.config[0] = '\0';
                snprintf(v->state, sizeof(v->state), "off");
                v->uptime_ms = -1;
            }
            v->seen = true;
        }
        if (d)
            closedir(d);
    }
    size_t keep = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->vms[i]->seen)
            m->vms[keep++] = m->vms[i];
        else
            vm_free(m->vms[i]);
    }
    m->n = keep;
    if (m->n > 1)
        qsort(m->vms, m->n, sizeof(*m->vms), name_cmp);
    for (size_t i = 0; i < m->n; i++) {
        struct dash_vm *v = m->vms[i];
        char err[512];
        vmconfig_defaults(&v->cfg, v->name);
        err[0] = '\0';
        v->cfg_ok =
            v->paths.config[0] && vmconfig_load(v->paths.config, &v->cfg, err, sizeof(err)) == 0;
        /* the directory is long and known: keep "vm.conf:LINE: what is wrong" */
        const char *at = strstr(err, "vm.conf:");
        snprintf(v->cfg_err, sizeof(v->cfg_err), "%.150s", at ? at : err);
    }
}

/* VNC as "host:port", from {"host": H, "port": P}, {"address": A} or a plain string; a VM
 * with vnc_listen = unix shows its socket's path ({"socket": S}). */
static void vnc_address(struct dash_vm *v, json_t *x)
{
    if (json_is_string(x)) {
        snprintf(v->vnc, sizeof(v->vnc), "%s", json_string_value(x));
    } else if (json_is_object(x)) {
        const char *a = json_string_value(json_object_get(x, "address"));
        const char *h = json_string_value(json_object_get(x, "host"));
        const char *sock = json_string_value(json_object_get(x, "socket"));
        json_t *p = json_object_get(x, "port");
        if (sock)
            snprintf(v->vnc, sizeof(v->vnc), "%s", sock);
        else if (a)
            snprintf(v->vnc, sizeof(v->vnc), "%s", a);
        else if (h && json_is_integer(p))
            snprintf(v->vnc, sizeof(v->vnc), "%.40s:%lld", h, (long long)json_integer_value(p));
    }
}

/* The forwards vm.conf lists; no rates (the card is not running). */
static void net_from_config(struct dash_vm *v)
{
    v->net = v->cfg_ok && v->cfg.net.enabled;
    v->forwards[0] = '\0';
    for (unsigned i = 0; v->net && i < v->cfg.net.nforwards; i++) {
        char f[24];
        vmconfig_net_forward_format(&v->cfg.net.forwards[i], f, sizeof(f));
        size_t n = strlen(v->forwards);
        snprintf(v->forwards + n, sizeof(v->forwards) - n, "%s%s", n ? " " : "", f);
    }
    v->rx_rate = v->tx_rate = 0;
}

static uint64_t json_u64(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* query-status's "management" (core/vmm/vmm_mem.c) and "balloon", or vm.conf's [memory]. */
static void management_from(struct dash_vm *v, json_t *mg, json_t *balloon)
{
    v->reservation = v->cfg.memory.reservation;
    v->limit = v->cfg.memory.limit;
    v->shares = v->cfg.memory.shares;
    v->dynamic = v->cfg.memory.dynamic;
    v->cg_enforced = false;
    v->cg_current = 0;
    v->policy_reason[0] = '\0';
    v->policy_keep = 0;
    if (balloon) {
        v->balloon_target = json_u64(balloon, "target");
        v->balloon_actual = json_u64(balloon, "actual");
    } else if (!model_vm_up(v)) {
        v->balloon_target = v->balloon_actual = 0;
    }
    if (!json_is_object(mg))
        return;
    v->reservation = json_u64(mg, "reservation");
    v->limit = json_u64(mg, "limit");
    v->shares = (unsigned)json_u64(mg, "shares");
    json_t *cg = json_object_get(mg, "cgroup"), *pol = json_object_get(mg, "policy");
    v->cg_enforced = json_is_true(json_object_get(cg, "enforced"));
    v->cg_current = json_u64(cg, "current");
    v->dynamic = json_is_true(json_object_get(pol, "dynamic"));
    json_t *last = json_array_get(json_object_get(pol, "changes"), 0);
    const char *why = json_string_value(json_object_get(last, "reason"));
    if (why) {
        snprintf(v->policy_reason, sizeof(v->policy_reason), "%s", why);
        v->policy_keep = json_u64(last, "keep");
    }
}

/* query-status's "net" (core/virtio/virtio_net.h): its forwards, and rates from the byte
 * counters since the previous refresh (a counter that went down - a new VMM - starts anew). */
static void net_from_status(struct dash_vm *v, json_t *net)
{
    if (!net) {
        v->net = false;
        v->net_sample_ms = 0;
        return;
    }
    v->net = true;
    v->forwards[0] = '\0';
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(net, "forwards"), i, f)
    {
        size_t n = strlen(v->forwards);
        snprintf(v->forwards + n, sizeof(v->forwards) - n, "%s%s", n ? " " : "",
                 json_string_value(f) ? json_string_value(f) : "?");
    }
    uint64_t rx = (uint64_t)json_integer_value(json_object_get(net, "rx_bytes"));
    uint64_t tx = (uint64_t)json_integer_value(json_object_get(net, "tx_bytes"));
    int64_t now = model_now_ms();
    if (v->net_sample_ms && now > v->net_sample_ms && rx >= v->rx_bytes && tx >= v->tx_bytes) {
        double s = (double)(now - v->net_sample_ms) / 1000;
        v->rx_rate = (double)(rx - v->rx_bytes) / s;
        v->tx_rate = (double)(tx - v->tx_bytes) / s;
    } else {
        v->rx_rate = v->tx_rate = 0;
    }
    v->rx_bytes = rx, v->tx_bytes = tx, v->net_sample_ms = now;
}

static void query_status(struct dash_vm *v)
{
    char err[512];
    v->live = false;
    struct stat st;
    if (!v->ctl && stat(v->paths.ctl_sock, &st) == 0 && model_now_ms() >= v->connect_after_ms) {
        int64_t t0 = model_now_ms();
        v->ctl = ctl_client_connect(v->paths.ctl_sock, NULL, err, sizeof(err));
        if (!v->ctl && model_now_ms() - t0 > 1000) /* it never greeted: hung, try again later */
            v->connect_after_ms = model_now_ms() + 10000;
        /* Where VNC listens does not change while the VMM lives: ask once per connection. */
        v->vnc[0] = '\0';
        json_t *disp = v->ctl ? ctl_client_execute(v->ctl, "query-display", NULL, CTL_TIMEOUT_MS,
                                                   err, sizeof(err))
                              : NULL;
        vnc_address(v, json_object_get(disp, "vnc"));
        /* The password it asks for (read at its start): shown beside the address. */
        const char *pwfile =
            json_string_value(json_object_get(json_object_get(disp, "vnc"), "password_file"));
        v->vnc_password[0] = '\0';
        if (pwfile && pwfile[0])
            display_read_password(pwfile, v->vnc_password, sizeof(v->vnc_password));
        json_decref(disp);
    }
    json_t *r = NULL;
    if (v->ctl) {
        json_t *ev;
        while ((ev = ctl_client_next_event(v->ctl, 0))) /* STOP/RESUME/...: state says it */
            json_decref(ev);
        r = ctl_client_execute(v->ctl, "query-status", NULL, CTL_TIMEOUT_MS, err, sizeof(err));
        if (!r) {
            ctl_client_close(v->ctl);
            v->ctl = NULL;
        }
    }
    v->detail[0] = '\0';
    v->guest_os[0] = '\0';
    net_from_config(v);
    snprintf(v->backend, sizeof(v->backend), "%s", mem_backend_name(v->cfg.backend));
    v->cpus = v->cfg.cpus;
    v->memory = v->cfg.memory_bytes;
    if (!r) {
        v->uptime_ms = -1;
        v->vnc[0] = '\0';
        v->pid = pidfile_live_pid(v->paths.pidfile); /* a VMM starting, or not answering */
        const char *ls = v->listed_state;
        bool listed_down = ls[0] && strcmp(ls, "running") != 0 && strcmp(ls, "paused") != 0 &&
                           strcmp(ls, "starting") != 0 && strcmp(ls, "unknown") != 0;
        if (!v->cfg_ok)
            snprintf(v->detail, sizeof(v->detail), "%s", v->cfg_err);
        management_from(v, NULL, NULL);
        if (v->pid > 0)
            snprintf(v->state, sizeof(v->state), "starting");
        else
            snprintf(v->state, sizeof(v->state), "%s",
                     listed_down ? ls : (v->cfg_ok ? "off" : "bad-config"));
        return;
    }
    v->live = true;
    json_t *x;
    const char *s = json_string_value(json_object_get(r, "state"));
    snprintf(v->state, sizeof(v->state), "%s", s ? s : "unknown");
    if (json_is_integer(x = json_object_get(r, "pid")))
        v->pid = (pid_t)json_integer_value(x);
    if (json_is_integer(x = json_object_get(r, "cpus")))
        v->cpus = (unsigned)json_integer_value(x);
    if (json_is_integer(x = json_object_get(r, "memory")))
        v->memory = (uint64_t)json_integer_value(x);
    v->uptime_ms =
        json_is_integer(x = json_object_get(r, "uptime_ms")) ? json_integer_value(x) : -1;
    if ((s = json_string_value(json_object_get(r, "backend"))))
        snprintf(v->backend, sizeof(v->backend), "%s", s);
    if ((s = json_string_value(json_object_get(r, "detail"))))
        snprintf(v->detail, sizeof(v->detail), "%s", s);
    if (json_object_get(r, "vnc")) /* should a VMM report it in its status */
        vnc_address(v, json_object_get(r, "vnc"));
    net_from_status(v, json_object_get(r, "net"));
    s = json_string_value(json_object_get(json_object_get(r, "agent"), "os"));
    snprintf(v->guest_os, sizeof(v->guest_os), "%s", s ? s : "");
    management_from(v, json_object_get(r, "management"), json_object_get(r, "balloon"));
    json_decref(r);
}

static void query_memory(struct dash_vm *v)
{
    char err[512];
    v->mem_ok = false;
    v->mem_from_vmm = false;
    v->balloon_ok = false;
    if (v->live && v->ctl) {
        json_t *r =
            ctl_client_execute(v->ctl, "query-memory", NULL, CTL_TIMEOUT_MS, err, sizeof(err));
        json_t *vm = json_object_get(r, "vm");
        if (json_is_object(vm)) {
            struct memtruth_vm *t = &v->mem;
            t->configured = json_u64(vm, "configured");
            t->apparent = json_u64(vm, "apparent");
            t->allocated = json_u64(vm, "allocated");
            t->resident = json_u64(vm, "resident");
            t->dirty = json_u64(vm, "dirty");
            t->shared = json_u64(vm, "shared");
            t->private_ = json_u64(vm, "private_");
            if (!json_object_get(vm, "private_"))
                t->private_ = json_u64(vm, "private");
            t->swapped = json_u64(vm, "swapped");
            t->huge = json_u64(vm, "huge");
            t->ksm_merged = json_u64(vm, "ksm_merged");
            t->from_mapping = json_is_true(json_object_get(vm, "from_mapping"));
            v->mem_ok = v->mem_from_vmm = true;
            v->mem_err[0] = '\0';
            json_t *b = json_object_get(r, "balloon"), *g = json_object_get(b, "guest");
            v->balloon_ok = json_is_object(b);
            v->balloon_driver = json_is_true(json_object_get(b, "driver"));
            v->balloon_target = json_u64(b, "target");
            v->balloon_actual = json_u64(b, "actual");
            v->guest_stats = json_is_object(g) && json_object_get(g, "total");
            v->guest_total = json_u64(g, "total");
            v->guest_free = json_u64(g, "free");
            v->guest_avail = json_u64(g, "available");
            v->guest_cached = json_u64(g, "cached");
        } else {
            snprintf(v->mem_err, sizeof(v->mem_err), "query-memory: %.140s", r ? "bad reply" : err);
        }
        json_decref(r);
        return;
    }
    /* Not running: measure what is left of it from outside (a suspended VM's file). */
    if (v->cfg.backend != MEM_BACKEND_FILE) {
        memset(&v->mem, 0, sizeof(v->mem));
        v->mem.configured = v->cfg.memory_bytes;
        v->mem_ok = true;
        return;
    }
    int rc = memtruth_file_measure(&v->mem, v->paths.vmem, v->cfg.memory_bytes);
    if (rc == -ENOENT) { /* powered off: no memory file at all */
        memset(&v->mem, 0, sizeof(v->mem));
        v->mem.configured = v->cfg.memory_bytes;
        rc = 0;
    }
    v->mem_ok = rc == 0;
    if (rc < 0)
        snprintf(v->mem_err, sizeof(v->mem_err), "%.100s: %.50s", v->paths.vmem, strerror(-rc));
}

/* Identity of a file's present version: inode, mtime (ns) and size mixed. */
static int64_t file_sig(const struct stat *st)
{
    uint64_t h = (uint64_t)st->st_ino * 0x9e3779b97f4a7c15ULL;
    h ^= (uint64_t)st->st_mtim.tv_sec * 1000000000ULL + (uint64_t)st->st_mtim.tv_nsec;
    h ^= (uint64_t)st->st_size << 17;
    return (int64_t)(h | 1);
}

static void record_history(struct dash_vm *v, bool full)
{
    int64_t now = model_now_ms();
    history_push(&v->h_allocated, (double)v->allocated);
    if (!full || !v->mem_ok)
        return;
    history_push(&v->h_resident, (double)v->mem.resident);
    double rate = 0;
    if (v->have_last_dirty && now > v->last_dirty_ms && v->mem.dirty > v->last_dirty)
        rate = (double)(v->mem.dirty - v->last_dirty) * 1000.0 / (double)(now - v->last_dirty_ms);
    history_push(&v->h_dirty_rate, rate);
    v->last_dirty = v->mem.dirty;
    v->last_dirty_ms = now;
    v->have_last_dirty = true;
}

void model_refresh(struct dash_model *m, const char *selected)
{
    int64_t t0 = now_us(), t;
    memset(&m->cost, 0, sizeof(m->cost));
    scan_home(m);
    t = now_us();
    m->cost.scan = t - t0;

    m->sum_configured = m->sum_allocated = m->sum_reserved = m->sum_balloon = 0;
    m->holding = 0;
    for (size_t i = 0; i < m->n; i++) {
        struct dash_vm *v = m->vms[i];
        int64_t a = now_us();
        query_status(v);
        int64_t b = now_us();
        m->cost.status += b - a;

        /* allocated: the .vmem's blocks (ls -s) - a single stat, for every VM */
        struct stat st;
        if (v->cfg.backend == MEM_BACKEND_FILE && stat(v->paths.vmem, &st) == 0)
            v->allocated = (uint64_t)st.st_blocks * 512;
        else if (!model_vm_up(v))
            v->allocated = 0;
        int64_t c = now_us();
        m->cost.files += c - b;

        /* change detection: two stats */
        char tree[PATH_MAX + 32];
        snprintf(tree, sizeof(tree), "%s/snapshots/tree.json", v->paths.dir);
        int64_t dsig = stat(v->paths.dir, &st) == 0 ? file_sig(&st) : 0;
        int64_t tsig = stat(tree, &st) == 0 ? file_sig(&st) : 0;
        v->dir_changed = dsig != v->dir_sig;
        v->tree_changed = tsig != v->tree_sig;
        v->dir_sig = dsig;
        v->tree_sig = tsig;

        bool full = (selected && strcmp(selected, v->name) == 0) || (m->memory_for_all && v->live);
        if (full) {
            query_memory(v);
            if (v->mem_ok && v->cfg.backend != MEM_BACKEND_FILE)
                v->allocated = v->mem.allocated; /* anon/shm: resident + swapped */
            m->cost.memory += now_us() - c;
        }
        record_history(v, full);
        if (model_vm_up(v)) {
            m->holding++;
            m->sum_configured += v->memory;
            m->sum_allocated += v->allocated;
            m->sum_reserved += v->reservation;
            m->sum_balloon += v->balloon_actual;
        }
    }
    t = now_us();
    const char *outside = getenv("VMWS_IN_BOX") ? getenv("VMWS_HOST_MEMINFO") : NULL;
    m->host_ok = memtruth_host_measure(&m->host, outside) == 0;
    m->boxed = outside != NULL;
    m->box_rss = 0;
    FILE *f = outside ? fopen(outside, "re") : NULL;
    char line[128];
    unsigned long long kb;
    while (f && fgets(line, sizeof(line), f)) {
        if (sscanf(line, "VmwsBoxRss: %llu kB", &kb) == 1)
            m->box_rss = (uint64_t)kb << 10;
    }
    if (f)
        fclose(f);
    m->cost.host = now_us() - t;
    m->cost.total = now_us() - t0;
}

void model_apply_list(struct dash_model *m, const char *json_text)
{
    json_error_t je;
    json_t *arr = json_loads(json_text, 0, &je);
    for (size_t i = 0; json_is_array(arr) && i < json_array_size(arr); i++) {
        json_t *o = json_array_get(arr, i);
        struct dash_vm *v = model_find(m, json_string_value(json_object_get(o, "name")));
        const char *s = json_string_value(json_object_get(o, "state"));
        if (v && s)
            snprintf(v->listed_state, sizeof(v->listed_state), "%s", s);
    }
    json_decref(arr);
}

void model_apply_snapshots(struct dash_vm *v, bool ok, const char *out_text, const char *err_text)
{
    v->snaps_pending = false;
    v->snaps_loaded = true;
    v->snaps_at_ms = model_now_ms();
    snaptree_free(&v->snaps);
    v->snaps_ok = false;
    if (!ok) {
        /* The last line of the command's stderr says why (or the command does not exist). */
        const char *msg = err_text && *err_text ? err_text : "the command failed";
        snprintf(v->snaps_err, sizeof(v->snaps_err), "%s", msg);
        return;
    }
    json_error_t je;
    json_t *j = json_loads(out_text, 0, &je);
    if (!j) {
        snprintf(v->snaps_err, sizeof(v->snaps_err), "snapshot list: not JSON (%s)", je.text);
        return;
    }
    char err[160];
    if (snaptree_build(j, &v->snaps, err, sizeof(err)) == 0) {
        v->snaps_ok = true;
        v->snaps_err[0] = '\0';
    } else {
        snprintf(v->snaps_err, sizeof(v->snaps_err), "snapshot list: %s", err);
    }
    json_decref(j);
}

void model_free(struct dash_model *m)
{
    for (size_t i = 0; i < m->n; i++)
        vm_free(m->vms[i]);
    free(m->vms);
    m->vms = NULL;
    m->n = 0;
}
