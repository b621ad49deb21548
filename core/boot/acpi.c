/* ACPI tables for the guest, built in a host buffer laid out exactly as they will sit at
 * BOOT_ACPI_START and then copied into guest RAM with one guest_mem_write() (so the VMM's dirty
 * bitmap sees them). The one idea: allocate every table first (addresses are then known), fill
 * them in, and compute each checksum last, so that bytes never change after being summed.
 * Layout: RSDP, XSDT, RSDT, FADT, FACS (64-byte aligned), DSDT, MADT. */
#include "core/boot/acpi.h"
#include "core/util/bytes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/boot/linuxboot.h"

#define ACPI_OEM_ID "VMWS  "
#define ACPI_OEM_TABLE_ID "VMWSVM  "
#define ACPI_CREATOR_ID "VMWS"
#define SDT_HEADER_SIZE 36

#define RSDP_SIZE 36
#define FADT_SIZE 276 /* revision 6 (ACPI 6.0+) */
#define FADT_REVISION 6
#define FACS_SIZE 64
#define MADT_REVISION 4
#define ACPI_MAX_CPUS 255 /* xAPIC ids; 0xff is the broadcast id */

/* FADT flags (ACPI 6.x table 5.10). */
#define FADT_F_WBINVD (1u << 0)
#define FADT_F_PROC_C1 (1u << 2)
#define FADT_F_SLP_BUTTON (1u << 5) /* no fixed-feature sleep button */
#define FADT_F_RESET_REG_SUP (1u << 10)
/* IA-PC boot architecture flags. */
#define FADT_BOOT_LEGACY_DEVICES (1u << 0)
#define FADT_BOOT_8042 (1u << 1)

#define GAS_SYSTEM_IO 1
#define GAS_ACCESS_BYTE 1
#define GAS_ACCESS_WORD 2
#define GAS_ACCESS_DWORD 3

#define RESET_PORT 0xcf9
#define RESET_VALUE 0x06 /* CF9: full reset (bit 2) with system reset (bit 1) */

/* MADT entry types and flags. */
#define MADT_PCAT_COMPAT 1u
#define MADT_LAPIC 0
#define MADT_IOAPIC 1
#define MADT_ISO 2
#define MADT_LAPIC_NMI 4
#define MADT_LAPIC_ENABLED 1u
#define MPS_ACTIVE_HIGH 0x1
#define MPS_EDGE (0x1 << 2)
#define MPS_LEVEL (0x3 << 2)
#define IOAPIC_ID 0 /* matches the in-kernel IOAPIC's reset id, as on QEMU */

/* The DSDT, compiled from assets/acpi/dsdt.dsl (\_S5, the PCI host bridge and its interrupt
 * routing, the PS/2 devices); its AML is used under our own table header. */
extern const uint8_t vmws_dsdt_aml[], vmws_dsdt_aml_end[];

static uint8_t checksum(const uint8_t *p, size_t len)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + p[i]);
    return (uint8_t)-sum;
}

/* A bump allocator over the table area; offsets are relative to BOOT_ACPI_START. */
struct acpi_area {
    uint8_t *buf;
    size_t used, cap;
};

static int area_alloc(struct acpi_area *a, size_t size, size_t align, size_t *off)
{
    size_t start = (a->used + align - 1) & ~(align - 1);
    if (start > a->cap || size > a->cap - start)
        return -ENOSPC;
    *off = start;
    a->used = start + size;
    return 0;
}

static uint64_t gpa_of(size_t off)
{
    return BOOT_ACPI_START + off;
}

static void sdt_header(uint8_t *t, const char sig[4], uint32_t len, uint8_t revision)
{
    memcpy(t, sig, 4);
    le_put32(t, 4, len);
    t[8] = revision;
    memcpy(t + 10, ACPI_OEM_ID, 6);
    memcpy(t + 16, ACPI_OEM_TABLE_ID, 8);
    le_put32(t, 24, 1); /* OEM revision */
    memcpy(t + 28, ACPI_CREATOR_ID, 4);
    le_put32(t, 32, 1); /* creator revision */
}

static void sdt_checksum(uint8_t *t)
{
    uint32_t len =
        (uint32_t)t[4] | (uint32_t)t[5] << 8 | (uint32_t)t[6] << 16 | (uint32_t)t[7] << 24;
    t[9] = 0;
    t[9] = checksum(t, len);
}

/* Generic Address Structure (12 bytes). */
static void put_gas(uint8_t *p, size_t off, uint8_t space, uint8_t bits, uint8_t access,
                    uint64_t addr)
{
    p[off] = space;
    p[off + 1] = bits;
    p[off + 2] = 0; /* bit offset */
    p[off + 3] = access;
    le_put64(p, off + 4, addr);
}

