# Shared by the tests that boot Debian's own kernel on vmws (tests/e2e/test_linux_*.sh);
# sourced after `here` (the test's directory) is set.
#   linux_setup NAME: a private $VMWS_HOME and runtime directory, removed (and VM NAME killed)
#       at exit; sets vmws, fails=0, and cpus=2 (a test may give Linux one vCPU instead, so
#       that both counts are tested).
#   check DESCRIPTION COMMAND...: runs COMMAND, prints ok/FAIL, counts failures in $fails.
#   linux_fixture INIT MODULES [TOOLS [FILES]]: builds the fixture; sets kernel and initrd.
# For guests whose /init is shell-init.sh (one command per line, one answer each), with $log
# the VM's serial.log:
#   ready N: waits until the guest said "guest: ready" N times (boots).
#   send COMMAND: starts COMMAND in the guest (reboot, poweroff: no answer comes).
#   guest COMMAND: runs COMMAND in the guest; returns its exit status.
linux_setup() {
    vmws=${VMWS_BIN:-$here/../../vmws}
    linux_vm=$1
    VMWS_HOME=$(mktemp -d "/tmp/vmws-$1.XXXXXX") || exit 99
    VMWS_RUNTIME_DIR=$(mktemp -d "/tmp/vmws-$1-run.XXXXXX") || exit 99
    export VMWS_HOME VMWS_RUNTIME_DIR
    trap '"$vmws" kill "$linux_vm" >/dev/null 2>&1; rm -rf "$VMWS_HOME" "$VMWS_RUNTIME_DIR"' EXIT
    fails=0
    cpus=2
    return 0
}
check() {
    what=$1
    shift
    if "$@" >/dev/null 2>&1; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
linux_fixture() {
    linux_out=$(/usr/bin/python3 "$here/../linux/fixture.py" --init "$here/../linux/$1" \
        --modules "$2" ${3:+--tools "$3"} ${4:+--files "$4"}) || exit 99
    set -- $linux_out
    kernel=$1 initrd=$2
}
ready() {
    for i in $(seq 1 300); do
        [ "$(grep -c "^guest: ready" "$log" 2>/dev/null)" -ge "$1" ] && return 0
        sleep 1
    done
    echo "the guest did not become ready (boot $1) within 300 s"
    return 1
}
linux_n=0
send() {
    linux_n=$((linux_n + 1))
    printf '%s %s\n' "$linux_n" "$1" | "$vmws" console "$linux_vm" --idle 200 >/dev/null
}
guest() {
    send "$1"
    for i in $(seq 1 600); do
        rc=$(sed -n "s/^guest: $linux_n rc=\([0-9]*\).*/\1/p" "$log" | tail -n 1)
        [ -n "$rc" ] && return "$rc"
        sleep 0.5
    done
    echo "no answer to '$1' within 300 s"
    return 124
}
