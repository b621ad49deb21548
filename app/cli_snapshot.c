/* `vmws suspend`, `vmws resume` and `vmws snapshot take|list|info|revert|delete`. A running VM
 * does the work in its VMM (control socket). A suspended VM is resumed with its vCPUs paused,
 * does the same work, and is suspended again, so there is one implementation of each operation.
 * A powered-off VM only gets disk-only nodes (it has no memory) or is started from a snapshot;
 * its tree is changed here by the same core/snapshot/ steps the VMM uses (treeops.h). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/cli.h"
#include "core/snapshot/disksnap.h"
#include "core/snapshot/snapshot.h"
#include "core/snapshot/snapstore.h"
#include "core/snapshot/treeops.h"

#define OP_TIMEOUT_MS 120000
#define DELETE_TIMEOUT_MS (60 * 60 * 1000) /* a merge takes as long as its images are big */

/* Runs COMMAND on the VM's VMM; prints the error and returns NULL on failure. */
static json_t *vm_execute(const char *name, const struct vm_paths *p, const char *command,
                          json_t *args)
{
    struct ctl_client *c = cli_vm_connect(name, p);
    if (!c) {
        json_decref(args);
        return NULL;
    }
    char err[512];
    json_t *r = ctl_client_execute(c, command, args, OP_TIMEOUT_MS, err, sizeof(err));
    ctl_client_close(c);
    json_decref(args);
    if (!r)
        cli_error("VM '%s': %s", name, err);
    return r;
}

/* Waits until the VM's VMM process has exited (after suspend, or a revert that powers off). */
static void wait_vmm_exit(const struct vm_paths *p, pid_t pid)
{
    if (pid > 0)
        pid_wait_gone(pid, 30000);
    for (int i = 0; i < 600 && pidfile_live_pid(p->pidfile) > 0; i++)
        usleep(50000);
}

int cmd_suspend(int argc, char **argv)
{
    int rc = cli_parse_common(argc, argv, 1, "the VM's NAME", NULL);
    if (rc)
        return rc < 0 ? 0 : rc;
    const char *name = argv[optind];
    struct vm_paths p;
    if (cli_vm_open(name, &p, NULL))
        return 1;
    pid_t pid = pidfile_live_pid(p.pidfile);
    struct ctl_client *c = cli_vm_connect(name, &p);
    if (!c)
        return 1;
    char err[512];
    json_t *r = ctl_client_execute(c, "suspend", NULL, OP_TIMEOUT_MS, err, sizeof(err));
    if (!r) {
        ctl_client_close(c);
        return cli_error("cannot suspend VM '%s': %s", name, err);
    }
    printf("suspended %s: guest paused %.1f ms while its state (%.1f KiB) was collected\n", name,
           json_real_value(json_object_get(r, "pause_ms")),
           (double)json_integer_value(json_object_get(r, "state_bytes")) / 1024);
    fflush(stdout);
    json_decref(r);
    /* Its memory is already in the .vmem file; say when that is on disk too. */
    json_t *ev;
    while ((ev = ctl_client_next_event(c, OP_TIMEOUT_MS))) {
        const char *e = json_string_value(json_object_get(ev, "event"));
        if (e && strcmp(e, "SUSPENDED") == 0) {
            json_t *d = json_object_get(json_object_get(ev, "data"), "writeback_ms");
            printf("memory written back to %s %.0f ms later, then the state to %s\n", p.vmem,
                   json_real_value(d), p.suspend_state);
            json_decref(ev);
            break;
        }
        json_decref(ev);
    }
    ctl_client_close(c);
    wait_vmm_exit(&p, pid);
    if (access(p.suspend_state, F_OK) != 0) /* written last, after the memory */
        return cli_error("VM '%s' did not finish suspending: %s was not written (see %s)", name,
                         p.suspend_state, p.vmm_log);
    return 0;
}

int cmd_resume(int argc, char **argv)
{
    int rc = cli_parse_common(argc, argv, 1, "the VM's NAME", NULL);
    if (rc)
        return rc < 0 ? 0 : rc;
    const char *name = argv[optind];
    struct vm_paths p;
    struct vm_config cfg;
    if (cli_vm_open(name, &p, &cfg))
        return 1;
    struct cli_vm_state st;
    cli_vm_query(&p, &cfg, &st);
    if (st.suspended)
        return cli_start_vm(name, false);
    if (st.running && strcmp(st.state, "paused") == 0) {
        json_t *r = vm_execute(name, &p, "cont", NULL);
        if (!r)
            return 1;
        json_decref(r);
        printf("resumed %s\n", name);
        return 0;
    }
    return cli_error("VM '%s' is %s: only a suspended or paused VM can be resumed", name, st.state);
}

