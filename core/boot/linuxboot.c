/* The Linux x86 boot protocol, 64-bit entry (Documentation/arch/x86/boot.rst): a bzImage is a
 * real-mode setup part ((setup_sects+1)*512 bytes, holding the setup header at 0x1F1) followed
 * by the protected-mode kernel. We never run the setup code: we copy its header into a fresh
 * boot_params ("zero page"), fill in what a BIOS and a boot loader would, load the protected-mode
 * part at 1 MiB and start the vCPU in long mode at load address + 0x200. The one idea: every
 * number in the image is hostile until checked, so bzimage_parse() checks each before use. */
#include "core/boot/linuxboot.h"

#include <errno.h>
#include <string.h>

#include "core/util/bytes.h"
#include "core/util/errfmt.h"

/* Setup header fields (offsets in the image and in boot_params alike). */
#define HDR_START 0x1f1
#define HDR_SETUP_SECTS 0x1f1
#define HDR_SYSSIZE 0x1f4
#define HDR_VID_MODE 0x1fa
#define HDR_BOOT_FLAG 0x1fe
#define HDR_JUMP 0x200
#define HDR_MAGIC 0x202
#define HDR_VERSION 0x206
#define HDR_KERNEL_VERSION 0x20e
#define HDR_TYPE_OF_LOADER 0x210
#define HDR_LOADFLAGS 0x211
#define HDR_CODE32_START 0x214
#define HDR_RAMDISK_IMAGE 0x218
#define HDR_RAMDISK_SIZE 0x21c
#define HDR_HEAP_END_PTR 0x224
#define HDR_CMD_LINE_PTR 0x228
#define HDR_INITRD_ADDR_MAX 0x22c
#define HDR_KERNEL_ALIGNMENT 0x230
#define HDR_RELOCATABLE 0x234
#define HDR_XLOADFLAGS 0x236
#define HDR_CMDLINE_SIZE 0x238
#define HDR_PREF_ADDRESS 0x258
#define HDR_INIT_SIZE 0x260
#define HDR_END_MIN 0x264 /* we read up to init_size (protocol 2.10+) */
#define HDR_END_MAX 0x290 /* the header must not spill into edd_mbr_sig_buffer */

/* boot_params fields outside the setup header (Documentation/arch/x86/zero-page.rst). */
#define BP_SCREEN_INFO 0x000
#define BP_ACPI_RSDP_ADDR 0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128
#define BP_SIZE 4096

/* struct screen_info (include/uapi/linux/screen_info.h), at BP_SCREEN_INFO. */
#define SI_ORIG_VIDEO_ISVGA 0x0f
#define SI_LFB_WIDTH 0x12
#define SI_LFB_HEIGHT 0x14
#define SI_LFB_DEPTH 0x16
#define SI_LFB_BASE 0x18
#define SI_LFB_SIZE 0x1c
#define SI_LFB_LINELENGTH 0x24
#define SI_RED_SIZE 0x26 /* then red_pos, green_size, green_pos, ... rsvd_pos */
#define SI_PAGES 0x32
#define SI_CAPABILITIES 0x36
#define SI_EXT_LFB_BASE 0x3a
#define VIDEO_TYPE_VLFB 0x23
#define VIDEO_CAPABILITY_64BIT_BASE (1u << 1)

#define LOADED_HIGH 0x01
#define CAN_USE_HEAP 0x80
#define XLF_KERNEL_64 0x01
#define LOADER_TYPE_UNDEFINED 0xff
#define HEAP_END 0xe000 /* "sample boot configuration": heap_end_ptr = heap_end - 0x200 */

#define E820_RAM 1
#define E820_RESERVED 2

/* GDT: 0x10 64-bit code, 0x18 flat data, 0x20 a 64-bit TSS (VM entry wants a usable TR). */
#define GDT_CODE64 0x00af9b000000ffffULL
#define GDT_DATA 0x00cf93000000ffffULL
#define GDT_TSS64_LOW 0x00008b0000000067ULL /* base 0, limit 0x67, busy 64-bit TSS */
#define GDT_ENTRIES 6
#define SEL_CODE 0x10
#define SEL_DATA 0x18
#define SEL_TSS 0x20

