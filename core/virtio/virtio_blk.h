/* virtio-blk over the virtio-pci transport: one request queue, served on the transport's I/O
 * thread from a disk image (read, write, flush, discard, write-zeroes, get-id). The device
 * checks each request against the image (sector ranges, lengths, the status byte) after the
 * transport has checked the chain's shape; a request it cannot make sense of marks the device
 * NEEDS_RESET, a request the image fails gets VIRTIO_BLK_S_IOERR. */
#ifndef VMWS_VIRTIO_BLK_H
#define VMWS_VIRTIO_BLK_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/devices/devices.h"
#include "core/storage/disk.h"
#include "core/util/state.h"
#include "core/vm/machine.h"

#define VIRTIO_BLK_PCI_SLOT 6 /* INTx on IRQ 10 (the ES1370 in slot 5 is on 11) */

struct virtio_blk;
/* Opens the image at PATH (read-write; FORMAT "qcow2" or "raw", NULL: probed; see
 * core/storage/disk.h) and puts the device at PCI slot SLOT. The serial number the guest reads
 * (get-id) is "vmws-" and SERIAL's base name, so it stays put while snapshots move the device to
 * other images. NULL with ERR. */
struct virtio_blk *virtio_blk_create(struct machine *m, struct pci_bus *bus, unsigned slot,
                                     const char *path, const char *format, const char *serial,
                                     char *err, size_t errlen);
/* Stops the I/O thread, flushes and closes the image. */
void virtio_blk_destroy(struct virtio_blk *b);
/* Before a state save: waits up to TIMEOUT_MS for the request in flight, keeps the device from
 * starting another, and flushes the image. 0, or -errno with ERR saying what failed. The
 * device stays quiet until virtio_blk_resume(). */
int virtio_blk_quiesce(struct virtio_blk *b, unsigned timeout_ms, char *err, size_t errlen);
void virtio_blk_resume(struct virtio_blk *b);
/* Quiesced: closes the device's image (a snapshot operation changes the files behind it), then
 * opens the one at PATH (of the same size: a snapshot's overlay). Requests that reach a device
 * left without an image fail with IOERR. */
void virtio_blk_detach_image(struct virtio_blk *b);
int virtio_blk_attach_image(struct virtio_blk *b, const char *path, const char *format, char *err,
                            size_t errlen);
/* Serves the requests the guest has made available now, on the caller's thread (see
 * virtio_pci_serve_pending). */
void virtio_blk_serve_pending(struct virtio_blk *b);
/* The open image (for reading its cluster map; core/storage/disk.h calls lock it). */
struct disk *virtio_blk_image(struct virtio_blk *b);
/* {"path", "capacity", "status", "needs_reset", "broken", "requests", ...} for `vmws status`. */
json_t *virtio_blk_status_json(struct virtio_blk *b);
/* Transport state plus the image's identity ('VBLK'); a load refuses another image size. */
int virtio_blk_save(struct virtio_blk *b, struct state_writer *w);
int virtio_blk_load(struct virtio_blk *b, const struct state_reader *r);

#endif
