/* virtio-pci, modern (virtio 1.x) transport: a PCI function 1af4:(0x1040 + device id) whose
 * common, notify, ISR and device config structures sit in one 64-bit memory BAR, described by
 * vendor capabilities. Split virtqueues only; INTx through the ISR; queue notifies arrive on
 * eventfds (KVM_IOEVENTFD on the notify address) and are served by the transport's I/O thread,
 * never a vCPU thread. The one idea: every descriptor chain is walked and checked in exactly
 *  one place (virtq_pop in virtqueue.c) before a device sees it as host memory segments;
 * anything malformed sets DEVICE_NEEDS_RESET, logs once, and the VMM runs on. */
#ifndef VMWS_VIRTIO_PCI_H
#define VMWS_VIRTIO_PCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/devices/devices.h"
#include "core/util/state.h"
#include "core/virtio/virtqueue.h"
#include "core/vm/machine.h"

#define VIRTIO_F_VERSION_1 32
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER 0x02
#define VIRTIO_STATUS_DRIVER_OK 0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VIRTIO_MAX_QUEUES 4
#define VIRTIO_CHAIN_LATER (-2)

struct virtio_pci;
struct virtio_device_ops {
    uint16_t device_id;  /* virtio device id: 2 = block */
    uint32_t class_code; /* PCI class */
    uint64_t features;   /* offered; VERSION_1 is added by the transport */
    unsigned num_queues;
    unsigned config_len; /* bytes of device-specific config */
    const char *name;    /* for logs: "virtio-blk" */
    /* Device config access (vCPU thread, transport lock held); config_write is optional (a
     * device without it has a read-only config). */
    void (*config_read)(void *opaque, unsigned off, uint8_t *data, unsigned len);
    void (*config_write)(void *opaque, unsigned off, const uint8_t *data, unsigned len);
    /* Serves one chain (on the queues' one server thread, WITHOUT the transport lock: a request
     * may take as long as its storage does while vCPUs and status queries go on). Returns the
     * number of bytes written into the writable part, VIRTIO_CHAIN_HELD if the device keeps the
     * chain to complete it later with virtio_pci_complete_held(), VIRTIO_CHAIN_LATER if it has
     * nothing to put in it yet (a receive buffer with no packet waiting: it stays available and the
     * queue is offered again at the next virtio_pci_wake() or notify), or -1 if the chain is
     * malformed for this device (the transport then marks the device NEEDS_RESET with REASON). */
    int (*handle_chain)(void *opaque, unsigned queue, struct virtq_chain *c, char *reason,
                        size_t reasonlen);
    /* Optional: the guest reset the device (transport lock held): chains held are gone. */
    void (*reset)(void *opaque);
};
#define VIRTIO_CHAIN_HELD (-3)

/* Creates the device at PCI SLOT and starts its I/O thread. NULL on failure (logged). */
struct virtio_pci *virtio_pci_create(struct machine *m, struct pci_bus *bus, unsigned slot,
                                     const struct virtio_device_ops *ops, void *opaque);
/* Stops the I/O thread and frees the device: 0. If a request is still in flight after
 * VIRTIO_PCI_STOP_TIMEOUT_MS (storage that hangs; a device's stop has given it its own bound
 * already), -EBUSY (logged) and nothing is freed: its result, when it comes, is dropped, and the
 * caller must leave what the request uses (its image, the device's state) to the process's exit
 * too. */
#define VIRTIO_PCI_STOP_TIMEOUT_MS 1000
int virtio_pci_destroy(struct virtio_pci *vp);
/* Offers every queue's available chains to handle_chain again, on the I/O thread (any thread,
 * no lock needed: a device calls it when it has something for a chain it deferred). */
void virtio_pci_wake(struct virtio_pci *vp);
/* Stops the I/O thread from taking new chains and waits up to TIMEOUT_MS for the one in flight
 * (a caller that holds nothing the request needs: vCPUs and queries go on meanwhile).
 * 0, or -ETIMEDOUT with ERR saying so. virtio_pci_unquiesce() lets it run again; calls nest
 * (it runs again when every quiesce has been undone). */
int virtio_pci_quiesce(struct virtio_pci *vp, unsigned timeout_ms, char *err, size_t errlen);
void virtio_pci_unquiesce(struct virtio_pci *vp);
/* Serves, on the caller's thread, every chain the queues have made available, as the I/O thread
 * does on a notify, and returns when none is left or the device broke; nothing while quiesced
 * (for tests and fuzzing, which want requests served synchronously). */
void virtio_pci_serve_pending(struct virtio_pci *vp);
/* Resets the device as a status write of 0 would (a state to load that has no record of it). */
void virtio_pci_reset(struct virtio_pci *vp);
/* Returns a chain the device held (VIRTIO_CHAIN_HELD) on QUEUE as used, LEN bytes written, and
 * interrupts the guest. Ignored if the driver is not running (a reset dropped the chain). */
void virtio_pci_complete_held(struct virtio_pci *vp, unsigned queue, uint16_t head, uint32_t len);
/* Tells the driver the device config changed (config generation, ISR bit 1, INTx). */
void virtio_pci_config_changed(struct virtio_pci *vp);
/* The features the driver had accepted when the chain being served was taken; only from
 * handle_chain (a reset meanwhile drops the chain's result anyway). */
uint64_t virtio_pci_chain_features(const struct virtio_pci *vp);
/* Whether the driver set DRIVER_OK and the device is not broken. */
bool virtio_pci_driver_ok(struct virtio_pci *vp);
/* Device status byte, whether it is broken and why (for status reports). */
uint8_t virtio_pci_status(struct virtio_pci *vp, bool *needs_reset, char *why, size_t whylen);
/* Completed chains and notifies so far. */
void virtio_pci_counters(struct virtio_pci *vp, uint64_t *requests, uint64_t *kicks);
/* Transport state: features, status, queue addresses and indices (record 'VIOP', INSTANCE). */
int virtio_pci_save(struct virtio_pci *vp, struct state_writer *w, uint32_t instance);
int virtio_pci_load(struct virtio_pci *vp, const struct state_reader *r, uint32_t instance);

#endif
