/* virtio-console (virtio 1.x, 5.3) over the virtio-pci transport with VIRTIO_CONSOLE_F_MULTIPORT
 * and one port, port 0, named by the host (org.qemu.guest_agent.0 for the guest agent): Linux's
 * virtio_console driver makes it /dev/vport*p0, and udev links /dev/virtio-ports/NAME to it.
 * Queues: 0 port 0 receive (host to guest), 1 port 0 transmit, 2 control receive, 3 control
 * transmit. The one idea: the host end is a byte stream (a callback for the guest's bytes, a
 * bounded queue for the host's) plus whether a program in the guest has the port open; a
 * control or data chain the device cannot make sense of (a short control message, an unknown
 * event, a writable transmit buffer) marks the device NEEDS_RESET, and the VMM runs on. */
#ifndef VMWS_VIRTIO_CONSOLE_H
#define VMWS_VIRTIO_CONSOLE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/devices/devices.h"
#include "core/util/state.h"
#include "core/vm/machine.h"

#define VIRTIO_CONSOLE_PCI_SLOT 9    /* 7 is the network card's, 8 the balloon's */
#define VIRTIO_CONSOLE_OUT_MAX 65536 /* host bytes waiting for the guest's receive buffers */
#define VIRTIO_CONSOLE_NAME_MAX 40

/* The host end of the port. Both are called on the device's I/O thread (transport lock held):
 * they must not call back into the device or wait. */
struct virtio_console_host {
    void (*data)(void *opaque, const uint8_t *buf, size_t len); /* bytes from the guest */
    void (*open)(void *opaque, bool open); /* a guest program opened (closed) the port */
};

struct virtio_console;
/* The device at PCI SLOT with port 0 named NAME (under VIRTIO_CONSOLE_NAME_MAX bytes). NULL if
 * it cannot be created (logged). */
struct virtio_console *virtio_console_create(struct machine *m, struct pci_bus *bus, unsigned slot,
                                             const char *name, const struct virtio_console_host *h,
                                             void *opaque);
/* Stops the I/O thread; the host end hears open(false) if the port was open. */
void virtio_console_destroy(struct virtio_console *vc);
/* Queues LEN bytes for the guest: 0, -ENOTCONN if no guest program has the port open (the
 * driver would drop them), -EAGAIN if they do not fit in VIRTIO_CONSOLE_OUT_MAX. Any thread. */
int virtio_console_write(struct virtio_console *vc, const void *buf, size_t len);
/* Drops the host bytes the guest has not taken yet. */
void virtio_console_flush(struct virtio_console *vc);
bool virtio_console_guest_open(struct virtio_console *vc);
int virtio_console_quiesce(struct virtio_console *vc, unsigned timeout_ms, char *err,
                           size_t errlen);
void virtio_console_resume(struct virtio_console *vc);
/* {"name", "status", "needs_reset", "broken", "guest_open", "rx_bytes", "tx_bytes"}. */
json_t *virtio_console_status_json(struct virtio_console *vc);
/* Transport state, the control messages not yet delivered and whether the port is open
 * ('VCON'); a load drops the host bytes still waiting. A state without the record (saved before
 * the VM had this device) resets it, as at power-on. */
int virtio_console_save(struct virtio_console *vc, struct state_writer *w);
int virtio_console_load(struct virtio_console *vc, const struct state_reader *r);

#endif