#define PTE_PRESENT 0x1ULL
#define PTE_WRITE 0x2ULL
#define PTE_LARGE 0x80ULL

#define SZ_1M 0x100000ULL
#define SZ_2M 0x200000ULL
#define SZ_1G 0x40000000ULL

#define NOT_BZIMAGE "not a Linux bzImage the 64-bit boot protocol can load: "

int bzimage_parse(const uint8_t *img, size_t len, struct bzimage_info *info, char *err,
                  size_t errlen)
{
    memset(info, 0, sizeof(*info));
    if (!img || len < 1024)
        return err_set(err, errlen, -EINVAL,
                       NOT_BZIMAGE "%zu bytes is too short to hold a setup header (1024 needed)",
                       img ? len : 0);
    if (le_get16(img, HDR_BOOT_FLAG) != 0xaa55)
        return err_set(err, errlen, -EINVAL,
                       NOT_BZIMAGE "boot_flag at offset 0x1fe is 0x%04x, not 0xaa55",
                       le_get16(img, HDR_BOOT_FLAG));
    if (memcmp(img + HDR_MAGIC, "HdrS", 4) != 0)
        return err_set(err, errlen, -EINVAL, NOT_BZIMAGE "no 'HdrS' signature at offset 0x202");

    uint16_t protocol = le_get16(img, HDR_VERSION);
    if (protocol < 0x0206)
        return err_set(err, errlen, -EINVAL, NOT_BZIMAGE "boot protocol %u.%02u is older than 2.06",
                       protocol >> 8, protocol & 0xff);
    if (protocol < 0x020c)
        return err_set(err, errlen, -EINVAL,
                       NOT_BZIMAGE "boot protocol %u.%02u predates xloadflags (2.12), so it cannot "
                                   "announce a 64-bit entry point",
                       protocol >> 8, protocol & 0xff);

    /* The header's own length: 0x202 + the jump's offset byte. */
    size_t hdr_end = 0x202 + img[HDR_JUMP + 1];
    if (img[HDR_JUMP] != 0xeb || hdr_end < HDR_END_MIN || hdr_end > HDR_END_MAX)
        return err_set(err, errlen, -EINVAL,
                       NOT_BZIMAGE "setup header length from the jump at 0x200 (%02x %02x) ends at "
                                   "0x%zx, outside 0x%x..0x%x",
                       img[HDR_JUMP], img[HDR_JUMP + 1], hdr_end, HDR_END_MIN, HDR_END_MAX);

    info->protocol = protocol;
    info->loadflags = img[HDR_LOADFLAGS];
    info->xloadflags = le_get16(img, HDR_XLOADFLAGS);
    if (!(info->loadflags & LOADED_HIGH))
        return err_set(err, errlen, -EINVAL,
                       NOT_BZIMAGE "loadflags 0x%02x lack LOADED_HIGH (a zImage loads at 0x10000)",
                       info->loadflags);
    if (!(info->xloadflags & XLF_KERNEL_64))
        return err_set(err, errlen, -EINVAL,
                       NOT_BZIMAGE
                       "xloadflags 0x%04x lack XLF_KERNEL_64 (no 64-bit entry at 0x200; "
                       "is this a 32-bit kernel?)",
                       info->xloadflags);

    unsigned setup_sects = img[HDR_SETUP_SECTS] ? img[HDR_SETUP_SECTS] : 4;
    info->setup_size = (setup_sects + 1) * 512;
    if (info->setup_size > len || info->setup_size < hdr_end)
        return err_set(err, errlen, -EINVAL,
                       NOT_BZIMAGE "setup_sects %u means %u bytes of setup code, but the file has "
                                   "%zu bytes",
                       img[HDR_SETUP_SECTS], info->setup_size, len);

    uint64_t syssize = le_get32(img, HDR_SYSSIZE);
    uint64_t kernel_size = syssize * 16;
    if (syssize == 0 || kernel_size > len - info->setup_size || kernel_size > UINT32_MAX)
        return err_set(err, errlen, -EINVAL,
                       NOT_BZIMAGE "syssize 0x%llx means %llu bytes of protected-mode kernel, but "
                                   "only %zu bytes follow the %u-byte setup",
                       (unsigned long long)syssize, (unsigned long long)kernel_size,
                       len - info->setup_size, info->setup_size);
    info->kernel_size = (uint32_t)kernel_size;

    uint16_t kv = le_get16(img, HDR_KERNEL_VERSION);
    if (kv) {
        size_t off = (size_t)kv + 0x200;
        const uint8_t *nul =
            off < info->setup_size ? memchr(img + off, 0, info->setup_size - off) : NULL;
        if (!nul)
            return err_set(err, errlen, -EINVAL,
                           NOT_BZIMAGE "kernel_version pointer 0x%04x does not point at a "
                                       "NUL-terminated string inside the %u-byte setup",
                           kv, info->setup_size);
        size_t n = (size_t)(nul - (img + off));
        if (n >= sizeof(info->version))
            n = sizeof(info->version) - 1;
        memcpy(info->version, img + off, n);
        info->version[n] = '\0';
    }

    info->code32_start = le_get32(img, HDR_CODE32_START);
    info->initrd_addr_max = le_get32(img, HDR_INITRD_ADDR_MAX);
    info->kernel_alignment = le_get32(img, HDR_KERNEL_ALIGNMENT);
    info->relocatable_kernel = img[HDR_RELOCATABLE];
    info->cmdline_size = le_get32(img, HDR_CMDLINE_SIZE);
    info->pref_address = le_get64(img, HDR_PREF_ADDRESS);
    info->init_size = le_get32(img, HDR_INIT_SIZE);

    if (info->init_size < info->kernel_size)
        return err_set(err, errlen, -EINVAL,
                       NOT_BZIMAGE
                       "init_size 0x%x is smaller than the %u-byte protected-mode kernel",
                       info->init_size, info->kernel_size);
    if (info->relocatable_kernel &&
        (info->kernel_alignment == 0 || (info->kernel_alignment & (info->kernel_alignment - 1))))
        return err_set(err, errlen, -EINVAL,
                       NOT_BZIMAGE "kernel_alignment 0x%x is not a power of two",
                       info->kernel_alignment);
    if (info->pref_address >= GUEST_LOW_RAM_MAX)
        return err_set(err, errlen, -EINVAL, NOT_BZIMAGE "pref_address 0x%llx is not below 3 GiB",
                       (unsigned long long)info->pref_address);
    return 0;
}

