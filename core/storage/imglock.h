/* Disk image locks that QEMU understands: while vmws has an image open, QEMU, qemu-img, qemu-io
 * and other vmws processes see the same byte-range locks a QEMU process would hold, and refuse
 * what would corrupt it (and vmws refuses to open an image they are writing). The lock belongs
 * to the open file description: it lasts exactly as long as the fd it was taken on. */
#ifndef VMWS_CORE_IMGLOCK_H
#define VMWS_CORE_IMGLOCK_H

#include <stdbool.h>
#include <stddef.h>

/* Takes the locks of an image opened writable (the VM's top image) or read-only (a backing
 * file) on FD, a fresh fd for PATH. Returns 0; -EAGAIN if another open of the image (in this
 * process or another) holds or forbids what this one needs, with err naming the image and what
 * conflicts; or another -errno if the file system cannot lock. On failure FD holds no locks. */
int imglock_acquire(int fd, const char *path, bool writable, char *err, size_t errlen);

#endif
