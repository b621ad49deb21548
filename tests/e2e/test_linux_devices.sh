#!/bin/sh
# Debian's own kernel (linux-image-amd64) on vmws, judged by what Linux says on the serial
# console (no kernel command line workarounds): it finds the PCI host bridge through the DSDT
# and routes PCI interrupts through its _PRT (the virtio disk appears and reads), binds atkbd
# and psmouse behind the i8042 (one interrupt per byte; no "Keylock active"), gets MTRRs (so
# PAT is on), and prints no BUG, WARNING or call trace. The guest is a busybox initramfs
# built from Debian's packages (tests/linux/fixture.py).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../linux/lib.sh"
linux_setup lx
linux_fixture devices-init.sh virtio_pci,virtio_blk,psmouse
"$vmws" create lx --memory 256M --cpus "$cpus" --disk 64M --kernel "$kernel" --initrd "$initrd" \
    --append "console=ttyS0" >/dev/null || exit 99
"$vmws" start lx --display none >/dev/null || exit 99
log=$VMWS_HOME/lx/serial.log
for i in $(seq 1 300); do
    grep -q "devices: done" "$log" 2>/dev/null && break
    sleep 1
done
sleep 1
cat "$log"
echo "---- checks (after ${i}s)"
has() { grep -q -- "$1" "$log"; }
hasnt() { ! grep -q -- "$1" "$log"; }
hasnt_re() { ! grep -qE -- "$1" "$log"; }
check "the guest ran its init to the end" has "devices: done"
check "Linux runs on all $cpus vCPU(s) (nproc)" has "devices: nproc $cpus"
check "Linux found the PCI host bridge in the DSDT" has "ACPI: PCI Root Bridge \[PCI0\]"
check "PCI interrupts are routed by _PRT" hasnt "can't derive routing"
check "the virtio disk has 64 MiB" has "devices: vda sectors 131072"
check "the virtio disk reads" has "devices: vda read 1048576 bytes"
check "atkbd bound the keyboard" has "devices: input N: Name=\"AT Translated Set 2 keyboard\""
check "psmouse bound the mouse" grep -q "devices: input N: Name=\".*PS/2.*Mouse\"" "$log"
check "no keylock warning" hasnt "Keylock active"
check "MTRRs are on, and PAT with them" has "x86/PAT: Configuration \[0-7\]: WB  WC"
check "no kernel BUG, WARNING or call trace" hasnt_re "BUG:|WARNING: CPU|Call Trace"
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