/* ---- snapshots ---- */

/* How an operation reaches the VM: its running VMM, or a paused one started for the occasion. */
struct vm_session {
    const char *name;
    struct vm_paths p;
    struct vm_config cfg;
    struct cli_vm_state st;
    bool started; /* we started the VMM (paused) for this operation */
};

static int session_open(struct vm_session *s, const char *name)
{
    memset(s, 0, sizeof(*s));
    s->name = name;
    if (cli_vm_open(name, &s->p, &s->cfg))
        return 1;
    cli_vm_query(&s->p, &s->cfg, &s->st);
    return 0;
}

/* Makes sure a VMM answers: a suspended (or, if FROM_OFF, powered-off) VM is started paused. */
static int session_attach(struct vm_session *s, bool from_off)
{
    if (s->st.running)
        return 0;
    if (!s->st.suspended && !from_off)
        return cli_error("VM '%s' is %s", s->name, s->st.state);
    cli_start_paused = true;
    int rc = cli_start_vm(s->name, true);
    cli_start_paused = false;
    s->started = rc == 0;
    return rc;
}

/* After the operation: a VM that was suspended goes back to being suspended, unless the
 * operation itself already ended its VMM (a revert to a suspended or powered-off node). */
static int session_close(struct vm_session *s, bool resuspend)
{
    if (!s->started)
        return 0;
    pid_t pid = pidfile_live_pid(s->p.pidfile);
    if (pid <= 0)
        return 0;
    json_t *r = vm_execute(s->name, &s->p, resuspend ? "suspend" : "quit", NULL);
    if (!r)
        return 1;
    json_decref(r);
    wait_vmm_exit(&s->p, pid);
    return 0;
}

static int load_tree(const struct vm_session *s, struct snap_tree *t)
{
    char err[512];
    if (snap_tree_load(t, s->p.dir, s->cfg.disk.path, err, sizeof(err)) < 0)
        return cli_error("%s", err);
    snprintf(t->base_format, sizeof(t->base_format), "%s", s->cfg.disk.format);
    return 0;
}

/* A powered-off VM's tree, to change it: holds the VM's pidfile lock as a running VMM does, so
 * no VMM starts and no other operation changes the tree meanwhile. Returns the lock (close it
 * after snap_tree_free) or -1, having said why. */
static int load_tree_offline(const struct vm_session *s, struct snap_tree *t)
{
    pid_t holder = 0;
    int fd = pidfile_acquire(s->p.pidfile, &holder);
    if (fd < 0) {
        if (fd == -EBUSY)
            cli_error("VM '%s' is busy: process %ld runs it or is changing its snapshots", s->name,
                      (long)holder);
        else
            cli_error("cannot lock %s: %s", s->p.pidfile, strerror(-fd));
        return -1;
    }
    if (load_tree(s, t)) {
        close(fd);
        return -1;
    }
    snap_tree_tidy(t);
    return fd;
}

/* The tree as JSON: from the VMM if it runs (it holds the tree), else from disk. */
static json_t *tree_json(const struct vm_session *s)
{
    if (s->st.running)
        return vm_execute(s->name, &s->p, "query-snapshots", NULL);
    struct snap_tree t;
    if (load_tree(s, &t))
        return NULL;
    json_t *j = snapshot_tree_json(&t, NULL);
    snap_tree_free(&t);
    return j;
}

/* A powered-off VM's snapshot is disk-only (core/snapshot/treeops.h). */
static int snap_take_offline(struct vm_session *s, const char *label)
{
    struct snap_tree t;
    int lock = load_tree_offline(s, &t);
    if (lock < 0)
        return 1;
    char err[512];
    int rc = snapshot_take_offline(&t, s->cfg.disk.path, label, false, err, sizeof(err));
    if (rc == 0)
        printf("took snapshot %s of %s (powered off: %s)\n", label, s->name,
               s->cfg.disk.path[0] ? "disk-only" : "it has no memory and no disk");
    snap_tree_free(&t);
    close(lock);
    return rc ? cli_error("cannot take snapshot %s of %s: %s", label, s->name, err) : 0;
}

