#!/bin/sh
# ext4 on the virtio disk of Debian's own kernel, as a user would check it (issue 13, tests 2
# and 3): mke2fs, write 16 MiB and its checksum, umount, `e2fsck -fn` clean; `reboot -f`
# through vmws's reset path and the data verifies again; then seed 002's experiment on the
# mounted file system - touch snap-before, take, rm it and touch snap-after, revert: snap-before
# is back and snap-after gone - and again across a branch of the snapshot tree; the file system
# is clean after all of it, and every image of the disk passes `qemu-img check`. Three more
# snapshots are taken and reverted to under disk and memory load, with no RCU stall, lockup or
# clocksource complaint (item 4). The guest's wall clock stays within 2 s of the host's across
# the reverts and a suspend/resume into a new VMM process (items 4 and 5), after which the shell
# answers and disk writes go on. Sizes and waits are the least that prove it: in the KVM box the
# guest's md5sum reads about 6 MB/s, and a wait only has to outlast the 2 s the clock may be off.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../linux/lib.sh"
linux_setup lx
# ext4 asks the crypto API for crc32c (metadata checksums) at mount: crc32c_generic.
linux_fixture shell-init.sh virtio_pci,virtio_blk,crc32c_generic,ext4 mke2fs,e2fsck
cpus=1 # test_linux_devices.sh boots Linux on two vCPUs, this one on one
"$vmws" create lx --memory 256M --cpus "$cpus" --disk 128M --kernel "$kernel" --initrd "$initrd" \
    --append "$linux_console" >/dev/null || exit 99
"$vmws" start lx --display none >/dev/null || exit 99
log=$VMWS_HOME/lx/serial.log
vmws_ok() { "$vmws" "$@" >/dev/null; }
clock_ok() { # the guest's wall clock (date +%s) is within 2 s of the host's
    guest "d=\$((\$(date +%s) - $(date +%s))); [ \$d -ge -2 ] && [ \$d -le 2 ]"
}
ready 1 || { tail -n 40 "$log"; exit 1; }
linux_at
echo "  booted $at"

check "mke2fs made ext4 on the virtio disk" guest "/usr/bin/mke2fs -q -F -t ext4 /dev/vda" # not busybox's mke2fs
check "mounted it" guest "mount -t ext4 /dev/vda /mnt"
check "wrote 16 MiB and its checksum" \
    guest "dd if=/dev/urandom of=/mnt/data bs=1M count=16 && md5sum /mnt/data > /mnt/data.md5"
check "synced and unmounted" guest "sync && umount /mnt"
check "e2fsck -fn finds it clean" guest "/usr/bin/e2fsck -fn /dev/vda"
send "reboot -f"
check "reboot -f came back through vmws's reset path" ready 2
check "after the reboot the 16 MiB read back with their checksum" \
    guest "mount -t ext4 /dev/vda /mnt && cd /mnt && md5sum -c data.md5"

# Seed 002 on ext4, with the file system mounted while snapshots are taken and reverted.
check "touch snap-before" guest "touch /mnt/snap-before && sync"
check "the guest's clock is the host's (within 2 s)" clock_ok
check "snapshot a taken" vmws_ok snapshot take lx a
sleep 3 # the revert below goes back 3 s and more (beyond the 2 s allowed): the guest's clock must not
check "rm snap-before, touch snap-after" guest "rm /mnt/snap-before && touch /mnt/snap-after && sync"
check "reverted to a" vmws_ok snapshot revert lx a
check "after the revert snap-before exists" guest "test -e /mnt/snap-before"
check "after the revert snap-after does not" guest "test ! -e /mnt/snap-after"
check "after the revert the guest's clock is the host's again (within 2 s)" clock_ok
check "a branch: touch branch-b" guest "touch /mnt/branch-b && sync"
check "snapshot b taken on it" vmws_ok snapshot take lx b
check "rm branch-b and snap-before" guest "rm /mnt/branch-b /mnt/snap-before && sync"
check "reverted to b" vmws_ok snapshot revert lx b
check "at b: branch-b and snap-before exist" guest "test -e /mnt/branch-b && test -e /mnt/snap-before"
check "reverted to a again" vmws_ok snapshot revert lx a
check "at a: snap-before exists, branch-b and snap-after do not" \
    guest "test -e /mnt/snap-before && test ! -e /mnt/branch-b && test ! -e /mnt/snap-after"
