/* The VMM's own memory cgroup (cgroup v2) and admission control: seed 001's reservation, limit
 * and shares made real. Each VMM moves itself, before it maps guest RAM, into
 * <parent>/<vm name>, where <parent> is `vmws` beside the cgroup vmws was started in (or
 * $VMWS_CGROUP_PARENT): reservation -> memory.min, limit -> memory.max. Where cgroup v2 has no
 * memory controller to give (cgroup v1 hosts, no permission), the VM runs without one and
 * `why` says so. */
#ifndef VMWS_MEMCG_H
#define VMWS_MEMCG_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct memcg {
    bool enforced;         /* the VMM is in its own cgroup with the memory controller */
    char path[PATH_MAX];   /* that cgroup's directory */
    char origin[PATH_MAX]; /* the cgroup the VMM came from, where it goes back at exit */
    char why[512];         /* why not enforced */
    uint64_t min, max;     /* what was written (max 0 = "max") */
};

/* Moves this process into its own cgroup for VM NAME with memory.min = MIN and memory.max =
 * MAX (0 = no limit). Returns 0, or -errno with CG->why ("cgroup v2 memory controller not
 * available: ..."); the process is where it was then. */
int memcg_enter(struct memcg *cg, const char *name, uint64_t min, uint64_t max);
/* Back to the cgroup it came from; the VM's cgroup is removed. */
void memcg_leave(struct memcg *cg);

struct memcg_usage {
    uint64_t current;                             /* memory.current */
    uint64_t file, anon, shmem;                   /* memory.stat */
    uint64_t events_high, events_max, events_oom; /* memory.events: times it hit them */
};
int memcg_usage_read(const struct memcg *cg, struct memcg_usage *u);
/* {"enforced", "path"|"why", "min", "max" (0 = none), "current", "file", "anon", "shmem",
 * "events_max", "events_oom"}. */
json_t *memcg_json(const struct memcg *cg);

/* Admission control as ESXi does it: a VM's reservation must fit in the host's RAM minus what
 * the running VMs reserved minus a margin the host keeps for itself. Pure arithmetic. */
struct memcg_admission {
    uint64_t host_total; /* MemTotal */
    uint64_t others;     /* the running VMs' reservations */
    uint64_t margin;     /* memcg_host_margin(host_total) */
    uint64_t want;       /* this VM's reservation */
    unsigned others_count;
};
/* The host's own margin: 10% of its RAM, at least 256 MiB, at most 2 GiB. */
uint64_t memcg_host_margin(uint64_t host_total);
/* 0 if WANT fits; -ENOMEM with ERR saying why, with the numbers. */
int memcg_admit(const struct memcg_admission *a, char *err, size_t errlen);
/* Fills A for VM SELF reserving WANT: MemTotal from /proc/meminfo, the reservations of the
 * other VMs in $VMWS_HOME whose VMM runs (holds its pidfile). Returns 0 or -errno. */
int memcg_admission_gather(struct memcg_admission *a, const char *self, uint64_t want);

#endif
