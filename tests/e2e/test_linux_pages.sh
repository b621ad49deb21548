#!/bin/sh
# Page sharing and large pages with Debian's own kernel (issue 15), in the KVM box:
# - hugetlbfs: with huge pages reserved (/proc/sys/vm/nr_hugepages), a VM on
#   --memory-backend hugetlbfs boots, HugePages_Free drops as the guest touches its RAM, and
#   the guest works (a 32 MiB tmpfs file verifies with md5sum -c).
# - KSM: two 128 MiB VMs from the same kernel and initramfs on the anon backend with
#   memory_sharing = yes, KSM switched on (/sys/kernel/mm/ksm/run): `vmws mem` reports merged
#   pages for both, and the dashboard (in tmux) shows them in the Memory panel's huge/KSM row
#   and the overcommit, reserved and balloon sums in the Host panel.
# Sizes are the least that prove it: in the KVM box every MiB a guest touches first costs about
# 0.1 s, and KSM scans every page the two VMs touched.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../linux/lib.sh"
linux_setup hp
linux_fixture shell-init.sh virtio_pci,virtio_blk,virtio_balloon
py=/usr/bin/python3
tsock=vmws-pages-$$
ksm=/sys/kernel/mm/ksm
nr=/proc/sys/vm/nr_hugepages
old_nr=$(cat $nr 2>/dev/null || echo 0)
old_run=$(cat $ksm/run 2>/dev/null || echo 0)
trap 'tmux -L "$tsock" kill-server 2>/dev/null; for n in zh ka kb; do "$vmws" kill $n >/dev/null 2>&1; done
      echo "$old_nr" > $nr; echo "$old_run" > $ksm/run; rm -rf "$VMWS_HOME" "$VMWS_RUNTIME_DIR"' EXIT
field() { $py -c "import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split('.'): v=v[k]
print(v)" "$1"; }
hp_free() { awk '/^HugePages_Free:/ { print $2 }' /proc/meminfo; }
ge() { [ "$1" -ge "$2" ]; }
make_vm() { # make_vm NAME BACKEND MEMORY
    "$vmws" create "$1" --memory "$3" --cpus 1 --disk 16M --kernel "$kernel" --initrd "$initrd" \
        --append "$linux_console" --net none --memory-backend "$2" >/dev/null || exit 99
}
boot() { # boot NAME: starts it; $log is its serial log, the shell helpers talk to it
    linux_vm=$1 log=$VMWS_HOME/$1/serial.log linux_n=0
    "$vmws" start "$1" --display none >/dev/null || { tail -n 20 "$VMWS_HOME/$1/vmm.log"; exit 1; }
    ready 1 || { tail -n 40 "$log"; exit 1; }
    linux_at
    echo "  $1 booted $at"
}
poweroff() {
    send "poweroff -f"
    for i in $(seq 1 60); do
        "$vmws" status "$linux_vm" 2>/dev/null | grep -q "^state: *running" || return 0
        sleep 1
    done
}

# ---- hugetlbfs ----
echo 160 > $nr || { echo "cannot reserve huge pages"; exit 99; }
total=$(awk '/^HugePages_Total:/ { print $2 }' /proc/meminfo)
echo "  HugePages_Total $total (2 MiB each)"
[ "$total" -ge 128 ] || { echo "only $total huge pages could be reserved"; exit 99; }
make_vm zh hugetlbfs 256M
# what the guest frees stays with it: HugePages_Free then only falls
sed -i "s/^free_page_reporting = yes/free_page_reporting = no/" "$VMWS_HOME/zh/vm.conf"
f0=$(hp_free)
boot zh
f1=$(hp_free)
check "the guest fills and checks 32 MiB of tmpfs" \
    guest "mkdir -p /t && mount -t tmpfs tmpfs /t && dd if=/dev/urandom of=/t/r bs=1M count=4 && for i in 1 2 3 4 5 6 7 8; do cat /t/r; done > /t/f && md5sum /t/f > /s && md5sum -c /s"
f2=$(hp_free)
echo "  HugePages_Free: $f0 before, $f1 after the boot, $f2 after the guest filled 32 MiB"
check "the boot took huge pages (HugePages_Free fell by >= 8)" ge $((f0 - f1)) 8
# (the guest reuses RAM it touched while booting, already in huge pages: the fill takes fewer)
check "the fill took more, and the boot and fill together >= 40 (80 MiB)" \
    sh -c "[ $((f1 - f2)) -gt 0 ] && [ $((f0 - f2)) -ge 40 ]"
check "vmws mem says hugetlbfs and counts them allocated" \
    sh -c "[ \$('$vmws' mem zh --json | $py -c 'import json,sys; m=json.load(sys.stdin); print(int(m[\"backend\"] == \"hugetlbfs\" and m[\"vm\"][\"allocated\"] >= ($f0 - $f2) * 2 * 1048576 * 9 // 10))') = 1 ]"
check "the guest still answers" guest "md5sum -c /s"
poweroff
echo 0 > $nr

# ---- KSM: two VMs from the same kernel and initramfs ----
for n in ka kb; do
    make_vm $n anon 128M
    sed -i 's/^memory_sharing = no/memory_sharing = yes/' "$VMWS_HOME/$n/vm.conf"
done
boot ka
boot kb
# KSM on once both have booted (its scans took the box's one CPU from the boots: 79 s for one)
echo 1 > $ksm/run && echo 2000 > $ksm/pages_to_scan && echo 20 > $ksm/sleep_millisecs ||
    { echo "cannot switch KSM on"; exit 99; }
merged() { "$vmws" mem "$1" --json | field vm.ksm_merged | awk '{ printf "%d", $1 / 1048576 }'; }
wait_merged() {
    for i in $(seq 1 120); do
        a=$(merged ka) b=$(merged kb)
        [ "$a" -ge 16 ] && [ "$b" -ge 16 ] && return 0
        sleep 1
    done
    return 1
}
if wait_merged; then echo "ok: KSM merged >= 16 MiB of each VM (ka $a MiB, kb $b MiB)"; else
    echo "FAIL: KSM merged ka $a MiB, kb $b MiB (pages_sharing $(cat $ksm/pages_sharing))"; fails=$((fails + 1)); fi
check "vmws mem shows the KSM row" sh -c "'$vmws' mem ka | grep -Eq '^  ksm_merged +[1-9][0-9]*\.[0-9]'"

# The dashboard: the Memory panel of the selected VM (the first in the list, ka) and the Host
# panel.
tmux -L "$tsock" -f /dev/null new-session -d -x 160 -y 50 \
    "env VMWS_HOME='$VMWS_HOME' VMWS_RUNTIME_DIR='$VMWS_RUNTIME_DIR' LANG=C.UTF-8 '$vmws'; sleep 60" || exit 99
screen=
shown() {
    for i in $(seq 1 30); do
        screen=$(tmux -L "$tsock" capture-pane -p)
        echo "$screen" | grep -Eq "huge/KSM +[0-9.]+[BKMG]/[1-9][0-9.]*M" &&
            echo "$screen" | grep -Eq "reserved 0B, balloons|resv 0B, balloons" && return 0
        sleep 1
    done
    return 1
}
if shown; then
    echo "ok: the dashboard shows KSM's merged pages and the host's sums"
    echo "$screen" | grep -E "huge/KSM|overcommit" | sed 's/^/  /'
else
    echo "FAIL: the dashboard does not show them"; echo "$screen"; fails=$((fails + 1))
fi
tmux -L "$tsock" kill-server 2>/dev/null # (ka and kb: the exit trap kills them)
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