/* The end of the memory the kernel uses before it reads the e820 map. The decompressor of a
 * relocatable kernel runs at align_up(load, kernel_alignment) but never below pref_address
 * (LOAD_PHYSICAL_ADDR); a non-relocatable one at pref_address. init_size counts from there. */
static uint64_t kernel_reserved_end(const struct bzimage_info *bi, uint64_t load)
{
    uint64_t start = bi->pref_address;
    if (bi->relocatable_kernel) {
        uint64_t a = bi->kernel_alignment;
        uint64_t aligned = (load + a - 1) & ~(a - 1);
        if (aligned > start)
            start = aligned;
    }
    if (start < load)
        start = load;
    uint64_t end = start + bi->init_size;
    if (end < load + bi->kernel_size)
        end = load + bi->kernel_size;
    return end;
}

int linuxboot_e820(const struct guest_mem *m, struct boot_e820_entry *table, int n)
{
    struct boot_e820_entry e[4];
    int count = 0;
    uint64_t low = m->low_size;
    uint64_t below_ebda = low < BOOT_EBDA_START ? low : BOOT_EBDA_START;

    if (below_ebda)
        e[count++] = (struct boot_e820_entry){0, below_ebda, E820_RAM};
    e[count++] = (struct boot_e820_entry){BOOT_EBDA_START, SZ_1M - BOOT_EBDA_START, E820_RESERVED};
    if (low > SZ_1M)
        e[count++] = (struct boot_e820_entry){SZ_1M, low - SZ_1M, E820_RAM};
    if (m->size > low)
        e[count++] = (struct boot_e820_entry){GUEST_HIGH_RAM_BASE, m->size - low, E820_RAM};
    if (n < count)
        return -ENOSPC;
    memcpy(table, e, (size_t)count * sizeof(e[0]));
    return count;
}

