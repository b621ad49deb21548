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

/* A driver's probe as Linux runs it, through the common config at address COMMON: reset,
 * ACKNOWLEDGE | DRIVER, FEATURES (the low word; VERSION_1 in the high word), FEATURES_OK, then
 * NQ queues of QSZ entries whose rings the caller has zeroed at RINGS + q * 4 KiB (descriptors,
 * avail at +0x400, used at +0x800), and DRIVER_OK. Returns the status FEATURES_OK left (bit 3
 * set: the device accepted the features); the queues are set up either way. */
static inline uint8_t vpci_driver_probe(struct machine *m, uint64_t common, uint32_t features,
                                        unsigned nq, uint16_t qsz, uint64_t rings)
{
    vpci_bar_write(m, common + 0x14, 1, 0);
    vpci_bar_write(m, common + 0x14, 1, 1 | 2);
    vpci_bar_write(m, common + 0x08, 4, 0);
    vpci_bar_write(m, common + 0x0c, 4, features);
    vpci_bar_write(m, common + 0x08, 4, 1);
    vpci_bar_write(m, common + 0x0c, 4, 1); /* VERSION_1 */
    vpci_bar_write(m, common + 0x14, 1, 1 | 2 | 8);
    uint8_t status = (uint8_t)vpci_bar_read(m, common + 0x14, 1);
    for (unsigned q = 0; q < nq; q++) {
        vpci_bar_write(m, common + 0x16, 2, q);
        vpci_bar_write(m, common + 0x18, 2, qsz);
        vpci_bar_write(m, common + 0x20, 8, rings + q * 0x1000);
        vpci_bar_write(m, common + 0x28, 8, rings + q * 0x1000 + 0x400);
        vpci_bar_write(m, common + 0x30, 8, rings + q * 0x1000 + 0x800);
        vpci_bar_write(m, common + 0x1c, 2, 1);
    }
    vpci_bar_write(m, common + 0x14, 1, 1 | 2 | 4 | 8);
    return status;
}

#endif
