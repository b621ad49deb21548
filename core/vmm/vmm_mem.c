/* The VMM's memory management beyond the balloon device itself: admission control and its own
 * cgroup at start (reservation, limit), dynamic memory's policy thread (seed 003), and what
 * query-memory says about both. The one idea: the policy is mempolicy_decide() fed once a
 * second with the guest's statistics and the host's pressure; every target it sets is kept
 * with its reason, so `vmws mem` and the dashboard can say why the balloon moved. */
#include "core/vmm/vmm_priv.h"

#include <dirent.h>
#include <inttypes.h>

#include "core/vm/mempolicy.h"

#define POLICY_TICK_MS 1000
#define MIB ((uint64_t)1 << 20)

int vmm_mem_admit_and_enter(struct vmm *v, char *err, size_t errlen)
{
    const struct vm_memory_config *m = &v->cfg->memory;
    if (m->reservation) {
        struct memcg_admission a;
        int rc = memcg_admission_gather(&a, v->cfg->name, m->reservation);
        if (rc < 0) {
            snprintf(err, errlen, "cannot check the reservation of %s against the host: %s",
                     v->cfg->name, strerror(-rc));
            return rc;
        }
        char why[400];
        if ((rc = memcg_admit(&a, why, sizeof(why))) < 0) {
            snprintf(err, errlen, "VM %s not started: %s", v->cfg->name, why);
            return rc;
        }
    }
    if (memcg_enter(&v->memcg, v->cfg->name, m->reservation, m->limit) == 0)
        vmm_log("cgroup %s: memory.min %" PRIu64 " MiB, memory.max %s%" PRIu64 "%s", v->memcg.path,
                m->reservation / MIB, m->limit ? "" : "max", m->limit / MIB,
                m->limit ? " MiB" : "");
    else if (m->reservation || m->limit)
        vmm_log("%s: reservation/limit not enforced", v->memcg.why);
    else
        vmm_log("%s", v->memcg.why);
    return 0;
}

