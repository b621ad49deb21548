#!/bin/sh
# Reservation, limit and dynamic memory with Debian's own kernel (issue 15, seeds 001 and 003),
# in one boot. Needs cgroup v2 with the memory controller (the KVM box has it; a host without
# it gets "not available", checked natively by tests/e2e/test_memory_admission.sh).
# - limit: the VM's cgroup has memory.max 128 MiB while the guest fills 96 MiB of tmpfs with
#   random data; the .vmem (on ext4) takes the rest, as the host's swap file:
#   the guest keeps running, memory.current stays under the limit, md5sum -c passes, and
#   vmws mem shows resident < allocated.
# - dynamic memory: min 96 MiB, buffer 50%: as the guest's tmpfs grows the memory it keeps
#   rises (the balloon target falls) with "guest needs N MiB + 50% buffer" shown by vmws mem,
#   and once the guest deletes it, it shrinks back to the min.
# - admission control: with that VM (reservation 128 MiB) running, a VM that reserves more than
#   the host has left (MemTotal - 128 MiB - the host's margin) does not start, and says why.
# Sizes are the least that prove it: in the KVM box every MiB the guest touches first costs
# about 0.1 s, and one the host writes back and reads again several times that (with 320 MiB
# under a 256 MiB limit, filling and checking took 290 s). This guest needs about 30 MiB of
# its own, so its data raise what it keeps from the min to about 1.5 x 130 MiB. It boots with
# init_on_alloc=0 (Debian's kernel zeroes every page it allocates, so inflating the balloon
# would touch each page it is about to give back).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../linux/lib.sh"
linux_setup lm
linux_fixture shell-init.sh virtio_pci,virtio_blk,virtio_balloon
# The .vmem must be on a file system that writes back (the box's /tmp is tmpfs, which would
# need swap, and 9p can neither punch holes nor fault pages in fast): ext4 on a zram block
# device (its compressed pages are the block device's, not the VMM's cgroup's).
trap '"$vmws" kill lm >/dev/null 2>&1; umount "$VMWS_HOME" 2>/dev/null; rm -rf "$VMWS_HOME" "$VMWS_RUNTIME_DIR"
      [ -n "${zdev:-}" ] && echo 1 > /sys/block/$zdev/reset' EXIT
modprobe zram && zdev=zram$(cat /sys/class/zram-control/hot_add) &&
    echo 512M > /sys/block/$zdev/disksize && mkfs.ext4 -q -F /dev/$zdev && mount /dev/$zdev "$VMWS_HOME" ||
    { echo "cannot mount ext4 on a zram device at $VMWS_HOME"; exit 99; }
py=/usr/bin/python3
cg_root=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
[ -n "$cg_root" ] && grep -qw memory "$cg_root/cgroup.controllers" ||
    { echo "no cgroup v2 memory controller here (this test runs in the KVM box)"; exit 99; }
"$vmws" create lm --memory 512M --cpus 1 --disk 16M --kernel "$kernel" --initrd "$initrd" \
    --append "$linux_console init_on_alloc=0" --net none --reservation 128M --limit 128M \
    --dynamic-memory --memory-min 96M --memory-buffer 50 >/dev/null || exit 99
linux_at
echo "  created $at"
"$vmws" start lm --display none >/dev/null || { cat "$VMWS_HOME/lm/vmm.log"; exit 99; }
linux_at
echo "  started $at"
log=$VMWS_HOME/lm/serial.log

