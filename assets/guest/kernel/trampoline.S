/* Real-mode start code for secondary CPUs. CPL 3 copies it to TRAMPOLINE_ADDR and sends
 * INIT-SIPI-SIPI; each AP wakes here in real mode at CS = TRAMPOLINE_ADDR >> 4, IP = 0, loads
 * the kernel GDT, goes through 32-bit protected mode into long mode on the kernel's page
 * tables and jumps to ap_entry64 (head.S). Addresses inside are computed for the copy. */
#include "assets/guest/layout.h"

#define HERE(label) (TRAMPOLINE_ADDR + ((label) - trampoline_start))

        .section .trampoline, "ax"
        .code16
        .globl  trampoline_start, trampoline_end
trampoline_start:
        cli
        movw    %cs, %ax
        movw    %ax, %ds
        lgdtl   tramp_gdtr - trampoline_start
        movl    %cr0, %eax
        orl     $CR0_PE, %eax
        movl    %eax, %cr0
        ljmpl   $SEL_KCODE32, $HERE(tramp32)

        .code32
tramp32:
        movl    $SEL_KDATA, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movl    %cr4, %eax
        orl     $CR4_PAE, %eax
        movl    %eax, %cr4
        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    $MSR_EFER, %ecx
        rdmsr
        orl     $EFER_LME, %eax
        wrmsr
        movl    %cr0, %eax
        orl     $CR0_PG, %eax
        movl    %eax, %cr0
        ljmp    $SEL_KCODE, $ap_entry64

        .balign 8
tramp_gdtr:
        .word   GDT_ENTRIES * 8 - 1
        .long   gdt
trampoline_end:

        .section .note.GNU-stack, "", @progbits
