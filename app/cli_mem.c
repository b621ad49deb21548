/* `vmws mem NAME`: the memory truth of one VM and of the host, as figures, with the guest's
 * own view (its balloon and the statistics its driver reports) beside them; `--balloon SIZE`
 * sets how much RAM the host asks the guest to give back.
 * The one idea: the figures are one JSON object in both cases - from the VMM's query-memory
 * when the VM runs (it measures its own RAM mapping in smaps), or built here from the .vmem
 * file when it is off - and the human table is printed from that same object, so --json and
 * the table can never disagree. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "app/cli.h"
#include "core/vm/memtruth.h"

static double mib(json_t *obj, const char *key)
{
    return (double)json_integer_value(json_object_get(obj, key)) / (1024.0 * 1024.0);
}

/* Why `free` and the VM's figures seem not to add up, for each backend. */
static const char *gap_explanation(const char *backend)
{
    if (strcmp(backend, "file") == 0)
        return "Guest RAM is page cache of the .vmem file mapped MAP_SHARED: `free` counts it "
               "in buff/cache (and available), not in used; see Cached and Mapped.";
    if (strcmp(backend, "shm") == 0)
        return "Guest RAM is a memfd (shmem): `free` shows it as shared and in buff/cache; see "
               "Shmem.";
    if (strcmp(backend, "anon") == 0)
        return "Guest RAM is private anonymous memory: `free` counts it in used (AnonPages).";
    if (strcmp(backend, "hugetlbfs") == 0)
        return "Guest RAM is in hugetlb pages: they leave MemFree when the pool is reserved, "
               "and `free` counts them as used whether the guest touched them or not.";
    return "";
}

/* The guest's side: its balloon and what its driver says about its memory. */
static void print_guest(json_t *b, json_t *vm)
{
    if (!b)
        return;
    printf("Guest (virtio-balloon%s)\n",
           json_is_true(json_object_get(b, "driver")) ? "" : ": no driver has bound the device");
    printf("  %-15s %10.1f MiB   asked back by the host (vmws mem --balloon)\n", "balloon target",
           mib(b, "target"));
    printf("  %-15s %10.1f MiB   given back by the guest\n", "balloon actual", mib(b, "actual"));
    printf("  %-15s %10.1f MiB   handed over so far, inflated or reported (a page each time)\n",
           "given back", mib(b, "given_back_bytes"));
    json_t *g = json_object_get(b, "guest");
    if (g) {
        struct {
            const char *key, *label, *what;
        } rows[] = {
            {"total", "MemTotal", "RAM the guest manages"},
            {"free", "MemFree", "unused in the guest (the host may still hold it)"},
            {"available", "MemAvailable", "the guest could use without swapping"},
            {"cached", "Cached", "the guest's page cache"},
            {"swap_in", "swapped in", "bytes, since boot"},
            {"swap_out", "swapped out", "bytes, since boot"},
        };
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
            if (json_object_get(g, rows[i].key))
                printf("  %-15s %10.1f MiB   %s\n", rows[i].label, mib(g, rows[i].key),
                       rows[i].what);
        printf("  %-15s %10lld / %lld   major / minor\n", "page faults",
               (long long)json_integer_value(json_object_get(g, "major_faults")),
               (long long)json_integer_value(json_object_get(g, "minor_faults")));
        json_int_t age = json_integer_value(json_object_get(b, "stats_age_ms"));
        if (age >= 0)
            printf("  (the guest's figures are %.1f s old)\n", (double)age / 1000.0);
        if (json_object_get(g, "free") && json_object_get(g, "total"))
            printf("The guest uses %.1f MiB of its RAM; the host holds %.1f MiB of it "
                   "(allocated).\n",
                   mib(g, "total") - mib(g, "free"), mib(vm, "allocated"));
    } else {
        printf("  (no statistics from the guest yet)\n");
    }
    if (json_object_get(b, "broken"))
        printf("  the device needs a reset: %s\n", json_string_value(json_object_get(b, "broken")));
}

json_t *cli_mem_management(const struct vm_paths *p, const struct vm_config *cfg)
{
    json_t *st = cli_vm_ask(p, "query-status");
    json_t *m = st ? json_incref(json_object_get(st, "management")) : NULL;
    json_decref(st);
    if (m)
        return m;
    const struct vm_memory_config *c = &cfg->memory;
    return json_pack("{s:I, s:I, s:i, s:{s:b, s:I, s:I, s:i}}", "reservation",
                     (json_int_t)c->reservation, "limit", (json_int_t)c->limit, "shares",
                     (int)c->shares, "policy", "dynamic", c->dynamic, "min", (json_int_t)c->min,
                     "max", (json_int_t)(c->max ? c->max : cfg->memory_bytes), "buffer_percent",
                     (int)c->buffer_percent);
}

