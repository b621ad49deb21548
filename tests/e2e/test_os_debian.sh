#!/bin/sh
# `vmws create --os debian`, as a user meets it: the VM's disk is a linked clone (a qcow2 overlay
# on the cached, read-only base image: `vmws status` shows its virtual size, its own allocation
# and the base; the base is never written: same stamp and checksum of its header, `qemu-img
# check` clean, and `vmws delete` leaves it); the VM boots Debian 12's own kernel, initramfs and
# systemd from its disk to a login prompt on the serial console, with the host name, password
# and SSH key create gave it (applied at its first boot); logging in as debian with the password
# create printed runs `uname -a`, and so does `vmws ssh` with the key, through the forward
# create added (with the VM's own SSH host keys); Debian's qemu-guest-agent starts by itself on
# the virtio-console port and `vmws status` names the OS; seed 002's experiment holds on the
# running system (touch, take, rm, touch, revert: the first file is back, the second gone), the
# take reports itself quiesced (the agent froze the file systems) and after the revert the agent
# set the guest's clock (within 2 s of the host's); apt-get update reaches Debian's archive
# through the NAT (or the test says why the machine cannot); suspend and `vmws start` bring the
# same shell back with the clock resynced, and `vmws ssh` works again; `vmws stop` shuts it down
# through the guest agent and the disk images pass `qemu-img check`. The base system is built
# once per machine (`make check-os` builds it outside the KVM box first; see tests/Makefile.inc).
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../linux/lib.sh"
linux_setup deb
has() { echo "$1" | grep -q -- "$2"; } # has OUTPUT PATTERN
# A key for `vmws ssh` (the box has OpenSSH's client when the host has it).
key=
if command -v ssh >/dev/null && ssh-keygen -q -t ed25519 -N '' -f "$VMWS_HOME/key" </dev/null; then
    key=$VMWS_HOME/key
fi
t0=$(date +%s.%N)
out=$("$vmws" create deb --os debian --disk 4G --memory 1G ${key:+--ssh-key "$key.pub"} 2>&1)
echo "$out"
echo "create took $(echo "$(date +%s.%N) - $t0" | bc) s"
password=$(echo "$out" | sed -n 's/.*log in as debian, password \([A-Za-z0-9]*\) .*/\1/p')
[ -n "$password" ] || { echo "create printed no password"; exit 1; }
# The linked clone: vm.conf names the base, the disk is an overlay on it, status says both.
base=$(sed -n 's/^base = //p' "$VMWS_HOME/deb/vm.conf")
echo "base image: $base"
check "the disk is a qcow2 overlay on the base image" \
    sh -c "qemu-img info -U '$VMWS_HOME/deb/disk.qcow2' | grep -q '^backing file: $base'"
base_sum() { stat -c '%s %Y' "$base" && head -c 1048576 "$base" | md5sum; }
base_before=$(base_sum)
status=$("$vmws" status deb)
echo "$status" | grep '^disk'
check "vmws status: 4G virtual, its own allocation and the base with its size" \
    has "$status" "^disk size: *4G virtual, [0-9.]*[BKM] own + base debian-12-v[0-9]* ([0-9.]*[MG], shared"
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
check "the first boot applied the VM's own settings (vmws-firstboot, on the console)" \
    grep -q "vmws-firstboot: applied this VM's settings (host name deb)" "$log"
type_line "df -k --output=size / | tail -n 1 | sed 's/^ */rootk''b=/'"
wait_for 60 "rootkb=" >/dev/null
rootkb=$(tail -c +"$mark" "$log" | sed -n 's/.*rootkb=\([0-9]*\).*/\1/p' | tail -n 1)
echo "the root file system: ${rootkb:-?} KiB (the base's is 2 GiB, the disk 4 GiB)"
check "the first boot grew the root file system to the disk (over 3.5 GiB)" \
    test "${rootkb:-0}" -gt 3670016
# `vmws ssh` with the key create put in; when it fails, what the guest says about its SSH server.
ssh_diag() {
    "$vmws" status deb | grep '^net'
    type_line "echo '$password' | sudo -S sh -c 'systemctl status ssh vmws-firstboot --no-pager -n 0; ss -ltn; journalctl -b -u ssh -u vmws-firstboot -n 30 --no-pager; ip -4 addr show; ip -s link show; grep virtio /proc/interrupts; ls /etc/ssh/ssh_host_*; ping -c 2 -W 2 10.0.2.2'; printf 'dia%s\\n' g-done"
    wait_for 90 "diag-done" >/dev/null
    echo "---- the guest's SSH server and network (serial console)"
    tail -c +"$mark" "$log"
    "$vmws" status deb | grep '^net'
    echo "---- again after the guest's own traffic (ping), not counted:"
    "$vmws" ssh deb -- -i "$key" -o BatchMode=yes -o ConnectTimeout=60 \
        -o UserKnownHostsFile="$VMWS_HOME/known_hosts" uname -a 2>&1
}
ssh_uname() { # ssh_uname WHEN: vmws ssh deb -- uname -a prints the guest's uname -a
    if [ -z "$key" ]; then
        echo "NOT TESTED: vmws ssh $1: no OpenSSH client here"
        return
    fi
    ssh_out=$("$vmws" ssh deb -- -i "$key" -o BatchMode=yes -o ConnectTimeout=60 \
        -o UserKnownHostsFile="$VMWS_HOME/known_hosts" uname -a 2>&1)
    echo "vmws ssh deb -- uname -a ($1): $ssh_out"
    check "vmws ssh $1: uname -a through the forward, with the key create gave" \
        has "$ssh_out" "^Linux deb "
    has "$ssh_out" "^Linux deb " || ssh_diag
}
ssh_uname "after boot"
check "ssh recorded the VM's host key (made at its first boot: the base has none)" \
    grep -q ' ssh-ed25519 ' "$VMWS_HOME/known_hosts"
