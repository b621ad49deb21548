/* virtio-net over the virtio-pci transport: queue 0 receives, queue 1 transmits, a MAC and a
 * link that is up, no offloads; frames go to and come from user-mode NAT (core/net/). The one
 * idea: receive buffers wait in the ring (VIRTIO_CHAIN_LATER) until a frame arrives; a frame
 * that arrives with no buffer waits in a short host queue, and past it is dropped, as a real
 * card drops it. A transmit chain the device cannot make sense of (a header asking for an
 * offload never negotiated, a frame over 65550 bytes or under an Ethernet header, a writable
 * buffer) marks the device NEEDS_RESET; the VMM runs on. */
#ifndef VMWS_VIRTIO_NET_H
#define VMWS_VIRTIO_NET_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config/vmconfig.h"
#include "core/devices/devices.h"
#include "core/util/state.h"
#include "core/vm/machine.h"

#define VIRTIO_NET_PCI_SLOT 7 /* INTx on IRQ 11 (slot 8 is the balloon's) */
#define VIRTIO_NET_FRAME_MAX 65550

struct virtio_net;
/* Starts the NAT with CFG's forwards and puts the card (CFG's MAC) at PCI slot SLOT. NULL with
 * ERR. */
struct virtio_net *virtio_net_create(struct machine *m, struct pci_bus *bus, unsigned slot,
                                     const struct vm_net_config *cfg, char *err, size_t errlen);
/* Stops the I/O thread and the NAT. */
void virtio_net_destroy(struct virtio_net *n);
/* Waits up to TIMEOUT_MS for the chain in flight and keeps the card from serving another until
 * virtio_net_resume(). 0 or -ETIMEDOUT with ERR. */
int virtio_net_quiesce(struct virtio_net *n, unsigned timeout_ms, char *err, size_t errlen);
void virtio_net_resume(struct virtio_net *n);
/* {"mac", "forwards": ["tcp:8080:80"], "status", "needs_reset", "broken", "rx_bytes",
 * "tx_bytes", "rx_packets", "tx_packets", "rx_dropped"} for `vmws status` and query-net. */
json_t *virtio_net_status_json(struct virtio_net *n);
/* Transport state and the MAC ('VNET'); a load drops frames still waiting for the guest. */
int virtio_net_save(struct virtio_net *n, struct state_writer *w);
int virtio_net_load(struct virtio_net *n, const struct state_reader *r);

#endif
