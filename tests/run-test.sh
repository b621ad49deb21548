#!/bin/sh
# Runs one test of `make check` (automake's LOG_COMPILER): run-test.sh TEST [ARGS].
# A test in tests/e2e/ boots VMs, so it needs KVM: where this machine's /dev/kvm works it
# runs here; where it doesn't, it runs in the KVM box (`vmws box exec --auto`), one box for
# the whole `make check`, started by the first KVM test and stopped by check-local, one KVM
# test at a time (the box has one CPU; the other tests go on beside it). The first line of
# the test's log says which. Tests in $LINUX_TESTS boot Linux to userspace: on a kvm_pvm host
# they run in the box too. A box that fails under a test (its kernel panicked, QEMU
# died) is a hard error (99), not the test's failure.
set -u
test=$1
case $test in
*tests/e2e/*) ;;
*) exec "$@" ;;
esac
# Linux to userspace on a kvm_pvm host's KVM (guest ring 0 emulated) would take far too long.
case " ${LINUX_TESTS:-} " in
*" ${test#./} "* | *" $(basename "$test") "*)
    [ -d /sys/module/kvm_pvm ] && export VMWS_BOX=always
    # Its guest's initramfs (tests/linux/lib.sh's linux_fixture), built here: Python in the
    # box runs on an emulated CPU.
    if grep -q '^linux_fixture ' "$test"; then
        f=$(mktemp /tmp/vmws-fixture.XXXXXX) &&
            LINUX_FIXTURE_ONLY=$f "$@" >"$f.out" 2>&1 && LINUX_FIXTURE=$(cat "$f") && export LINUX_FIXTURE ||
            { echo "building the test's fixture failed:"; cat "$f.out"; }
        rm -f "$f" "$f.out"
    fi ;;
esac
"$VMWS_BIN" box exec --auto --start --exclusive --dir "$VMWS_TEST_BOX" --idle 120 --timeout 1800 \
    --share "$abs_top_srcdir" --share "$abs_top_builddir" -- "$@"
rc=$?
[ $rc -eq 125 ] && { echo "ERROR: the KVM box failed under $test (see above)"; exit 99; }
exit $rc
