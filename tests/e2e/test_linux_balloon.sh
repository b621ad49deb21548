#!/bin/sh
# virtio-balloon with Debian's own kernel (issue 15): Linux's virtio_balloon binds to our device,
# and a page the guest gives back leaves the host for real, as the .vmem's allocated blocks
# (stat %b) show. Inflating by 128 MiB (free page reporting paused in the guest, so the balloon
# alone acts) frees at least 122 MiB of the file and the guest's MemAvailable falls; deflating
# lets the guest fill that much tmpfs again. With no target, free page reporting returns a
# 128 MiB tmpfs the guest fills and deletes within 10 s. `vmws mem --json`'s guest figures
# match the guest's /proc/meminfo within 5%. A snapshot taken with the balloon inflated stores
# the punched pages as zero entries, not data (its size on disk says so), a revert brings the
# guest's tmpfs data and the balloon back, and so does a suspend/resume.
# Sizes are the least that prove it (a 320 MiB guest): in the KVM box every MiB the guest
# touches first costs about 0.1 s. The guest boots with init_on_alloc=0: Debian's kernel zeroes
# every page it allocates, so inflating the balloon would first touch each page it gives back.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../linux/lib.sh"
linux_setup lb
linux_fixture shell-init.sh virtio_pci,virtio_blk,virtio_balloon
cpus=1
"$vmws" create lb --memory 320M --cpus "$cpus" --disk 16M --kernel "$kernel" --initrd "$initrd" \
    --append "$linux_console init_on_alloc=0" >/dev/null || exit 99
"$vmws" start lb --display none >/dev/null || exit 99
log=$VMWS_HOME/lb/serial.log
vmem=$VMWS_HOME/lb/lb.vmem
py=/usr/bin/python3