static void build_fadt(uint8_t *t, uint64_t facs, uint64_t dsdt)
{
    sdt_header(t, "FACP", FADT_SIZE, FADT_REVISION);
    le_put32(t, 36, (uint32_t)facs); /* FIRMWARE_CTRL (X_FIRMWARE_CTRL stays 0: below 4 GiB) */
    le_put32(t, 40, (uint32_t)dsdt);
    le_put16(t, 46, ACPI_SCI_IRQ);
    /* SMI_CMD = 0: no SMM, the hardware is always in ACPI mode (SCI_EN reads as 1). */
    le_put32(t, 56, ACPI_PM1A_EVT_BLK);
    le_put32(t, 64, ACPI_PM1A_CNT_BLK);
    le_put32(t, 76, ACPI_PM_TMR_BLK);
    t[88] = 4;             /* PM1_EVT_LEN */
    t[89] = 2;             /* PM1_CNT_LEN */
    t[91] = 4;             /* PM_TMR_LEN */
    le_put16(t, 96, 101);  /* P_LVL2_LAT > 100: no C2 */
    le_put16(t, 98, 1001); /* P_LVL3_LAT > 1000: no C3 */
    le_put16(t, 109, FADT_BOOT_LEGACY_DEVICES | FADT_BOOT_8042);
    le_put32(t, 112, FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON | FADT_F_RESET_REG_SUP);
    put_gas(t, 116, GAS_SYSTEM_IO, 8, GAS_ACCESS_BYTE, RESET_PORT);
    t[128] = RESET_VALUE;
    t[131] = 0;             /* FADT minor version: ACPI 6.0 */
    le_put64(t, 140, dsdt); /* X_DSDT, equal to DSDT */
    put_gas(t, 148, GAS_SYSTEM_IO, 32, GAS_ACCESS_WORD, ACPI_PM1A_EVT_BLK);
    put_gas(t, 172, GAS_SYSTEM_IO, 16, GAS_ACCESS_WORD, ACPI_PM1A_CNT_BLK);
    put_gas(t, 208, GAS_SYSTEM_IO, 32, GAS_ACCESS_DWORD, ACPI_PM_TMR_BLK);
}

static void build_facs(uint8_t *t)
{
    memcpy(t, "FACS", 4);
    le_put32(t, 4, FACS_SIZE);
    t[32] = 2; /* version */
}

static size_t madt_size(unsigned ncpus)
{
    return 44 + 8 * (size_t)ncpus + 12 + 10 + 10 + 2 * 10 + 6;
}

static void build_madt(uint8_t *t, unsigned ncpus)
{
    size_t len = madt_size(ncpus), o = 44;
    sdt_header(t, "APIC", (uint32_t)len, MADT_REVISION);
    le_put32(t, 36, LAPIC_ADDR);
    le_put32(t, 40, MADT_PCAT_COMPAT);

    for (unsigned i = 0; i < ncpus; i++, o += 8) {
        t[o] = MADT_LAPIC;
        t[o + 1] = 8;
        t[o + 2] = (uint8_t)i; /* ACPI processor UID */
        t[o + 3] = (uint8_t)i; /* APIC id */
        le_put32(t, o + 4, MADT_LAPIC_ENABLED);
    }

    t[o] = MADT_IOAPIC;
    t[o + 1] = 12;
    t[o + 2] = IOAPIC_ID;
    le_put32(t, o + 4, IOAPIC_ADDR);
    le_put32(t, o + 8, 0); /* GSI base */
    o += 12;

    /* ISA IRQ 0 (PIT) arrives on IOAPIC pin 2, edge, active high. */
    t[o] = MADT_ISO;
    t[o + 1] = 10;
    t[o + 2] = 0; /* bus: ISA */
    t[o + 3] = 0;
    le_put32(t, o + 4, 2);
    le_put16(t, o + 8, MPS_EDGE | MPS_ACTIVE_HIGH);
    o += 10;

    /* The SCI is level triggered, active high (as on PIIX4/QEMU). */
    t[o] = MADT_ISO;
    t[o + 1] = 10;
    t[o + 2] = 0;
    t[o + 3] = ACPI_SCI_IRQ;
    le_put32(t, o + 4, ACPI_SCI_IRQ);
    le_put16(t, o + 8, MPS_LEVEL | MPS_ACTIVE_HIGH);
    o += 10;

    /* PCI INTx lines (pci.c routes INTA# of odd/even slots to IRQ 11/10; the sound card is one):
     * level triggered, and active high because KVM's IOAPIC does not invert — as QEMU declares
     * its PCI IRQs 5, 9, 10 and 11. */
    for (unsigned irq = 10; irq <= 11; irq++, o += 10) {
        t[o] = MADT_ISO;
        t[o + 1] = 10;
        t[o + 2] = 0;
        t[o + 3] = (uint8_t)irq;
        le_put32(t, o + 4, irq);
        le_put16(t, o + 8, MPS_LEVEL | MPS_ACTIVE_HIGH);
    }

    /* NMI on LINT1 of every processor. */
    t[o] = MADT_LAPIC_NMI;
    t[o + 1] = 6;
    t[o + 2] = 0xff;       /* all processors */
    le_put16(t, o + 3, 0); /* flags: conforms to the bus */
    t[o + 5] = 1;          /* LINT1 */
}

