/* CPL-3 entry point: the kernel's iretq lands here with RDI = boot_params and IF=1.
 * Zero .bss (natively, at CPL 3: the kernel never loops over memory), give the FPU/SSE a
 * clean state, and run guest_main() on the user stack. */
#include "assets/guest/layout.h"

        .text
        .globl  user_start
user_start:
        movq    %rdi, %r12
        leaq    guest_bss_start(%rip), %rdi
        leaq    guest_bss_end(%rip), %rcx
        subq    %rdi, %rcx
        shrq    $3, %rcx
        xorl    %eax, %eax
        rep stosq
        fninit
        ldmxcsr mxcsr_default(%rip)
        movq    %r12, %rdi
        call    guest_main
1:      movl    $SYS_HALT, %eax
        ud2                             /* syscall, see layout.h */
        jmp     1b

        .section .rodata
        .balign 4
mxcsr_default:
        .long   0x1f80                  /* all SSE exceptions masked, round to nearest */

        .section .stacks, "aw", @nobits
        .balign 16
        .skip   USER_STACK_SIZE
        .globl  user_stack_top
user_stack_top:

        .section .note.GNU-stack, "", @progbits