/* Before a revert replaced a powered-off VM's disk, it was kept as the automatic node KEPT. */
static void print_kept(const struct snap_node *kept)
{
    printf("kept the disk as it was as snapshot %s [%s]\n", kept->label, kept->id);
}

/* Reverting a powered-off VM to a powered-off (disk-only) node: a fresh overlay on its disk. */
static int revert_offline(struct vm_session *s, const char *key)
{
    struct snap_tree t;
    int lock = load_tree_offline(s, &t);
    if (lock < 0)
        return 1;
    char err[512] = "";
    struct snap_node *target = snap_find(&t, key), *kept = NULL;
    int rc = target && !target->deleting ? 0 : -ENOENT;
    if (rc == 0)
        rc = snapshot_revert_offline(&t, s->cfg.disk.path, target, &kept, err, sizeof(err));
    if (kept)
        print_kept(kept);
    snap_tree_free(&t);
    close(lock);
    if (rc == -ENOENT && !err[0])
        return cli_error("VM '%s' has no snapshot '%s' it can revert to", s->name, key);
    if (rc < 0)
        return cli_error("cannot revert %s to %s: %s", s->name, key, err);
    printf("reverted %s to %s (disk-only snapshot); it is off\n", s->name, key);
    return 0;
}

static int snap_cmd_take(const char *name, const char *label, bool json)
{
    struct vm_session s;
    if (session_open(&s, name))
        return 1;
    if (!s.st.running && !s.st.suspended)
        return snap_take_offline(&s, label);
    bool was_suspended = s.st.suspended;
    if (session_attach(&s, false))
        return 1;
    json_t *args = json_pack("{s:s}", "label", label);
    if (was_suspended)
        json_object_set_new(args, "vm_state", json_string("suspended"));
    json_t *r = vm_execute(name, &s.p, "snapshot-take", args);
    int rc = session_close(&s, true);
    if (!r)
        return 1;
    if (json)
        print_json(r);
    else
        printf("took snapshot %s of %s: %lld changed pages (%.1f MiB), guest paused %.2f ms, "
               "%s\n",
               label, name, (long long)json_integer_value(json_object_get(r, "pages")),
               (double)json_integer_value(json_object_get(r, "memory_bytes")) / (1 << 20),
               json_real_value(json_object_get(r, "pause_ms")),
               json_string_value(json_object_get(r, "quiesced")));
    if (!json && json_is_string(json_object_get(r, "thaw_error")))
        printf("warning: the guest's file systems may still be frozen: %s\n",
               json_string_value(json_object_get(r, "thaw_error")));
    json_decref(r);
    return rc;
}

