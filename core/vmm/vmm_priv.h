/* What the VMM process's files share (vmm.c: the machine's life and the main loop;
 * vmm_cmds.c: control commands; vmm_snap.c: suspend and snapshots). Everything in struct vmm
 * below `lock` is guarded by it: control commands run on the control socket's thread while the
 * main thread may be replacing the machine (a reboot). */
#ifndef VMWS_VMM_PRIV_H
#define VMWS_VMM_PRIV_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/boot/acpi.h"
#include "core/boot/linuxboot.h"
#include "core/config/dconfig.h"
#include "core/control/consolesrv.h"
#include "core/control/ctl.h"
#include "core/devices/devices.h"
#include "core/devices/framebuffer.h"
#include "core/devices/sound.h"
#include "core/snapshot/snapshot.h"
#include "core/util/log.h"
#include "core/util/state.h"
#include "core/virtio/virtio_balloon.h"
#include "core/virtio/virtio_blk.h"
#include "core/virtio/virtio_console.h"
#include "core/virtio/virtio_net.h"
#include "core/vm/machine.h"
#include "core/vm/memcg.h"
#include "core/vm/mempolicy.h"
#include "core/vm/memtruth.h"
#include "core/vmm/backends.h"
#include "core/vmm/vmm.h"

enum vmm_state { VMM_BOOTING, VMM_RUNNING, VMM_PAUSED, VMM_SHUTDOWN, VMM_CRASHED };

extern const char *const vmm_state_names[];

struct file_image {
    const uint8_t *data;
    size_t len;
    bool mapped;
};

/* The guest agent's client and its thread (vmm_agent.c); its own lock guards what follows it. */
struct vmm_agent {
    struct qga *qga;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop, want_osinfo;
    const char *want_clock; /* why the clock should be set ("resume"), NULL = no */
    char os[128];           /* the guest's OS as its agent names it; "" = not known */
};

/* Dynamic memory's state (vmm_mem.c): the last decision and the last changes it made. */
#define VMM_POLICY_CHANGES 8
struct vmm_policy_change {
    uint64_t uptime_ms, target, keep;
    char reason[200];
};
struct vmm_policy {
    bool running;
    pthread_t thread;
    int stop_fd;
    uint64_t ticks, demand, proposed;
    struct mempolicy_damper damper; /* taking back waits (mempolicy_damp) */
    char reason[200];
    unsigned nchanges; /* ever made; changes[] keeps the last VMM_POLICY_CHANGES */
    struct vmm_policy_change changes[VMM_POLICY_CHANGES];
};

struct vmm {
    const struct vm_config *cfg;
    const struct vm_paths *paths;
    struct guest_mem mem;
    struct file_image kernel, initrd;

    pthread_mutex_t lock; /* guards everything below */
    enum vmm_state state;
    char crash_detail[256];
    bool machine_live;
    struct machine m;
    struct serial *serial;
    struct rtc *rtc;
    struct i8042 *i8042;
    struct pci_bus *pci;
    struct pm *pm;
    struct virtio_blk *blk; /* [disk] in vm.conf; NULL = no disk */
    struct virtio_net *net; /* [net] in vm.conf; NULL = no network card */
    struct virtio_balloon *balloon;
    struct virtio_console *vcon; /* the guest agent's port (always there) */
    uint64_t balloon_target;     /* bytes `vmws mem --balloon` asked back; outlives reboots */
    struct es1370 *es1370;       /* the sound devices; NULL = no sound */
    struct pcspk *pcspk;
    struct audio *audio;        /* their clock and PulseAudio stream (backends->audio.create) */
    unsigned audio_attenuation; /* 100 - volume; from [audio] in vm.conf at the first boot */
    bool audio_muted;
    bool audio_configured;
    struct framebuffer *fb;  /* the screen: outlives reboots, attached to each machine */
    struct display *display; /* its viewers (backends->display.create); NULL = none */
    const struct vmm_backends *backends; /* from vmm_options; NULL = none */