# Take and revert repeatedly under disk and memory load (item 4): a writer on ext4 and a tmpfs
# churner run while three snapshots are taken and reverted to; Linux runs on, clock and all.
# The writer writes 8 MiB made of one random MiB (urandom itself is slow on the box's CPU).
check "disk and memory load started" guest "mkdir -p /run/churn && mount -t tmpfs -o size=48m tmpfs /run/churn && \
    dd if=/dev/urandom of=/run/r1 bs=1M count=1 2>/dev/null && \
    (while [ ! -e /run/stop ]; do for i in 1 2 3 4 5 6 7 8; do cat /run/r1; done >/mnt/load; sync; done &) && \
    (while [ ! -e /run/stop ]; do dd if=/dev/zero of=/run/churn/m bs=1M count=32 2>/dev/null; rm -f /run/churn/m; done &)"
for i in 1 2 3; do
    check "under load: snapshot load$i taken" vmws_ok snapshot take lx "load$i"
    sleep 1
    check "under load: reverted to load$i" vmws_ok snapshot revert lx "load$i"
done
check "under load: the shell answers and the clock is the host's (within 2 s)" clock_ok
# (busybox-static has no pgrep: the loops' command lines in /proc, until none is left)
check "the load stopped" guest "touch /run/stop && for i in \$(seq 1 40); do \
    grep -qa -e 'run/churn/[m]' -e '/run/r[1]' /proc/[0-9]*/cmdline 2>/dev/null || exit 0; sleep 0.25; done; exit 1"
check "under load: no RCU stall, soft lockup or clocksource complaint" \
    guest "! dmesg | grep -E 'rcu.*stall|soft lockup|clocksource.*(unstable|skew)|hung_task'"
# Suspend into the VM's folder, and resume in a new VMM process (issue 13, item 5).
check "suspended" vmws_ok suspend lx
sleep 3 # beyond the 2 s the clock may be off
check "resumed in a new VMM process" vmws_ok resume lx
check "after the resume the shell answers" guest "true"
check "after the resume the guest's clock is the host's (within 2 s)" clock_ok
check "after the resume disk writes go on (4 MiB, synced, read back)" \
    guest "dd if=/dev/urandom of=/mnt/resumed bs=1M count=4 && sync && md5sum /mnt/resumed > /mnt/resumed.md5 && echo 3 > /proc/sys/vm/drop_caches && md5sum -c /mnt/resumed.md5"
check "the data still verifies" guest "cd /mnt && md5sum -c data.md5"
check "unmounted" guest "cd / && umount /mnt"
check "e2fsck -fn finds it clean after the snapshots" guest "/usr/bin/e2fsck -fn /dev/vda"
check "dmesg has no BUG, WARNING, call trace or ext4 error" \
    guest "! dmesg | grep -E 'BUG:|WARNING: CPU|Call Trace|EXT4-fs error|I/O error'"
send "poweroff -f"
for i in $(seq 1 180); do # Linux on one slow vCPU in the box takes a while to power off
    "$vmws" status lx 2>/dev/null | grep -q "^state: *off" && break # (a status that timed out
    sleep 1                                                        # under load is no answer)
done
check "poweroff -f stopped the VM" sh -c "'$vmws' status lx | grep -q '^state: *off'"
for img in "$VMWS_HOME"/lx/*.qcow2 "$VMWS_HOME"/lx/snapshots/*.qcow2; do
    [ -f "$img" ] || continue
    check "qemu-img check $(basename "$img")" qemu-img check -q "$img"
done
echo "---- the guest's console (without the kernel's lines)"
grep -v "^\[" "$log" | tail -n 200
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