static int snap_cmd_revert(const char *name, const char *key, bool json)
{
    struct vm_session s;
    if (session_open(&s, name))
        return 1;
    json_t *tree = tree_json(&s);
    if (!tree)
        return 1;
    const char *target_state = NULL;
    size_t i;
    json_t *node, *found = NULL;
    json_array_foreach(json_object_get(tree, "snapshots"), i, node)
    {
        if (strcmp(json_string_value(json_object_get(node, "id")), key) == 0)
            found = node;
        else if (!found || strcmp(json_string_value(json_object_get(found, "id")), key) != 0)
            if (strcmp(json_string_value(json_object_get(node, "label")), key) == 0)
                found = node;
    }
    if (!found) {
        json_decref(tree);
        return cli_error("VM '%s' has no snapshot '%s' (see 'vmws snapshot list %s')", name, key,
                         name);
    }
    if (json_is_true(json_object_get(found, "deleting"))) {
        json_decref(tree);
        return cli_error("snapshot '%s' of %s is being deleted; run 'vmws snapshot delete %s %s' "
                         "again to finish",
                         key, name, name, key);
    }
    target_state = json_string_value(json_object_get(found, "vm_state"));
    bool was_off = !s.st.running && !s.st.suspended;
    if (was_off && strcmp(target_state, "off") == 0) {
        json_decref(tree);
        return revert_offline(&s, key);
    }
    if (was_off && s.cfg.disk.path[0]) { /* the VMM below keeps no present: keep its disk */
        struct snap_tree t;
        char err[512];
        int lock = load_tree_offline(&s, &t);
        if (lock < 0) {
            json_decref(tree);
            return 1;
        }
        struct snap_node *kept;
        int krc = snapshot_keep_offline_disk(&t, s.cfg.disk.path,
                                             json_string_value(json_object_get(found, "label")),
                                             &kept, err, sizeof(err));
        if (kept)
            print_kept(kept);
        snap_tree_free(&t);
        close(lock); /* before the VMM below takes it */
        if (krc < 0) {
            json_decref(tree);
            return cli_error("cannot keep the disk of %s: %s", name, err);
        }
    }
    if (session_attach(&s, true)) {
        json_decref(tree);
        return 1;
    }
    /* A machine booted only to be reverted has no present worth keeping. */
    json_t *args = json_pack("{s:s, s:b}", "id", key, "keep_current", !was_off);
    pid_t pid = pidfile_live_pid(s.p.pidfile);
    json_t *r = vm_execute(name, &s.p, "snapshot-revert", args);
    json_decref(tree);
    if (!r) {
        session_close(&s, !was_off);
        return 1;
    }
    const char *state = json_string_value(json_object_get(r, "vm_state"));
    if (strcmp(state, "suspended") == 0 || strcmp(state, "off") == 0)
        wait_vmm_exit(&s.p, pid);
    if (json)
        print_json(r);
    else
        printf("reverted %s to %s (%lld pages rewritten, guest paused %.2f ms%s%s); it is now %s\n",
               name, key, (long long)json_integer_value(json_object_get(r, "pages_written")),
               json_real_value(json_object_get(r, "pause_ms")),
               *json_string_value(json_object_get(r, "kept")) ? "; the state before was kept as "
                                                                "snapshot "
                                                              : "",
               json_string_value(json_object_get(r, "kept")), state);
    if (!json && json_is_string(json_object_get(r, "clock")))
        printf("guest clock: %s\n", json_string_value(json_object_get(r, "clock")));
    json_decref(r);
    return 0;
}

/* Seed 004: what a delete will do and the free space it needs, said before it starts. */
static void print_delete_cost(const char *key, uint64_t mem_needs, enum disksnap_how how,
                              uint64_t disk_needs)
{
    static const char *const disk_how[] = {"",
                                           "; its disk image is removed (nothing is based on it)",
                                           "; its disk is streamed into the images based on it",
                                           "; the one disk image based on it is committed into it"};
    printf("deleting %s merges its pages into its children%s: needs %.1f MiB free (memory %.1f "
           "MiB, disk %.1f MiB)\n",
           key, disk_how[how], (double)(mem_needs + disk_needs) / (1 << 20),
           (double)mem_needs / (1 << 20), (double)disk_needs / (1 << 20));
    fflush(stdout); /* said before it starts, even into a pipe, even if the merge dies */
}

/* The VMM merges on a worker and answers at once (its other commands keep answering); the
 * event SNAPSHOT_DELETED with the node's id says how the merge ended. NULL (said) if it failed. */
static json_t *delete_and_wait(const char *name, const struct vm_paths *p, const char *key)
{
    struct ctl_client *c = cli_vm_connect(name, p);
    if (!c)
        return NULL;
    char err[512];
    json_t *args = json_pack("{s:s}", "id", key);
    json_t *r = ctl_client_execute(c, "snapshot-delete", args, OP_TIMEOUT_MS, err, sizeof(err));
    json_decref(args);
    if (!r) {
        ctl_client_close(c);
        cli_error("VM '%s': %s", name, err);
        return NULL;
    }
    const char *id = json_string_value(json_object_get(r, "id"));
    json_t *ev, *done = NULL;
    while (!done && (ev = ctl_client_next_event(c, DELETE_TIMEOUT_MS))) {
        json_t *d = json_object_get(ev, "data");
        const char *e = json_string_value(json_object_get(ev, "event"));
        const char *evid = json_string_value(json_object_get(d, "id"));
        if (e && strcmp(e, "SNAPSHOT_DELETED") == 0 && id && evid && strcmp(evid, id) == 0)
            done = json_incref(d);
        json_decref(ev);
    }
    ctl_client_close(c);
    if (!done)
        cli_error("VM '%s': no word from its VMM on deleting snapshot %s (see 'vmws snapshot "
                  "list' and its vmm.log)",
                  name, key);
    else if (!json_is_true(json_object_get(done, "deleted")))
        cli_error("cannot delete snapshot %s of %s: %s", key, name,
                  json_string_value(json_object_get(done, "error")));
    if (!done || !json_is_true(json_object_get(done, "deleted"))) {
        json_decref(done);
        json_decref(r);
        return NULL;
    }
    json_decref(done);
    return r;
}

