/*
 * The machine's DSDT (compiled by ACPICA's iasl at build time, embedded by core/boot/acpi.c).
 * What an OS learns here and nowhere else:
 * - \_S5: the sleep type OSPM writes to PM1a_CNT to power off (core/boot/acpi.h ACPI_S5_SLP_TYP);
 * - \_SB.PCI0: the PCI host bridge (PNP0A03), so Linux enumerates bus 0 through ACPI. Its
 *   _CRS: bus 0, the 0xCF8-0xCFF config ports, and the I/O and memory windows core/devices/pci.c
 *   places BARs in (I/O 0xC000-0xFFFF within the decoded ranges, memory 0xE0000000-0xFEBFFFFF,
 *   which also holds the framebuffer at 0xFC000000); its _PRT: INTA# of each slot. core/devices/pci.c
 *   wires INTA# of even slots to IRQ 10 and of odd slots to IRQ 11, level triggered and active
 *   high (KVM's IOAPIC does not invert), which the link devices LNKA and LNKB declare;
 * - the PS/2 keyboard and mouse behind the i8042 (ports 0x60/0x64, IRQ 1 and 12).
 * Keep it in step with core/devices/pci.c, core/devices/i8042.c and the MADT in core/boot/acpi.c.
 */
DefinitionBlock ("", "DSDT", 2, "VMWS  ", "VMWSDSDT", 1)
{
    Name (\_S5, Package (4) {0, 0, 0, 0})

    Scope (\_SB)
    {
        Device (PCI0)
        {
            Name (_HID, EisaId ("PNP0A03"))
            Name (_UID, 0)
            Name (_CRS, ResourceTemplate ()
            {
                WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
                    0x0000, 0x0000, 0x0000, 0x0000, 0x0001)
                IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                    0x0000, 0x0000, 0x0CF7, 0x0000, 0x0CF8)
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                    0x0000, 0x0D00, 0xFFFF, 0x0000, 0xF300)
                DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,
                    0x00000000, 0x000A0000, 0x000BFFFF, 0x00000000, 0x00020000)
                DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
                    0x00000000, 0xE0000000, 0xFEBFFFFF, 0x00000000, 0x1EC00000)
            })
            Name (_PRT, Package ()
            {
                Package () {0x0001FFFF, 0, LNKB, 0},
                Package () {0x0002FFFF, 0, LNKA, 0},
                Package () {0x0003FFFF, 0, LNKB, 0},
                Package () {0x0004FFFF, 0, LNKA, 0},
                Package () {0x0005FFFF, 0, LNKB, 0},
                Package () {0x0006FFFF, 0, LNKA, 0},
                Package () {0x0007FFFF, 0, LNKB, 0},
                Package () {0x0008FFFF, 0, LNKA, 0},
                Package () {0x0009FFFF, 0, LNKB, 0},
                Package () {0x000AFFFF, 0, LNKA, 0},
                Package () {0x000BFFFF, 0, LNKB, 0},
                Package () {0x000CFFFF, 0, LNKA, 0},
                Package () {0x000DFFFF, 0, LNKB, 0},
                Package () {0x000EFFFF, 0, LNKA, 0},
                Package () {0x000FFFFF, 0, LNKB, 0},
                Package () {0x0010FFFF, 0, LNKA, 0},
                Package () {0x0011FFFF, 0, LNKB, 0},
                Package () {0x0012FFFF, 0, LNKA, 0},
                Package () {0x0013FFFF, 0, LNKB, 0},
                Package () {0x0014FFFF, 0, LNKA, 0},
                Package () {0x0015FFFF, 0, LNKB, 0},
                Package () {0x0016FFFF, 0, LNKA, 0},
                Package () {0x0017FFFF, 0, LNKB, 0},
                Package () {0x0018FFFF, 0, LNKA, 0},
                Package () {0x0019FFFF, 0, LNKB, 0},
                Package () {0x001AFFFF, 0, LNKA, 0},
                Package () {0x001BFFFF, 0, LNKB, 0},
                Package () {0x001CFFFF, 0, LNKA, 0},
                Package () {0x001DFFFF, 0, LNKB, 0},
                Package () {0x001EFFFF, 0, LNKA, 0},
                Package () {0x001FFFFF, 0, LNKB, 0}
            })
        }

        Device (LNKA)
        {
            Name (_HID, EisaId ("PNP0C0F"))
            Name (_UID, 1)
            Name (_PRS, ResourceTemplate () { Interrupt (ResourceConsumer, Level, ActiveHigh, Shared) {10} })
            Method (_STA, 0) { Return (0x0B) }
            Method (_CRS, 0) { Return (_PRS) }
            Method (_SRS, 1) { }
            Method (_DIS, 0) { }
        }

        Device (LNKB)
        {
            Name (_HID, EisaId ("PNP0C0F"))
            Name (_UID, 2)
            Name (_PRS, ResourceTemplate () { Interrupt (ResourceConsumer, Level, ActiveHigh, Shared) {11} })
            Method (_STA, 0) { Return (0x0B) }
            Method (_CRS, 0) { Return (_PRS) }
            Method (_SRS, 1) { }
            Method (_DIS, 0) { }
        }

        Device (KBD)
        {
            Name (_HID, EisaId ("PNP0303"))
            Method (_STA, 0) { Return (0x0F) }
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x0060, 0x0060, 0x01, 0x01)
                IO (Decode16, 0x0064, 0x0064, 0x01, 0x01)
                IRQNoFlags () {1}
            })
        }

        Device (MOU)
        {
            Name (_HID, EisaId ("PNP0F13"))
            Method (_STA, 0) { Return (0x0F) }
            Name (_CRS, ResourceTemplate () { IRQNoFlags () {12} })
        }
    }
}