/* Identity map of 0-4 GiB with 2 MiB pages: PML4 -> one PDPT -> four PDs. */
static int write_page_tables(struct guest_mem *m)
{
    uint64_t pdpt = BOOT_PML4_ADDR + 0x1000, pd = BOOT_PML4_ADDR + 0x2000;
    uint64_t page[512];

    memset(page, 0, sizeof(page));
    page[0] = pdpt | PTE_PRESENT | PTE_WRITE;
    int rc = guest_mem_write(m, BOOT_PML4_ADDR, page, sizeof(page));

    memset(page, 0, sizeof(page));
    for (int i = 0; i < 4; i++)
        page[i] = (pd + (uint64_t)i * 0x1000) | PTE_PRESENT | PTE_WRITE;
    rc = rc ? rc : guest_mem_write(m, pdpt, page, sizeof(page));

    for (int i = 0; i < 4 && rc == 0; i++) {
        for (int j = 0; j < 512; j++)
            page[j] =
                ((uint64_t)i * SZ_1G + (uint64_t)j * SZ_2M) | PTE_PRESENT | PTE_WRITE | PTE_LARGE;
        rc = guest_mem_write(m, pd + (uint64_t)i * 0x1000, page, sizeof(page));
    }
    return rc;
}

static int write_gdt(struct guest_mem *m)
{
    uint64_t gdt[GDT_ENTRIES] = {0, 0, GDT_CODE64, GDT_DATA, GDT_TSS64_LOW, 0};
    return guest_mem_write(m, BOOT_GDT_ADDR, gdt, sizeof(gdt));
}

/* screen_info for a VESA linear framebuffer (what vesafb/simplefb read). */
static int fill_screen_info(uint8_t *bp, const struct boot_framebuffer *fb, char *err,
                            size_t errlen)
{
    /* size, position of red, green, blue, reserved */
    static const uint8_t rgb32[8] = {8, 16, 8, 8, 8, 0, 8, 24};
    static const uint8_t rgb24[8] = {8, 16, 8, 8, 8, 0, 0, 0};
    static const uint8_t rgb16[8] = {5, 11, 6, 5, 5, 0, 0, 0};
    const uint8_t *layout = fb->bpp == 32   ? rgb32
                            : fb->bpp == 24 ? rgb24
                            : fb->bpp == 16 ? rgb16
                                            : NULL;
    if (!layout || fb->width == 0 || fb->width > 0xffff || fb->height == 0 || fb->height > 0xffff ||
        fb->stride > 0xffff || fb->stride < fb->width * (fb->bpp / 8) ||
        (uint64_t)fb->stride * fb->height > fb->size)
        return err_set(err, errlen, -EINVAL,
                       "framebuffer %ux%u, %u bpp, stride %u, %u bytes cannot be described to the "
                       "kernel as a VESA linear framebuffer",
                       fb->width, fb->height, fb->bpp, fb->stride, fb->size);

    uint8_t *si = bp + BP_SCREEN_INFO;
    si[SI_ORIG_VIDEO_ISVGA] = VIDEO_TYPE_VLFB;
    le_put16(si, SI_LFB_WIDTH, (uint16_t)fb->width);
    le_put16(si, SI_LFB_HEIGHT, (uint16_t)fb->height);
    le_put16(si, SI_LFB_DEPTH, fb->bpp);
    le_put32(si, SI_LFB_BASE, (uint32_t)fb->base);
    le_put32(si, SI_LFB_SIZE, (uint32_t)((fb->size + 0xffffULL) >> 16)); /* 64 KiB units (VLFB) */
    le_put16(si, SI_LFB_LINELENGTH, (uint16_t)fb->stride);
    memcpy(si + SI_RED_SIZE, layout, 8);
    le_put16(si, SI_PAGES, 1);
    if (fb->base >> 32) {
        le_put32(si, SI_EXT_LFB_BASE, (uint32_t)(fb->base >> 32));
        le_put32(si, SI_CAPABILITIES, VIDEO_CAPABILITY_64BIT_BASE);
    }
    return 0;
}

