/* Tests of the Linux boot protocol loader, asserting what the kernel will find in guest RAM:
 * synthetic bzImages for every rejection and for a byte-exact load, then Debian's own kernel
 * (/boot/vmlinuz-*, package linux-image-amd64) loaded with an initrd and checked field by field
 * against boot.rst and zero-page.rst, including a walk of the page tables from CR3. */
#include <check.h>
#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/boot/acpi.h"
#include "core/boot/linuxboot.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

static uint16_t rd16(const uint8_t *p, size_t o)
{
    return (uint16_t)(p[o] | p[o + 1] << 8);
}

static uint32_t rd32(const uint8_t *p, size_t o)
{
    return rd16(p, o) | (uint32_t)rd16(p, o + 2) << 16;
}

static uint64_t rd64(const uint8_t *p, size_t o)
{
    return rd32(p, o) | (uint64_t)rd32(p, o + 4) << 32;
}

static void wr16(uint8_t *p, size_t o, uint16_t v)
{
    p[o] = (uint8_t)v;
    p[o + 1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, size_t o, uint32_t v)
{
    wr16(p, o, (uint16_t)v);
    wr16(p, o + 2, (uint16_t)(v >> 16));
}

static void wr64(uint8_t *p, size_t o, uint64_t v)
{
    wr32(p, o, (uint32_t)v);
    wr32(p, o + 4, (uint32_t)(v >> 32));
}

/* ---- a synthetic bzImage: 4 setup sectors after the boot sector, 64 KiB of kernel ---- */

#define SYN_SECTS 4
#define SYN_SETUP ((SYN_SECTS + 1) * 512)
#define SYN_KERNEL (64 * 1024)
#define SYN_LEN (SYN_SETUP + SYN_KERNEL)
#define SYN_VERSION "9.9.9-synthetic (test@vmws) #1"

static uint8_t syn[SYN_LEN];

static void make_synthetic(void)
{
    memset(syn, 0, sizeof(syn));
    syn[0x1f1] = SYN_SECTS;
    wr32(syn, 0x1f4, SYN_KERNEL / 16);
    wr16(syn, 0x1fe, 0xaa55);
    syn[0x200] = 0xeb;
    syn[0x201] = 0x66; /* header ends at 0x268 */
    memcpy(syn + 0x202, "HdrS", 4);
    wr16(syn, 0x206, 0x020f);
    wr16(syn, 0x20e, 0x100); /* version string at 0x300 */
    memcpy(syn + 0x300, SYN_VERSION, sizeof(SYN_VERSION));
    syn[0x211] = 0x01; /* LOADED_HIGH */
    wr32(syn, 0x214, 0x100000);
    wr32(syn, 0x22c, 0x7fffffff);
    wr32(syn, 0x230, 0x200000);
    syn[0x234] = 1;
    wr16(syn, 0x236, 0x1); /* XLF_KERNEL_64 */
    wr32(syn, 0x238, 255);
    wr64(syn, 0x258, 0x1000000);
    wr32(syn, 0x260, 4 * MiB);
    for (size_t i = 0; i < SYN_KERNEL; i++)
        syn[SYN_SETUP + i] = (uint8_t)(i * 7 + (i >> 8));
}

static void expect_rejected(const uint8_t *img, size_t len, const char *needle)
{
    struct bzimage_info bi;
    char err[512] = "";
    ck_assert_int_eq(bzimage_parse(img, len, &bi, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, needle), "error \"%s\" does not mention \"%s\"", err, needle);

    /* And the loader refuses it with the same message, writing nothing. */
    uint8_t *ram = calloc(1, 64 * MiB);
    struct guest_mem m;
    ck_assert_int_eq(guest_mem_init_buffer(&m, ram, 64 * MiB), 0);
    struct boot_request req = {.kernel = img, .kernel_len = len, .cmdline = "x"};
    struct boot_entry e;
    char err2[512] = "";
    ck_assert_int_eq(linuxboot_load(&m, &req, &e, err2, sizeof(err2)), -EINVAL);
    ck_assert_str_eq(err, err2);
    ck_assert_uint_eq(guest_mem_vmm_dirty_pages(&m), 0);
    guest_mem_close(&m);
    free(ram);
}

START_TEST(synthetic_image_parses)
{
    make_synthetic();
    struct bzimage_info bi;
    char err[256] = "";
    ck_assert_int_eq(bzimage_parse(syn, SYN_LEN, &bi, err, sizeof(err)), 0);
    ck_assert_uint_eq(bi.protocol, 0x020f);
    ck_assert_uint_eq(bi.setup_size, SYN_SETUP);
    ck_assert_uint_eq(bi.kernel_size, SYN_KERNEL);
    ck_assert_uint_eq(bi.cmdline_size, 255);
    ck_assert_uint_eq(bi.init_size, 4 * MiB);
    ck_assert_uint_eq(bi.pref_address, 0x1000000);
    ck_assert_str_eq(bi.version, SYN_VERSION);

    /* setup_sects == 0 means 4. */
    syn[0x1f1] = 0;
    ck_assert_int_eq(bzimage_parse(syn, SYN_LEN, &bi, err, sizeof(err)), 0);
    ck_assert_uint_eq(bi.setup_size, 5 * 512);
}
END_TEST

START_TEST(synthetic_rejections)
{
    make_synthetic();
    expect_rejected(syn, 600, "too short");

    make_synthetic();
    wr16(syn, 0x1fe, 0x1234);
    expect_rejected(syn, SYN_LEN, "boot_flag");

    make_synthetic();
    memcpy(syn + 0x202, "HdrX", 4);
    expect_rejected(syn, SYN_LEN, "no 'HdrS' signature at offset 0x202");

    make_synthetic();
    wr16(syn, 0x206, 0x0205);
    expect_rejected(syn, SYN_LEN, "older than 2.06");

    make_synthetic();
    wr16(syn, 0x206, 0x020a);
    expect_rejected(syn, SYN_LEN, "xloadflags");

    make_synthetic();
    syn[0x211] = 0;
    expect_rejected(syn, SYN_LEN, "LOADED_HIGH");

    make_synthetic();
    wr16(syn, 0x236, 0x2);
    expect_rejected(syn, SYN_LEN, "XLF_KERNEL_64");

    make_synthetic();
    syn[0x201] = 0xf0; /* header would run to 0x2f2, over edd_mbr_sig_buffer */
    expect_rejected(syn, SYN_LEN, "setup header length");

    make_synthetic();
    syn[0x1f1] = 255; /* 128 KiB of setup in a 66 KiB file */
    expect_rejected(syn, SYN_LEN, "setup_sects 255");

    make_synthetic();
    wr16(syn, 0x20e, 0xfe00); /* string at 0x10000, beyond the 2.5 KiB setup */
    expect_rejected(syn, SYN_LEN, "kernel_version pointer 0xfe00");

    make_synthetic();
    memset(syn + 0x300, 'A', SYN_SETUP - 0x300); /* no NUL before the setup's end */
    expect_rejected(syn, SYN_LEN, "kernel_version");

    make_synthetic();
    wr32(syn, 0x1f4, SYN_KERNEL / 16 + 1);
    expect_rejected(syn, SYN_LEN, "syssize");

    make_synthetic();
    wr32(syn, 0x1f4, 0xffffffff);
    expect_rejected(syn, SYN_LEN, "syssize");

    make_synthetic();
    wr32(syn, 0x1f4, 0);
    expect_rejected(syn, SYN_LEN, "syssize");

    make_synthetic();
    wr32(syn, 0x260, 4096);
    expect_rejected(syn, SYN_LEN, "init_size");

    make_synthetic();
    wr32(syn, 0x230, 0x300000);
    expect_rejected(syn, SYN_LEN, "kernel_alignment");
}
END_TEST

struct vm {
    uint8_t *ram;
    struct guest_mem m;
};

static void vm_open(struct vm *vm, uint64_t size)
{
    vm->ram = calloc(1, size);
    ck_assert_ptr_nonnull(vm->ram);
    ck_assert_int_eq(guest_mem_init_buffer(&vm->m, vm->ram, size), 0);
}

static void vm_close(struct vm *vm)
{
    guest_mem_close(&vm->m);
    free(vm->ram);
}

START_TEST(synthetic_image_loads_byte_exact)
{
    make_synthetic();
    struct vm vm;
    vm_open(&vm, 64 * MiB);
    struct boot_request req = {.kernel = syn, .kernel_len = SYN_LEN, .cmdline = "quiet"};
    struct boot_entry e;
    char err[256] = "";
    ck_assert_msg(linuxboot_load(&vm.m, &req, &e, err, sizeof(err)) == 0, "%s", err);
    ck_assert(memcmp(vm.ram + 0x100000, syn + SYN_SETUP, SYN_KERNEL) == 0);
    ck_assert_uint_eq(vm.ram[0x100000 + SYN_KERNEL], 0); /* nothing past the kernel */
    ck_assert_uint_eq(e.rip, 0x100200);
    ck_assert_str_eq((char *)vm.ram + rd32(vm.ram, 0x7000 + 0x228), "quiet");
    ck_assert_uint_eq(rd32(vm.ram, 0x7000 + 0x218), 0); /* no initrd */
    ck_assert_uint_eq(rd32(vm.ram, 0x7000 + 0x21c), 0);
    ck_assert_uint_eq(rd64(vm.ram, 0x7000 + 0x070), 0); /* no RSDP given */
    ck_assert_uint_eq(vm.ram[0x7000 + 0x0f], 0);        /* no framebuffer: screen_info empty */

    /* The VMM's writes are in its dirty bitmap (snapshots depend on it). */
    uint64_t kernel_page = 0x100000 / GUEST_PAGE_SIZE, zp = 0x7000 / GUEST_PAGE_SIZE;
    ck_assert(vm.m.vmm_dirty[kernel_page / 64] & (1ULL << (kernel_page % 64)));
    ck_assert(vm.m.vmm_dirty[zp / 64] & (1ULL << (zp % 64)));
    ck_assert_uint_ge(guest_mem_vmm_dirty_pages(&vm.m), SYN_KERNEL / GUEST_PAGE_SIZE + 6);
    vm_close(&vm);
}
END_TEST

START_TEST(cmdline_too_long_is_refused)
{
    make_synthetic();
    struct vm vm;
    vm_open(&vm, 64 * MiB);
    char line[257];
    memset(line, 'a', 256);
    line[256] = '\0';
    struct boot_request req = {.kernel = syn, .kernel_len = SYN_LEN, .cmdline = line};
    struct boot_entry e;
    char err[256] = "";
    ck_assert_int_eq(linuxboot_load(&vm.m, &req, &e, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "256 bytes") && strstr(err, "at most 255"), "%s", err);

    line[255] = '\0'; /* exactly cmdline_size is fine */
    ck_assert_msg(linuxboot_load(&vm.m, &req, &e, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(strlen((char *)vm.ram + BOOT_CMDLINE_ADDR), 255);
    vm_close(&vm);
}
END_TEST

START_TEST(initrd_and_kernel_must_fit)
{
    make_synthetic();
    struct vm vm;
    vm_open(&vm, 64 * MiB);
    /* The kernel reserves up to 16 MiB (pref_address) + 4 MiB (init_size) = 20 MiB. */
    size_t big = 45 * MiB;
    uint8_t *initrd = calloc(1, big);
    struct boot_request req = {
        .kernel = syn, .kernel_len = SYN_LEN, .initrd = initrd, .initrd_len = big, .cmdline = ""};
    struct boot_entry e;
    char err[256] = "";
    ck_assert_int_eq(linuxboot_load(&vm.m, &req, &e, err, sizeof(err)), -ENOMEM);
    ck_assert_msg(strstr(err, "initrd") && strstr(err, "does not fit"), "%s", err);

    req.initrd_len = 44 * MiB; /* 20 MiB + 44 MiB = 64 MiB: just fits */
    ck_assert_msg(linuxboot_load(&vm.m, &req, &e, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(rd32(vm.ram, 0x7000 + 0x218), 20 * MiB);

    /* initrd_addr_max caps the placement. */
    wr32(syn, 0x22c, 32 * MiB - 1);
    req.initrd_len = 3 * MiB + 5;
    ck_assert_msg(linuxboot_load(&vm.m, &req, &e, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(rd32(vm.ram, 0x7000 + 0x218), (32 * MiB - 3 * MiB - 5) & ~0xfffULL);
    free(initrd);
    vm_close(&vm);

    /* 16 MiB of RAM cannot hold a kernel that needs 20 MiB. */
    make_synthetic();
    vm_open(&vm, 16 * MiB);
    req.initrd = NULL;
    req.initrd_len = 0;
    ck_assert_int_eq(linuxboot_load(&vm.m, &req, &e, err, sizeof(err)), -ENOMEM);
    ck_assert_msg(strstr(err, "more memory"), "%s", err);
    vm_close(&vm);
}
END_TEST

START_TEST(framebuffer_in_screen_info)
{
    make_synthetic();
    struct vm vm;
    vm_open(&vm, 64 * MiB);
    struct boot_request req = {.kernel = syn, .kernel_len = SYN_LEN, .cmdline = ""};
    req.fb = (struct boot_framebuffer){.base = 0xfd000000,
                                       .size = 8 * MiB,
                                       .width = 1024,
                                       .height = 768,
                                       .stride = 4096,
                                       .bpp = 32};
    struct boot_entry e;
    char err[256] = "";
    ck_assert_msg(linuxboot_load(&vm.m, &req, &e, err, sizeof(err)) == 0, "%s", err);
    const uint8_t *si = vm.ram + 0x7000;
    ck_assert_uint_eq(si[0x0f], 0x23); /* VIDEO_TYPE_VLFB */
    ck_assert_uint_eq(rd16(si, 0x12), 1024);
    ck_assert_uint_eq(rd16(si, 0x14), 768);
    ck_assert_uint_eq(rd16(si, 0x16), 32);
    ck_assert_uint_eq(rd32(si, 0x18), 0xfd000000);
    ck_assert_uint_eq(rd32(si, 0x1c), 128); /* 8 MiB in 64 KiB units */
    ck_assert_uint_eq(rd16(si, 0x24), 4096);
    const uint8_t xrgb[8] = {8, 16, 8, 8, 8, 0, 8, 24};
    ck_assert(memcmp(si + 0x26, xrgb, 8) == 0);
    ck_assert_uint_eq(rd32(si, 0x36), 0); /* no 64-bit base */

    /* Above 4 GiB: ext_lfb_base and VIDEO_CAPABILITY_64BIT_BASE. */
    req.fb.base = 0x800000000ULL + 0x1000000;
    ck_assert_msg(linuxboot_load(&vm.m, &req, &e, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(rd32(si, 0x18), 0x1000000);
    ck_assert_uint_eq(rd32(si, 0x3a), 8);
    ck_assert_uint_eq(rd32(si, 0x36) & 2, 2);

    req.fb.bpp = 12;
    ck_assert_int_eq(linuxboot_load(&vm.m, &req, &e, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, "framebuffer"), "%s", err);
    vm_close(&vm);
}
END_TEST

/* ---- e820 ---- */

static void check_e820(uint64_t size, const struct boot_e820_entry *want, int nwant)
{
    struct guest_mem m;
    ck_assert_int_eq(guest_mem_init_buffer(&m, NULL, size), 0);
    struct boot_e820_entry t[8];
    int n = linuxboot_e820(&m, t, 8);
    ck_assert_int_eq(n, nwant);
    for (int i = 0; i < n; i++) {
        ck_assert_uint_eq(t[i].addr, want[i].addr);
        ck_assert_uint_eq(t[i].size, want[i].size);
        ck_assert_uint_eq(t[i].type, want[i].type);
    }
    ck_assert_int_eq(linuxboot_e820(&m, t, nwant - 1), -ENOSPC);
    guest_mem_close(&m);
}

START_TEST(e820_maps)
{
    ck_assert_uint_eq(sizeof(struct boot_e820_entry), 20);
    const struct boot_e820_entry low = {0, 0x9fc00, 1}, bios = {0x9fc00, 0x60400, 2};
    struct boot_e820_entry m64[] = {low, bios, {MiB, 63 * MiB, 1}};
    check_e820(64 * MiB, m64, 3);
    struct boot_e820_entry g1[] = {low, bios, {MiB, GiB - MiB, 1}};
    check_e820(GiB, g1, 3);
    struct boot_e820_entry g3[] = {low, bios, {MiB, 3 * GiB - MiB, 1}};
    check_e820(3 * GiB, g3, 3);
    /* 5 GiB: 3 GiB below the PCI hole, usable resumes at 4 GiB with the other 2 GiB. */
    struct boot_e820_entry g5[] = {low, bios, {MiB, 3 * GiB - MiB, 1}, {4 * GiB, 2 * GiB, 1}};
    check_e820(5 * GiB, g5, 4);
}
END_TEST

/* ---- the real Debian kernel ---- */

struct file {
    uint8_t *data;
    size_t len;
    char path[256];
};

/* The newest /boot/vmlinuz-* by version order. */
static void read_debian_kernel(struct file *f)
{
    glob_t g;
    int rc = glob("/boot/vmlinuz-*", 0, NULL, &g);
    ck_assert_msg(rc == 0 && g.gl_pathc > 0,
                  "no /boot/vmlinuz-* found: install Debian's kernel with "
                  "`apt-get install linux-image-amd64` (./bootstrap does)");
    const char *best = g.gl_pathv[0];
    for (size_t i = 1; i < g.gl_pathc; i++)
        if (strverscmp(g.gl_pathv[i], best) > 0)
            best = g.gl_pathv[i];
    snprintf(f->path, sizeof(f->path), "%s", best);
    globfree(&g);

    FILE *fp = fopen(f->path, "rb");
    ck_assert_msg(fp != NULL, "cannot open %s (readable kernel needed)", f->path);
    fseek(fp, 0, SEEK_END);
    f->len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    f->data = malloc(f->len);
    ck_assert_ptr_nonnull(f->data);
    ck_assert_uint_eq(fread(f->data, 1, f->len, fp), f->len);
    fclose(fp);
}

/* Translates VA through 4-level page tables in guest RAM, as the MMU would. */
static int walk(const uint8_t *ram, uint64_t ram_size, uint64_t cr3, uint64_t va, uint64_t *pa)
{
    uint64_t table = cr3 & ~0xfffULL;
    for (int level = 3; level >= 0; level--) {
        unsigned idx = (va >> (12 + 9 * level)) & 0x1ff;
        if (table + idx * 8 + 8 > ram_size)
            return -EFAULT;
        uint64_t pte = rd64(ram, table + idx * 8);
        if (!(pte & 1))
            return -ENOENT;
        uint64_t frame = pte & 0x000ffffffffff000ULL;
        if (level == 1 && (pte & 0x80)) {
            *pa = (frame & ~0x1fffffULL) | (va & 0x1fffff);
            return 0;
        }
        if (level == 2 && (pte & 0x80)) {
            *pa = (frame & ~0x3fffffffULL) | (va & 0x3fffffff);
            return 0;
        }
        table = frame;
    }
    *pa = table | (va & 0xfff);
    return 0;
}

static void expect_identity(const uint8_t *ram, uint64_t ram_size, uint64_t cr3, uint64_t va)
{
    uint64_t pa = 0;
    ck_assert_msg(walk(ram, ram_size, cr3, va, &pa) == 0, "0x%llx is not mapped",
                  (unsigned long long)va);
    ck_assert_msg(pa == va, "0x%llx maps to 0x%llx", (unsigned long long)va,
                  (unsigned long long)pa);
}

START_TEST(debian_kernel_boot_params)
{
    struct file k;
    read_debian_kernel(&k);
    struct bzimage_info bi;
    char err[512] = "";
    ck_assert_msg(bzimage_parse(k.data, k.len, &bi, err, sizeof(err)) == 0, "%s: %s", k.path, err);
    unsigned setup_sects = k.data[0x1f1] ? k.data[0x1f1] : 4;
    ck_assert_uint_eq(bi.setup_size, (setup_sects + 1) * 512);
    ck_assert_uint_eq(bi.kernel_size, rd32(k.data, 0x1f4) * 16);
    ck_assert_uint_le(bi.setup_size + bi.kernel_size, k.len);
    /* "vmlinuz-6.1.0-56-amd64" -> the version string starts with "6.1.0-56-amd64". */
    const char *release = strrchr(k.path, '/') + strlen("/vmlinuz-");
    ck_assert_msg(strncmp(bi.version, release, strlen(release)) == 0,
                  "version \"%s\" does not start with \"%s\"", bi.version, release);

    const uint64_t ram_size = GiB;
    struct vm vm;
    vm_open(&vm, ram_size);
    uint64_t rsdp = 0;
    struct acpi_config acfg = {.ncpus = 2};
    ck_assert_int_eq(acpi_build(&vm.m, &acfg, &rsdp), 0);

    size_t initrd_len = 3 * MiB;
    uint8_t *initrd = malloc(initrd_len);
    uint32_t x = 0x12345678;
    for (size_t i = 0; i < initrd_len; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        initrd[i] = (uint8_t)x;
    }
    const char *cmdline = "console=ttyS0 earlyprintk=ttyS0";
    struct boot_request req = {.kernel = k.data,
                               .kernel_len = k.len,
                               .initrd = initrd,
                               .initrd_len = initrd_len,
                               .cmdline = cmdline,
                               .acpi_rsdp = rsdp};
    struct boot_entry e;
    ck_assert_msg(linuxboot_load(&vm.m, &req, &e, err, sizeof(err)) == 0, "%s", err);

    const uint8_t *zp = vm.ram + BOOT_ZERO_PAGE_ADDR, *img = k.data;
    size_t hdr_end = 0x202 + img[0x201];

    /* The setup header is the image's, except the fields a loader writes. */
    for (size_t o = 0x1f1; o < hdr_end; o++) {
        int written = (o >= 0x1fa && o < 0x1fc) || o == 0x210 || o == 0x211 ||
                      (o >= 0x214 && o < 0x220) || (o >= 0x224 && o < 0x22c);
        if (!written)
            ck_assert_msg(zp[o] == img[o], "zero page byte 0x%zx is 0x%02x, image has 0x%02x", o,
                          zp[o], img[o]);
    }
    ck_assert_uint_eq(zp[0x1ef], 0); /* sentinel */
    for (size_t o = hdr_end; o < 0x290; o++)
        ck_assert_uint_eq(zp[o], 0);                    /* nothing of the image past its header */
    ck_assert_uint_eq(zp[0x210], 0xff);                 /* type_of_loader: undefined */
    ck_assert_uint_eq(zp[0x211], img[0x211] | 0x80);    /* LOADED_HIGH | CAN_USE_HEAP */
    ck_assert_uint_eq(rd16(zp, 0x224), 0xe000 - 0x200); /* heap_end_ptr */
    ck_assert_uint_eq(rd32(zp, 0x214), 0x100000);       /* code32_start */

    uint32_t cmd = rd32(zp, 0x228);
    ck_assert_uint_eq(rd32(zp, 0x0c8), 0); /* ext_cmd_line_ptr */
    ck_assert_str_eq((const char *)vm.ram + cmd, cmdline);

    uint64_t rd_addr = rd32(zp, 0x218) | (uint64_t)rd32(zp, 0x0c0) << 32;
    uint64_t rd_size = rd32(zp, 0x21c) | (uint64_t)rd32(zp, 0x0c4) << 32;
    ck_assert_uint_eq(rd_size, initrd_len);
    ck_assert_uint_eq(rd_addr % 4096, 0);
    ck_assert_uint_le(rd_addr + rd_size - 1, bi.initrd_addr_max);
    ck_assert_uint_eq(rd_addr, (ram_size - initrd_len) & ~0xfffULL); /* as high as possible */
    ck_assert_uint_ge(rd_addr, bi.pref_address + bi.init_size);      /* clear of the kernel */
    ck_assert(memcmp(vm.ram + rd_addr, initrd, initrd_len) == 0);

    ck_assert_uint_eq(zp[0x1e8], 3);
    const uint64_t e820[3][3] = {
        {0, 0x9fc00, 1}, {0x9fc00, 0x100000 - 0x9fc00, 2}, {0x100000, ram_size - 0x100000, 1}};
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(rd64(zp, 0x2d0 + 20 * i), e820[i][0]);
        ck_assert_uint_eq(rd64(zp, 0x2d0 + 20 * i + 8), e820[i][1]);
        ck_assert_uint_eq(rd32(zp, 0x2d0 + 20 * i + 16), e820[i][2]);
    }
    ck_assert_uint_eq(rd64(zp, 0x070), rsdp);
    ck_assert(memcmp(vm.ram + rsdp, "RSD PTR ", 8) == 0);

    ck_assert(memcmp(vm.ram + 0x100000, img + bi.setup_size, bi.kernel_size) == 0);

    ck_assert_uint_eq(e.rip, 0x100200);
    ck_assert_uint_eq(e.rsi, BOOT_ZERO_PAGE_ADDR);
    ck_assert_uint_eq(e.rsp, BOOT_STACK_TOP);
    ck_assert_uint_eq(e.cr3, BOOT_PML4_ADDR);

    expect_identity(vm.ram, ram_size, e.cr3, 0x100000);
    expect_identity(vm.ram, ram_size, e.cr3, e.rip);
    expect_identity(vm.ram, ram_size, e.cr3, BOOT_ZERO_PAGE_ADDR);
    expect_identity(vm.ram, ram_size, e.cr3, cmd);
    expect_identity(vm.ram, ram_size, e.cr3, e.rsp - 8);
    expect_identity(vm.ram, ram_size, e.cr3, bi.pref_address + bi.init_size - 1);
    expect_identity(vm.ram, ram_size, e.cr3, 0xe0000000ULL); /* 3.5 GiB */
    expect_identity(vm.ram, ram_size, e.cr3, 0xfee00000ULL); /* the LAPIC */
    uint64_t pa;
    ck_assert_int_eq(walk(vm.ram, ram_size, e.cr3, 4 * GiB, &pa), -ENOENT);

    /* GDT: 0x10 is present 64-bit code (L=1, D=0), 0x18 present writable data. */
    uint64_t code = rd64(vm.ram, e.gdt_base + 0x10), data = rd64(vm.ram, e.gdt_base + 0x18);
    ck_assert_uint_ge(e.gdt_limit, 0x1f);
    ck_assert(code & (1ULL << 47));               /* P */
    ck_assert(code & (1ULL << 53));               /* L */
    ck_assert(!(code & (1ULL << 54)));            /* D */
    ck_assert_uint_eq((code >> 40) & 0x1a, 0x1a); /* S, code, readable */
    ck_assert(data & (1ULL << 47));
    ck_assert_uint_eq((data >> 40) & 0x1a, 0x12); /* S, data, writable */

    free(initrd);
    vm_close(&vm);
    free(k.data);
}
END_TEST

/* The protections above hold on the real image too: corrupt one field at a time. */
START_TEST(debian_kernel_hostile_fields)
{
    struct file k;
    read_debian_kernel(&k);
    uint8_t *copy = malloc(k.len);

    memcpy(copy, k.data, k.len);
    copy[0x1f1] = 255;
    wr32(copy, 0x1f4, (uint32_t)((k.len - 256 * 512) / 16 + 1));
    expect_rejected(copy, k.len, "syssize");

    memcpy(copy, k.data, k.len);
    copy[0x1f1] = 255;
    expect_rejected(copy, 100000, "setup_sects 255"); /* a truncated download */

    memcpy(copy, k.data, k.len);
    wr16(copy, 0x20e, 0xffff);
    expect_rejected(copy, k.len, "kernel_version pointer 0xffff");

    memcpy(copy, k.data, k.len);
    wr32(copy, 0x1f4, (uint32_t)(k.len / 16));
    expect_rejected(copy, k.len, "syssize");

    memcpy(copy, k.data, k.len);
    expect_rejected(copy, 0x300, "too short");

    free(copy);
    free(k.data);
}
END_TEST

START_TEST(vcpu_state_for_64_bit_entry)
{
    struct boot_entry e = {.rip = 0x100200,
                           .rsi = 0x7000,
                           .rsp = 0x8ff0,
                           .cr3 = 0x9000,
                           .gdt_base = 0x500,
                           .gdt_limit = 0x2f};
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    memset(&regs, 0xaa, sizeof(regs));
    memset(&sregs, 0, sizeof(sregs));
    sregs.apic_base = 0xfee00900; /* as KVM_GET_SREGS returns it: must survive */
    sregs.cr8 = 0;
    sregs.interrupt_bitmap[0] = 0;
    linuxboot_vcpu_state(&e, &regs, &sregs);

    ck_assert_uint_eq(sregs.apic_base, 0xfee00900);
    ck_assert_uint_eq(sregs.cs.selector, 0x10);
    ck_assert_uint_eq(sregs.cs.l, 1);
    ck_assert_uint_eq(sregs.cs.db, 0);
    ck_assert_uint_eq(sregs.cs.present, 1);
    ck_assert_uint_eq(sregs.cs.type, 0xb);
    ck_assert_uint_eq(sregs.cs.s, 1);
    ck_assert_uint_eq(sregs.cs.dpl, 0);
    const struct kvm_segment *data[] = {&sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss};
    for (int i = 0; i < 5; i++) {
        ck_assert_uint_eq(data[i]->selector, 0x18);
        ck_assert_uint_eq(data[i]->type, 3);
        ck_assert_uint_eq(data[i]->present, 1);
        ck_assert_uint_eq(data[i]->s, 1);
    }
    ck_assert_uint_eq(sregs.tr.type, 0xb);
    ck_assert_uint_eq(sregs.tr.present, 1);
    ck_assert_uint_eq(sregs.cr0 & 0x80000001ULL, 0x80000001ULL); /* PG | PE */
    ck_assert_uint_eq(sregs.cr0 & 0x60000000ULL, 0);             /* caches on */
    ck_assert_uint_eq(sregs.cr3, 0x9000);
    ck_assert(sregs.cr4 & 0x20);                  /* PAE */
    ck_assert_uint_eq(sregs.efer & 0x500, 0x500); /* LME | LMA */
    ck_assert_uint_eq(sregs.gdt.base, 0x500);
    ck_assert_uint_eq(sregs.gdt.limit, 0x2f);
    ck_assert_uint_eq(sregs.idt.limit, 0);
    ck_assert_uint_eq(regs.rflags, 0x2);
    ck_assert_uint_eq(regs.rip, 0x100200);
    ck_assert_uint_eq(regs.rsi, 0x7000);
    ck_assert_uint_eq(regs.rsp, 0x8ff0);
    ck_assert_uint_eq(regs.rbp | regs.rdi | regs.rbx | regs.rax, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("linuxboot");
    TCase *syn_tc = tcase_create("synthetic");
    tcase_add_test(syn_tc, synthetic_image_parses);
    tcase_add_test(syn_tc, synthetic_rejections);
    tcase_add_test(syn_tc, synthetic_image_loads_byte_exact);
    tcase_add_test(syn_tc, cmdline_too_long_is_refused);
    tcase_add_test(syn_tc, initrd_and_kernel_must_fit);
    tcase_add_test(syn_tc, framebuffer_in_screen_info);
    tcase_add_test(syn_tc, e820_maps);
    tcase_add_test(syn_tc, vcpu_state_for_64_bit_entry);
    tcase_set_timeout(syn_tc, 60);
    suite_add_tcase(s, syn_tc);

    TCase *deb = tcase_create("debian-kernel");
    tcase_add_test(deb, debian_kernel_boot_params);
    tcase_add_test(deb, debian_kernel_hostile_fields);
    tcase_set_timeout(deb, 120);
    suite_add_tcase(s, deb);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
