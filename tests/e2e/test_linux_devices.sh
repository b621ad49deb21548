#!/bin/sh
# Debian's own kernel (linux-image-amd64) on vmws, judged by what Linux says on the serial
# console (no kernel command line workarounds): it finds the PCI host bridge through the DSDT
# and routes PCI interrupts through its _PRT (the virtio disk appears and reads), binds atkbd
# and psmouse behind the i8042 (one interrupt per byte; no "Keylock active"), gets MTRRs (so
# PAT is on), and prints no BUG, WARNING or call trace. Then QEMU boots the same kernel and
# initramfs in the same place (KVM, or the box's KVM): the two consoles are printed side by side
# as what each guest found, and no kernel complaint may be ours alone. The guest is a busybox
# initramfs built from Debian's packages (tests/linux/fixture.py).
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

# QEMU, same kernel, initramfs, memory, vCPUs and disk size, same place. (Its default CPU model:
# with -cpu host, QEMU 7.2 in the box ends the guest's init in a call trace.) Its console has
# only the kernel's warnings and worse ($linux_console): all that the comparison below reads
# (its boot in the box: 28 s instead of 39 s with every message).
echo "---- QEMU: the same kernel and initramfs"
qlog=$VMWS_HOME/qemu-serial.log
truncate -s 64M "$VMWS_HOME/qemu-disk.raw"
timeout 300 qemu-system-x86_64 -M pc -accel kvm -m 256M -smp "$cpus" -nodefaults -no-reboot \
    -display none -kernel "$kernel" -initrd "$initrd" -append "$linux_console" \
    -drive "file=$VMWS_HOME/qemu-disk.raw,format=raw,if=virtio" -serial "file:$qlog" \
    >"$VMWS_HOME/qemu.out" 2>&1
echo "QEMU exited with $? ($(cat "$VMWS_HOME/qemu.out"))"
check "QEMU ran the same init to the end" grep -q "devices: done" "$qlog"
grep -q "devices: done" "$qlog" || { echo "---- QEMU's console"; cat "$qlog"; }
# What each found, side by side: the init's own lines.
sed -n 's/^devices: //p' "$qlog" >"$VMWS_HOME/found.qemu"
sed -n 's/^devices: //p' "$log" >"$VMWS_HOME/found.vmws"
echo "what Linux found: vmws | QEMU"
paste -d '|' "$VMWS_HOME/found.vmws" "$VMWS_HOME/found.qemu" | sed 's/^/    /'
# Kernel complaints (WARN, BUG, Oops and their traces; not a mitigation notice's "WARNING: See"),
# without timestamps, CPU numbers and PIDs: ours must be a subset of QEMU's.
complaints() { sed -n 's/^\[ *[0-9.]*\] //p' "$1" | grep -E 'BUG:|WARNING: CPU|Call Trace|RIP:|Oops' |
    sed 's/CPU: [0-9]* PID: [0-9]*/CPU: N PID: N/; s/ at .*//' | sort -u; }
complaints "$log" >"$VMWS_HOME/complaints.vmws"
complaints "$qlog" >"$VMWS_HOME/complaints.qemu"
echo "kernel complaints: vmws $(wc -l <"$VMWS_HOME/complaints.vmws"), QEMU $(wc -l <"$VMWS_HOME/complaints.qemu")"
cat "$VMWS_HOME/complaints.qemu" | sed 's/^/    QEMU: /'
comm -23 "$VMWS_HOME/complaints.vmws" "$VMWS_HOME/complaints.qemu" >"$VMWS_HOME/ours-only"
sed 's/^/    vmws only: /' "$VMWS_HOME/ours-only"
check "no kernel complaint that QEMU's boot does not also show" test ! -s "$VMWS_HOME/ours-only"
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
