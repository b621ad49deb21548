/* virtio-pci (modern) for the built-in guest's drivers (user/virtio_blk.c, user/virtio_net.c):
 * the device's structures found through its vendor capabilities, the status and feature
 * handshake, and setting up one split queue. All of the low 4 GiB is mapped, so a BAR address
 * is a pointer, and static memory is identity mapped, so a pointer is a guest-physical
 * address. */
#ifndef VMWS_GUEST_VIRTIO_H
#define VMWS_GUEST_VIRTIO_H

#include "assets/guest/user/guest.h"

#define VIRTIO_STATUS_ACK 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTQ_DESC_NEXT 1
#define VIRTQ_DESC_WRITE 2

/* Common configuration offsets (virtio 1.x, 4.1.4.3). */
#define CC_DFSELECT 0x00
#define CC_DF 0x04
#define CC_GFSELECT 0x08
#define CC_GF 0x0c
#define CC_STATUS 0x14
#define CC_QSELECT 0x16
#define CC_QSIZE 0x18
#define CC_QENABLE 0x1c
#define CC_QNOTIFY_OFF 0x1e
#define CC_QDESC 0x20
#define CC_QDRIVER 0x28
#define CC_QDEVICE 0x30

struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags, next;
};

/* Where a device's structures are. */
struct vpci {
    unsigned slot;
    uint64_t common, notify_base, isr, devcfg;
    uint32_t notify_mult;
};

/* Reads SLOT's vendor capabilities into D; false if one of the four is missing. */
bool vpci_map(unsigned slot, struct vpci *d);
/* Resets the device, offers the feature bits WANT (low 32; VERSION_1 is always taken) and sets
 * FEATURES_OK; the accepted low bits in *ACCEPTED. false with a message (WHO: "disk") if the
 * device lacks VERSION_1 or refuses. */
bool vpci_negotiate(const struct vpci *d, uint32_t want, uint32_t *accepted, const char *who);
/* Sets up queue Q with at most MAX entries in DESC, AVAIL and USED (*SIZE gets the size used)
 * and enables it; returns its notify address, 0 if the device offers fewer than 2 entries. */
uint64_t vpci_queue(const struct vpci *d, unsigned q, uint16_t max, uint16_t *size, void *desc,
                    void *avail, void *used);
/* The device's INTx line in *IRQ; if it is one of the two PCI lines the kernel counts
 * (IRQ_PCI_A, IRQ_PCI_B), makes it edge-triggered at the PIC, as kernel/head.S assumes (a
 * BIOS such as QEMU's SeaBIOS leaves PCI lines level-triggered: a line the driver has not
 * lowered would interrupt forever), and returns true. */
bool vpci_intx_edge(unsigned slot, unsigned *irq);
/* Adds DRIVER_OK to the status. */
void vpci_driver_ok(const struct vpci *d);

/* user/virtio_net.c: net info | net arp | net test-garbage [KIND] */
void cmd_net(int argc, char **argv);

static inline uint8_t vpci_rd8(uint64_t a)
{
    return *(volatile uint8_t *)(uintptr_t)a;
}
static inline uint16_t vpci_rd16(uint64_t a)
{
    return *(volatile uint16_t *)(uintptr_t)a;
}
static inline void vpci_wr8(uint64_t a, uint8_t v)
{
    *(volatile uint8_t *)(uintptr_t)a = v;
}
static inline void vpci_wr16(uint64_t a, uint16_t v)
{
    *(volatile uint16_t *)(uintptr_t)a = v;
}
static inline void vpci_barrier(void)
{
    __asm__ volatile("mfence" ::: "memory");
}

#endif
