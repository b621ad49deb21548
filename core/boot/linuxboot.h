/* The Linux x86 boot protocol (Documentation/arch/x86/boot.rst), 64-bit entry: parse a
 * bzImage's setup header, load the protected-mode kernel, initrd and command line into guest
 * RAM, build boot_params (the "zero page") with an e820 map, and describe the register and
 * page-table state the kernel expects at startup_64. The built-in guest is booted the same way. */
#ifndef VMWS_LINUXBOOT_H
#define VMWS_LINUXBOOT_H

#include <linux/kvm.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vm/guestmem.h"

/* Fixed guest-physical layout used for booting (all below 1 MiB, in RAM). */
#define BOOT_GDT_ADDR 0x500ULL
#define BOOT_ZERO_PAGE_ADDR 0x7000ULL
#define BOOT_PML4_ADDR                                                                             \
    0x9000ULL /* then PDPT at 0xA000, 4 PDs at 0xB000..0xEFFF: 0-4 GiB, 2 MiB pages */
#define BOOT_CMDLINE_ADDR 0x20000ULL
#define BOOT_CMDLINE_MAX 0x10000ULL
#define BOOT_STACK_TOP 0x8ff0ULL
#define BOOT_KERNEL_ADDR 0x100000ULL
#define BOOT_EBDA_START 0x9fc00ULL /* e820: reserved from here to 1 MiB */
#define BOOT_ACPI_START 0xe0000ULL /* ACPI tables live in 0xe0000..0xfffff (RSDP scan area) */
#define BOOT_ACPI_END 0x100000ULL

/* What the setup header says (only what a VMM needs). */
struct bzimage_info {
    uint16_t protocol;    /* e.g. 0x020f */
    uint32_t setup_size;  /* bytes of real-mode code incl. boot sector: (setup_sects+1)*512 */
    uint32_t kernel_size; /* bytes of protected-mode kernel that follow */
    uint8_t loadflags;
    uint16_t xloadflags;
    uint32_t code32_start;
    uint32_t initrd_addr_max;
    uint32_t kernel_alignment;
    uint8_t relocatable_kernel;
    uint32_t cmdline_size; /* max cmdline length, excluding NUL */
    uint64_t pref_address;
    uint32_t init_size; /* memory the kernel needs from its load address */
    char version[128];  /* kernel_version string, "" if none */
};

/* Parses a bzImage held in IMG. Rejects anything that is not a bzImage the 64-bit entry can
 * boot (no "HdrS", protocol < 2.06, not loaded high, no XLF_KERNEL_64, sizes out of file) with
 * a clear message in ERR. Returns 0 or -EINVAL. */
int bzimage_parse(const uint8_t *img, size_t len, struct bzimage_info *info, char *err,
                  size_t errlen);

/* Optional framebuffer, described in boot_params.screen_info (VESA linear framebuffer). */
struct boot_framebuffer {
    uint64_t base; /* 0 = none */
    uint32_t size, width, height, stride;
    uint8_t bpp;
};

struct boot_request {
    const uint8_t *kernel;
    size_t kernel_len;
    const uint8_t *initrd;
    size_t initrd_len; /* initrd may be NULL */
    const char *cmdline;
    uint64_t acpi_rsdp; /* 0 = none */
    struct boot_framebuffer fb;
};

/* Where to start the boot vCPU: RIP at the 64-bit entry, RSI = zero page. */
struct boot_entry {
    uint64_t rip, rsi, rsp, cr3;
    uint64_t gdt_base;
    uint16_t gdt_limit;
};

/* Loads everything into M (marking the VMM's writes dirty), writes GDT and identity page tables
 * (0-4 GiB), and fills ENTRY. Returns 0 or -errno with ERR set: -EINVAL for a bad image, a
 * command line longer than cmdline_size or an undescribable framebuffer; -ENOMEM when the
 * kernel's init_size or the initrd does not fit in RAM below 4 GiB; -EFAULT if RAM is tiny.
 * GDT at BOOT_GDT_ADDR: 0x10 64-bit code, 0x18 flat data, 0x20 a 64-bit TSS (for TR). */
int linuxboot_load(struct guest_mem *m, const struct boot_request *req, struct boot_entry *entry,
                   char *err, size_t errlen);

/* Builds the e820 map for M into TABLE (max N entries): usable [0, EBDA), reserved
 * [EBDA, 1 MiB), usable [1 MiB, low_size), usable [4 GiB, 4 GiB + size - low_size).
 * Returns the number of entries, or -ENOSPC if N is too small (4 always suffice). */
struct boot_e820_entry {
    uint64_t addr, size;
    uint32_t type;
} __attribute__((packed));
int linuxboot_e820(const struct guest_mem *m, struct boot_e820_entry *table, int n);

/* Register state for the boot vCPU per the 64-bit boot protocol: long mode, paging on,
 * CS = 0x10 (64-bit code), DS/ES/FS/GS/SS = 0x18, TR = 0x20, interrupts off, RSI = zero page.
 * SREGS must come from KVM_GET_SREGS: fields boot does not need (apic_base, ...) are kept. */
void linuxboot_vcpu_state(const struct boot_entry *e, struct kvm_regs *regs,
                          struct kvm_sregs *sregs);

#endif
