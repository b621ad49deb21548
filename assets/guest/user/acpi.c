/* ACPI tables, read from CPL 3: find the RSDP (boot_params.acpi_rsdp_addr, else the BIOS area
 * 0xE0000-0xFFFFF), follow the XSDT or RSDT to the MADT (which CPUs exist, where the LAPIC is)
 * and the FADT (PM1a control port for poweroff, PM timer, RTC century index), and read \_S5's
 * SLP_TYP out of the DSDT with the usual byte-pattern shortcut instead of an AML interpreter.
 * Every table is checksummed and bounds-checked; with no usable ACPI the guest runs on 1 CPU. */
#include "assets/guest/user/guest.h"

struct acpi_info acpi;

struct sdt_header {
    char signature[4];
    uint32_t length;
    uint8_t revision, checksum;
    char oem_id[6], oem_table_id[8];
    uint32_t oem_revision, creator_id, creator_revision;
} __attribute__((packed));

#define SDT_MAX_LENGTH (1024 * 1024)
#define MADT_LAPIC 0
#define MADT_LAPIC_OVERRIDE 5
#define MADT_X2APIC 9
#define SLP_EN (1 << 13)
#define PM1A_CNT_DEFAULT 0x604 /* PIIX4 PM on QEMU, and vmws */

static bool checksum_ok(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += b[i];
    return sum == 0;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* The table at ADDR if it is mapped, sane and checksums; else NULL. */
static const struct sdt_header *sdt_at(uint64_t addr, const char *sig)
{
    if (!addr || !memory_is_mapped(addr, sizeof(struct sdt_header)))
        return NULL;
    const struct sdt_header *h = (const struct sdt_header *)(uintptr_t)addr;
    if (sig && memcmp(h->signature, sig, 4) != 0)
        return NULL;
    if (h->length < sizeof *h || h->length > SDT_MAX_LENGTH || !memory_is_mapped(addr, h->length) ||
        !checksum_ok(h, h->length))
        return NULL;
    return h;
}

static bool rsdp_ok(uint64_t addr)
{
    if (!memory_is_mapped(addr, 36))
        return false;
    const uint8_t *p = (const uint8_t *)(uintptr_t)addr;
    if (memcmp(p, "RSD PTR ", 8) != 0 || !checksum_ok(p, 20))
        return false;
    return p[15] < 2 || checksum_ok(p, 36);
}

static uint64_t find_rsdp(void)
{
    if (boot.acpi_rsdp && rsdp_ok(boot.acpi_rsdp))
        return boot.acpi_rsdp;
    for (uint64_t a = 0xe0000; a < 0x100000; a += 16)
        if (rsdp_ok(a))
            return a;
    return 0;
}

static void parse_madt(const struct sdt_header *h)
{
    const uint8_t *p = (const uint8_t *)h;
    if (h->length < 44)
        return;
    acpi.have_madt = true;
    acpi.lapic_addr = rd32(p + 36);
    for (uint32_t off = 44; off + 2 <= h->length;) {
        uint8_t type = p[off], len = p[off + 1];
        if (len < 2 || off + len > h->length)
            break;
        uint32_t id = UINT32_MAX, flags = 0;
        if (type == MADT_LAPIC && len >= 8) {
            id = p[off + 3];
            flags = rd32(p + off + 4);
        } else if (type == MADT_X2APIC && len >= 16) {
            id = rd32(p + off + 4);
            flags = rd32(p + off + 8);
        } else if (type == MADT_LAPIC_OVERRIDE && len >= 12) {
            acpi.lapic_addr = rd64(p + off + 4);
        }
        if (id < 255 && (flags & 1) && acpi.ncpus < MAX_CPUS) {
            bool dup = false;
            for (unsigned i = 0; i < acpi.ncpus; i++)
                dup |= acpi.apic_ids[i] == id;
            if (!dup)
                acpi.apic_ids[acpi.ncpus++] = id;
        }
        off += len;
    }
}

/* \_S5 is "Name (_S5, Package () { SLP_TYPa, ... })": NameOp '_S5_' PackageOp PkgLength
 * NumElements, then SLP_TYPa as ZeroOp, OneOp or BytePrefix n. */
static void parse_dsdt_s5(const struct sdt_header *h)
{
    const uint8_t *p = (const uint8_t *)h;
    for (uint32_t i = sizeof *h + 1; i + 9 < h->length; i++) {
        if (memcmp(p + i, "_S5_", 4) != 0 || p[i + 4] != 0x12)
            continue;
        if (p[i - 1] != 0x08 && !(p[i - 1] == '\\' && p[i - 2] == 0x08))
            continue;
        uint32_t j = i + 5;
        j += 1 + (p[j] >> 6); /* PkgLength: lead byte + 0-3 more */
        j += 1;               /* NumElements */
        if (j + 1 >= h->length)
            return;
        if (p[j] == 0x0a)
            acpi.slp_typ_s5 = p[j + 1] & 7;
        else if (p[j] == 0x00 || p[j] == 0x01)
            acpi.slp_typ_s5 = p[j];
        return;
    }
}

/* An ACPI generic address in system I/O space, or 0. */
static uint16_t gas_io_port(const uint8_t *gas)
{
    uint64_t addr = rd64(gas + 4);
    return gas[0] == 1 && addr && addr <= 0xffff ? (uint16_t)addr : 0;
}

static void parse_fadt(const struct sdt_header *h)
{
    const uint8_t *p = (const uint8_t *)h;
    uint32_t len = h->length;
    if (len < 116)
        return;
    uint32_t pm1a = rd32(p + 64), tmr = rd32(p + 76);
    if (pm1a <= 0xffff)
        acpi.pm1a_cnt = (uint16_t)pm1a;
    if (!acpi.pm1a_cnt && len >= 184)
        acpi.pm1a_cnt = gas_io_port(p + 172);
    if (tmr <= 0xffff)
        acpi.pm_tmr = (uint16_t)tmr;
    if (!acpi.pm_tmr && len >= 220)
        acpi.pm_tmr = gas_io_port(p + 208);
    acpi.pm_tmr_32bit = (rd32(p + 112) >> 8) & 1;
    acpi.century_reg = p[108];

    uint64_t dsdt = len >= 148 ? rd64(p + 140) : 0;
    if (!dsdt)
        dsdt = rd32(p + 40);
    const struct sdt_header *d = sdt_at(dsdt, "DSDT");
    if (d)
        parse_dsdt_s5(d);
}

static void acpi_parse(void)
{
    uint64_t rsdp = find_rsdp();
    if (!rsdp)
        return;
    const uint8_t *r = (const uint8_t *)(uintptr_t)rsdp;
    const struct sdt_header *root = NULL;
    unsigned entry_size = 4;
    if (r[15] >= 2 && (root = sdt_at(rd64(r + 24), "XSDT")))
        entry_size = 8;
    else
        root = sdt_at(rd32(r + 16), "RSDT");
    if (!root)
        return;
    acpi.found = true;
    const uint8_t *entries = (const uint8_t *)root + sizeof *root;
    unsigned n = (root->length - sizeof *root) / entry_size;
    for (unsigned i = 0; i < n; i++) {
        uint64_t a = entry_size == 8 ? rd64(entries + 8 * i) : rd32(entries + 4 * i);
        const struct sdt_header *t = sdt_at(a, NULL);
        if (!t)
            continue;
        if (!memcmp(t->signature, "APIC", 4) && !acpi.have_madt)
            parse_madt(t);
        else if (!memcmp(t->signature, "FACP", 4))
            parse_fadt(t);
    }
}

void acpi_init(void)
{
    acpi_parse();
    if (!acpi.lapic_addr || !memory_is_mapped(acpi.lapic_addr, 0x400))
        acpi.lapic_addr = LAPIC_DEFAULT;
    if (!acpi.pm1a_cnt)
        acpi.pm1a_cnt = PM1A_CNT_DEFAULT;
}

void acpi_poweroff(void)
{
    uint16_t port = acpi.pm1a_cnt;
    uint16_t v = inw(port) & 1; /* keep SCI_EN */
    v |= (uint16_t)(acpi.slp_typ_s5 << 10);
    outw(port, v);
    outw(port, v | SLP_EN);
}
