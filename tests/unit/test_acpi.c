/* Tests of the ACPI tables as a guest sees them: find the RSDP by scanning 0xE0000-0xFFFFF on
 * 16-byte boundaries, follow RSDT/XSDT to the FADT and MADT, check every checksum, the PM
 * ports, \_S5 and one enabled LAPIC per vCPU. Then a real peer judges the bytes: ACPICA's
 * iasl disassembles every table and acpiexec loads the DSDT and evaluates \_S5. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/boot/acpi.h"
#include "core/boot/linuxboot.h"

#define RAM_SIZE (2ULL << 20)

static uint8_t *ram;
static struct guest_mem mem;

static void setup(void)
{
    ram = calloc(1, RAM_SIZE);
    ck_assert_ptr_nonnull(ram);
    ck_assert_int_eq(guest_mem_init_buffer(&mem, ram, RAM_SIZE), 0);
}

static void teardown(void)
{
    guest_mem_close(&mem);
    free(ram);
}

static uint16_t rd16(uint64_t gpa)
{
    return (uint16_t)(ram[gpa] | ram[gpa + 1] << 8);
}

static uint32_t rd32(uint64_t gpa)
{
    return rd16(gpa) | (uint32_t)rd16(gpa + 2) << 16;
}

static uint64_t rd64(uint64_t gpa)
{
    return rd32(gpa) | (uint64_t)rd32(gpa + 4) << 32;
}

static uint8_t sum(uint64_t gpa, size_t len)
{
    uint8_t s = 0;
    for (size_t i = 0; i < len; i++)
        s = (uint8_t)(s + ram[gpa + i]);
    return s;
}

/* As Linux's acpi_find_root_pointer() does for the BIOS area. */
static uint64_t scan_for_rsdp(void)
{
    for (uint64_t a = 0xe0000; a < 0x100000; a += 16)
        if (memcmp(ram + a, "RSD PTR ", 8) == 0 && sum(a, 20) == 0)
            return a;
    return 0;
}

/* A table header at GPA: inside the ACPI area, the given signature, a valid checksum. */
static uint32_t check_table(uint64_t gpa, const char *sig)
{
    ck_assert_msg(gpa >= BOOT_ACPI_START && gpa + 36 <= BOOT_ACPI_END,
                  "%s at 0x%llx outside the ACPI area", sig, (unsigned long long)gpa);
    ck_assert_msg(memcmp(ram + gpa, sig, 4) == 0, "expected %s at 0x%llx, found %.4s", sig,
                  (unsigned long long)gpa, (const char *)ram + gpa);
    uint32_t len = rd32(gpa + 4);
    ck_assert_uint_ge(len, 36);
    ck_assert_uint_le(gpa + len, BOOT_ACPI_END);
    ck_assert_msg(sum(gpa, len) == 0, "%s checksum does not sum to 0", sig);
    ck_assert_msg(memcmp(ram + gpa + 10, "VMWS  ", 6) == 0, "%s OEM id is not 'VMWS  '", sig);
    return len;
}

struct found {
    uint64_t rsdp, rsdt, xsdt, fadt, madt, dsdt, facs;
};

static struct found walk_tables(void)
{
    struct found f = {0};
    f.rsdp = scan_for_rsdp();
    ck_assert_msg(f.rsdp != 0, "no RSDP with a valid checksum in 0xE0000-0xFFFFF");
    ck_assert_uint_eq(f.rsdp % 16, 0);
    ck_assert_uint_eq(ram[f.rsdp + 15], 2);
    ck_assert_uint_eq(rd32(f.rsdp + 20), 36);
    ck_assert_msg(sum(f.rsdp, 36) == 0, "RSDP extended checksum does not sum to 0");
    ck_assert(memcmp(ram + f.rsdp + 9, "VMWS  ", 6) == 0);