/* Highest page-aligned spot for the initrd below min(initrd_addr_max + 1, low RAM end) that
 * stays clear of the kernel's init_size. Returns 0 or -ENOMEM. */
static int place_initrd(const struct guest_mem *m, const struct bzimage_info *bi,
                        uint64_t kernel_end, uint64_t len, uint64_t *addr, char *err, size_t errlen)
{
    uint64_t limit = (uint64_t)bi->initrd_addr_max + 1;
    if (limit > m->low_size)
        limit = m->low_size;
    if (len > limit || ((limit - len) & ~(GUEST_PAGE_SIZE - 1)) < kernel_end)
        return err_set(err, errlen, -ENOMEM,
                       "initrd of %llu bytes does not fit in guest RAM between the kernel's end "
                       "(0x%llx) and 0x%llx; give the VM more memory or use a smaller initrd",
                       (unsigned long long)len, (unsigned long long)kernel_end,
                       (unsigned long long)limit);
    *addr = (limit - len) & ~(GUEST_PAGE_SIZE - 1);
    return 0;
}

int linuxboot_load(struct guest_mem *m, const struct boot_request *req, struct boot_entry *entry,
                   char *err, size_t errlen)
{
    struct bzimage_info bi;
    int rc = bzimage_parse(req->kernel, req->kernel_len, &bi, err, errlen);
    if (rc)
        return rc;

    uint64_t load = BOOT_KERNEL_ADDR;
    uint64_t kernel_end = kernel_reserved_end(&bi, load);
    if (kernel_end > m->low_size)
        return err_set(
            err, errlen, -ENOMEM,
            "kernel %s needs guest RAM up to 0x%llx (init_size 0x%x) but RAM below 4 GiB "
            "ends at 0x%llx; give the VM more memory",
            bi.version[0] ? bi.version : "(no version)", (unsigned long long)kernel_end,
            bi.init_size, (unsigned long long)m->low_size);

    const char *cmdline = req->cmdline ? req->cmdline : "";
    size_t cmdlen = strlen(cmdline);
    uint64_t cmdmax =
        bi.cmdline_size < BOOT_CMDLINE_MAX - 1 ? bi.cmdline_size : BOOT_CMDLINE_MAX - 1;
    if (cmdlen > cmdmax)
        return err_set(err, errlen, -EINVAL,
                       "kernel command line is %zu bytes but this kernel accepts at most %llu "
                       "(cmdline_size)",
                       cmdlen, (unsigned long long)cmdmax);

    uint64_t initrd_addr = 0, initrd_len = req->initrd ? req->initrd_len : 0;
    if (initrd_len) {
        rc = place_initrd(m, &bi, kernel_end, initrd_len, &initrd_addr, err, errlen);
        if (rc)
            return rc;
    }

    /* The zero page: all zero, then the image's setup header, then what a loader fills in. */
    uint8_t bp[BP_SIZE];
    memset(bp, 0, sizeof(bp));
    size_t hdr_end = 0x202 + req->kernel[HDR_JUMP + 1];
    memcpy(bp + HDR_START, req->kernel + HDR_START, hdr_end - HDR_START);
    if (bp[HDR_SETUP_SECTS] == 0)
        bp[HDR_SETUP_SECTS] = 4;
    le_put16(bp, HDR_VID_MODE, 0xffff); /* "normal"; only the unused real-mode setup reads it */
    bp[HDR_TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED;
    bp[HDR_LOADFLAGS] |= CAN_USE_HEAP;
    le_put16(bp, HDR_HEAP_END_PTR, HEAP_END - 0x200);
    le_put32(bp, HDR_CODE32_START, (uint32_t)load);
    le_put32(bp, HDR_CMD_LINE_PTR, (uint32_t)BOOT_CMDLINE_ADDR);
    le_put32(bp, BP_EXT_CMD_LINE_PTR, (uint32_t)(BOOT_CMDLINE_ADDR >> 32));
    le_put32(bp, HDR_RAMDISK_IMAGE, (uint32_t)initrd_addr);
    le_put32(bp, HDR_RAMDISK_SIZE, (uint32_t)initrd_len);
    le_put32(bp, BP_EXT_RAMDISK_IMAGE, (uint32_t)(initrd_addr >> 32));
    le_put32(bp, BP_EXT_RAMDISK_SIZE, (uint32_t)(initrd_len >> 32));
    le_put64(bp, BP_ACPI_RSDP_ADDR, req->acpi_rsdp);

    struct boot_e820_entry e820[BP_E820_MAX];
    int n = linuxboot_e820(m, e820, BP_E820_MAX);
    if (n < 0)
        return err_set(err, errlen, n, "cannot build the e820 memory map");
    bp[BP_E820_ENTRIES] = (uint8_t)n;
    memcpy(bp + BP_E820_TABLE, e820, (size_t)n * sizeof(e820[0]));

    if (req->fb.base) {
        rc = fill_screen_info(bp, &req->fb, err, errlen);
        if (rc)
            return rc;
    }

    const uint8_t *pm = req->kernel + bi.setup_size;
    if ((rc = guest_mem_write(m, load, pm, bi.kernel_size)) ||
        (initrd_len && (rc = guest_mem_write(m, initrd_addr, req->initrd, initrd_len))) ||
        (rc = guest_mem_write(m, BOOT_CMDLINE_ADDR, cmdline, cmdlen + 1)) ||
        (rc = guest_mem_write(m, BOOT_ZERO_PAGE_ADDR, bp, sizeof(bp))) || (rc = write_gdt(m)) ||
        (rc = write_page_tables(m)))
        return err_set(err, errlen, rc,
                       "cannot write the boot image into guest RAM of %llu bytes: %s",
                       (unsigned long long)m->size, strerror(-rc));

    memset(entry, 0, sizeof(*entry));
    entry->rip = load + 0x200;
    entry->rsi = BOOT_ZERO_PAGE_ADDR;
    entry->rsp = BOOT_STACK_TOP;
    entry->cr3 = BOOT_PML4_ADDR;
    entry->gdt_base = BOOT_GDT_ADDR;
    entry->gdt_limit = GDT_ENTRIES * 8 - 1;
    return 0;
}

static void flat_segment(struct kvm_segment *s, uint16_t selector, uint8_t type)
{
    memset(s, 0, sizeof(*s));
    s->base = 0;
    s->limit = 0xffffffff;
    s->selector = selector;
    s->type = type;
    s->present = 1;
    s->s = 1;
    s->g = 1;
}

void linuxboot_vcpu_state(const struct boot_entry *e, struct kvm_regs *regs,
                          struct kvm_sregs *sregs)
{
    flat_segment(&sregs->cs, SEL_CODE, 0xb); /* execute/read, accessed */
    sregs->cs.l = 1;
    flat_segment(&sregs->ds, SEL_DATA, 0x3); /* read/write, accessed */
    sregs->ds.db = 1;
    sregs->es = sregs->fs = sregs->gs = sregs->ss = sregs->ds;

    memset(&sregs->tr, 0, sizeof(sregs->tr));
    sregs->tr.selector = SEL_TSS;
    sregs->tr.limit = 0x67;
    sregs->tr.type = 0xb; /* busy 64-bit TSS: VM entry in long mode requires it */
    sregs->tr.present = 1;

    sregs->gdt.base = e->gdt_base;
    sregs->gdt.limit = e->gdt_limit;
    sregs->idt.base = 0;
    sregs->idt.limit = 0;

    /* PE | MP | ET | NE | PG, caches on (CD/NW clear as after a BIOS). */
    sregs->cr0 = 0x1 | 0x2 | 0x10 | 0x20 | 0x80000000ULL;
    sregs->cr3 = e->cr3;
    sregs->cr4 = 0x20;                         /* PAE */
    sregs->efer |= (1ULL << 8) | (1ULL << 10); /* LME | LMA */

    memset(regs, 0, sizeof(*regs));
    regs->rflags = 0x2; /* reserved bit 1; IF clear */
    regs->rip = e->rip;
    regs->rsi = e->rsi;
    regs->rsp = e->rsp;
}
