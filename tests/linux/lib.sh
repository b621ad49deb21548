# Shared by the tests that boot Debian's own kernel on vmws (tests/e2e/test_linux_*.sh);
# sourced after `here` (the test's directory) is set.
#   linux_setup NAME: a private $VMWS_HOME and runtime directory, removed (and VM NAME killed)
#       at exit; sets vmws, fails=0, and cpus=2 (a test may give Linux one vCPU instead, so
#       that both counts are tested).
#   check DESCRIPTION COMMAND...: runs COMMAND, prints ok/FAIL, counts failures in $fails.
#   check_shown DESCRIPTION COMMAND...: the same, with COMMAND's output shown (its figures).
#   Every ok/FAIL line ends with "(at N.N s)", the time since linux_setup (linux_at sets $at),
#   so that a test's log says where its time goes.
#   $linux_console: the kernel command line's console part: ttyS0, and only the kernel's
#       warnings and worse on it while it boots (loglevel=5; dmesg in the guest has the rest).
#       Each byte on the serial console costs about 0.5 ms in the KVM box (the kernel's own
#       timestamps say so): QEMU's boot of the same guest there went from 39 s to 28 s.
#   linux_fixture INIT MODULES [TOOLS [FILES]]: builds the fixture; sets kernel and initrd.
#       run-test.sh builds it beforehand on the host, where Python and ldd do not run on an
#       emulated CPU as in the KVM box: it runs the test with LINUX_FIXTURE_ONLY=FILE
#       (linux_fixture writes the two paths into FILE and ends the test there; vmws is false
#       meanwhile), then the test itself with LINUX_FIXTURE set to them.
# For guests whose /init is shell-init.sh (one command per line, one answer each), with $log
# the VM's serial.log:
#   ready N: waits until the guest said "guest: ready" N times (boots).
#   send COMMAND: starts COMMAND in the guest (reboot, poweroff: no answer comes).
#   guest COMMAND: runs COMMAND in the guest; returns its exit status.
linux_setup() {
    vmws=${VMWS_BIN:-$here/../../vmws}
    [ -n "${LINUX_FIXTURE_ONLY:-}" ] && vmws=false
    linux_vm=$1
    VMWS_HOME=$(mktemp -d "/tmp/vmws-$1.XXXXXX") || exit 99
    VMWS_RUNTIME_DIR=$(mktemp -d "/tmp/vmws-$1-run.XXXXXX") || exit 99
    export VMWS_HOME VMWS_RUNTIME_DIR
    trap '"$vmws" kill "$linux_vm" >/dev/null 2>&1; rm -rf "$VMWS_HOME" "$VMWS_RUNTIME_DIR"' EXIT
    fails=0
    cpus=2
    linux_console="console=ttyS0 loglevel=5"
    linux_at
    linux_t0=$linux_cs
    return 0
}
linux_at() { # sets at to "(at N.N s)" since linux_setup, from /proc/uptime (no process)
    read -r linux_up _ </proc/uptime
    linux_cs=${linux_up%.*}${linux_up#*.}
    linux_e=$((linux_cs - ${linux_t0:-$linux_cs}))
    at="(at $((linux_e / 100)).$((linux_e % 100 / 10)) s)"
}
check() {
    what=$1
    shift
    if "$@" >/dev/null 2>&1; then linux_at; echo "ok: $what $at"; else
        linux_at; echo "FAIL: $what $at"; fails=$((fails + 1)); fi
}
check_shown() {
    what=$1
    shift
    if "$@"; then linux_at; echo "ok: $what $at"; else
        linux_at; echo "FAIL: $what $at"; fails=$((fails + 1)); fi
}
linux_fixture() {
    if [ -n "${LINUX_FIXTURE:-}" ]; then
        set -- $LINUX_FIXTURE
        [ -f "$1" ] && [ -f "$2" ] && { kernel=$1 initrd=$2; return 0; }
        echo "LINUX_FIXTURE ($LINUX_FIXTURE) is not there: building the fixture here"
    fi
    linux_out=$(/usr/bin/python3 "$here/../linux/fixture.py" --init "$here/../linux/$1" \
        --modules "$2" ${3:+--tools "$3"} ${4:+--files "$4"}) || exit 99
    [ -n "${LINUX_FIXTURE_ONLY:-}" ] && { echo $linux_out >"$LINUX_FIXTURE_ONLY"; exit 0; }
    set -- $linux_out
    kernel=$1 initrd=$2
}
ready() {
    for i in $(seq 1 600); do
        [ "$(grep -c "^guest: ready" "$log" 2>/dev/null)" -ge "$1" ] && return 0
        sleep 0.5
    done
    echo "the guest did not become ready (boot $1) within 300 s"
    return 1
}
linux_n=0
send() {
    linux_n=$((linux_n + 1))
    printf '%s %s\n' "$linux_n" "$1" | "$vmws" console "$linux_vm" --idle 0 >/dev/null
}
guest() {
    send "$1"
    for i in $(seq 1 1200); do # (each answer's N is new: the first one found is it)
        rc=$(sed -n "/^guest: $linux_n rc=/{s/^guest: $linux_n rc=\([0-9]*\).*/\1/p;q}" "$log")
        [ -n "$rc" ] && return "$rc"
        sleep 0.25
    done
    echo "no answer to '$1' within 300 s"
    return 124
}
