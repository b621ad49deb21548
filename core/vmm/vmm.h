/* The VMM process: one per running VM. vmm_run() builds the machine from a config, boots it,
 * serves the control and console sockets and returns when the VM ends. */
#ifndef VMWS_VMM_H
#define VMWS_VMM_H

#include "core/config/paths.h"
#include "core/config/vmconfig.h"

struct vmm_backends;

struct vmm_options {
    int ready_fd;      /* if >= 0: one byte is written and it is closed once the VM is up */
    bool start_paused; /* the vCPUs wait for a `cont` (offline snapshot work uses this) */
    const struct vmm_backends *backends; /* display and sound (core/vmm/backends.h); NULL = none */
};

/* Runs the VM in this process until it powers off, quits or suspends. A VM with a suspend
 * state (paths->suspend_state) resumes from it; otherwise it boots afresh. Returns the process
 * exit status: 0 for poweroff, quit or suspend; non-zero on failure (reported on stderr, which
 * `vmws start` points at the VM's vmm.log). */
int vmm_run(const struct vm_config *cfg, const struct vm_paths *paths,
            const struct vmm_options *opts);

/* The built-in guest bzImage, linked into the binary (assets/). */
extern const unsigned char vmws_guest_bzimage[];
extern const unsigned char vmws_guest_bzimage_end[];

#endif
