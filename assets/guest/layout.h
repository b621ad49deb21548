/* The built-in guest's fixed numbers: load address, entry offsets, GDT selectors, interrupt
 * vectors and syscall numbers, shared by the real-mode setup, the CPL-0 kernel and the CPL-3
 * program. Only #defines, so assembly (.S) and C include it alike. Everything is identity
 * mapped (virtual == physical), so an address here is both. */
#ifndef VMWS_GUEST_LAYOUT_H
#define VMWS_GUEST_LAYOUT_H

#define KERNEL_BASE 0x100000 /* code32_start and pref_address; not relocatable */
#define ENTRY64_OFFSET 0x200 /* 64-bit entry, as the boot protocol fixes it */
#define STUBS_OFFSET 0x400   /* interrupt stubs: vector v's at KERNEL_BASE+STUBS_OFFSET+16v */
#define STUB_SIZE 16
#define NUM_STUBS 50 /* 0-31 exceptions, 32-47 PIC IRQs, 48 = vector 0xff, 49 = VEC_TIMER */
#define STUB_ADDR(slot) (KERNEL_BASE + STUBS_OFFSET + STUB_SIZE * (slot))

/* GDT. The order is the one syscall/sysret need (kernel CS, SS; user CS32, SS, CS64), kept
 * for hypervisors where those instructions work; we do not use them (see below). */
#define SEL_KCODE32 0x08 /* flat 32-bit code: 32-bit entry and AP trampoline */
#define SEL_KCODE 0x10   /* 64-bit kernel code (the boot protocol's __BOOT_CS) */
#define SEL_KDATA 0x18   /* flat data (__BOOT_DS) */
#define SEL_USYSRET 0x20 /* 32-bit user code, unused (sysret layout) */
#define SEL_UDATA 0x28   /* user data / stack, DPL 3 */
#define SEL_UCODE 0x30   /* 64-bit user code, DPL 3 */
#define SEL_TSS 0x38     /* 16-byte 64-bit TSS descriptor */
#define GDT_ENTRIES 9

/* Interrupts: the 8259 pair is remapped to 0x20-0x2f; IRQ 4 (COM1), IRQ 1 (keyboard) and the
 * PCI INTx lines 10 and 11 (the ES1370 sound card; via the cascade, IRQ 2) are unmasked. */
#define VEC_IRQ_BASE 0x20
#define IRQ_COM1 4
#define IRQ_KBD 1 /* i8042 keyboard: counted with COM1's, it wakes the same wait */
#define IRQ_CASCADE 2
#define IRQ_PCI_A 10
#define IRQ_PCI_B 11
#define VEC_SPURIOUS 0xff /* LAPIC spurious vector */
#define VEC_TIMER 0xf0 /* LAPIC timer, one-shot: wakes the shell to redraw the clock */
#define LAPIC_EOI_ADDR 0xfee000b0

/* Syscalls are `ud2` with the number in rax, arguments in rdi, rsi, rdx and the result in
 * rax; rcx and r8-r11 are clobbered. On our machines' KVM (kvm_pvm, measured) neither
 * `syscall` (runs the LSTAR code still at CPL 3) nor `int $0x80` (#UD) reaches CPL 0 from
 * CPL 3, but exceptions do, so the #UD handler is the syscall entry everywhere. Port I/O goes
 * through the kernel because kvm_pvm also faults CPL-3 in/out whatever IOPL says. */
#define SYS_WAIT_INPUT 0 /* wait(c): sleep until the COM1 IRQ count differs from c */
#define SYS_HALT 1       /* stop this CPU for good (after a fatal user error) */
#define SYS_IN8 2        /* in(port) -> value */
#define SYS_IN16 3
#define SYS_IN32 4
#define SYS_OUT8 5 /* out(port, value) */
#define SYS_OUT16 6
#define SYS_OUT32 7
#define SYS_CONSOLE_WRITE 8 /* write(buf, len, burst): COM1, burst bytes per THR-empty */
#define SYS_WAIT_SOUND 9    /* wait(c): sleep until the sound IRQ count differs from c */
#define NUM_SYSCALLS 10

#define COM1_PORT 0x3f8

/* Secondary CPUs start in real mode at TRAMPOLINE_ADDR (SIPI vector = address >> 12). */
#define TRAMPOLINE_ADDR 0x8000
#define MAX_CPUS 256
#define AP_STACK_SIZE 512

#define KERNEL_STACK_SIZE 8192
#define USER_STACK_SIZE 65536

#define CR0_PE 0x1
#define CR0_MP 0x2
#define CR0_EM 0x4
#define CR0_TS 0x8
#define CR0_NE 0x20
#define CR0_PG 0x80000000
#define CR4_PAE 0x20
#define CR4_OSFXSR 0x200
#define CR4_OSXMMEXCPT 0x400
#define MSR_APIC_BASE 0x1b
#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define RFLAGS_IF 0x200

/* Page-table entry bits. */
#define PTE_P 0x1
#define PTE_W 0x2
#define PTE_U 0x4
#define PTE_PWT 0x8
#define PTE_PCD 0x10
#define PTE_PS 0x80

#endif