void cli_mem_management_print(json_t *mg)
{
    if (!mg)
        return;
    json_t *cg = json_object_get(mg, "cgroup");
    json_t *pol = json_object_get(mg, "policy");
    printf("Reservation, limit, shares ([memory] in vm.conf)\n");
    if (json_integer_value(json_object_get(mg, "reservation")))
        printf("  %-15s %10.1f MiB   guaranteed: memory.min, and counted by admission control\n",
               "reservation", mib(mg, "reservation"));
    else
        printf("  %-15s %10s       nothing guaranteed\n", "reservation", "none");
    if (json_integer_value(json_object_get(mg, "limit")))
        printf("  %-15s %10.1f MiB   the most host RAM it holds: memory.max\n", "limit",
               mib(mg, "limit"));
    else
        printf("  %-15s %10s       no ceiling\n", "limit", "none");
    printf("  %-15s %10lld       priority when the host is short (default 1000)\n", "shares",
           (long long)json_integer_value(json_object_get(mg, "shares")));
    if (cg && json_is_true(json_object_get(cg, "enforced")))
        printf("  %-15s %10.1f MiB   memory.current of %s (memory.max hit %lld times, OOM "
               "%lld)\n",
               "cgroup", mib(cg, "current"), json_string_value(json_object_get(cg, "path")),
               (long long)json_integer_value(json_object_get(cg, "events_max")),
               (long long)json_integer_value(json_object_get(cg, "events_oom")));
    else if (cg)
        printf("  %-15s %s%s\n", "cgroup", json_string_value(json_object_get(cg, "why")),
               json_integer_value(json_object_get(mg, "reservation")) ||
                       json_integer_value(json_object_get(mg, "limit"))
                   ? ": reservation/limit not enforced"
                   : "");
    if (!pol || !json_is_true(json_object_get(pol, "dynamic"))) {
        printf("Dynamic memory: off ([memory] dynamic = no)\n");
        return;
    }
    printf("Dynamic memory: on, the guest keeps %.0f to %.0f MiB with %lld%% over its demand\n",
           mib(pol, "min"), mib(pol, "max"),
           (long long)json_integer_value(json_object_get(pol, "buffer_percent")));
    const char *reason = json_string_value(json_object_get(pol, "reason"));
    if (reason && *reason)
        printf("  now: %s -> target %.1f MiB\n", reason, mib(pol, "proposed"));
    json_t *changes = json_object_get(pol, "changes");
    size_t i;
    json_t *c;
    if (json_array_size(changes))
        printf("  changes (%lld in all, newest first):\n",
               (long long)json_integer_value(json_object_get(pol, "change_count")));
    json_array_foreach(changes, i, c)
    {
        printf("    %8.1f s  target %7.1f MiB  keeps %7.1f MiB  %s\n",
               (double)json_integer_value(json_object_get(c, "uptime_ms")) / 1000.0,
               mib(c, "target"), mib(c, "keep"), json_string_value(json_object_get(c, "reason")));
    }
}

static void print_human(const char *name, const char *state, json_t *m)
{
    json_t *vm = json_object_get(m, "vm");
    json_t *host = json_object_get(m, "host");
    const char *backend = json_string_value(json_object_get(m, "backend"));
    const char *path = json_string_value(json_object_get(m, "path"));
    bool from_map = json_is_true(json_object_get(vm, "from_mapping"));
    if (!backend)
        backend = "?";
    printf("VM %s: %s, %s memory%s%s\n", name, state, backend, path && *path ? " " : "",
           path ? path : "");
    printf("  %-12s %10s\n", "", "MiB");
    struct {
        const char *key, *what;
        bool needs_map;
    } rows[] = {
        {"configured", "guest RAM size", false},
        {"apparent", "size of the backing file (ls -l)", false},
        {"allocated", "disk/memory blocks really allocated (ls -s, du)", false},
        {"resident", from_map ? "in host RAM now (smaps Rss)" : "in the page cache (mincore)",
         false},
        {"dirty", "changed and not yet written back", true},
        {"shared", "mapped by other processes too", true},
        {"private", "mapped by this VMM only", true},
        {"swapped", "swapped out", true},
        {"huge", "in transparent huge pages ([vm] memory_huge_pages)", true},
        {"ksm_merged", "merged with identical pages by KSM ([vm] memory_sharing)", true},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        if (rows[i].needs_map && !from_map)
            printf("  %-12s %10s   %s\n", rows[i].key, "-", "(only known while the VM runs)");
        else
            printf("  %-12s %10.1f   %s\n", rows[i].key, mib(vm, rows[i].key), rows[i].what);
    }
    printf("Host (/proc/meminfo)\n");
    printf("  %-15s %10.1f MiB\n", "free says used", mib(host, "free_used"));
    struct {
        const char *label, *key;
    } hrows[] = {
        {"MemFree", "free"},  {"Mapped", "mapped"}, {"Shmem", "shmem"},
        {"Cached", "cached"}, {"Dirty", "dirty"},   {"Writeback", "writeback"},
    };
    for (size_t i = 0; i < sizeof(hrows) / sizeof(hrows[0]); i++)
        printf("  %-15s %10.1f MiB\n", hrows[i].label, mib(host, hrows[i].key));
    if (json_integer_value(json_object_get(host, "ksm_sharing")))
        printf("  %-15s %10.1f MiB shared, saving %.1f MiB\n", "KSM", mib(host, "ksm_shared"),
               mib(host, "ksm_sharing"));
    printf("%s\n", gap_explanation(backend));
    print_guest(json_object_get(m, "balloon"), vm);
    cli_mem_management_print(json_object_get(m, "management"));
}

