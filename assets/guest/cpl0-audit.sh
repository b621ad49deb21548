#!/bin/sh
# Build-time check that the guest's CPL-0 code avoids what our machines' CPL-0 emulator rejects
# or what would need FPU/SSE state in the kernel: x87 (incl. fwait), SSE/MMX registers, popcnt,
# lzcnt/tzcnt, rdtscp, xgetbv, xsave/xrstor, ldmxcsr. It disassembles every CPL-0 code range of
# the linked ELF in its own mode (16/32/64-bit) and the compiled kernel C objects, and checks
# that kernel C calls nothing outside itself. Usage: cpl0-audit.sh OBJDUMP NM ELF KERNEL_C_OBJS...
set -eu
objdump=$1
nm=$2
elf=$3
shift 3

bad='^(f[a-z0-9]*|wait|popcnt[a-z]*|lzcnt[a-z]*|tzcnt[a-z]*|rdtscp|xgetbv|xsetbv|xsave[a-z0-9]*|xrstor[a-z0-9]*|ldmxcsr|stmxcsr|movnti[a-z]*|emms)( |$)|%[xyz]?mm[0-9]'
status=0

addr() {
    a=$("$nm" "$elf" | awk -v s="$1" '$3 == s { print "0x" $1; exit }')
    if [ -z "$a" ]; then
        echo "cpl0-audit: symbol $1 not found in $elf" >&2
        exit 1
    fi
    echo "$a"
}

# check LABEL MODE [objdump args...]: disassemble, report forbidden instructions.
check() {
    label=$1
    mode=$2
    shift 2
    found=$("$objdump" -d -M "$mode" "$@" | awk -F'\t' 'NF >= 3 { print $3 }' | grep -E "$bad" || true)
    if [ -n "$found" ]; then
        echo "cpl0-audit: forbidden CPL-0 instructions in $label:" >&2
        echo "$found" | sed 's/^/    /' >&2
        status=1
    fi
}

range() {
    check "$1" "$2" --start-address="$(addr "$3")" --stop-address="$(addr "$4")" "$elf"
}

range "real-mode boot sector" i8086 bootsect bootsect_msg
range "real-mode setup" i8086 start_of_setup setup_gdt
range "32-bit entry" i386 startup_32 from_32
range "64-bit kernel" x86-64 from_32 trampoline_start
range "AP trampoline (16-bit)" i8086 trampoline_start tramp32
range "AP trampoline (32-bit)" i386 tramp32 tramp_gdtr

for obj in "$@"; do
    check "$obj" x86-64 "$obj"
    undef=$("$nm" -u "$obj")
    if [ -n "$undef" ]; then
        echo "cpl0-audit: kernel object $obj calls outside the kernel:" >&2
        echo "$undef" | sed 's/^/    /' >&2
        status=1
    fi
done
exit $status
