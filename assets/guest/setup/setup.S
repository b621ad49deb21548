/* Real-mode part of the bzImage: boot sector, the Linux setup header at 0x1F1 and the setup
 * code a 16-bit loader (QEMU -kernel, GRUB) enters at offset 0x200. It builds boot_params in
 * its own .bss from the header copy the loader filled in plus the BIOS E820 map, then enters
 * protected mode and jumps to code32_start with ESI = boot_params, as the 32-bit protocol wants.
 * Offsets here are offsets in the loader's real-mode segment (this section is linked at 0). */
#include "assets/guest/layout.h"

#define BP_E820_ENTRIES 0x1e8
#define BP_HDR 0x1f1
#define BP_HDR_END 0x290
#define BP_E820_TABLE 0x2d0
#define E820_MAX 128
#define SMAP 0x534d4150
#define SETUP_STACK_TOP 0x7ff0

        .section .setup, "ax"
        .code16

/* Boot sector: only reached if a BIOS boots the file as a disk, which cannot work. */
bootsect:
        ljmp    $0x07c0, $1f
1:      movw    %cs, %ax
        movw    %ax, %ds
        movw    $bootsect_msg, %si
2:      lodsb
        testb   %al, %al
        jz      3f
        movb    $0x0e, %ah
        movw    $7, %bx
        int     $0x10
        jmp     2b
3:      cli
        hlt
        jmp     3b
bootsect_msg:
        .asciz  "vmws-guest is a bzImage: boot it with a Linux loader (vmws, QEMU -kernel).\r\n"

/* The setup header (Documentation/arch/x86/boot.rst), protocol 2.15. */
        .org    0x1f1
hdr:
setup_sects:    .byte   guest_setup_sects       /* from guest.lds */
root_flags:     .word   0
syssize:        .long   guest_syssize           /* protected-mode part, 16-byte units */
ram_size:       .word   0
vid_mode:       .word   0xffff                  /* NORMAL_VGA */
root_dev:       .word   0
boot_flag:      .word   0xaa55
        .org    0x200
        .globl  setup_entry
setup_entry:
        .byte   0xeb, start_of_setup - 1f       /* 2-byte jump over the header */
1:      .ascii  "HdrS"
version:        .word   0x020f
realmode_swtch: .long   0
start_sys_seg:  .word   0x1000
kernel_version: .word   kernel_version_string - 0x200
type_of_loader: .byte   0
loadflags:      .byte   0x01                    /* LOADED_HIGH: kernel at 1 MiB */
setup_move_size: .word  0x8000
code32_start:   .long   KERNEL_BASE
ramdisk_image:  .long   0
ramdisk_size:   .long   0
bootsect_kludge: .long  0
heap_end_ptr:   .word   0
ext_loader_ver: .byte   0
ext_loader_type: .byte  0
cmd_line_ptr:   .long   0
initrd_addr_max: .long  0x7fffffff
kernel_alignment: .long 0x200000
relocatable_kernel: .byte 0
min_alignment:  .byte   12
xloadflags:     .word   0x0001                  /* XLF_KERNEL_64: 64-bit entry at +0x200 */
cmdline_size:   .long   2047
hardware_subarch: .long 0
hardware_subarch_data: .quad 0
payload_offset: .long   0
payload_length: .long   0
setup_data:     .quad   0
pref_address:   .quad   KERNEL_BASE
init_size:      .long   guest_init_size         /* from guest.lds: up to the end of .bss */
handover_offset: .long  0
kernel_info_offset: .long kernel_info - KERNEL_BASE

start_of_setup:
        /* The loader set DS = ES = SS = our segment; make CS agree and take our own stack. */
        cli
        cld
        movw    %ds, %ax
        movw    %ax, %es
        movw    %ax, %ss
        movw    $SETUP_STACK_TOP, %sp
        pushw   %ds
        pushw   $1f
        lretw
1:      sti

        /* boot_params = zeroes + the header as the loader left it (cmd_line_ptr, ...). */
        movw    $zero_page, %di
        xorw    %ax, %ax
        movw    $2048, %cx
        rep stosw
        movw    $hdr, %si
        movw    $zero_page + BP_HDR, %di
        movw    $BP_HDR_END - BP_HDR, %cx
        rep movsb

        /* E820 memory map from the BIOS, straight into boot_params.e820_table. */
        movw    $zero_page + BP_E820_TABLE, %di
        xorl    %ebx, %ebx
e820_next:
        movl    $0xe820, %eax
        movl    $20, %ecx
        movl    $SMAP, %edx
        int     $0x15
        jc      e820_done
        cmpl    $SMAP, %eax
        jne     e820_done
        addw    $20, %di
        incb    zero_page + BP_E820_ENTRIES
        testl   %ebx, %ebx
        jz      e820_done
        cmpb    $E820_MAX, zero_page + BP_E820_ENTRIES
        jb      e820_next
e820_done:
        cli

        /* Fast A20 gate (port 0x92): harmless where A20 is already on. */
        inb     $0x92, %al
        orb     $0x02, %al
        andb    $0xfe, %al
        outb    %al, $0x92

        /* Linear addresses depend on our segment: base = DS * 16. */
        movw    %ds, %ax
        movzwl  %ax, %ebx
        shll    $4, %ebx
        movl    $setup_gdt, %eax
        addl    %ebx, %eax
        movl    %eax, setup_gdtr + 2
        movl    $zero_page, %esi
        addl    %ebx, %esi
        movl    code32_start, %eax
        movl    %eax, code32_jump

        lgdtl   setup_gdtr
        movl    %cr0, %eax
        orl     $CR0_PE, %eax
        movl    %eax, %cr0
        movw    $SEL_KDATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %fs
        movw    %ax, %gs
        movw    %ax, %ss
        ljmpl   *%cs:code32_jump

        .balign 8
/* Flat 32-bit code at 0x10 and data at 0x18: the boot protocol's __BOOT_CS / __BOOT_DS. */
setup_gdt:
        .quad   0
        .quad   0
        .quad   0x00cf9a000000ffff
        .quad   0x00cf92000000ffff
setup_gdtr:
        .word   setup_gdtr - setup_gdt - 1
        .long   0                               /* patched: linear address of setup_gdt */
code32_jump:
        .long   0                               /* patched: code32_start */
        .word   SEL_KCODE

kernel_version_string:
        .ascii  "vmws-guest "
        .ascii  VMWS_GUEST_VERSION
        .asciz  " (built-in guest of vmws)"

        .section .setup.bss, "aw", @nobits
        .balign 16
zero_page:
        .skip   4096

        .section .note.GNU-stack, "", @progbits