static int snap_cmd_delete(const char *name, const char *key)
{
    struct vm_session s;
    if (session_open(&s, name))
        return 1;
    char err[512];
    if (!s.st.running && !s.st.suspended) { /* no memory: nothing to carry */
        struct snap_tree t;
        int lock = load_tree_offline(&s, &t);
        if (lock < 0)
            return 1;
        struct snap_node *n = snap_find(&t, key);
        struct snapshot_delete_plan plan;
        int rc = n ? snapshot_delete_plan(&t, n, NULL, &plan, err, sizeof(err)) : -ENOENT;
        if (rc == 0) {
            print_delete_cost(key, plan.memory_needs, plan.disk.how, plan.disk.needs);
            rc = snapshot_delete(&t, n, &plan.disk, NULL, 0, err, sizeof(err));
        }
        snap_tree_free(&t);
        close(lock);
        if (rc == -ENOENT)
            return cli_error("VM '%s' has no snapshot '%s'", name, key);
        if (rc < 0)
            return cli_error("cannot delete snapshot %s of %s: %s", key, name, err);
        printf("deleted snapshot %s of %s\n", key, name);
        return 0;
    }
    if (session_attach(&s, false))
        return 1;
    json_t *cost =
        vm_execute(name, &s.p, "snapshot-delete", json_pack("{s:s, s:b}", "id", key, "dry_run", 1));
    json_t *r = NULL;
    if (cost) {
        const char *how = json_string_value(json_object_get(cost, "disk_merge"));
        enum disksnap_how h = DISKSNAP_NONE;
        while (how && h < DISKSNAP_COMMIT && strcmp(disksnap_how_name(h), how) != 0)
            h++;
        print_delete_cost(
            key, (uint64_t)json_integer_value(json_object_get(cost, "memory_needs_bytes")), h,
            (uint64_t)json_integer_value(json_object_get(cost, "disk_needs_bytes")));
        r = delete_and_wait(name, &s.p, key);
    }
    int rc = session_close(&s, true);
    json_decref(cost);
    if (!r)
        return 1;
    json_decref(r);
    printf("deleted snapshot %s of %s\n", key, name);
    return rc;
}

static void format_bytes(char *out, size_t len, uint64_t b)
{
    if (b >= (1ULL << 20))
        snprintf(out, len, "%.1f MiB", (double)b / (1 << 20));
    else
        snprintf(out, len, "%.1f KiB", (double)b / 1024);
}

/* Draws the subtree under PARENT ("" = roots) with box-drawing lines. */
static void print_tree(json_t *nodes, const char *parent, const char *current, const char *prefix)
{
    size_t n = json_array_size(nodes), last = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_object_get(json_array_get(nodes, i), "parent");
        if (strcmp(json_is_string(p) ? json_string_value(p) : "", parent) == 0)
            last = i;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *node = json_array_get(nodes, i);
        json_t *p = json_object_get(node, "parent");
        if (strcmp(json_is_string(p) ? json_string_value(p) : "", parent) != 0)
            continue;
        const char *id = json_string_value(json_object_get(node, "id"));
        char size[32];
        format_bytes(size, sizeof(size),
                     (uint64_t)json_integer_value(json_object_get(node, "memory_bytes")) +
                         (uint64_t)json_integer_value(json_object_get(node, "state_bytes")));
        char disk[48] = "";
        json_t *db = json_object_get(node, "disk_bytes");
        if (json_is_integer(db)) {
            strcpy(disk, ", disk ");
            format_bytes(disk + 7, sizeof(disk) - 7, (uint64_t)json_integer_value(db));
        }
        printf("%s%s %s%s  [%s] %s %s, %s%s%s%s\n", prefix, i == last ? "└─" : "├─",
               json_string_value(json_object_get(node, "label")),
               json_is_true(json_object_get(node, "auto")) ? " (auto)" : "", id,
               json_string_value(json_object_get(node, "created")),
               json_string_value(json_object_get(node, "vm_state")), size, disk,
               json_is_true(json_object_get(node, "deleting")) ? "  (being deleted)" : "",
               current && strcmp(current, id) == 0 ? "  <- you are here" : "");
        char sub[256];
        snprintf(sub, sizeof(sub), "%s%s", prefix, i == last ? "   " : "│  ");
        print_tree(nodes, id, current, sub);
    }
}

