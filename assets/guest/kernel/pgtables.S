/* The guest's page tables, emitted by the assembler so CPL 0 never loops to build them:
 * an identity map of 0-4 GiB, all user-accessible (U=1), 4 KiB pages in the first 2 MiB (page
 * 0 left out to catch null pointers) and 2 MiB pages above; the IOAPIC/LAPIC pages uncached.
 * RAM above 4 GiB is mapped later by CPL 3 (user/memory.c) by adding entries to the PDPT. */
#include "assets/guest/layout.h"

#define TABLE (PTE_P | PTE_W | PTE_U)
#define LARGE (PTE_P | PTE_W | PTE_U | PTE_PS)

        .section .pgtables, "aw"
        .balign 4096
        .globl  pml4, pdpt
pml4:
        .quad   pdpt + TABLE
        .fill   511, 8, 0
pdpt:
        .quad   pd + TABLE
        .quad   pd + 0x1000 + TABLE
        .quad   pd + 0x2000 + TABLE
        .quad   pd + 0x3000 + TABLE
        .fill   508, 8, 0
pd:
        .quad   pt0 + TABLE
        .set    i, 1
        .rept   4 * 512 - 1
        .if     (i << 21) == 0xfec00000 || (i << 21) == 0xfee00000
        .quad   (i << 21) + LARGE + PTE_PCD + PTE_PWT
        .else
        .quad   (i << 21) + LARGE
        .endif
        .set    i, i + 1
        .endr
pt0:
        .quad   0
        .set    i, 1
        .rept   511
        .quad   (i << 12) + TABLE
        .set    i, i + 1
        .endr

        .section .note.GNU-stack, "", @progbits