alloc_mib() { stat -c '%b %B' "$vmem" | awk '{ printf "%d", $1 * $2 / 1048576 }'; }
# gval VAR CMD: sets VAR to the one-line output of CMD in the guest (through the serial log).
# Not in a $(...): guest counts its commands in this shell.
gval() {
    guest "echo \"gval=\$($2)\"" >/dev/null || return 1
    gval_v=$(sed -n "s/^gval=//p" "$log" | tail -n 1 | tr -d '\r')
    eval "$1=\$gval_v"
}
# meminfo_mib VAR FIELD: a /proc/meminfo field of the guest, in MiB.
meminfo_mib() { gval "$1" "awk '/^$2:/ { print int(\$2 / 1024) }' /proc/meminfo"; }
# jq-like: a field of `vmws mem --json` (a dotted path), in MiB when it is a byte count.
mem_json() { "$vmws" mem lb --json; }
field() { $py -c "import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split('.'): v=v[k]
print(v)" "$1"; }
field_mib() { field "$1" | awk '{ printf "%d", $1 / 1048576 }'; }
# wait_actual MIB: waits up to 120 s until the balloon holds MIB.
wait_actual() {
    for i in $(seq 1 240); do
        [ "$(mem_json | field_mib balloon.actual)" = "$1" ] && return 0
        sleep 0.5
    done
    echo "the balloon holds $(mem_json | field_mib balloon.actual) MiB, not $1"
    return 1
}
ge() { [ "$1" -ge "$2" ]; }
reporting_order=/sys/module/page_reporting/parameters/page_reporting_order

ready 1 || { tail -n 40 "$log"; exit 1; }
linux_at
echo "  booted $at"
check "Linux's virtio_balloon bound the device" \
    guest "ls /sys/bus/virtio/drivers/virtio_balloon | grep -q '^virtio'"
check "vmws mem --json says the driver is bound" sh -c "'$vmws' mem lb --json | grep -q '\"driver\": true'"
check "vmws mem shows the guest's side" sh -c "'$vmws' mem lb | grep -q '^Guest (virtio-balloon)'"

# ---- the guest's statistics beside its /proc/meminfo ----
# The three figures read at once in the guest, then vmws's; again (at most 5 times) while
# they differ: right after the boot Linux is still handing RAM to its allocator (MemFree rose
# by 126 MiB within the seconds of one comparison in the box).
stats_match() {
    for try in 1 2 3 4 5; do
        gval gm "grep -E '^Mem(Total|Free|Available):' /proc/meminfo | tr -s ' ' | cut -d' ' -f2 | tr '\n' ' '"
        j=$(mem_json) || return 1
        set -- $gm
        ok=1
        for f in MemTotal:total:$1 MemFree:free:$2 MemAvailable:available:$3; do
            g=$((${f##*:} / 1024)) f=${f%:*}
            h=$(echo "$j" | field_mib "balloon.guest.${f#*:}")
            echo "  ${f%%:*}: guest /proc/meminfo $g MiB, vmws mem $h MiB"
            awk -v g="$g" -v h="$h" 'BEGIN { d = g - h; if (d < 0) d = -d; exit !(g > 0 && d <= g * 0.05) }' || ok=0
        done
        [ $ok = 1 ] && return 0
        sleep 1
    done
    return 1
}
check_shown "vmws mem --json's guest figures match its /proc/meminfo within 5%" stats_match

# ---- inflate and deflate, free page reporting paused so that the balloon alone acts ----
check "free page reporting paused in the guest (page_reporting_order above MAX_ORDER)" \
    guest "echo 11 > $reporting_order"
gval order "cat $reporting_order"
echo "  page_reporting_order: $order"
meminfo_mib avail0 MemAvailable
touch_mib=$((avail0 - 32))
check "the guest touched $touch_mib MiB (dd through a buffer that big)" \
    guest "dd if=/dev/zero of=/dev/null bs=${touch_mib}M count=1"
a0=$(alloc_mib)
meminfo_mib avail1 MemAvailable
echo "  .vmem allocated: $a0 MiB; MemAvailable $avail1 MiB"
check "the .vmem holds what the guest touched (>= $((touch_mib - 16)) MiB allocated)" ge "$a0" $((touch_mib - 16))
check "vmws mem --balloon 128M" "$vmws" mem lb --balloon 128M
check_shown "the balloon holds 128 MiB" wait_actual 128
a1=$(alloc_mib)
meminfo_mib avail2 MemAvailable
echo "  inflated: .vmem allocated $a0 -> $a1 MiB; MemAvailable $avail1 -> $avail2 MiB;" \
    "vmws mem: $(mem_json | field_mib balloon.given_back_bytes) MiB given back"
check "inflating freed at least 122 MiB of the .vmem" ge $((a0 - a1)) 122
check "the guest's MemAvailable fell by at least 110 MiB" ge $((avail1 - avail2)) 110
check "vmws mem shows the target and what the guest gave" \
    sh -c "'$vmws' mem lb | grep -q 'balloon target *128.0' && '$vmws' mem lb | grep -q 'balloon actual *128.0'"
# The dashboard (in tmux) shows the same: the balloon, the guest's own view, the host's sum.
tsock=vmws-lb-$$
tmux -L "$tsock" -f /dev/null new-session -d -x 160 -y 50 \
    "env VMWS_HOME='$VMWS_HOME' VMWS_RUNTIME_DIR='$VMWS_RUNTIME_DIR' LANG=C.UTF-8 '$vmws'; sleep 600" || exit 99
trap 'tmux -L "$tsock" kill-server 2>/dev/null; "$vmws" kill lb >/dev/null 2>&1; rm -rf "$VMWS_HOME" "$VMWS_RUNTIME_DIR"' EXIT
# dash_shows REGEX...: every one on the dashboard's screen within 30 s; dash_avail: the guest's
# MemAvailable the Memory panel shows, in MiB.
dash_shows() {
    for i in $(seq 1 30); do
        screen=$(tmux -L "$tsock" capture-pane -p) ok=1
        for re in "$@"; do echo "$screen" | grep -Eq "$re" || ok=0; done
        [ $ok = 1 ] && { echo "$screen" | grep -E "balloon|guest says" | sed 's/^/  /'; return 0; }
        sleep 1
    done
    echo "$screen"
    return 1
}
dash_avail() {
    tmux -L "$tsock" capture-pane -p | sed -n 's/.*guest says.*available \([0-9.]*\)\([KMG]\).*/\1 \2/p' |
        awk '{ printf "%d", $1 * ($2 == "G" ? 1024 : $2 == "K" ? 1 / 1024 : 1) }'
}
check_shown "the dashboard shows the balloon inflated, the guest's view and the host's balloons" \
    dash_shows "asked back 128M, given 128M" "guest says +uses [0-9.]+[KMG] of" "balloons 128M"
dash_avail_inflated=$(dash_avail)
check "vmws mem --balloon 0 deflates" "$vmws" mem lb --balloon 0
check "the balloon is empty" wait_actual 0
check_shown "the dashboard shows the balloon empty" dash_shows "asked back 0B, given 0B" "balloons 0B"
for i in $(seq 1 30); do # the guest's next statistics
    dash_avail_deflated=$(dash_avail)
    [ "${dash_avail_deflated:-0}" -ge $((${dash_avail_inflated:-999999} + 100)) ] && break
    sleep 1
done
echo "  the dashboard's guest available: ${dash_avail_inflated:-?} MiB inflated, ${dash_avail_deflated:-?} MiB deflated"
check "the dashboard's guest view changed with it (available up by at least 100 MiB)" \
    ge "${dash_avail_deflated:-0}" $((${dash_avail_inflated:-999999} + 100))
tmux -L "$tsock" kill-server 2>/dev/null
fill=$((avail1 - 96))
check "the guest uses it again: a ${fill} MiB tmpfs file (more than fitted inflated)" \
    guest "mkdir -p /t && mount -t tmpfs -o size=${fill}M tmpfs /t && dd if=/dev/zero of=/t/fill bs=1M count=$fill"

# ---- free page reporting, with no target ----
check "free page reporting on again (pageblock order)" guest "echo 9 > $reporting_order"
check "the guest deleted that file" guest "rm /t/fill"
# What it freed is reported meanwhile (Linux waits 2 s, then reports in rounds): until the
# .vmem's allocated size has not moved for 2 s, at most 10 s.
linux_at
b0=$(alloc_mib) t_rm=$linux_cs t_same=$linux_cs
while [ $((linux_cs - t_rm)) -lt 1000 ]; do # (centiseconds of the box's uptime)
    sleep 0.5
    b=$(alloc_mib)
    linux_at
    [ "$b" != "$b0" ] && b0=$b t_same=$linux_cs
    [ $((linux_cs - t_same)) -ge 200 ] && [ $((linux_cs - t_rm)) -ge 300 ] && break
done
check "the guest filled 128 MiB of tmpfs" guest "dd if=/dev/zero of=/t/fill bs=1M count=128"
b1=$(alloc_mib)
echo "  .vmem allocated: $b0 MiB before, $b1 MiB filled"
check "the fill is in the .vmem (>= 100 MiB more allocated)" ge $((b1 - b0)) 100
reported() {
    guest "rm /t/fill" || return 1
    t0=$(date +%s.%N)
    while :; do
        b2=$(alloc_mib) t=$(awk -v t0="$t0" -v t="$(date +%s.%N)" 'BEGIN { printf "%.1f", t - t0 }')
        [ $((b1 - b2)) -ge 100 ] && { echo "  reported: $b1 -> $b2 MiB allocated, $t s after the rm"; return 0; }
        awk -v t="$t" 'BEGIN { exit !(t > 10) }' && { echo "  after $t s still $b2 MiB allocated"; return 1; }
        sleep 0.25
    done
}
check "the target is 0" sh -c "'$vmws' mem lb --json | grep -q '\"target\": 0'"
check_shown "rm: free page reporting gave at least 100 MiB back within 10 s" reported

# ---- snapshots keep the balloon and store punched pages as zero entries, not data ----
check "the guest keeps 4 MiB of random data in tmpfs with its checksum" \
    guest "dd if=/dev/urandom of=/t/keep bs=1M count=4 && md5sum /t/keep > /keep.md5"
check "vmws mem --balloon 128M again" "$vmws" mem lb --balloon 128M
check "the balloon holds 128 MiB again" wait_actual 128
check "snapshot s1 taken, balloon inflated" "$vmws" snapshot take lb s1
snap_json() { "$vmws" snapshot list lb --json; }
node_field() { # node_field LABEL KEY
    snap_json | $py -c "import json,sys
t=json.load(sys.stdin)
print([n for n in t['snapshots'] if n['label']==sys.argv[1]][0][sys.argv[2]])" "$1" "$2"
}
s1_bytes=$(node_field s1 memory_bytes) s1_pages=$(node_field s1 pages) a_s1=$(alloc_mib)
s1_disk=$(du -m "$VMWS_HOME/lb/snapshots/$(node_field s1 id).mem" | cut -f1)
echo "  s1: $s1_pages pages changed since boot, $((s1_bytes / 1048576)) MiB on disk (du $s1_disk MiB); .vmem allocated $a_s1 MiB"
check "s1 stores no more data than the .vmem holds (+8 MiB): punched pages are not data" \
    ge $((a_s1 + 8)) $((s1_bytes / 1048576))
check "s1 records far more changed pages than it stores (the touched, then given back)" \
    ge $((s1_pages / 256)) $((s1_bytes / 1048576 + 100))
check "deflate, and the guest changes its data" \
    sh -c "'$vmws' mem lb --balloon 0 >/dev/null && sleep 1"
check "the balloon is empty again" wait_actual 0
check "the guest overwrote its data" guest "dd if=/dev/urandom of=/t/keep bs=1M count=4"
check "the checksum no longer matches" guest "! md5sum -c /keep.md5"
check "snapshot s2 taken, balloon deflated" "$vmws" snapshot take lb s2
check "reverted to s1" "$vmws" snapshot revert lb s1
check "after the revert the guest's data is s1's (md5sum -c)" guest "md5sum -c /keep.md5"
check "after the revert the balloon's target and size are s1's (128 MiB)" \
    sh -c "'$vmws' mem lb --json | grep -q '\"target\": 134217728' && '$vmws' mem lb --json | grep -q '\"actual\": 134217728'"
a_rev=$(alloc_mib)
echo "  .vmem allocated after the revert: $a_rev MiB (at s1: $a_s1 MiB)"
check "the revert left the punched pages punched (.vmem within 16 MiB of s1's)" ge $((a_s1 + 16)) "$a_rev"
meminfo_mib avail_rev MemAvailable
check "after the revert the guest's MemAvailable is s1's (the balloon holds 128 MiB)" \
    ge $((avail1 - avail_rev)) 100
check "reverted to s2, deflated" "$vmws" snapshot revert lb s2
check "at s2 the balloon is empty" sh -c "'$vmws' mem lb --json | grep -q '\"target\": 0'"
check "at s2 the guest's data is the overwritten one" guest "! md5sum -c /keep.md5"
check "back to s1" "$vmws" snapshot revert lb s1
check "suspended with the balloon inflated" "$vmws" suspend lb
check "resumed" "$vmws" resume lb
check "after the resume the shell answers and the data verifies" guest "md5sum -c /keep.md5"
check "after the resume the balloon still holds 128 MiB" wait_actual 128
check "deflated after the resume" "$vmws" mem lb --balloon 0
check "the balloon is empty after the resume" wait_actual 0
check "the guest fills ${fill} MiB again" \
    guest "dd if=/dev/zero of=/t/fill bs=1M count=$((fill - 16)) && rm /t/fill"
check "dmesg has no BUG, WARNING or call trace" \
    guest "! dmesg | grep -E 'BUG:|WARNING: CPU|Call Trace|virtio_balloon.*(error|fail)'"
check "vmm.log has no balloon complaint" sh -c "! grep -E 'virtio-balloon.*(needs reset|cannot|outside)' '$VMWS_HOME/lb/vmm.log'"
"$vmws" mem lb
send "poweroff -f"
for i in $(seq 1 180); do
    "$vmws" status lb 2>/dev/null | grep -q "^state: *running" || break
    sleep 1
done
echo "---- the guest's console (without the kernel's lines)"
grep -v "^\[" "$log" | tail -n 60
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
