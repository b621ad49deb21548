/* PCI configuration space for the built-in guest: mechanism #1 (address to 0xCF8, data at
 * 0xCFC), each access two port syscalls. Bus 0, function 0 only: what our VMM and QEMU's
 * i440FX put sound cards on. */
#include "assets/guest/user/sound.h"

#define PCI_CONFIG_ADDRESS 0xcf8
#define PCI_CONFIG_DATA 0xcfc

static void outl(uint16_t port, uint32_t v)
{
    syscall3(SYS_OUT32, port, v, 0);
}

static uint32_t config_address(unsigned slot, unsigned off)
{
    return 0x80000000u | (slot & 31) << 11 | (off & 0xfc);
}

uint32_t pci_read32(unsigned slot, unsigned off)
{
    outl(PCI_CONFIG_ADDRESS, config_address(slot, off));
    return inl(PCI_CONFIG_DATA);
}

void pci_write32(unsigned slot, unsigned off, uint32_t v)
{
    outl(PCI_CONFIG_ADDRESS, config_address(slot, off));
    outl(PCI_CONFIG_DATA, v);
}

bool pci_find(uint16_t vendor, uint16_t device, unsigned *slot)
{
    uint32_t want = (uint32_t)device << 16 | vendor;
    for (unsigned s = 0; s < 32; s++) {
        if (pci_read32(s, 0) == want) {
            *slot = s;
            return true;
        }
    }
    return false;
}