    f.rsdt = rd32(f.rsdp + 16);
    f.xsdt = rd64(f.rsdp + 24);
    uint32_t rlen = check_table(f.rsdt, "RSDT");
    uint32_t xlen = check_table(f.xsdt, "XSDT");
    ck_assert_uint_eq((rlen - 36) / 4, (xlen - 36) / 8);
    for (uint32_t i = 0; i < (xlen - 36) / 8; i++) {
        uint64_t x = rd64(f.xsdt + 36 + 8 * i), r = rd32(f.rsdt + 36 + 4 * i);
        ck_assert_uint_eq(x, r);
        if (memcmp(ram + x, "FACP", 4) == 0)
            f.fadt = x;
        else if (memcmp(ram + x, "APIC", 4) == 0)
            f.madt = x;
        else
            ck_abort_msg("XSDT entry %u points at unexpected '%.4s'", i, (const char *)ram + x);
    }
    ck_assert_msg(f.fadt && f.madt, "XSDT lacks the FADT or the MADT");
    check_table(f.fadt, "FACP");
    check_table(f.madt, "APIC");

    f.dsdt = rd32(f.fadt + 40);
    ck_assert_uint_eq(rd64(f.fadt + 140), f.dsdt); /* X_DSDT */
    check_table(f.dsdt, "DSDT");
    f.facs = rd32(f.fadt + 36);
    ck_assert_uint_eq(f.facs % 64, 0);
    ck_assert(memcmp(ram + f.facs, "FACS", 4) == 0);
    ck_assert_uint_eq(rd32(f.facs + 4), 64);
    return f;
}

static void check_fadt(uint64_t fadt)
{
    ck_assert_uint_ge(ram[fadt + 8], 3); /* revision with X_ fields */
    ck_assert_uint_ge(rd32(fadt + 4), 244);
    ck_assert_uint_eq(rd16(fadt + 46), ACPI_SCI_IRQ);
    ck_assert_uint_eq(rd32(fadt + 56), 0x600); /* PM1a_EVT_BLK */
    ck_assert_uint_eq(rd32(fadt + 64), 0x604); /* PM1a_CNT_BLK */
    ck_assert_uint_eq(rd32(fadt + 76), 0x608); /* PM_TMR_BLK */
    ck_assert_uint_eq(ram[fadt + 88], 4);
    ck_assert_uint_eq(ram[fadt + 89], 2);
    ck_assert_uint_eq(ram[fadt + 91], 4);
    uint32_t flags = rd32(fadt + 112);
    ck_assert(flags & (1u << 10));         /* RESET_REG_SUP */
    ck_assert(!(flags & (1u << 20)));      /* not HW_REDUCED */
    ck_assert_uint_eq(ram[fadt + 116], 1); /* reset register in I/O space */
    ck_assert_uint_eq(rd64(fadt + 120), 0xcf9);
    ck_assert_uint_eq(ram[fadt + 128], 0x06);
    /* 64-bit copies agree with the 32-bit blocks (address and width). */
    ck_assert_uint_eq(rd64(fadt + 148 + 4), 0x600);
    ck_assert_uint_eq(ram[fadt + 148 + 1], 32);
    ck_assert_uint_eq(rd64(fadt + 172 + 4), 0x604);
    ck_assert_uint_eq(ram[fadt + 172 + 1], 16);
    ck_assert_uint_eq(rd64(fadt + 208 + 4), 0x608);
    ck_assert_uint_eq(ram[fadt + 208 + 1], 32);
}

/* Decodes an AML integer constant at P (ZeroOp, OneOp, Byte/Word/DWordPrefix). */
static int aml_int(const uint8_t *p, uint64_t *v)
{
    switch (p[0]) {
    case 0x00:
        *v = 0;
        return 1;
    case 0x01:
        *v = 1;
        return 1;
    case 0x0a:
        *v = p[1];
        return 2;
    case 0x0b:
        *v = (uint64_t)(p[1] | p[2] << 8);
        return 3;
    default:
        return 0;
    }
}

