/* The VMM process: one per running VM. vmm_run() builds the machine from a config, boots it,
 * serves the control and console sockets and returns when the VM ends. */
#ifndef VMWS_VMM_H
#define VMWS_VMM_H

#include "app/paths.h"
#include "app/vmconfig.h"

/* Runs the VM to completion in this process. Returns the process exit status:
 * 0 when the guest powered off or a client asked it to quit, non-zero on failure (reported
 * on stderr / the VMM log first). READY_FD, if >= 0, gets one byte written and is closed once
 * the control socket accepts connections (so `vmws start` knows when to return). */
int vmm_run(const struct vm_config *cfg, const struct vm_paths *paths, int ready_fd);

/* The built-in guest bzImage, linked into the binary (assets/). */
extern const unsigned char vmws_guest_bzimage[];
extern const unsigned char vmws_guest_bzimage_end[];

#endif
