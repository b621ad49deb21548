#!/bin/sh
# One soak session, run inside a KVM box by tests/box-soak.sh:
#   soak-session.sh VMWS KERNEL INITRAMFS SECONDS
# Two VMs at once for SECONDS, as the test suite runs them: a 2-vCPU Linux guest under disk
# and memory load (soak-init.sh), snapshotted every 30 s and reverted every other time; and a
# 2-vCPU built-in guest that fills memory, takes a snapshot, and every third round reverts and
# verifies. Passes if Linux completed rounds without a mismatch or a kernel BUG, WARNING, call
# trace, RCU stall, clocksource complaint or panic, the box's own kernel saw no stall, and
# every verify of the built-in guest held.
set -u
vmws_bin=$1 kernel=$2 initrd=$3 secs=$4
export VMWS_HOME=$(mktemp -d /tmp/soak-home.XXXXXX) VMWS_RUNTIME_DIR=$(mktemp -d /tmp/soak-run.XXXXXX)
log=$VMWS_HOME/soak/serial.log
t0=$(date +%s)
step() { echo "soak: [$(( $(date +%s) - t0 ))s] $*"; } # progress, streamed out of the box
watchdog=
fail() {
    [ -n "$watchdog" ] && kill $watchdog 2>/dev/null
    tail -n 30 "$log" 2>/dev/null
    echo "SOAK FAIL: $*"
    if [ -n "${SOAK_LOG_DIR:-}" ]; then # the whole logs, where the host can read them
        d=$SOAK_LOG_DIR/$(date +%H%M%S)
        mkdir -p "$d" && cp "$VMWS_HOME"/soak/*.log "$d"/ && cp "$VMWS_HOME"/mem.log "$d"/ &&
            cp "$VMWS_HOME"/mem/vmm.log "$d"/mem-vmm.log &&
            echo "SOAK LOGS: $d"
    fi
    vmws kill soak >/dev/null 2>&1
    vmws kill mem >/dev/null 2>&1
    exit 1
}
# Every vmws command has 120 s: one that hangs fails the session with its logs. The whole
# session has SECONDS + 150 s: a watchdog fails it (after the command in flight, at most
# 120 s more) with its logs before the box's limit of SECONDS + 300 s.
vmws() { timeout 120 "$vmws_bin" "$@"; }
trap 'fail "the session overran $((secs + 150)) s"' USR1
(sleep $((secs + 150)) && kill -USR1 $$) >/dev/null 2>&1 &
watchdog=$!
guest() { # guest VM COMMAND EXPECT: runs COMMAND in the built-in guest, checks EXPECT
    printf '%s\n' "$2" | vmws console "$1" --idle 3000 | grep -q "$3"
}
vmws create soak --memory 512M --cpus 2 --disk 1G --kernel "$kernel" --initrd "$initrd" \
    --append "console=ttyS0" >/dev/null || fail "create soak"
vmws create mem --memory 256M --cpus 2 >/dev/null || fail "create mem"
vmws start soak --display none >/dev/null || fail "start soak"
vmws start mem --display none >/dev/null || fail "start mem"
step "both VMs started"
guest mem "mem alloc 8" "allocated 8 MiB" || fail "mem alloc in the built-in guest"

# The built-in guest's loop, in the background: fill, take, and every third round revert+verify.
(
    i=0
    while :; do
        i=$((i + 1))
        guest mem "mem fill P$i" "filled 8 MiB with P$i" || { echo "MEM FAIL: fill P$i"; exit 1; }
        vmws snapshot take mem "m$i" >/dev/null || { echo "MEM FAIL: take m$i"; exit 1; }
        if [ $((i % 3)) -eq 0 ]; then
            vmws snapshot revert mem "m$((i - 1))" >/dev/null ||
                { echo "MEM FAIL: revert m$((i - 1))"; exit 1; }
            guest mem "mem verify P$((i - 1))" "verify OK" ||
                { echo "MEM FAIL: verify P$((i - 1)) after revert"; exit 1; }
        fi
        echo "$i" > "$VMWS_HOME/mem.rounds"
    done
) > "$VMWS_HOME/mem.log" 2>&1 &
memloop=$!

start=$(date +%s) n=0
while [ $(( $(date +%s) - start )) -lt "$secs" ]; do
    sleep 30
    n=$((n + 1))
    step "snapshot take s$n"
    vmws snapshot take soak "s$n" >/dev/null || fail "snapshot take s$n"
    if [ $((n % 2)) -eq 0 ]; then
        step "snapshot revert s$((n - 1))"
        vmws snapshot revert soak "s$((n - 1))" >/dev/null || fail "snapshot revert s$((n - 1))"
    fi
    kill -0 $memloop 2>/dev/null || fail "the built-in guest's loop stopped: $(cat "$VMWS_HOME/mem.log")"
done
step "stopping"
kill $memloop 2>/dev/null
wait $memloop 2>/dev/null
rounds=$(grep -c "soak: round [0-9]* ok" "$log")
memrounds=$(cat "$VMWS_HOME/mem.rounds" 2>/dev/null || echo 0)
vmws stop soak >/dev/null 2>&1 || vmws kill soak >/dev/null 2>&1
vmws stop mem >/dev/null 2>&1 || vmws kill mem >/dev/null 2>&1
kill $watchdog 2>/dev/null
watchdog=
step "stopped"
grep -q "MISMATCH" "$log" && fail "the guest read back other data than it wrote"
bad=$(grep -E "Kernel panic|BUG: |rcu: INFO|self-detected stall|soft lockup|hard LOCKUP|WARNING: CPU|Call Trace|segfault|clocksource.*(unstable|watchdog)|Long readout" \
    "$log" | head -5)
[ -z "$bad" ] || fail "the guest kernel complained: $bad"
# The box's own kernel: a stall of the whole box (its clocksource watchdog or lockup detector
# noticed time passing without it) fails the session even when the guests recovered.
bad=$(dmesg 2>/dev/null | grep -E "Long readout interval|soft lockup|hard LOCKUP|rcu: INFO|Call Trace" | head -3)
[ -z "$bad" ] || fail "the box's kernel stalled: $bad"
[ "$rounds" -gt 0 ] || fail "the Linux guest completed no round"
[ "$memrounds" -gt 0 ] || fail "the built-in guest completed no round: $(cat "$VMWS_HOME/mem.log")"
echo "SOAK OK: Linux $rounds rounds, $n snapshots, $((n / 2)) reverts; built-in guest $memrounds rounds in $secs s"