/* The query-memory shape, measured from outside for a VM that is not running. */
static json_t *measure_off(const struct vm_config *cfg, const struct vm_paths *p)
{
    struct memtruth_vm v;
    struct memtruth_host h;
    memset(&v, 0, sizeof(v));
    v.configured = cfg->memory_bytes;
    const char *path = "";
    if (cfg->backend == MEM_BACKEND_FILE) {
        path = p->vmem;
        int rc = memtruth_file_measure(&v, p->vmem, cfg->memory_bytes);
        if (rc < 0 && rc != -ENOENT) {
            cli_error("cannot measure %s: %s", p->vmem, strerror(-rc));
            return NULL;
        }
    }
    int rc = memtruth_host_measure(&h, NULL);
    if (rc < 0) {
        cli_error("cannot read /proc/meminfo: %s", strerror(-rc));
        return NULL;
    }
    return json_pack("{s:o,s:o,s:s,s:s}", "vm", memtruth_vm_json(&v), "host",
                     memtruth_host_json(&h), "backend", mem_backend_name(cfg->backend), "path",
                     path);
}

/* --balloon SIZE: the target goes to the running VMM, which says what it set. */
static int set_balloon(const char *name, const struct vm_paths *p, const char *size, bool json)
{
    uint64_t bytes;
    if (parse_size(size, &bytes) < 0)
        return cli_usage_error("mem", "bad size '%s' for --balloon (expected e.g. 256M, 1G or 0)",
                               size);
    char err[512];
    struct ctl_client *cl = ctl_client_connect(p->ctl_sock, NULL, err, sizeof(err));
    if (!cl)
        return cli_error("VM '%s' is not running (the balloon is a running guest's): %s", name,
                         err);
    json_t *args = json_pack("{s:I}", "target", (json_int_t)bytes);
    json_t *r = ctl_client_execute(cl, "set-balloon", args, 5000, err, sizeof(err));
    json_decref(args);
    ctl_client_close(cl);
    if (!r)
        return cli_error("cannot set the balloon of VM '%s' to %s: %s", name, size, err);
    if (json)
        print_json(r);
    else
        printf("%s: the guest is asked to give back %.1f MiB of its RAM (its balloon driver "
               "inflates towards it; see vmws mem %s)\n",
               name, mib(r, "target"), name);
    json_decref(r);
    return 0;
}

int cmd_mem(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"balloon", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool json = false;
    const char *balloon = NULL;
    int c;
    while ((c = cli_getopt(argc, argv, opts)) != -1) {
        if (c == 'h')
            return cli_print_help(argv[0]);
        if (c == 'j')
            json = true;
        else if (c == 'b')
            balloon = optarg;
        else
            return EXIT_USAGE;
    }
    int rc = cli_positional(argc, argv, 1, "the VM's NAME");
    if (rc)
        return rc;
    const char *name = argv[optind];
    struct vm_paths p;
    struct vm_config cfg;
    if (cli_vm_open(name, &p, &cfg))
        return 1;
    if (balloon)
        return set_balloon(name, &p, balloon, json);

    char err[512];
    const char *state = "off";
    json_t *m = NULL;
    struct ctl_client *cl = ctl_client_connect(p.ctl_sock, NULL, err, sizeof(err));
    bool running = cl != NULL;
    if (running) {
        state = "running";
        json_t *args = json_pack("{s:b}", "detail", 1); /* every figure fresh from smaps */
        m = ctl_client_execute(cl, "query-memory", args, 5000, err, sizeof(err));
        json_decref(args);
        ctl_client_close(cl);
        if (!m)
            return cli_error("VM '%s' did not report its memory: %s", name, err);
    } else {
        m = measure_off(&cfg, &p);
        if (!m)
            return 1;
        json_object_set_new(m, "management", cli_mem_management(&p, &cfg));
    }
    if (json) {
        json_object_set_new(m, "name", json_string(name));
        json_object_set_new(m, "state", json_string(state));
        print_json(m);
    } else {
        print_human(name, state, m);
        if (!running && cfg.backend != MEM_BACKEND_FILE)
            printf("The VM is off and its %s memory is gone: nothing is allocated.\n",
                   mem_backend_name(cfg.backend));
    }
    json_decref(m);
    return 0;
}
