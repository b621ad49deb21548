#!/bin/sh
# One soak session, run inside a KVM box by tests/box-soak.sh:
#   soak-session.sh VMWS KERNEL INITRAMFS SECONDS
# A 2-vCPU Linux guest under disk and memory load (soak-init.sh) runs SECONDS, while the
# host side takes a snapshot every 30 s and reverts to the previous one every other time.
# Passes if the guest completed rounds, never saw a mismatch, and printed no kernel BUG,
# WARNING (but the nesting's XSAVE one, see ../shared/DESIGN.md), RCU stall or panic.
# pci=lastbus=1: until the DSDT describes the PCI host bridge, Linux finds vda only so.
set -u
vmws=$1 kernel=$2 initrd=$3 secs=$4
export VMWS_HOME=$(mktemp -d /tmp/soak-home.XXXXXX) VMWS_RUNTIME_DIR=$(mktemp -d /tmp/soak-run.XXXXXX)
log=$VMWS_HOME/soak/serial.log
fail() {
    tail -n 30 "$log" 2>/dev/null
    echo "SOAK FAIL: $*"
    "$vmws" kill soak >/dev/null 2>&1
    exit 1
}
"$vmws" create soak --memory 512M --cpus 2 --disk 1G --kernel "$kernel" --initrd "$initrd" \
    --append "console=ttyS0 pci=lastbus=1" >/dev/null || fail "create"
"$vmws" start soak --display none >/dev/null || fail "start"
start=$(date +%s) n=0
while [ $(( $(date +%s) - start )) -lt "$secs" ]; do
    sleep 30
    n=$((n + 1))
    "$vmws" snapshot take soak "s$n" >/dev/null || fail "snapshot take s$n"
    if [ $((n % 2)) -eq 0 ]; then
        "$vmws" snapshot revert soak "s$((n - 1))" >/dev/null || fail "snapshot revert s$((n - 1))"
    fi
done
rounds=$(grep -c "soak: round [0-9]* ok" "$log")
"$vmws" stop soak >/dev/null 2>&1 || "$vmws" kill soak >/dev/null 2>&1
grep -q "MISMATCH" "$log" && fail "the guest read back other data than it wrote"
# The one warning allowed: the nesting's XSAVE size (its WARNING at fpu/xstate.c and trace).
bad=$(grep -E "Kernel panic|BUG: |rcu: INFO|self-detected stall|soft lockup|hard LOCKUP|WARNING: CPU" \
    "$log" | grep -v "fpu/xstate" | head -5)
[ -z "$bad" ] || fail "the guest kernel complained: $bad"
[ "$(grep -c "Call Trace" "$log")" -le "$(grep -c "WARNING:.*fpu/xstate" "$log")" ] ||
    fail "the guest kernel printed a call trace"
[ "$rounds" -gt 0 ] || fail "the guest completed no round"
echo "SOAK OK: $rounds rounds, $n snapshots, $((n / 2)) reverts in $secs s"