int acpi_build(struct guest_mem *m, const struct acpi_config *cfg, uint64_t *rsdp)
{
    unsigned ncpus = cfg->ncpus;
    if (ncpus == 0 || ncpus > ACPI_MAX_CPUS)
        return -EINVAL;

    struct acpi_area a = {.cap = BOOT_ACPI_END - BOOT_ACPI_START};
    a.buf = calloc(1, a.cap);
    if (!a.buf)
        return -ENOMEM;

    const uint8_t *dsdt_aml = vmws_dsdt_aml + SDT_HEADER_SIZE;
    size_t dsdt_aml_len = (size_t)(vmws_dsdt_aml_end - dsdt_aml);
    size_t o_rsdp, o_xsdt, o_rsdt, o_fadt, o_facs, o_dsdt, o_madt;
    size_t xsdt_len = SDT_HEADER_SIZE + 2 * 8, rsdt_len = SDT_HEADER_SIZE + 2 * 4;
    size_t dsdt_len = SDT_HEADER_SIZE + dsdt_aml_len;
    int rc = area_alloc(&a, RSDP_SIZE, 16, &o_rsdp);
    rc = rc ? rc : area_alloc(&a, xsdt_len, 16, &o_xsdt);
    rc = rc ? rc : area_alloc(&a, rsdt_len, 16, &o_rsdt);
    rc = rc ? rc : area_alloc(&a, FADT_SIZE, 16, &o_fadt);
    rc = rc ? rc : area_alloc(&a, FACS_SIZE, 64, &o_facs);
    rc = rc ? rc : area_alloc(&a, dsdt_len, 16, &o_dsdt);
    rc = rc ? rc : area_alloc(&a, madt_size(ncpus), 16, &o_madt);
    if (rc) {
        free(a.buf);
        return rc;
    }
    uint8_t *b = a.buf;

    build_facs(b + o_facs);

    sdt_header(b + o_dsdt, "DSDT", (uint32_t)dsdt_len, 2); /* rev 2: 64-bit integers */
    memcpy(b + o_dsdt + SDT_HEADER_SIZE, dsdt_aml, dsdt_aml_len);
    sdt_checksum(b + o_dsdt);

    build_fadt(b + o_fadt, gpa_of(o_facs), gpa_of(o_dsdt));
    sdt_checksum(b + o_fadt);

    build_madt(b + o_madt, ncpus);
    sdt_checksum(b + o_madt);

    sdt_header(b + o_xsdt, "XSDT", (uint32_t)xsdt_len, 1);
    le_put64(b + o_xsdt, SDT_HEADER_SIZE, gpa_of(o_fadt));
    le_put64(b + o_xsdt, SDT_HEADER_SIZE + 8, gpa_of(o_madt));
    sdt_checksum(b + o_xsdt);

    sdt_header(b + o_rsdt, "RSDT", (uint32_t)rsdt_len, 1);
    le_put32(b + o_rsdt, SDT_HEADER_SIZE, (uint32_t)gpa_of(o_fadt));
    le_put32(b + o_rsdt, SDT_HEADER_SIZE + 4, (uint32_t)gpa_of(o_madt));
    sdt_checksum(b + o_rsdt);

    uint8_t *r = b + o_rsdp;
    memcpy(r, "RSD PTR ", 8);
    memcpy(r + 9, ACPI_OEM_ID, 6);
    r[15] = 2; /* revision: ACPI 2.0+, XSDT valid */
    le_put32(r, 16, (uint32_t)gpa_of(o_rsdt));
    le_put32(r, 20, RSDP_SIZE);
    le_put64(r, 24, gpa_of(o_xsdt));
    r[8] = checksum(r, 20);
    r[32] = checksum(r, RSDP_SIZE);

    rc = guest_mem_write(m, BOOT_ACPI_START, b, a.used);
    free(a.buf);
    if (rc)
        return rc;
    *rsdp = gpa_of(o_rsdp);
    return 0;
}