    struct vmm_agent agent; /* outlives reboots; not under lock */
    struct ctl_server *ctl;
    struct console_server *console;
    int quit_fd; /* eventfd: a client asked us to quit (or suspended the VM) */
    struct timespec started;
    const struct vmm_options *opts;

    /* Snapshots (under lock): the tree, and the pages that may differ from its current node. */
    struct snap_tree tree;
    bool tree_ok;
    char tree_err[256];
    uint64_t *carry;
    struct snapshot_host snap_host;
    bool suspended; /* the VM was suspended: keep its memory file */
    /* A snapshot delete merging on its worker (vmm_snap.c): its node's id, "" = none. */
    char snap_busy[SNAP_ID_MAX];
    struct timespec snap_busy_since;
    pthread_cond_t snap_idle; /* snap_busy went "" (CLOCK_MONOTONIC) */
    /* The suspend state, written to suspend.state only once the memory file is durable: a
     * suspend.state on disk always goes with the memory it describes (see run_machine). */
    struct state_writer suspend_w;
    struct memcg memcg;            /* the VMM's own cgroup (reservation, limit) */
    pthread_mutex_t memtruth_lock; /* guards memtruth_cache (query-memory, not under lock) */
    struct memtruth_cache memtruth_cache;
    struct vmm_policy policy; /* dynamic memory */
};

#define T_CARRY STATE_TAG('C', 'A', 'R', 'Y')

static inline uint64_t ram_pages(const struct vmm *v)
{
    return v->mem.size / GUEST_PAGE_SIZE;
}

static inline size_t carry_words(const struct vmm *v)
{
    return (size_t)((snapshot_host_pages(&v->snap_host) + 63) / 64);
}

/* vmm_devices.c: the device table. Every operation gets the VMM under its lock; create returns
 * 0 or -errno with ERR (a device the configuration leaves out is created as absent: 0, NULL);
 * stop (optional) ends what a device does on its own threads, before the vCPUs are joined;
 * destroy (optional) frees it after; quiesce (optional) brings its requests in flight to a quiet
 * point for a save or load, within a bound, and resume lets them go on. A load sees the
 * version the record was saved with through state_version(). */
struct vmm_device {
    const char *name;
    /* Its main record, and the newest version of it this vmws writes and reads: a state saved
     * by a newer vmws (a higher version) is refused with the device's name. */
    uint32_t tag, version;
    int (*create)(struct vmm *v, char *err, size_t errlen);
    void (*stop)(struct vmm *v);
    void (*destroy)(struct vmm *v);
    int (*quiesce)(struct vmm *v, char *err, size_t errlen);
    void (*resume)(struct vmm *v);
    int (*save)(struct vmm *v, struct state_writer *w);
    int (*load)(struct vmm *v, const struct state_reader *r);
};
extern const struct vmm_device vmm_devices[];
extern const size_t vmm_ndevices;

/* vmm.c */
int save_all_locked(struct vmm *v, struct state_writer *w);
int load_all_locked(struct vmm *v, const struct state_reader *r, char *err, size_t errlen);
/* Every device with work of its own in flight (the disk's, the network card's and the
 * balloon's I/O threads, the sound card's DMA) reaches a quiet point, or none stays quiesced
 * and -ETIMEDOUT comes back with ERR; resume lets them all go on. Quiesces nest. */
int vmm_quiesce_devices_locked(struct vmm *v, char *err, size_t errlen);
void vmm_resume_devices_locked(struct vmm *v);
double vmm_ms_since(const struct timespec *t0);
/* The VM's state in the window's title (under lock). */
void vmm_show_state(struct vmm *v);

/* vmm_agent.c: the guest agent (core/agent/qga.h) on the virtio-console port. Started before
 * the control socket, stopped after it and after the machine. None of these may be called with
 * vmm.lock held: each waits for the guest, within its bound. 0 or -errno with ERR (-ENOTCONN:
 * "no guest agent"). */
