/* The whole CPL-0 kernel of the built-in guest: 32- and 64-bit entries, GDT, IDT, TSS,
 * interrupt stubs, the syscall entry (#UD from `ud2`, see layout.h) and the secondary-CPU
 * entry. Nothing here loops over memory and every table is emitted by the assembler, so the
 * 64-bit entry runs 50 instructions and `iretq`s into the CPL-3 program (user/start.S) with
 * IF=1; after that CPL 0 only runs interrupt stubs and syscalls of a few instructions each.
 * The stubs sit at fixed offsets from KERNEL_BASE so that the IDT can be a constant table. */
#include "assets/guest/layout.h"

#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xa0
#define PIC2_DATA 0xa1
#define PIC_EOI 0x20
#define UD2_OPCODE 0x0b0f

        .section .head, "ax"

/* 32-bit entry at code32_start (real-mode setup, or a 32-bit boot loader): flat segments,
 * ESI = boot_params, paging off. Switch to long mode on the static page tables. */
        .code32
        .globl  startup_32
startup_32:
        cli
        lgdtl   gdtr
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
        orl     $(CR0_PG | CR0_PE), %eax
        movl    %eax, %cr0
        ljmp    $SEL_KCODE, $from_32
        .code64
from_32:
        movl    %esi, %esi              /* upper halves are undefined after the mode switch */
        jmp     startup_64

/* 64-bit entry (what vmws uses): RSI = boot_params, CS = 0x10, paging on with an identity map
 * of at least the kernel, interrupts off. The loader's GDT, page tables and stack may live in
 * low memory we will reuse, so every one of them is replaced before anything else. */
        .org    ENTRY64_OFFSET
        .globl  startup_64
startup_64:
        cli
        movl    $pml4, %eax
        movq    %rax, %cr3
        lgdt    gdtr(%rip)
        lidt    idtr(%rip)
        movl    $SEL_KDATA, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        xorl    %eax, %eax
        movl    %eax, %fs
        movl    %eax, %gs
        movl    $kernel_stack_top, %esp
        pushq   $SEL_KCODE
        pushq   $1f
        lretq
1:      movl    $SEL_TSS, %eax
        ltr     %ax
        /* FPU/SSE usable by CPL 3 (the kernel itself never touches them). */
        movq    %cr0, %rax
        andl    $~(CR0_EM | CR0_TS), %eax
        orl     $(CR0_MP | CR0_NE), %eax
        movq    %rax, %cr0
        movq    %cr4, %rax
        orl     $(CR4_OSFXSR | CR4_OSXMMEXCPT), %eax
        movq    %rax, %cr4
        /* 8259 pair: vectors 0x20-0x2f, edge triggered; everything masked but COM1. */
        movb    $0x11, %al
        outb    %al, $PIC1_CMD
        outb    %al, $PIC2_CMD
        movb    $VEC_IRQ_BASE, %al
        outb    %al, $PIC1_DATA
        movb    $VEC_IRQ_BASE + 8, %al
        outb    %al, $PIC2_DATA
        movb    $0x04, %al
        outb    %al, $PIC1_DATA
        movb    $0x02, %al
        outb    %al, $PIC2_DATA
        movb    $0x01, %al
        outb    %al, $PIC1_DATA
        outb    %al, $PIC2_DATA
        movb    $~(1 << IRQ_COM1 | 1 << IRQ_KBD | 1 << IRQ_CASCADE) & 0xff, %al
        outb    %al, $PIC1_DATA
        movb    $~(1 << (IRQ_PCI_A - 8) | 1 << (IRQ_PCI_B - 8)) & 0xff, %al
        outb    %al, $PIC2_DATA
        /* Into CPL 3 for good: IF=1, IOPL=0 (port I/O is a syscall), RDI = boot_params. */
        pushq   $(SEL_UDATA | 3)
        pushq   $user_stack_top
        pushq   $(RFLAGS_IF | 0x2)
        pushq   $(SEL_UCODE | 3)
        pushq   $user_start
        movq    %rsi, %rdi
        iretq