os_named() {
    for _ in $(seq 1 90); do
        "$vmws" status deb | grep -q '^guest OS: *Debian GNU/Linux 12' && return 0
        sleep 1
    done
    "$vmws" status deb | grep '^guest'
    return 1
}
check "the guest agent started by itself: vmws status shows Debian GNU/Linux 12" os_named
skew_now() { # the guest's clock minus the host's, in seconds, as the guest's shell prints it
    type_line "printf 'sk%s=%s\\n' ew \$((\$(date +%s) - $(date +%s)))"
    wait_for 60 "skew=" >/dev/null
    tail -c +"$mark" "$log" | sed -n 's/.*skew=\(-*[0-9]*\).*/\1/p' | tail -n 1
}
# Answers are printed with printf so that the console's echo of the command line never holds
# them (and bash's bracketed-paste sequences never stand before them).
type_line "touch snap-before && sync && printf 'do%s\\n' ne1"
check "touch snap-before" wait_for 60 "done1"
take=$("$vmws" snapshot take deb before 2>&1)
echo "$take"
check "snapshot taken on the running system, quiesced by the guest agent" \
    has "$take" '^took snapshot before of deb: .*, quiesced$'
sleep 5
type_line "rm snap-before && touch snap-after && sync && printf 'do%s\\n' ne2"
check "rm snap-before, touch snap-after" wait_for 60 "done2"
revert=$("$vmws" snapshot revert deb before 2>&1)
echo "$revert"
check "reverted, the clock set through the guest agent" \
    has "$revert" "^guest clock: set to the host's through the guest agent"
type_line "command ls snap-*; printf 'sk%s=%s\\n' ew \$((\$(date +%s) - $(date +%s)))"
check "after the revert snap-before is back" wait_for 60 "snap-before"
check "after the revert snap-after is gone" sh -c "! tail -c +$mark '$log' | grep -q 'snap-after'"
skew=$(tail -c +"$mark" "$log" | sed -n 's/.*skew=\(-*[0-9]*\).*/\1/p' | tail -n 1)
echo "guest clock minus host clock after the revert: ${skew:-?} s"
check "after the revert the guest's clock is the host's (within 2 s)" \
    test "${skew:-99}" -ge -2 -a "${skew:-99}" -le 2
ssh_uname "after the revert"
# apt-get update through the NAT, on a small suite (bookworm-updates) so that it stays quick in
# the box; first whether this machine reaches the archive at all.
if reach=$(getent hosts deb.debian.org 2>&1) &&
    reach=$(/usr/bin/python3 -c 'import urllib.request as u; u.urlopen("http://deb.debian.org/debian/dists/bookworm-updates/InRelease", timeout=20).read()' 2>&1); then
    type_line "echo 'deb http://deb.debian.org/debian bookworm-updates main' >/tmp/s.list; echo '$password' | sudo -S apt-get update -o Dir::Etc::SourceList=/tmp/s.list -o Dir::Etc::SourceParts=- >/tmp/apt.log 2>&1; printf 'apt%s=%s\\n' rc \$?; tail -n 2 /tmp/apt.log"
    check "apt-get update inside the guest reached deb.debian.org" wait_for 300 "aptrc=0"
else
    echo "NOT TESTED: apt-get update inside the guest: this machine cannot reach deb.debian.org ($(echo "${reach:-no address}" | tail -n 1))"
fi
# Suspend, then `vmws start`: the same shell answers, and the agent set the clock it slept through.
check "suspended" "$vmws" suspend deb
sleep 5
check "started again from the suspended state" "$vmws" start deb --display none
type_line "printf 'do%s\\n' ne3"
check "the same shell answers after suspend and start" wait_for 60 "done3"
for _ in 1 2 3 4 5 6 7 8 9 10; do
    grep -q "clock set to the host's after resume\|clock not set after resume" "$VMWS_HOME/deb/vmm.log" && break
    sleep 1
done
grep "after resume" "$VMWS_HOME/deb/vmm.log"
skew=$(skew_now)
echo "guest clock minus host clock after suspend and start: ${skew:-?} s"
check "after suspend and start the guest's clock is the host's (within 2 s)" \
    test "${skew:-99}" -ge -2 -a "${skew:-99}" -le 2
ssh_uname "after suspend and start"
stop=$("$vmws" stop deb 2>&1)
echo "$stop"
check "vmws stop: Debian shut down through the guest agent" \
    has "$stop" "the guest shut down through the guest agent"
check "systemd powered off cleanly" grep -q "reboot: Power down" "$log"
check "the VM is off" sh -c "'$vmws' status deb | grep -q '^state: *off'"
for img in "$VMWS_HOME"/deb/*.qcow2 "$VMWS_HOME"/deb/snapshots/*.qcow2; do
    [ -f "$img" ] || continue
    check "qemu-img check $(basename "$img")" qemu-img check -q "$img"
done
check "the base image was not written (size, mtime, first MiB)" test "$(base_sum)" = "$base_before"
check "qemu-img check of the base image" qemu-img check -q "$base"
check "vmws delete deb" "$vmws" delete deb
check "vmws delete left the base image alone" test "$(base_sum)" = "$base_before"
[ $fails -eq 0 ] || { echo "---- console"; tail -c 20000 "$log"; echo "$fails check(s) failed"; exit 1; }
