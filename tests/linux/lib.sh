# Shared by the tests that boot Debian's own kernel on vmws (tests/e2e/test_linux_*.sh);
# sourced after `here` (the test's directory) is set.
#   linux_setup NAME: a private $VMWS_HOME and runtime directory, removed (and VM NAME killed)
#       at exit; sets vmws, fails=0, and cpus=2 (a test may give Linux one vCPU instead, so
#       that both counts are tested).
#   check DESCRIPTION COMMAND...: runs COMMAND, prints ok/FAIL, counts failures in $fails.
#   linux_fixture INIT MODULES [TOOLS]: builds the fixture; sets kernel and initrd.
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
        --modules "$2" ${3:+--tools "$3"}) || exit 99
    set -- $linux_out
    kernel=$1 initrd=$2
}