mem_json() { "$vmws" mem lm --json; }
field() { $py -c "import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split('.'): v=v[int(k)] if isinstance(v, list) else v[k]
print(v)" "$1"; }
field_mib() { field "$1" | awk '{ printf "%d", $1 / 1048576 }'; }
ge() { [ "$1" -ge "$2" ]; }

ready 1 || { tail -n 40 "$log"; exit 1; }
linux_at
echo "  booted $at; the VMM's log so far:"
head -n 12 "$VMWS_HOME/lm/vmm.log" | sed 's/^/    /'
cg=$(mem_json | field management.cgroup.path)
echo "  the VM's cgroup: $cg"
check "the VMM is in its own cgroup" sh -c "grep -qx '0::${cg#$cg_root}' /proc/$(cat "$VMWS_HOME/lm/vmm.pid")/cgroup"
check "memory.max is the limit (128 MiB)" sh -c "[ \$(cat '$cg/memory.max') = 134217728 ]"
check "memory.min is the reservation (128 MiB)" sh -c "[ \$(cat '$cg/memory.min') = 134217728 ]"
check "vmws status shows the reservation, limit and cgroup" \
    sh -c "'$vmws' status lm | grep -q 'reservation *128.0 MiB' && '$vmws' status lm | grep -q 'memory.current of $cg'"

# ---- admission control, while lm (reservation 128 MiB) runs ----
total=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
margin=$((total / 10))
[ $margin -lt 256 ] && margin=256
[ $margin -gt 2048 ] && margin=2048
want=$(((total - margin - 128 + 64) / 2 * 2))
"$vmws" create big --memory "$((want + 64))M" --reservation "${want}M" --net none >/dev/null || exit 99
out=$("$vmws" start big 2>&1)
echo "$out" | grep "not started" | head -n 1 | sed 's/^ */  /'
check "a VM reserving $want MiB (the host has $total MiB, lm reserves 128, margin $margin) does not start" \
    sh -c "! '$vmws' status big | grep -q '^state: *running'"
check "the refusal says why, with the numbers" \
    sh -c "echo '$out' | grep -q 'its reservation of $want MiB cannot be met: the host has [0-9]* MiB of RAM, 1 running VM(s) reserve 128 MiB'"
"$vmws" delete big >/dev/null 2>&1

# ---- dynamic memory: the guest's demand rises ----
wait_keep() { # wait_keep OP MIB: until what the guest keeps (RAM - target) is OP MIB
    for i in $(seq 1 240); do
        keep=$(mem_json | $py -c "import json,sys
m=json.load(sys.stdin)
print((m['vm']['configured'] - m['balloon']['target']) // 1048576)")
        [ "$keep" "$1" "$2" ] && return 0
        sleep 0.5
    done
    echo "  the guest keeps $keep MiB, not $1 $2"
    return 1
}
check_shown "at first the guest keeps its min, 96 MiB" wait_keep -eq 96
mem_json | field management.policy.reason | sed 's/^/  reason: /'
keep0=$keep
check "the guest makes a tmpfs" guest "mkdir -p /t && mount -t tmpfs -o size=128M tmpfs /t"
check "the guest makes 4 MiB of random data" guest "dd if=/dev/urandom of=/r bs=1M count=4"
for i in 1 2 3 4; do # 96 MiB of it, 24 MiB at a time, the policy following
    guest "for j in 0 1 2 3 4 5; do cat /r; done > /t/f$i && echo \$i\$i\$i >> /t/f$i" ||
        { echo "FAIL: fill $i"; fails=$((fails + 1)); }
    sleep 2
done
check "the guest keeps the data's checksums" guest "md5sum /t/f* > /sums"
check_shown "with 96 MiB in tmpfs the guest keeps more (over 160 MiB)" wait_keep -ge 160
keep1=$keep
reason=$(mem_json | field management.policy.changes.0.reason)
echo "  kept $keep0 -> $keep1 MiB; the last change: $reason"
check "the reason is the guest's demand and the buffer" sh -c "echo '$reason' | grep -Eq '^guest needs [0-9]+ MiB \+ 50% buffer'"
check "vmws mem shows the change with its reason" sh -c "'$vmws' mem lm | grep -Eq 'keeps +[0-9.]+ MiB  guest needs [0-9]+ MiB \+ 50% buffer'"

# ---- the limit: the host holds at most 128 MiB, the .vmem the rest ----
cur=$(($(cat "$cg/memory.current") / 1048576)) peak_events=$(awk '$1 == "max" { print $2 }' "$cg/memory.events")
alloc=$(mem_json | field_mib vm.allocated) res=$(mem_json | field_mib vm.resident)
echo "  memory.current $cur MiB (limit 128), memory.max hit $peak_events times; .vmem allocated $alloc MiB, resident $res MiB"
check "memory.current stays under the limit" ge 128 "$cur"
check "the .vmem holds what the guest filled (allocated >= 100 MiB)" ge "$alloc" 100
check "resident < allocated: the rest is written back to the .vmem" ge "$alloc" $((res + 32))
check "the guest keeps running and its data verifies (md5sum -c)" guest "md5sum -c /sums"
check "vmws mem --json: cgroup memory.current under the limit" sh -c "[ \$('$vmws' mem lm --json | $py -c 'import json,sys; print(json.load(sys.stdin)[\"management\"][\"cgroup\"][\"current\"])') -le 134217728 ]"

# ---- dynamic memory: the demand falls ----
check "the guest deletes its tmpfs data" guest "rm /t/f* && umount /t"
check_shown "then it keeps its min again (96 MiB)" wait_keep -eq 96
mem_json | field management.policy.changes.0.reason | sed 's/^/  reason: /'
check "the guest still answers" guest "true"
"$vmws" mem lm | sed -n '/^Reservation/,$p'
check "dmesg has no BUG, WARNING or call trace" guest "! dmesg | grep -E 'BUG:|WARNING: CPU|Call Trace'"
send "poweroff -f"
for i in $(seq 1 120); do
    "$vmws" status lm 2>/dev/null | grep -q "^state: *running" || break
    sleep 1
done
check "the VM's cgroup is gone once it powered off" sh -c "sleep 1; [ ! -d '$cg' ]"
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
