#!/bin/sh
# `vmws create --os debian`, as a user meets it: the VM boots Debian 12's own kernel, initramfs
# and systemd from its disk to a login prompt on the serial console; logging in as debian with
# the password create printed runs `uname -a`; seed 002's experiment holds on the running
# system (touch, take, rm, touch, revert: the first file is back, the second gone) with the
# guest's clock within 2 s of the host's after the revert; `vmws stop` shuts it down (ACPI:
# systemd powers off) and the disk images pass `qemu-img check`. The base system is built once
# per machine (`make check-os` builds it outside the KVM box first; see tests/Makefile.inc).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../linux/lib.sh"
linux_setup deb
out=$("$vmws" create deb --os debian --disk 4G --memory 1G 2>&1)
echo "$out"
password=$(echo "$out" | sed -n 's/.*log in as debian, password \([A-Za-z0-9]*\) .*/\1/p')
[ -n "$password" ] || { echo "create printed no password"; exit 1; }
"$vmws" start deb --display none >/dev/null || exit 99
log=$VMWS_HOME/deb/serial.log
wait_for() { # wait_for SECONDS PATTERN: the pattern appears in serial.log after the last mark
    for _ in $(seq 1 "$1"); do
        tail -c +"$mark" "$log" 2>/dev/null | grep -q -- "$2" && return 0
        sleep 1
    done
    echo "no '$2' on the console within $1 s"
    return 1
}
mark=1
type_line() { # types LINE on the serial console; later waits look only at what follows
    mark=$(($(stat -c %s "$log") + 1))
    printf '%s\r' "$1" | "$vmws" console deb --idle 300 >/dev/null
}
check "systemd brought Debian to a login prompt on ttyS0" wait_for 900 "deb login:"
type_line debian
check "login asks for the password" wait_for 60 "Password:"
type_line "$password"
check "the shell answers after logging in" wait_for 120 "debian@deb"
type_line "uname -a; systemctl is-system-running"
check "uname -a runs: Linux deb" wait_for 60 "Linux deb "
# Answers are printed with printf so that the console's echo of the command line never holds
# them (and bash's bracketed-paste sequences never stand before them).
type_line "touch snap-before && sync && printf 'do%s\\n' ne1"
check "touch snap-before" wait_for 60 "done1"
check "snapshot taken on the running system" "$vmws" snapshot take deb before
sleep 5
type_line "rm snap-before && touch snap-after && sync && printf 'do%s\\n' ne2"
check "rm snap-before, touch snap-after" wait_for 60 "done2"
check "reverted" "$vmws" snapshot revert deb before
type_line "command ls snap-*; printf 'sk%s=%s\\n' ew \$((\$(date +%s) - $(date +%s)))"
check "after the revert snap-before is back" wait_for 60 "snap-before"
check "after the revert snap-after is gone" sh -c "! tail -c +$mark '$log' | grep -q 'snap-after'"
skew=$(tail -c +"$mark" "$log" | sed -n 's/.*skew=\(-*[0-9]*\).*/\1/p' | tail -n 1)
echo "guest clock minus host clock after the revert: ${skew:-?} s"
check "after the revert the guest's clock is the host's (within 2 s)" \
    test "${skew:-99}" -ge -2 -a "${skew:-99}" -le 2
stop=$("$vmws" stop deb 2>&1)
echo "$stop"
check "vmws stop: Debian shut down by the ACPI power button" sh -c "echo '$stop' | grep -q 'the guest shut down'"
check "systemd powered off cleanly" grep -q "reboot: Power down" "$log"
check "the VM is off" sh -c "'$vmws' status deb | grep -q '^state: *off'"
for img in "$VMWS_HOME"/deb/*.qcow2 "$VMWS_HOME"/deb/snapshots/*.qcow2; do
    [ -f "$img" ] || continue
    check "qemu-img check $(basename "$img")" qemu-img check -q "$img"
done
[ $fails -eq 0 ] || { echo "---- console"; tail -c 20000 "$log"; echo "$fails check(s) failed"; exit 1; }
