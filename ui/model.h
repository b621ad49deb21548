/* What the dashboard knows, gathered once per refresh and drawn by the panels. The one idea:
 * gathering is separate from drawing (like htop's meters) and each figure comes from its
 * cheapest honest source: the VM list from $VMWS_HOME, live state over a persistent control
 * connection per running VM (query-status), the exact RAM-mapping figures from the VMM's
 * query-memory for the selected VM only, the .vmem file's allocated blocks by fstat for every
 * VM (the overcommit sum), and the host from /proc/meminfo. No curses here. */
#ifndef VMWS_UI_MODEL_H
#define VMWS_UI_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/config/paths.h"
#include "core/config/vmconfig.h"
#include "core/vm/memtruth.h"
#include "ui/history.h"
#include "ui/snaptree.h"

struct ctl_client;

struct dash_vm {
    char name[VM_NAME_MAX];
    struct vm_paths paths;
    struct vm_config cfg;
    bool cfg_ok;
    char cfg_err[160]; /* "vm.conf:LINE: what is wrong" when !cfg_ok */
    bool seen;         /* found by the last directory scan */

    /* Live state from the VMM (query-status), or from `vmws list --json` when it is not up. */
    struct ctl_client *ctl;
    int64_t connect_after_ms; /* back off after a failed connect: a hung VMM costs 5 s each */
    bool live;                /* the control socket answered this refresh */
    char state[32];
    pid_t pid;
    unsigned cpus;
    uint64_t memory;
    int64_t uptime_ms;     /* -1 unknown */
    char vnc[64];          /* "" if the VMM reports none */
    char vnc_password[16]; /* the VM's vnc.passwd, if its VNC asks for one */
    char backend[16];
    char detail[160];
    char listed_state[32]; /* what `vmws list --json` said last ("suspended", "off", ...) */

    /* Network: the forwards (from query-status's "net", else vm.conf), and the rx/tx rates
     * between the last two refreshes, from the card's byte counters. */
    bool net;
    char forwards[160]; /* "tcp:8080:80 udp:5353:53", "" = none */
    uint64_t rx_bytes, tx_bytes;
    int64_t net_sample_ms;   /* when rx/tx_bytes were read; 0 = not yet */
    double rx_rate, tx_rate; /* bytes per second */
    char guest_os[64];       /* query-status's "agent" "os": "" = no agent has told it */

    /* Memory. ALLOCATED is measured for every VM; the rest for the selected one. */
    uint64_t allocated;
    bool mem_ok;
    bool mem_from_vmm; /* figures from query-memory (the RAM mapping's smaps) */
    struct memtruth_vm mem;
    char mem_err[160];
    /* The guest's side (query-memory's "balloon"): its balloon and its driver's statistics. */
    bool balloon_ok, balloon_driver, guest_stats;
    uint64_t balloon_target, balloon_actual, guest_total, guest_free, guest_avail, guest_cached;
    /* Reservation, limit and dynamic memory (query-status's "management", else vm.conf). */
    uint64_t reservation, limit, cg_current, policy_keep;
    bool cg_enforced, dynamic;
    unsigned shares;
    char policy_reason[200]; /* the last change's reason; "" = none yet */
    struct history h_allocated, h_resident, h_dirty_rate;
    uint64_t last_dirty;
    int64_t last_dirty_ms;
    bool have_last_dirty;

    /* Change detection, so slow queries run only when something changed: the VM directory's
     * mtime (files such as suspend.state or vmm.pid come and go) and the snapshot tree file's
     * identity (it is replaced atomically on every change). */
    int64_t dir_sig, tree_sig;
    bool dir_changed, tree_changed; /* since the previous refresh */

    /* Snapshots, from `vmws snapshot list NAME --json` (run as a job by the dashboard). */
    struct snap_tree snaps;
    bool snaps_ok;
    bool snaps_loaded;
    bool snaps_pending;
    bool snaps_stale; /* an action finished while a list was running: list again */
    int64_t snaps_at_ms;
    char snaps_err[200];
};

struct dash_cost { /* microseconds spent on each source in the last refresh (wall clock) */
    int64_t scan, status, memory, files, host, total;
};

struct dash_model {
    struct dash_vm **vms;
    size_t n;
    struct memtruth_host host;
    bool host_ok;
    /* In the KVM box (app/cli_boxed.c): HOST is the machine's (the box's supervisor copies its
     * /proc/meminfo to $VMWS_HOST_MEMINFO), BOX_RSS what the box's QEMU holds of it. */
    bool boxed;
    uint64_t box_rss;
    uint64_t sum_configured, sum_allocated; /* over VMs that hold memory (running/suspended) */
    uint64_t sum_reserved, sum_balloon;     /* their reservations, their balloons' holdings */
    size_t holding;                         /* how many VMs that is */
    struct dash_cost cost;
    bool memory_for_all; /* query-memory for every running VM, not just the selected one */
};

/* Rescans $VMWS_HOME and measures everything; SELECTED (may be NULL) gets the full memory
 * figures. Never fails: what cannot be measured is marked so. */
void model_refresh(struct dash_model *m, const char *selected);
struct dash_vm *model_find(struct dash_model *m, const char *name);
/* Applies `vmws list --json` output (states of VMs without a VMM: off, suspended, ...). */
void model_apply_list(struct dash_model *m, const char *json_text);
/* Applies `vmws snapshot list NAME --json` output, or the failure message ERR_TEXT. */
void model_apply_snapshots(struct dash_vm *v, bool ok, const char *out_text, const char *err_text);
/* True when the VM's VMM process exists (running, paused, starting). */
bool model_vm_up(const struct dash_vm *v);
void model_free(struct dash_model *m);
int64_t model_now_ms(void);

#endif