extern const struct virtio_console_host vmm_agent_port; /* the port's host end; opaque = vmm */
int vmm_agent_start(struct vmm *v);
void vmm_agent_stop(struct vmm *v);
int vmm_agent_call(struct vmm *v, const char *cmd, json_t *args, unsigned timeout_ms, bool no_reply,
                   json_t **ret, char *err, size_t errlen);
int vmm_agent_freeze(struct vmm *v, char *err, size_t errlen);
int vmm_agent_thaw(struct vmm *v, char *err, size_t errlen);
int vmm_agent_set_time(struct vmm *v, char *err, size_t errlen);
/* Thaws a guest that a revert brought back frozen, then sets its clock. */
int vmm_agent_after_revert(struct vmm *v, char *err, size_t errlen);
/* Sets the clock on the agent's thread (WHY: a static string for the log). */
void vmm_agent_resync_clock_async(struct vmm *v, const char *why);
/* The guest's OS name as its agent told it; false if not known (yet). */
bool vmm_agent_os(struct vmm *v, char *os, size_t oslen);
/* vmm_mem.c: admission control and the VMM's cgroup (before guest RAM is mapped: ERR says why
 * a VM whose reservation cannot be met does not start); dynamic memory's thread; the
 * reservation, limit, shares, cgroup and policy for query-memory. */
int vmm_mem_admit_and_enter(struct vmm *v, char *err, size_t errlen);
int vmm_mem_policy_start(struct vmm *v, char *err, size_t errlen);
void vmm_mem_policy_stop(struct vmm *v);
json_t *vmm_mem_json_locked(struct vmm *v);

/* vmm_cmds.c: the command table, and an error reply with one %s argument. */
extern const struct ctl_command vmm_commands[];
extern const size_t vmm_ncommands;
json_t *vmm_fail(struct ctl_error *err, const char *cls, const char *fmt, const char *arg);

/* vmm_snap.c: suspend and the snapshot operations, with plain arguments (the control commands
 * in vmm_cmds.c turn JSON into them and their results into JSON). The operations take the lock
 * and return 0, or -errno with ERR: class InvalidArgument when ID names no snapshot the
 * operation can use, GenericError for anything else. */
int setup_snapshot_host(struct vmm *v, char *err, size_t errlen);
int vmm_suspend(struct vmm *v, double *pause_ms, size_t *state_bytes, struct ctl_error *err);
/* VM_STATE: the power state the node records (NULL: the VM's); QUIESCED: what the node says of
 * the guest's file systems (see struct snap_node). TAKEN gets a copy of the node. */
int vmm_snapshot_take(struct vmm *v, const char *label, const char *vm_state, const char *quiesced,
                      struct snap_node *taken, double *pause_ms, struct ctl_error *err);
struct vmm_reverted {
    char id[SNAP_ID_MAX];   /* the target */
    char kept[SNAP_ID_MAX]; /* the automatic node that keeps the state before; "" = none */
    char vm_state[16];      /* the target's power state, which the VM is in now */
    uint64_t pages_written;
    double pause_ms;
};
/* ID: an id or a label. KEEP_CURRENT: the state before is kept as an automatic node. */
int vmm_snapshot_revert(struct vmm *v, const char *id, bool keep_current, struct vmm_reverted *out,
                        struct ctl_error *err);
struct vmm_deleted {
    char id[SNAP_ID_MAX];
    struct snapshot_delete_plan plan; /* what it needed (DRY_RUN: would need) */
};
/* DRY_RUN: only says what deleting it would need. Otherwise starts the merge on a worker thread
 * and returns: the event SNAPSHOT_DELETED {"id", "deleted", "ms", "error"} says how it ended. */
int vmm_snapshot_delete(struct vmm *v, const char *id, bool dry_run, struct vmm_deleted *out,
                        struct ctl_error *err);
/* Waits (without the lock) up to TIMEOUT_MS for a delete in progress; true if none is. */
bool vmm_snapshot_wait_idle(struct vmm *v, unsigned timeout_ms);

#endif
