/* The legacy PC devices of a vmws machine, each in its own file, each registering its own
 * ports on the machine's buses: 8250 UART (serial.c), CMOS RTC (rtc.c), i8042 keyboard
 * controller (i8042.c), PCI host bridge, config space and the 0xCF9 reset register (pci.c), ACPI
 * PM block and POST port 0x80 (pm.c). The PC speaker and ES1370 are in sound.h, the framebuffer
 * in framebuffer.h. The 8259 PICs, IOAPIC, LAPICs and 8254 PIT live in KVM. */
#ifndef VMWS_DEVICES_H
#define VMWS_DEVICES_H

#include <stddef.h>
#include <stdint.h>

#include "core/util/state.h"
#include "core/vm/machine.h"

/* Every device model saves and restores its own state records (state.h) for suspend and
 * snapshots: NAME_save(dev, writer) and NAME_load(dev, reader), 0 or -errno; a load that finds
 * a missing or mis-sized record returns -EINVAL and changes nothing it has not validated. */

/* --- 8250/16550A UART --- */
#define COM1_BASE 0x3f8
#define COM1_IRQ 4
typedef void (*serial_output_fn)(void *opaque, const unsigned char *buf, size_t len);
struct serial;
struct serial *serial_create(struct machine *m, uint16_t base, unsigned irq, serial_output_fn out,
                             void *opaque);
/* Bytes typed by the user; kept in a 64 KiB buffer the guest drains. Any thread. */
void serial_input(struct serial *s, const unsigned char *buf, size_t len);
void serial_destroy(struct serial *s);
int serial_save(struct serial *d, struct state_writer *w);
int serial_load(struct serial *d, const struct state_reader *r);

/* --- MC146818 CMOS RTC: host UTC time plus an offset the guest may set --- */
struct rtc;
struct rtc *rtc_create(struct machine *m);
void rtc_destroy(struct rtc *r);
int rtc_save(struct rtc *d, struct state_writer *w);
int rtc_load(struct rtc *d, const struct state_reader *r);

/* --- i8042 keyboard controller: self tests, command byte, keyboard identify/reset, CPU reset ---
 */
struct i8042;
struct i8042 *i8042_create(struct machine *m);
/* Queues keyboard bytes (set-1 scancodes after translation) and raises IRQ 1. Any thread. */
void i8042_keyboard_bytes(struct i8042 *k, const uint8_t *bytes, size_t n);
/* PS/2 mouse (aux port, IRQ 12): relative motion (y down), wheel, buttons (bit 0 left, 1 right,
 * 2 middle), sent as packets once the guest enabled reporting. Any thread. */
void i8042_mouse_event(struct i8042 *k, int dx, int dy, int dz, unsigned buttons);
void i8042_destroy(struct i8042 *k);
int i8042_save(struct i8042 *d, struct state_writer *w);
int i8042_load(struct i8042 *d, const struct state_reader *r);

/* --- PCI: config mechanism #1 on 0xCF8/0xCFC, bus 0 --- */
#define PCI_MAX_SLOTS 32
struct pci_device {
    uint8_t cfg[256];
    uint8_t wmask[256];   /* bits the guest may write (BARs are handled separately) */
    uint64_t bar_size[6]; /* 0 = unused; power of two */
    uint8_t bar_is_io[6];
    /* Called (without the bus lock) after the guest moved or enabled/disabled a BAR. */
    void (*bar_changed)(struct pci_device *d, int bar, uint64_t old_addr, uint64_t new_addr,
                        int enabled);
    /* Optional: offered each config access first (bus lock held); returns true if it handled
     * it (a read fills DATA), false for the standard cfg/wmask handling. virtio-pci's
     * pci_cfg_data window uses it. */
    bool (*cfg_access)(struct pci_device *d, unsigned off, uint8_t *data, uint32_t len,
                       bool is_write);
    void *opaque;
    unsigned intx_irq; /* set by pci_register: the IRQ the board wires INTA# to */
};
/* One config byte read without the bus lock (a device's own command register: INTx disable, bus
 * master), under the device's lock: the bus stores each byte whole, so this is the old or the new
 * value, never a torn one (issue 14, finding 11). */
static inline uint8_t pci_cfg_byte(const struct pci_device *d, unsigned off)
{
    return __atomic_load_n(&d->cfg[off], __ATOMIC_RELAXED);
}
struct pci_bus;
struct pci_bus *pci_create(struct machine *m);
/* Fills the standard header of a type-0 function. */
void pci_device_init(struct pci_device *d, uint16_t vendor, uint16_t device, uint32_t class_code,
                     uint8_t revision);
/* Adds D at bus 0, SLOT (1..31), assigning its BARs as firmware would (I/O from 0xC000, memory
 * from 0xE0000000, decoding on; bar_changed is called for each) and, if cfg[0x3D] (interrupt
 * pin) is set, its INTx line (IRQ 10 or 11) into cfg[0x3C]. Returns 0 or -EBUSY/-EINVAL/-ENOSPC. */
int pci_register(struct pci_bus *bus, struct pci_device *d, unsigned slot);
/* The legacy IRQ the device's INTx pin drives (for machine_set_irq): the board's wiring, not
 * what the guest wrote into cfg[0x3C]. */
unsigned pci_irq_line(const struct pci_device *d);
/* Drives D's INTx: its line (IRQ 10 or 11, shared by every other slot) is high while any
 * function on it drives it high, as a wired-OR. Any thread, any lock held. */
void pci_set_intx(struct pci_bus *bus, struct pci_device *d, bool level);
/* Current guest-programmed address of a BAR (0 if unassigned or decoding off). */
uint64_t pci_bar_address(struct pci_bus *bus, struct pci_device *d, int bar);
void pci_destroy(struct pci_bus *bus);
int pci_save(struct pci_bus *d, struct state_writer *w);
int pci_load(struct pci_bus *d, const struct state_reader *r);

/* --- ACPI PM block (0x600: PM1a event/control, PM timer) and the POST port 0x80 --- */
struct pm;
struct pm *pm_create(struct machine *m);
void pm_destroy(struct pm *p);
int pm_save(struct pm *d, struct state_writer *w);
int pm_load(struct pm *d, const struct state_reader *r);
/* Presses the ACPI power button. Returns whether the guest's OS had enabled its event (an ACPI
 * OS listens: it will shut down) or not (nothing will happen). */
bool pm_power_button(struct pm *p);

#endif