static int snap_cmd_list(const char *name, bool json)
{
    struct vm_session s;
    if (session_open(&s, name))
        return 1;
    json_t *tree = tree_json(&s);
    if (!tree)
        return 1;
    json_object_set_new(tree, "name", json_string(name));
    if (json) {
        print_json(tree);
    } else if (json_array_size(json_object_get(tree, "snapshots")) == 0) {
        printf("%s has no snapshots (take one with 'vmws snapshot take %s LABEL')\n", name, name);
    } else {
        printf("snapshots of %s:\n", name);
        print_tree(json_object_get(tree, "snapshots"), "",
                   json_string_value(json_object_get(tree, "current")), "");
        if (!json_is_string(json_object_get(tree, "current")))
            printf("(the VM's present state descends from no snapshot)\n");
    }
    json_t *del = json_object_get(tree, "deleting");
    if (!json && del) /* the tree above is as it was before that delete began */
        printf("deleting snapshot %s: merging for %.1f s\n",
               json_string_value(json_object_get(del, "id")),
               json_real_value(json_object_get(del, "elapsed_ms")) / 1000);
    json_decref(tree);
    return 0;
}

static int snap_cmd_info(const char *name, const char *key, bool json)
{
    struct vm_session s;
    if (session_open(&s, name))
        return 1;
    json_t *tree = tree_json(&s);
    if (!tree)
        return 1;
    size_t i;
    json_t *node, *found = NULL;
    json_array_foreach(json_object_get(tree, "snapshots"), i, node)
    {
        if (strcmp(json_string_value(json_object_get(node, "id")), key) == 0 ||
            strcmp(json_string_value(json_object_get(node, "label")), key) == 0)
            found = node;
    }
    int rc = 0;
    if (!found) {
        rc = cli_error("VM '%s' has no snapshot '%s'", name, key);
    } else if (json) {
        print_json(found);
    } else {
        json_t *parent = json_object_get(found, "parent");
        char mem[32], st[32], del[32];
        format_bytes(mem, sizeof(mem),
                     (uint64_t)json_integer_value(json_object_get(found, "memory_bytes")));
        format_bytes(st, sizeof(st),
                     (uint64_t)json_integer_value(json_object_get(found, "state_bytes")));
        format_bytes(del, sizeof(del),
                     (uint64_t)json_integer_value(json_object_get(found, "delete_needs_bytes")));
        printf("snapshot:      %s [%s]%s\n", json_string_value(json_object_get(found, "label")),
               json_string_value(json_object_get(found, "id")),
               json_is_true(json_object_get(found, "auto")) ? " (kept automatically by revert)"
                                                            : "");
        printf("parent:        %s\n",
               json_is_string(parent) ? json_string_value(parent) : "(none)");
        printf("taken:         %s\n", json_string_value(json_object_get(found, "created")));
        printf("guest clock:   %s (the guest's RTC follows host UTC; it is resynced on revert)\n",
               json_string_value(json_object_get(found, "created")));
        printf("power state:   %s\n", json_string_value(json_object_get(found, "vm_state")));
        if (json_is_string(json_object_get(found, "quiesced")))
            printf("file systems:  %s\n", json_string_value(json_object_get(found, "quiesced")));
        printf("memory delta:  %s (%lld changed pages)\n", mem,
               (long long)json_integer_value(json_object_get(found, "pages")));
        printf("machine state: %s\n", st);
        json_t *disk = json_object_get(found, "disk");
        if (json_is_string(disk)) {
            char db[32];
            format_bytes(db, sizeof(db),
                         (uint64_t)json_integer_value(json_object_get(found, "disk_bytes")));
            printf("disk image:    %s (%s allocated)\n", json_string_value(disk), db);
        }
        const char *how = json_string_value(json_object_get(found, "delete_disk_merge"));
        printf("deleting it:   needs %s free to merge it into its children%s%s\n", del,
               how && strcmp(how, "stream") == 0   ? " (disk: streamed into the images on it)"
               : how && strcmp(how, "commit") == 0 ? " (disk: the image on it committed into it)"
                                                   : "",
               json_is_true(json_object_get(found, "deleting")) ? "; a delete of it was "
                                                                  "interrupted: run it again"
                                                                : "");
    }
    json_decref(tree);
    return rc;
}

