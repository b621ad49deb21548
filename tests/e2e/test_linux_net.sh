#!/bin/sh
# Networking from Debian's own kernel (issue 16): Linux's virtio_net drives our virtio-net card
# behind user-mode NAT. busybox udhcpc gets 10.0.2.15 and the route via 10.0.2.2; busybox wget
# fetches 1 MiB of random bytes from an HTTP server this test runs on the host's 127.0.0.1
# (http://10.0.2.2:PORT/) and the checksum must match; a host client reaches busybox httpd in
# the guest through `--forward tcp:HOSTPORT:80`, which `vmws status` lists. Both still work
# after a snapshot revert and after a suspend and a resume into a new VMM process.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../linux/lib.sh"
linux_setup net
# udhcpc's script (busybox has none built in): address, default route, DNS; in the initramfs
# at its path here.
script=$(cd "$here/../linux" && pwd)/udhcpc.script
linux_fixture shell-init.sh virtio_pci,virtio_blk,virtio_net "" "$script"

# The host's side: an HTTP server on 127.0.0.1 with 1 MiB of random bytes, and a free port for
# the forward into the guest.
www=$VMWS_HOME/www
mkdir -p "$www" && head -c 1048576 /dev/urandom >"$www/blob" || exit 99
sum=$(md5sum <"$www/blob" | cut -d' ' -f1)
free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=$(free_port) fport=$(free_port)
/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$www" "$port" >"$VMWS_HOME/http.log" 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null; "$vmws" kill net >/dev/null 2>&1; rm -rf "$VMWS_HOME" "$VMWS_RUNTIME_DIR"' EXIT
for i in $(seq 1 50); do
    /usr/bin/python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/blob', timeout=2)" 2>/dev/null && break
    sleep 0.2
done

"$vmws" create net --memory 256M --cpus 1 --disk 16M --kernel "$kernel" --initrd "$initrd" \
    --append "$linux_console" --forward "tcp:$fport:80" >/dev/null || exit 99
"$vmws" start net --display none >/dev/null || exit 99
log=$VMWS_HOME/net/serial.log
ready 1 || { tail -n 40 "$log"; exit 1; }

# What a user checks: the file arrived whole, and the guest's web server answers on the host.
fetch() { # the 1 MiB from the host's server, by wget in the guest, with its checksum (busybox
    # 1.35's static wget crashes on -T: timeout bounds it instead)
    guest "rm -f /tmp/blob; timeout 120 wget -q -O /tmp/blob http://10.0.2.2:$port/blob && test \"\$(md5sum </tmp/blob | cut -d' ' -f1)\" = $sum"
}
from_host() { # the guest's index.html through the forward, within 20 s
    /usr/bin/python3 - "$fport" <<'PY'
import sys, time, urllib.request
deadline = time.time() + 20
while True:
    try:
        body = urllib.request.urlopen("http://127.0.0.1:%s/index.html" % sys.argv[1], timeout=5).read()
        sys.exit(0 if body.strip() == b"hello from the guest" else 1)
    except Exception:
        if time.time() > deadline:
            sys.exit(1)
        time.sleep(0.5)
PY
}
rx_bytes() {
    "$vmws" status net --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["net"]["rx_bytes"])'
}
rx_has_the_file() { [ "$(rx_bytes)" -ge 1048576 ]; }

check "virtio_net made eth0" guest "ip link show eth0"
check "udhcpc got 10.0.2.15/24 from slirp's DHCP" \
    guest "udhcpc -i eth0 -s $script -n -q -t 10 -T 2 && ip addr show eth0 | grep -q 'inet 10.0.2.15/24'"
check "the default route is via 10.0.2.2" guest "ip route | grep -q 'default via 10.0.2.2'"
check "wget fetched 1 MiB from the host's 127.0.0.1 (10.0.2.2), checksum equal" fetch
check "vmws status counts the 1 MiB received (rx_bytes)" rx_has_the_file
echo "rx_bytes after the fetch: $(rx_bytes)"
check "busybox httpd serves in the guest" \
    guest "mkdir -p /www && echo 'hello from the guest' >/www/index.html && httpd -p 80 -h /www"
check "the host reached the guest's port 80 through --forward tcp:$fport:80" from_host
check "vmws status lists the forward" \
    sh -c "'$vmws' status net | grep -q 'forward: *tcp 127.0.0.1:$fport -> guest port 80'"
check "vmws status shows the MAC" sh -c "'$vmws' status net | grep -q 'MAC 52:54:00:'"

check "snapshot a taken" "$vmws" snapshot take net a
check "a file written after it" guest "touch /tmp/after-a"
check "reverted to a" "$vmws" snapshot revert net a
check "after the revert the file is gone" guest "test ! -e /tmp/after-a"
check "after the revert wget fetches the 1 MiB again, checksum equal" fetch
check "after the revert the host reaches the guest's httpd" from_host

check "suspended" "$vmws" suspend net
check "resumed in a new VMM process" "$vmws" resume net
check "after the resume wget fetches the 1 MiB again, checksum equal" fetch
check "after the resume the host reaches the guest's httpd (the forward is back)" from_host
check "after the resume vmws status lists the forward" \
    sh -c "'$vmws' status net | grep -q 'forward: *tcp 127.0.0.1:$fport -> guest port 80'"
check "the device never needed a reset" sh -c "! '$vmws' status net | grep -q 'net broken'"
check "dmesg has no BUG, WARNING, call trace or virtio_net error" \
    guest "! dmesg | grep -iE 'BUG:|WARNING: CPU|Call Trace|virtio_net.*(error|fail)'"
echo "---- vmws status"
"$vmws" status net
echo "---- the guest's console (without the kernel's lines)"
grep -v "^\[" "$log" | tail -n 60
echo "---- vmm.log"
tail -n 20 "$VMWS_HOME/net/vmm.log"
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
