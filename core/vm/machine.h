/* One KVM virtual machine: the VM and vCPU file descriptors, guest RAM slots, the in-kernel
 * interrupt controllers and PIT, the I/O buses and the vCPU threads. vCPU threads run KVM_RUN
 * and route exits to the buses; everything else (pause, stop, device state) is coordinated here.
 * A guest that does something impossible stops its vCPUs with a reason; the process lives on. */
#ifndef VMWS_MACHINE_H
#define VMWS_MACHINE_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/vm/guestmem.h"
#include "core/vm/iobus.h"

struct vcpu {
    struct machine *m;
    unsigned index;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool thread_started;
    bool paused; /* acknowledged a pause request (under m->lock) */
};

enum machine_stop_reason {
    STOP_NONE,
    STOP_POWEROFF, /* the guest powered off (ACPI S5) */
    STOP_RESET,    /* the guest asked for a reset (0xCF9, i8042, triple fault) */
    STOP_QUIT,     /* a client asked the VMM to quit */
    STOP_ERROR,    /* the guest did something KVM cannot run; see stop_detail */
};

struct machine {
    int kvm_fd, vm_fd;
    struct guest_mem *mem;
    unsigned ncpus;
    struct vcpu *vcpus;
    size_t run_size;
    struct iobus pio, mmio;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool pause_requested;
    unsigned paused_count;
    enum machine_stop_reason stop_reason;
    char stop_detail[256];
    int stop_notify_fd; /* eventfd written when stop_reason is set */
};

/* Creates the VM: irqchip, PIT, TSS/identity map, RAM slots with dirty logging, NCPUS vCPUs with
 * CPUID from KVM_GET_SUPPORTED_CPUID. Returns 0 or -errno with ERR set. */
int machine_create(struct machine *m, struct guest_mem *mem, unsigned ncpus, char *err,
                   size_t errlen);
/* Puts the boot vCPU at the given register state (other vCPUs wait for INIT/SIPI). */
int machine_set_boot_state(struct machine *m, const struct kvm_regs *regs,
                           const struct kvm_sregs *sregs, char *err, size_t errlen);
int machine_get_boot_sregs(struct machine *m, struct kvm_sregs *sregs);
/* Starts the vCPU threads. */
int machine_start(struct machine *m, char *err, size_t errlen);
/* Pauses all vCPUs and waits up to TIMEOUT_MS until every one is out of KVM_RUN: 0, or
 * -ETIMEDOUT with ERR naming the vCPU that did not stop (the pause is then undone: the VM runs on,
 * and the caller reports the error instead of waiting forever under its locks). */
#define MACHINE_PAUSE_TIMEOUT_MS 5000
int machine_pause(struct machine *m, unsigned timeout_ms, char *err, size_t errlen);
void machine_resume(struct machine *m);
bool machine_is_paused(struct machine *m);
/* Records why the machine stops (first reason wins) and wakes stop_notify_fd. Any thread. */
void machine_request_stop(struct machine *m, enum machine_stop_reason why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Stops and joins the vCPU threads, closes KVM fds. RAM is left to its owner. */
void machine_destroy(struct machine *m);

/* Machine state (vmstate.c); the vCPUs must be paused or not yet started. Device models save
 * their own records. machine_load_state() checks the whole state fits this machine first. */
struct state_writer;
struct state_reader;
int machine_save_state(struct machine *m, struct state_writer *w);
int machine_check_state(struct machine *m, const struct state_reader *r, char *err, size_t errlen);
int machine_load_state(struct machine *m, const struct state_reader *r, bool restore_clock,
                       char *err, size_t errlen);

/* ORs into BITMAP (one bit per 4 KiB page of RAM offset) every page written since the last call,
 * by the guest (KVM's dirty log, which this clears) or by the VMM (its bitmap, also cleared). */
int machine_collect_dirty(struct machine *m, uint64_t *bitmap);

/* Maps HOST (SIZE bytes) at guest-physical GPA as memory slot SLOT (0 and 1 are RAM; devices use
 * 2 and up) with FLAGS (e.g. KVM_MEM_LOG_DIRTY_PAGES). Returns 0 or -errno. */
int machine_add_memory_slot(struct machine *m, uint32_t slot, uint64_t gpa, uint64_t size,
                            void *host, uint32_t flags);

/* Raises/lowers an ISA/IOAPIC interrupt line. */
void machine_set_irq(struct machine *m, unsigned irq, int level);
/* Pulses an edge-triggered line. */
void machine_pulse_irq(struct machine *m, unsigned irq);

#endif