static void check_dsdt_s5(uint64_t dsdt)
{
    uint32_t len = rd32(dsdt + 4);
    const uint8_t *aml = ram + dsdt + 36, *end = ram + dsdt + len;
    const uint8_t *s5 = memmem(aml, (size_t)(end - aml), "_S5_", 4);
    ck_assert_msg(s5 != NULL, "DSDT has no _S5_");
    /* NameOp, then \_S5_ or (at the root, as iasl writes it) _S5_ */
    ck_assert_msg((s5 >= aml + 1 && s5[-1] == 0x08) ||
                      (s5 >= aml + 2 && s5[-2] == 0x08 && s5[-1] == '\\'),
                  "_S5_ is not a root-scope Name()");
    const uint8_t *p = s5 + 4;
    ck_assert_uint_eq(p[0], 0x12); /* PackageOp */
    ck_assert_uint_lt(p[1], 0x40); /* one-byte PkgLength */
    ck_assert(p + 1 + p[1] <= end);
    ck_assert_uint_ge(p[2], 2); /* SLP_TYPa, SLP_TYPb at least */
    uint64_t typa, typb;
    int n = aml_int(p + 3, &typa);
    ck_assert_int_gt(n, 0);
    ck_assert_int_gt(aml_int(p + 3 + n, &typb), 0);
    ck_assert_uint_eq(typa, ACPI_S5_SLP_TYP);
    ck_assert_uint_eq(typb, ACPI_S5_SLP_TYP);
}

static void check_madt(uint64_t madt, unsigned ncpus)
{
    uint32_t len = rd32(madt + 4);
    ck_assert_uint_eq(rd32(madt + 36), 0xfee00000);
    ck_assert_uint_eq(rd32(madt + 40) & 1, 1); /* PCAT_COMPAT */
    unsigned lapics = 0, ioapics = 0, nmis = 0;
    bool irq0 = false, sci = false;
    uint8_t seen[256] = {0};
    for (uint64_t o = madt + 44; o < madt + len; o += ram[o + 1]) {
        ck_assert_uint_ge(ram[o + 1], 2);
        ck_assert_uint_le(o + ram[o + 1], madt + len);
        switch (ram[o]) {
        case 0:
            ck_assert_uint_eq(ram[o + 1], 8);
            ck_assert_uint_eq(rd32(o + 4) & 1, 1);
            ck_assert_uint_lt(ram[o + 3], ncpus);
            ck_assert_uint_eq(seen[ram[o + 3]]++, 0);
            lapics++;
            break;
        case 1:
            ck_assert_uint_eq(rd32(o + 4), 0xfec00000);
            ck_assert_uint_eq(rd32(o + 8), 0);
            ioapics++;
            break;
        case 2:
            if (ram[o + 3] == 0) {
                ck_assert_uint_eq(rd32(o + 4), 2);
                ck_assert_uint_ne((rd16(o + 8) >> 2) & 3, 3); /* not level */
                irq0 = true;
            } else if (ram[o + 3] == ACPI_SCI_IRQ) {
                ck_assert_uint_eq(rd32(o + 4), ACPI_SCI_IRQ);
                ck_assert_uint_eq(rd16(o + 8), 0x000d); /* level, active high */
                sci = true;
            }
            break;
        case 4:
            ck_assert_uint_eq(ram[o + 5], 1); /* LINT1 */
            nmis++;
            break;
        default:
            ck_abort_msg("unexpected MADT entry type %u", ram[o]);
        }
    }
    ck_assert_uint_eq(lapics, ncpus);
    ck_assert_uint_eq(ioapics, 1);
    ck_assert_uint_eq(nmis, 1);
    ck_assert(irq0 && sci);
}