/* Interrupt stubs, one 16-byte slot per vector so the IDT below is a constant table.
 * Exceptions push (error code, vector) and report; IRQ stubs are complete handlers. */
        .org    STUBS_OFFSET
        .set    vec, 0
        .rept   32
        .org    STUBS_OFFSET + vec * STUB_SIZE
        .if     vec == 6
        jmp     syscall_trap            /* #UD: ud2 is our syscall instruction */
        .else
        .if     (vec == 8) || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21 || vec == 29 || vec == 30
        .else
        pushq   $0                      /* no CPU error code: push one to keep the frame uniform */
        .endif
        pushq   $vec
        jmp     exception_common
        .endif
        .set    vec, vec + 1
        .endr
        .rept   16
        .org    STUBS_OFFSET + vec * STUB_SIZE
        .if     (vec == VEC_IRQ_BASE + IRQ_COM1) || (vec == VEC_IRQ_BASE + IRQ_KBD)
        jmp     irq_com1                /* keyboard too: both wake console_getc */
        .elseif (vec == VEC_IRQ_BASE + IRQ_PCI_A) || (vec == VEC_IRQ_BASE + IRQ_PCI_B)
        jmp     irq_sound
        .elseif vec == VEC_IRQ_BASE + 7
        iretq                           /* spurious IRQ 7: no EOI */
        .elseif vec == VEC_IRQ_BASE + 15
        pushq   %rax                    /* spurious IRQ 15: EOI the cascade only */
        movb    $PIC_EOI, %al
        outb    %al, $PIC1_CMD
        popq    %rax
        iretq
        .elseif vec > VEC_IRQ_BASE + 7
        pushq   %rax                    /* masked lines; should not fire */
        movb    $PIC_EOI, %al
        outb    %al, $PIC2_CMD
        outb    %al, $PIC1_CMD
        popq    %rax
        iretq
        .else
        pushq   %rax
        movb    $PIC_EOI, %al
        outb    %al, $PIC1_CMD
        popq    %rax
        iretq
        .endif
        .set    vec, vec + 1
        .endr
        .org    STUBS_OFFSET + 48 * STUB_SIZE
        iretq                           /* LAPIC spurious vector 0xff: no EOI */
        .org    STUBS_OFFSET + 49 * STUB_SIZE
        jmp     irq_timer               /* VEC_TIMER */
        .org    STUBS_OFFSET + NUM_STUBS * STUB_SIZE

        .section .ktext, "ax"

/* Stack: vector, error, rip, cs, rflags, rsp, ss. Reports on COM1 and stops this CPU. */
exception_common:
        movq    (%rsp), %rdi
        movq    8(%rsp), %rsi
        movq    16(%rsp), %rdx
        movq    24(%rsp), %rcx
        movq    %cr2, %r8
        movq    40(%rsp), %r9
        andq    $-16, %rsp
        call    guest_panic
1:      cli
        hlt
        jmp     1b

/* COM1 receive: count it where CPL 3 can see it (the program drains the UART itself). If
 * the interrupt came in between the `sti` and the `hlt` of sys_wait_input (a hypervisor that
 * ignores the STI shadow), return past the hlt, so the wakeup is never lost. */
irq_com1:
        incl    irq_serial_count(%rip)
        cmpq    $wait_hlt, (%rsp)
        jne     1f
        incq    (%rsp)
1:      pushq   %rax
        movb    $PIC_EOI, %al
        outb    %al, $PIC1_CMD
        popq    %rax
        iretq

/* LAPIC timer (one-shot, armed by CPL 3 for the status line's clock): wake the input wait
 * like irq_com1 does, then EOI the LAPIC instead of the 8259. */
irq_timer:
        incl    irq_serial_count(%rip)
        cmpq    $wait_hlt, (%rsp)
        jne     1f
        incq    (%rsp)
1:      pushq   %rax
        movl    $LAPIC_EOI_ADDR, %eax
        movl    $0, (%rax)
        popq    %rax
        iretq

/* Sound card (PCI INTx on IRQ 10/11, edge): count it for CPL 3, which acknowledges the card;
 * skip the hlt of a wait it interrupted, like irq_com1. */
