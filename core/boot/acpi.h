/* ACPI tables the guest finds by scanning 0xE0000-0xFFFFF for the RSDP (as on a PC) or via
 * boot_params.acpi_rsdp_addr: RSDP -> XSDT/RSDT -> FADT (PM1a event/control, PM timer, SCI),
 * DSDT (with \_S5 for poweroff), MADT (one LAPIC per vCPU, the IOAPIC, ISA overrides). */
#ifndef VMWS_ACPI_H
#define VMWS_ACPI_H

#include <stddef.h>
#include <stdint.h>

#include "core/vm/guestmem.h"

/* The machine's fixed ACPI hardware (ports match QEMU's PIIX4 PM so guests see the same). */
#define ACPI_PM_BASE 0x600
#define ACPI_PM1A_EVT_BLK (ACPI_PM_BASE + 0x0) /* 4 bytes: status, enable */
#define ACPI_PM1A_CNT_BLK (ACPI_PM_BASE + 0x4) /* 2 bytes: SLP_TYP bits 10-12, SLP_EN bit 13 */
#define ACPI_PM_TMR_BLK (ACPI_PM_BASE + 0x8)   /* 4 bytes: 3.579545 MHz, 24 bit */
#define ACPI_SCI_IRQ 9
#define ACPI_S5_SLP_TYP 0 /* \_S5 = Package {0, 0, ...} as on QEMU */
#define IOAPIC_ADDR 0xfec00000u
#define LAPIC_ADDR 0xfee00000u

struct acpi_config {
    unsigned ncpus;
};

/* Writes the tables into guest RAM at [BOOT_ACPI_START, BOOT_ACPI_END) and returns the RSDP's
 * GPA in *RSDP. Returns 0, -EINVAL if ncpus is 0 or above 255 (xAPIC ids), -ENOSPC if the
 * tables do not fit the area, -EFAULT if RAM does not reach 1 MiB, or -ENOMEM. */
int acpi_build(struct guest_mem *m, const struct acpi_config *cfg, uint64_t *rsdp);

#endif