static void build_and_check(unsigned ncpus)
{
    struct acpi_config cfg = {.ncpus = ncpus};
    uint64_t rsdp = 0;
    ck_assert_int_eq(acpi_build(&mem, &cfg, &rsdp), 0);
    struct found f = walk_tables();
    ck_assert_uint_eq(f.rsdp, rsdp);
    check_fadt(f.fadt);
    check_dsdt_s5(f.dsdt);
    check_madt(f.madt, ncpus);
    ck_assert_uint_gt(guest_mem_vmm_dirty_pages(&mem), 0);
}

START_TEST(tables_for_1_cpu)
{
    build_and_check(1);
}
END_TEST

START_TEST(tables_for_2_cpus)
{
    build_and_check(2);
}
END_TEST

START_TEST(tables_for_64_cpus)
{
    build_and_check(64);
}
END_TEST

START_TEST(rejects_impossible_configs)
{
    uint64_t rsdp = 0;
    struct acpi_config none = {.ncpus = 0}, many = {.ncpus = 256};
    ck_assert_int_eq(acpi_build(&mem, &none, &rsdp), -EINVAL);
    ck_assert_int_eq(acpi_build(&mem, &many, &rsdp), -EINVAL);

    /* A guest with less than 1 MiB of RAM has nowhere to put them. */
    struct guest_mem tiny;
    ck_assert_int_eq(guest_mem_init_buffer(&tiny, ram, 512 << 10), 0);
    struct acpi_config one = {.ncpus = 1};
    ck_assert_int_eq(acpi_build(&tiny, &one, &rsdp), -EFAULT);
    guest_mem_close(&tiny);
}
END_TEST

/* ---- the real peer: ACPICA ---- */

