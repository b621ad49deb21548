#!/bin/sh
# The KVM box's soak (`make box-soak`): SESSIONS consecutive boxes (`vmws box run`, the
# configuration the tests use), each running a 2-vCPU Linux guest under disk and memory load
# with snapshots for SECONDS (tests/linux/soak-session.sh). Prints one line per session and a
# summary; exits 1 if any session failed, and names box failures (a panic in the box's own
# kernel, exit 125) apart from failures inside it.
#   box-soak.sh VMWS [SESSIONS [SECONDS]]
# $SOAK_BOX_OPTIONS go to `vmws box run` (e.g. --cpus 1, to compare box configurations).
set -u
vmws=$1 sessions=${2:-20} secs=${3:-180}
here=$(cd "$(dirname "$0")" && pwd)
# A copy of vmws and its modules, so that a rebuild during the soak changes nothing under it.
bin=$(pwd)/soak-bin.$$
mkdir -p "$bin" && cp "$vmws" "$(dirname "$vmws")"/vmws-*.so "$bin"/ || exit 1
trap 'rm -rf "$bin"' EXIT
vmws=$bin/vmws
export SOAK_LOG_DIR=$(pwd)/soak-logs # a failed session's whole logs
set -- $(/usr/bin/python3 "$here/linux/fixture.py" --init "$here/linux/soak-init.sh" \
    --modules virtio_pci,virtio_blk) || exit 1
kernel=$1 initrd=$2
ok=0 boxfail=0 fail=0
for i in $(seq 1 "$sessions"); do
    t0=$(date +%s)
    out=$("$vmws" box run ${SOAK_BOX_OPTIONS:-} --timeout $((secs + 300)) -- sh "$here/linux/soak-session.sh" \
        "$vmws" "$kernel" "$initrd" "$secs" 2>&1)
    rc=$?
    t=$(( $(date +%s) - t0 ))
    case $rc in
    0) ok=$((ok + 1)); echo "session $i: ok in ${t}s: $(echo "$out" | grep 'SOAK OK' | cut -c10-)" ;;
    125) boxfail=$((boxfail + 1)); echo "session $i: BOX FAILURE after ${t}s"; echo "$out" | tail -n 40 ;;
    *) fail=$((fail + 1)); echo "session $i: FAILED (exit $rc) after ${t}s"; echo "$out" | tail -n 40 ;;
    esac
done
echo "box soak: $sessions sessions of ${secs}s: $ok ok, $boxfail box failures, $fail failures inside the box"
[ $ok -eq "$sessions" ]