irq_sound:
        incl    irq_sound_count(%rip)
        cmpq    $wait_hlt, (%rsp)
        jne     1f
        incq    (%rsp)
1:      pushq   %rax
        movb    $PIC_EOI, %al
        outb    %al, $PIC2_CMD
        outb    %al, $PIC1_CMD
        popq    %rax
        iretq

/* Syscall entry: #UD from `ud2`, on the kernel stack (RSP0) with interrupts off; the frame
 * is rip, cs, rflags, rsp, ss. Any other #UD is a real one and gets reported. */
syscall_trap:
        pushq   %rcx
        movq    8(%rsp), %rcx
        cmpw    $UD2_OPCODE, (%rcx)
        jne     1f
        addq    $2, 8(%rsp)             /* resume after the ud2 */
        popq    %rcx
        cmpq    $NUM_SYSCALLS, %rax
        jae     sys_return
        jmp     *syscall_table(, %rax, 8)
1:      popq    %rcx
        pushq   $0
        pushq   $6
        jmp     exception_common

sys_wait_input:
        cmpl    %edi, irq_serial_count(%rip)
        jne     sys_return
        sti                             /* the STI shadow makes sti+hlt atomic; irq_com1 */
wait_hlt:                               /* covers hypervisors that do not honour it */
        hlt
sys_return:
        iretq

sys_wait_sound:
        cmpl    %edi, irq_sound_count(%rip)
        jne     sys_return
        sti                             /* shadow covers the jmp; irq_sound covers wait_hlt */
        jmp     wait_hlt

sys_halt:
        cli
        hlt
        jmp     sys_halt

sys_in8:
        movl    %edi, %edx
        inb     %dx, %al
        movzbl  %al, %eax
        iretq
sys_in16:
        movl    %edi, %edx
        inw     %dx, %ax
        movzwl  %ax, %eax
        iretq
sys_in32:
        movl    %edi, %edx
        inl     %dx, %eax
        iretq
sys_out8:
        movl    %edi, %edx
        movl    %esi, %eax
        outb    %al, %dx
        iretq
sys_out16:
        movl    %edi, %edx
        movl    %esi, %eax
        outw    %ax, %dx
        iretq
sys_out32:
        movl    %edi, %edx
        movl    %esi, %eax
        outl    %eax, %dx
        iretq

/* console_write(buf, len, burst): wait for THR empty, then `rep outsb` up to BURST bytes (16
 * with a 16550 FIFO): one emulated instruction and one VM exit per burst, not per byte. */
sys_console_write:
        movq    %rdx, %r8
        movq    %rsi, %r9
        movq    %rdi, %rsi
        testq   %r9, %r9
        jz      2f
1:      movl    $COM1_PORT + 5, %edx
        inb     %dx, %al
        testb   $0x20, %al
        jz      1b
        movq    %r8, %rcx
        cmpq    %r9, %rcx
        cmovaq  %r9, %rcx
        subq    %rcx, %r9
        movl    $COM1_PORT, %edx
        rep outsb
        testq   %r9, %r9
        jnz     1b
2:      iretq

/* Secondary CPUs arrive here from the trampoline (trampoline.S) in long mode on our GDT and
 * page tables. Each takes a slot, records its APIC id, counts itself online and sleeps. */
        .globl  ap_entry64
ap_entry64:
        lidt    idtr(%rip)
        movl    $1, %eax
        lock xaddl %eax, ap_next_slot(%rip)
        cmpl    $MAX_CPUS, %eax
        jae     2f
        movl    %eax, %esi
        imull   $AP_STACK_SIZE, %eax, %edx
        leaq    ap_stacks + AP_STACK_SIZE(%rdx), %rsp
        movl    $MSR_APIC_BASE, %ecx    /* our APIC id from the LAPIC itself */
        rdmsr
        andl    $0xfffff000, %eax
        movl    0x20(%rax), %ebx
        shrl    $24, %ebx
        movl    %ebx, cpu_apic_ids(, %rsi, 4)
        lock incl cpus_online(%rip)
2:      cli
        hlt
        jmp     2b

        .data
        .balign 16