static int by_created(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "created_unix"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "created_unix"));
    if (x != y)
        return x < y ? -1 : 1;
    return strtoull(json_string_value(json_object_get(*(json_t *const *)a, "id")), NULL, 10) <
                   strtoull(json_string_value(json_object_get(*(json_t *const *)b, "id")), NULL, 10)
               ? -1
               : 1;
}

/* `vmws snapshot prune NAME [--keep N]`: deletes the automatic snapshots reverts kept, oldest
 * first, all but the newest N; each is an ordinary delete (it says what it needs first). */
static int snap_cmd_prune(const char *name, unsigned long keep)
{
    struct vm_session s;
    if (session_open(&s, name))
        return 1;
    json_t *tree = tree_json(&s);
    if (!tree)
        return 1;
    json_t *nodes = json_object_get(tree, "snapshots");
    size_t n = 0, i;
    json_t *node, **autos = calloc(json_array_size(nodes) + 1, sizeof(*autos));
    json_array_foreach(nodes, i, node)
    {
        if (autos && json_is_true(json_object_get(node, "auto")))
            autos[n++] = node;
    }
    if (n > 1)
        qsort(autos, n, sizeof(*autos), by_created);
    size_t drop = n > keep ? n - keep : 0;
    int rc = autos ? 0 : 1;
    for (i = 0; i < drop && rc == 0; i++) {
        char id[SNAP_ID_MAX];
        snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(autos[i], "id")));
        rc = snap_cmd_delete(name, id);
    }
    free(autos);
    json_decref(tree);
    if (rc == 0)
        printf("pruned %zu automatic snapshot%s of %s; %zu kept\n", drop, drop == 1 ? "" : "s",
               name, n - drop);
    return rc;
}

static int snap_prune_args(int argc, char **argv)
{
    static const struct option opts[] = {
        {"keep", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    unsigned long keep = 0;
    int c;
    while ((c = cli_getopt(argc, argv, opts)) != -1) {
        char *end;
        if (c == 'h')
            return cli_print_help("snapshot");
        if (c != 'k')
            return EXIT_USAGE;
        keep = strtoul(optarg, &end, 10);
        if (!*optarg || *end || keep > 100000)
            return cli_usage_error("snapshot", "--keep takes a number of snapshots, not '%s'",
                                   optarg);
    }
    int rc = cli_positional(argc, argv, 1, "the VM's NAME");
    return rc ? rc : snap_cmd_prune(argv[optind], keep);
}

int cmd_snapshot(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return argc < 2 ? cli_usage_error(argv[0], "missing a subcommand: take, list, info, "
                                                   "revert, delete or prune")
                        : cli_print_help(argv[0]);
    const char *sub = argv[1];
    bool json = false;
    argc--;
    argv++;
    if (strcmp(sub, "prune") == 0)
        return snap_prune_args(argc, argv);
    bool two = strcmp(sub, "list") != 0;
    int rc =
        cli_parse_common(argc, argv, two ? 2 : 1, two ? "NAME and LABEL" : "the VM's NAME", &json);
    if (rc)
        return rc < 0 ? 0 : rc;
    const char *name = argv[optind], *label = two ? argv[optind + 1] : NULL;
    if (label && (!*label || strlen(label) >= SNAP_LABEL_MAX))
        return cli_usage_error("snapshot", "a snapshot LABEL has 1 to %d characters",
                               SNAP_LABEL_MAX - 1);
    if (strcmp(sub, "take") == 0)
        return snap_cmd_take(name, label, json);
    if (strcmp(sub, "list") == 0)
        return snap_cmd_list(name, json);
    if (strcmp(sub, "info") == 0)
        return snap_cmd_info(name, label, json);
    if (strcmp(sub, "revert") == 0)
        return snap_cmd_revert(name, label, json);
    if (strcmp(sub, "delete") == 0)
        return snap_cmd_delete(name, label);
    return cli_usage_error(
        "snapshot", "unknown subcommand '%s' (take, list, info, revert, delete, prune)", sub);
}