/* /proc/pressure/memory's "some avg10", percent; -1 when the kernel has no PSI. */
static double psi_some_avg10(void)
{
    FILE *f = fopen("/proc/pressure/memory", "re");
    double v = -1;
    if (f) {
        if (fscanf(f, "some avg10=%lf", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static uint64_t jbytes(json_t *o, const char *k)
{
    json_t *j = o ? json_object_get(o, k) : NULL;
    return json_is_integer(j) && json_integer_value(j) > 0 ? (uint64_t)json_integer_value(j) : 0;
}

#define POLICY_PEERS_MAX 64
#define POLICY_PEER_FRESH_S 5

/* RUNTIME/NAME.policy: "held floor shares" of this VM, rewritten every tick. */
static void peer_path(const struct vmm *v, const char *name, char *out, size_t len)
{
    const char *slash = strrchr(v->paths->ctl_sock, '/');
    int dir = slash ? (int)(slash - v->paths->ctl_sock) : 0;
    snprintf(out, len, "%.*s/%s.policy", dir, v->paths->ctl_sock, name);
}

static void publish_peer(const struct vmm *v, const struct mempolicy_peer *me)
{
    char path[PATH_MAX + 16], tmp[PATH_MAX + 32];
    peer_path(v, v->cfg->name, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "we");
    if (!f)
        return;
    fprintf(f, "%" PRIu64 " %" PRIu64 " %u\n", me->held, me->floor, me->shares);
    if (fclose(f) == 0)
        rename(tmp, path);
}

/* The other VMs' published figures, those rewritten in the last few seconds. */
static size_t read_peers(const struct vmm *v, struct mempolicy_peer *out, size_t max)
{
    char dir[PATH_MAX];
    peer_path(v, "x", dir, sizeof(dir));
    *strrchr(dir, '/') = '\0';
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    time_t now = time(NULL);
    while (d && n < max && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 8 || strcmp(e->d_name + len - 7, ".policy") ||
            (len - 7 == strlen(v->cfg->name) && !strncmp(e->d_name, v->cfg->name, len - 7)))
            continue;
        char path[PATH_MAX + 300];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct stat st;
        FILE *f = stat(path, &st) == 0 && now - st.st_mtime <= POLICY_PEER_FRESH_S
                      ? fopen(path, "re")
                      : NULL;
        unsigned long long held, floor;
        unsigned shares;
        if (f && fscanf(f, "%llu %llu %u", &held, &floor, &shares) == 3 && shares)
            out[n++] = (struct mempolicy_peer){held, floor, shares};
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return n;
}

/* One decision: measures, decides, applies when worth it. Called without the lock. */
static void policy_tick(struct vmm *v)
{
    const struct vm_memory_config *m = &v->cfg->memory;
    pthread_mutex_lock(&v->lock);
    json_t *b = v->machine_live && v->balloon && v->state == VMM_RUNNING
                    ? virtio_balloon_status_json(v->balloon, 0)
                    : NULL;
    pthread_mutex_unlock(&v->lock);
    if (!b)
        return;
    json_t *g = json_object_get(b, "guest");
    struct memtruth_host h = {0};
    memtruth_host_measure(&h, NULL);
    struct mempolicy_input in = {
        .ram = v->cfg->memory_bytes,
        .min = m->min,
        .max = m->max,
        .buffer_percent = m->buffer_percent,
        .have_guest = json_is_true(json_object_get(b, "driver")) && jbytes(g, "total") &&
                      json_object_get(g, "available"),
        .guest_total = jbytes(g, "total"),
        .guest_available = jbytes(g, "available"),
        .balloon_actual = jbytes(b, "actual"),
        .host_total = h.total,
        .host_available = h.available,
        .psi_some_avg10 = psi_some_avg10(),
    };
    /* A short host takes back what it lacks, divided among the VMs under dynamic memory by
     * their shares: each publishes what it holds, its floor and its shares beside its control
     * socket, and reads the others' (fresh ones only). */
    struct mempolicy_peer peers[POLICY_PEERS_MAX];
    peers[0] = (struct mempolicy_peer){.held = in.ram - in.balloon_actual,
                                       .floor = m->min > m->reservation ? m->min : m->reservation,
                                       .shares = m->shares};
    publish_peer(v, &peers[0]);
    uint64_t shortfall = mempolicy_host_shortfall(h.total, h.available, in.psi_some_avg10);
    if (shortfall && in.have_guest) {
        size_t n = 1 + read_peers(v, peers + 1, POLICY_PEERS_MAX - 1);
        uint64_t reclaim[POLICY_PEERS_MAX];
        mempolicy_divide(shortfall, peers, n, reclaim);
        in.reclaim = reclaim[0];
    }
    json_decref(b);
    struct mempolicy_decision d;
    mempolicy_decide(&in, &d);

    pthread_mutex_lock(&v->lock);
    struct vmm_policy *p = &v->policy;
    p->ticks++;
    p->demand = d.demand;
    p->proposed = d.target;
    uint64_t target =
        in.have_guest ? mempolicy_damp(&p->damper, v->balloon_target, d.target, d.host_short)
                      : v->balloon_target;
    if (target == v->balloon_target && p->damper.ticks)
        snprintf(p->reason, sizeof(p->reason), "%.150s; taken back in %u s if it stays",
                 d.reason, MEMPOLICY_TAKE_TICKS - p->damper.ticks);
    else
        snprintf(p->reason, sizeof(p->reason), "%s", d.reason);
    bool at_bound = d.at_bound && target == d.target; /* not a damped value */
    d.target = target;
    d.keep = in.ram - target;
    bool change =
        in.have_guest && mempolicy_should_change(v->balloon_target, d.target, in.ram, at_bound);
    if (change) {
        v->balloon_target = d.target;
        if (v->machine_live && v->balloon)
            virtio_balloon_set_target(v->balloon, d.target);
        struct vmm_policy_change *c = &p->changes[p->nchanges++ % VMM_POLICY_CHANGES];
        c->uptime_ms = (uint64_t)vmm_ms_since(&v->started);
        c->target = d.target;
        c->keep = d.keep;
        snprintf(c->reason, sizeof(c->reason), "%s", d.reason);
    }
    pthread_mutex_unlock(&v->lock);
    if (change) {
        vmm_log("dynamic memory: balloon target %" PRIu64 " MiB, the guest keeps %" PRIu64
                " MiB: %s",
                d.target / MIB, d.keep / MIB, d.reason);
        json_t *e = json_pack("{s:I, s:I, s:s}", "target", (json_int_t)d.target, "keep",
                              (json_int_t)d.keep, "reason", d.reason);
        ctl_server_event(v->ctl, "BALLOON_POLICY", e);
        json_decref(e);
    }
}

static void *policy_thread(void *opaque)
{
    struct vmm *v = opaque;
    struct pollfd pfd = {.fd = v->policy.stop_fd, .events = POLLIN};
    for (;;) {
        int r = poll(&pfd, 1, POLICY_TICK_MS);
        if (r > 0)
            return NULL;
        if (r == 0)
            policy_tick(v);
    }
}

int vmm_mem_policy_start(struct vmm *v, char *err, size_t errlen)
{
    v->policy.stop_fd = -1;
    if (!v->cfg->memory.dynamic)
        return 0;
    if (!v->cfg->balloon.enabled) {
        snprintf(err, errlen,
                 "[memory] dynamic = yes needs the balloon ([balloon] enabled = no in vm.conf)");
        return -EINVAL;
    }
    v->policy.stop_fd = eventfd(0, EFD_CLOEXEC);
    int rc =
        v->policy.stop_fd < 0 ? errno : pthread_create(&v->policy.thread, NULL, policy_thread, v);
    if (rc) {
        snprintf(err, errlen, "cannot start dynamic memory's thread: %s", strerror(rc));
        return -rc;
    }
    v->policy.running = true;
    vmm_log("dynamic memory on: min %" PRIu64 " MiB, max %" PRIu64 " MiB, buffer %u%%",
            v->cfg->memory.min / MIB,
            (v->cfg->memory.max ? v->cfg->memory.max : v->cfg->memory_bytes) / MIB,
            v->cfg->memory.buffer_percent);
    return 0;
}

void vmm_mem_policy_stop(struct vmm *v)
{
    if (v->policy.running) {
        uint64_t one = 1;
        ssize_t w = write(v->policy.stop_fd, &one, sizeof(one));
        (void)w;
        pthread_join(v->policy.thread, NULL);
        v->policy.running = false;
    }
    if (v->policy.stop_fd >= 0) {
        close(v->policy.stop_fd);
        char path[PATH_MAX + 16];
        peer_path(v, v->cfg->name, path, sizeof(path));
        unlink(path);
    }
    v->policy.stop_fd = -1;
}

json_t *vmm_mem_json_locked(struct vmm *v)
{
    const struct vm_memory_config *m = &v->cfg->memory;
    json_t *o =
        json_pack("{s:I, s:I, s:i, s:o}", "reservation", (json_int_t)m->reservation, "limit",
                  (json_int_t)m->limit, "shares", (int)m->shares, "cgroup", memcg_json(&v->memcg));
    json_t *p = json_pack("{s:b, s:I, s:I, s:i}", "dynamic", m->dynamic, "min", (json_int_t)m->min,
                          "max", (json_int_t)(m->max ? m->max : v->cfg->memory_bytes),
                          "buffer_percent", (int)m->buffer_percent);
    if (m->dynamic) {
        const struct vmm_policy *pol = &v->policy;
        json_object_set_new(p, "reason", json_string(pol->reason));
        json_object_set_new(p, "demand", json_integer((json_int_t)pol->demand));
        json_object_set_new(p, "proposed", json_integer((json_int_t)pol->proposed));
        json_object_set_new(p, "ticks", json_integer((json_int_t)pol->ticks));
        json_t *changes = json_array();
        unsigned n = pol->nchanges < VMM_POLICY_CHANGES ? pol->nchanges : VMM_POLICY_CHANGES;
        for (unsigned i = 0; i < n; i++) { /* newest first */
            const struct vmm_policy_change *c =
                &pol->changes[(pol->nchanges - 1 - i) % VMM_POLICY_CHANGES];
            json_array_append_new(changes, json_pack("{s:I, s:I, s:I, s:s}", "uptime_ms",
                                                     (json_int_t)c->uptime_ms, "target",
                                                     (json_int_t)c->target, "keep",
                                                     (json_int_t)c->keep, "reason", c->reason));
        }
        json_object_set_new(p, "changes", changes);
        json_object_set_new(p, "change_count", json_integer(pol->nchanges));
    }
    json_object_set_new(o, "policy", p);
    return o;
}
