/* A virtio-pci driver's view of one device, for tests and fuzzing without KVM: its config space
 * through ports 0xCF8/0xCFC and its BAR 0 through the machine's MMIO bus, as a guest reaches
 * them. The one idea: the test drives the device only through what a guest could touch. */
#ifndef VMWS_TESTS_VPCI_DRIVER_H
#define VMWS_TESTS_VPCI_DRIVER_H

#include <stdint.h>

#include "core/vm/iobus.h"
#include "core/vm/machine.h"

static inline uint32_t vpci_cfg_read(struct machine *m, unsigned slot, unsigned off)
{
    uint8_t d[4];
    io_data_put(d, 4, 0x80000000u | slot << 11 | off);
    iobus_access(&m->pio, 0xcf8, d, 4, true);
    iobus_access(&m->pio, 0xcfc, d, 4, false);
    return (uint32_t)io_data_get(d, 4);
}

static inline uint64_t vpci_bar_read(struct machine *m, uint64_t addr, unsigned len)
{
    uint8_t d[8];
    iobus_access(&m->mmio, addr, d, len, false);
    return io_data_get(d, len);
}

static inline void vpci_bar_write(struct machine *m, uint64_t addr, unsigned len, uint64_t v)
{
    uint8_t d[8];
    io_data_put(d, len, v);
    iobus_access(&m->mmio, addr, d, len, true);
}

/* BAR 0 offset of the virtio capability of TYPE, as a driver finds it; -1 if none (the walk
 * stops after 48 entries, so a looping list ends it too). */
static inline int vpci_cap_offset(struct machine *m, unsigned slot, unsigned type)
{
    unsigned n = 0;
    for (unsigned p = vpci_cfg_read(m, slot, 0x34) & 0xff; p && n < 48;
         p = (vpci_cfg_read(m, slot, p) >> 8) & 0xff, n++)
        if ((vpci_cfg_read(m, slot, p) & 0xff) == 9 && vpci_cfg_read(m, slot, p) >> 24 == type)
            return (int)vpci_cfg_read(m, slot, p + 8);
    return -1;
}

#endif