static int have_tool(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

/* Runs CMD in DIR, returns its exit status and leaves its output in *OUT (malloc'd). */
static int run_in(const char *dir, const char *cmd, char **out)
{
    char full[1024];
    snprintf(full, sizeof(full), "cd '%s' && %s > out.txt 2>&1", dir, cmd);
    int st = system(full);
    char path[512];
    snprintf(path, sizeof(path), "%s/out.txt", dir);
    FILE *f = fopen(path, "r");
    *out = calloc(1, 1 << 20);
    if (f) {
        size_t n = fread(*out, 1, (1 << 20) - 1, f);
        (*out)[n] = '\0';
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(acpica_accepts_the_tables)
{
    ck_assert_msg(have_tool("iasl") && have_tool("acpiexec"),
                  "iasl/acpiexec not found: install the Debian package acpica-tools "
                  "(apt-get install acpica-tools)");
    struct acpi_config cfg = {.ncpus = 4};
    uint64_t rsdp;
    ck_assert_int_eq(acpi_build(&mem, &cfg, &rsdp), 0);
    struct found f = walk_tables();

    char dir[] = "/tmp/vmws-acpi-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    struct {
        const char *name;
        uint64_t gpa;
        uint32_t len;
    } tables[] = {
        {"rsdt", f.rsdt, rd32(f.rsdt + 4)}, {"xsdt", f.xsdt, rd32(f.xsdt + 4)},
        {"facp", f.fadt, rd32(f.fadt + 4)}, {"apic", f.madt, rd32(f.madt + 4)},
        {"dsdt", f.dsdt, rd32(f.dsdt + 4)}, {"facs", f.facs, 64},
    };
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        char path[512], cmd[256], *out;
        snprintf(path, sizeof(path), "%s/%s.dat", dir, tables[i].name);
        write_file(path, ram + tables[i].gpa, tables[i].len);
        snprintf(cmd, sizeof(cmd), "iasl -d %s.dat", tables[i].name);
        int st = run_in(dir, cmd, &out);
        ck_assert_msg(st == 0, "iasl -d %s failed (%d):\n%s", tables[i].name, st, out);
        ck_assert_msg(!strcasestr(out, "error") && !strcasestr(out, "warning") &&
                          !strcasestr(out, "invalid") && !strcasestr(out, "incorrect"),
                      "iasl -d %s complained:\n%s", tables[i].name, out);
        free(out);
    }

    /* The disassembled DSDT declares \_S5 as a package, the PCI host bridge with its interrupt
     * routing through two level-triggered, active-high links, and the PS/2 devices. */
    char path[512];
    snprintf(path, sizeof(path), "%s/dsdt.dsl", dir);
    FILE *dsl = fopen(path, "r");
    ck_assert_ptr_nonnull(dsl);
    static char text[65536];
    size_t n = fread(text, 1, sizeof(text) - 1, dsl);
    text[n] = '\0';
    fclose(dsl);
    ck_assert_msg(strstr(text, "Name (_S5, Package"), "dsdt.dsl lacks \\_S5:\n%s", text);
    const char *want[] = {"Device (PCI0)",
                          "EisaId (\"PNP0A03\")",
                          "Name (_PRT, Package",
                          "0x0006FFFF",
                          "Device (LNKA)",
                          "Device (LNKB)",
                          "Interrupt (ResourceConsumer, Level, ActiveHigh, Shared",
                          "EisaId (\"PNP0303\")",
                          "EisaId (\"PNP0F13\")"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        ck_assert_msg(strstr(text, want[i]), "dsdt.dsl lacks %s:\n%s", want[i], text);

    /* ACPICA's own interpreter loads the DSDT and evaluates \_S5 = {0, 0, 0, 0}. */
    char *out;
    int st = run_in(dir, "acpiexec -b 'evaluate \\_S5' dsdt.dat", &out);
    ck_assert_msg(st == 0, "acpiexec failed (%d):\n%s", st, out);
    ck_assert_msg(strstr(out, "Evaluation of \\_S5 returned object") &&
                      strstr(out, "[Package] Contains 4 Elements"),
                  "acpiexec did not return \\_S5's package:\n%s", out);
    ck_assert_msg(!strcasestr(out, "exception") && !strcasestr(out, "error"),
                  "acpiexec reported a problem:\n%s", out);
    free(out);

    /* ... and the host bridge's routing: INTA# of each of slots 1-31. */
    st = run_in(dir, "acpiexec -b 'evaluate \\_SB.PCI0._PRT' dsdt.dat", &out);
    ck_assert_msg(st == 0 && strstr(out, "[Package] Contains 31 Elements") &&
                      !strcasestr(out, "exception") && !strcasestr(out, "error"),
                  "acpiexec did not return PCI0._PRT's 31 entries (%d):\n%s", st, out);
    free(out);

    /* With our FADT, FACS and MADT too, ACPICA's table manager has nothing to say (it warns
     * e.g. "32/64X length mismatch in FADT" when the two copies of a PM block disagree). Its
     * built-in self-tests of GPEs and PM2 fail as expected: this machine has neither. */
    st = run_in(dir, "acpiexec -b 'evaluate \\_S5' facp.dat dsdt.dat apic.dat facs.dat", &out);
    ck_assert_msg(st == 0, "acpiexec with all tables failed (%d):\n%s", st, out);
    ck_assert_msg(strstr(out, "ACPI: FACP") && strstr(out, "(v06 VMWS") &&
                      strstr(out, "[Package] Contains 4 Elements"),
                  "acpiexec did not use our FADT or lost \\_S5:\n%s", out);
    ck_assert_msg(!strcasestr(out, "warning") && !strstr(out, "ACPI Error") &&
                      !strstr(out, "Firmware Error"),
                  "ACPICA complained about the tables:\n%s", out);
    free(out);

    if (getenv("VMWS_KEEP_ACPI"))
        return;
    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(path), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("acpi");
    TCase *tc = tcase_create("tables");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, tables_for_1_cpu);
    tcase_add_test(tc, tables_for_2_cpus);
    tcase_add_test(tc, tables_for_64_cpus);
    tcase_add_test(tc, rejects_impossible_configs);
    tcase_add_test(tc, acpica_accepts_the_tables);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
