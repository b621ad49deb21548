/* virtio-pci (modern) for the built-in guest's drivers (see virtio.h): capabilities, the
 * status and feature handshake of virtio 1.x 3.1.1, and one split queue's registers. */
#include "assets/guest/user/virtio.h"
#include "assets/guest/user/sound.h"

#define F_VERSION_1_HI 1u /* bit 32 */

/* Guest-physical address of memory BAR N (vmws uses BAR 0, QEMU BAR 4), 0 if unusable. */
static uint64_t bar_address(unsigned slot, unsigned n)
{
    if (n > 5)
        return 0;
    uint32_t lo = pci_read32(slot, 0x10 + 4 * n);
    if (lo & 1)
        return 0; /* I/O BAR */
    uint64_t a = lo & ~0xfull;
    if ((lo & 6) == 4 && n < 5)
        a |= (uint64_t)pci_read32(slot, 0x14 + 4 * n) << 32;
    return a < 4 * GIB ? a : 0; /* the kernel's page tables map the low 4 GiB */
}

bool vpci_map(unsigned slot, struct vpci *d)
{
    memset(d, 0, sizeof(*d));
    d->slot = slot;
    unsigned ptr = pci_read32(slot, 0x34) & 0xfc;
    for (unsigned n = 0; ptr && n < 16; n++) {
        uint32_t w0 = pci_read32(slot, ptr);
        unsigned type = w0 >> 24;
        uint64_t base = bar_address(slot, pci_read32(slot, ptr + 4) & 0xff);
        uint64_t addr = base + pci_read32(slot, ptr + 8);
        if ((w0 & 0xff) == 0x09 && base) {
            if (type == 1)
                d->common = addr;
            else if (type == 2) {
                d->notify_base = addr;
                d->notify_mult = pci_read32(slot, ptr + 16);
            } else if (type == 3)
                d->isr = addr;
            else if (type == 4)
                d->devcfg = addr;
        }
        ptr = (w0 >> 8) & 0xfc;
    }
    return d->common && d->notify_base && d->isr && d->devcfg;
}

bool vpci_negotiate(const struct vpci *d, uint32_t want, uint32_t *accepted, const char *who)
{
    uint64_t c = d->common;
    vpci_wr8(c + CC_STATUS, 0);
    while (vpci_rd8(c + CC_STATUS))
        cpu_relax();
    vpci_wr8(c + CC_STATUS, VIRTIO_STATUS_ACK);
    vpci_wr8(c + CC_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
    mmio_write32(c + CC_DFSELECT, 1);
    uint32_t hi = mmio_read32(c + CC_DF);
    mmio_write32(c + CC_DFSELECT, 0);
    uint32_t lo = mmio_read32(c + CC_DF);
    if (!(hi & F_VERSION_1_HI)) {
        printf("%s: the device does not offer VIRTIO_F_VERSION_1\n", who);
        return false;
    }
    *accepted = lo & want;
    mmio_write32(c + CC_GFSELECT, 0);
    mmio_write32(c + CC_GF, *accepted);
    mmio_write32(c + CC_GFSELECT, 1);
    mmio_write32(c + CC_GF, F_VERSION_1_HI);
    uint8_t st = VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
    vpci_wr8(c + CC_STATUS, st);
    if (!(vpci_rd8(c + CC_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
        printf("%s: the device refused our features\n", who);
        return false;
    }
    return true;
}

uint64_t vpci_queue(const struct vpci *d, unsigned q, uint16_t max, uint16_t *size, void *desc,
                    void *avail, void *used)
{
    uint64_t c = d->common;
    vpci_wr16(c + CC_QSELECT, (uint16_t)q);
    uint16_t offered = vpci_rd16(c + CC_QSIZE);
    *size = offered < max ? offered : max;
    if (*size < 2)
        return 0;
    vpci_wr16(c + CC_QSIZE, *size);
    mmio_write32(c + CC_QDESC, (uint32_t)(uintptr_t)desc);
    mmio_write32(c + CC_QDESC + 4, 0);
    mmio_write32(c + CC_QDRIVER, (uint32_t)(uintptr_t)avail);
    mmio_write32(c + CC_QDRIVER + 4, 0);
    mmio_write32(c + CC_QDEVICE, (uint32_t)(uintptr_t)used);
    mmio_write32(c + CC_QDEVICE + 4, 0);
    uint64_t notify = d->notify_base + (uint64_t)vpci_rd16(c + CC_QNOTIFY_OFF) * d->notify_mult;
    vpci_wr16(c + CC_QENABLE, 1);
    return notify;
}

bool vpci_intx_edge(unsigned slot, unsigned *irq)
{
    *irq = pci_read32(slot, 0x3c) & 0xff;
    if (*irq != IRQ_PCI_A && *irq != IRQ_PCI_B)
        return false;
    uint16_t elcr = (uint16_t)(0x4d0 + (*irq >> 3));
    outb(elcr, (uint8_t)(inb(elcr) & ~(1u << (*irq & 7))));
    return true;
}

void vpci_driver_ok(const struct vpci *d)
{
    vpci_wr8(d->common + CC_STATUS,
             (uint8_t)(vpci_rd8(d->common + CC_STATUS) | VIRTIO_STATUS_DRIVER_OK));
}