/* Descriptors: see layout.h. The TSS base comes in pieces computed by guest.lds. */
        .globl  gdt, gdtr
gdt:
        .quad   0
        .quad   0x00cf9a000000ffff      /* 0x08 code32, DPL 0 */
        .quad   0x00af9a000000ffff      /* 0x10 code64, DPL 0 */
        .quad   0x00cf92000000ffff      /* 0x18 data, DPL 0 */
        .quad   0x00cffa000000ffff      /* 0x20 code32, DPL 3 (sysret layout only) */
        .quad   0x00cff2000000ffff      /* 0x28 data, DPL 3 */
        .quad   0x00affa000000ffff      /* 0x30 code64, DPL 3 */
        .word   tss_end - tss - 1       /* 0x38 64-bit TSS, available */
        .word   guest_tss_base_0_15
        .byte   guest_tss_base_16_23
        .byte   0x89
        .byte   0
        .byte   guest_tss_base_24_31
        .long   0
        .long   0
gdt_end:
        .balign 8
        .word   0, 0, 0
gdtr:
        .word   gdt_end - gdt - 1
        .quad   gdt
        .word   0, 0, 0
idtr:
        .word   idt_end - idt - 1
        .quad   idt

        .balign 8
        .globl  tss
tss:
        .long   0
        .quad   kernel_stack_top        /* RSP0: interrupts and exceptions from CPL 3 */
        .quad   0, 0, 0
        .quad   fault_stack_top         /* IST1: double fault */
        .quad   0, 0, 0, 0, 0, 0
        .quad   0
        .word   0
        .word   tss_end - tss           /* no I/O bitmap: CPL 3 has no ports */
tss_end:

/* IDT: interrupt gates (IF cleared) to the stubs above; #DF on its own stack. */
.macro  idt_gate addr, ist
        .word   (\addr) & 0xffff
        .word   SEL_KCODE
        .byte   \ist, 0x8e
        .word   ((\addr) >> 16) & 0xffff
        .long   0, 0
.endm
        .balign 16
idt:
        .set    vec, 0
        .rept   256
        .if     vec < 48
        idt_gate STUB_ADDR(vec), (vec == 8)
        .elseif vec == VEC_SPURIOUS
        idt_gate STUB_ADDR(48), 0
        .elseif vec == VEC_TIMER
        idt_gate STUB_ADDR(49), 0
        .else
        .quad   0, 0
        .endif
        .set    vec, vec + 1
        .endr
idt_end:

        .section .rodata
        .balign 8
syscall_table:
        .quad   sys_wait_input, sys_halt, sys_in8, sys_in16, sys_in32
        .quad   sys_out8, sys_out16, sys_out32, sys_console_write, sys_wait_sound

        .data
/* State shared with CPL 3 (all memory is user-readable). */
        .balign 4
        .globl  irq_serial_count, irq_sound_count, cpus_online, ap_next_slot, cpu_apic_ids
irq_serial_count:
        .long   0                       /* COM1 interrupts so far */
irq_sound_count:
        .long   0                       /* sound card (IRQ 10/11) interrupts so far */
cpus_online:
        .long   1                       /* the boot CPU + every AP that reached ap_entry64 */
ap_next_slot:
        .long   1
cpu_apic_ids:
        .fill   MAX_CPUS, 4, 0          /* slot 0 is filled in by CPL 3 for the boot CPU */

/* Boot protocol 2.15 kernel_info (offset in the header's kernel_info_offset). */
        .section .rodata
        .balign 4
        .globl  kernel_info
kernel_info:
        .ascii  "LToP"
        .long   kernel_info_end - kernel_info
        .long   kernel_info_end - kernel_info
        .long   0                       /* setup_type_max: no setup_data types used */
kernel_info_end:

        .section .stacks, "aw", @nobits
        .balign 4096
        .skip   KERNEL_STACK_SIZE
kernel_stack_top:
        .skip   4096
fault_stack_top:
ap_stacks:
        .skip   MAX_CPUS * AP_STACK_SIZE

        .section .note.GNU-stack, "", @progbits
