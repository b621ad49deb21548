#!/bin/busybox sh
# /init of tests/e2e/test_linux_devices.sh's guest: loads its modules, waits for the virtio disk,
# reads its first MiB, lists the input devices Linux made, and powers off. Its lines start
# with "devices:"; the kernel's own messages go to the same serial console.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod "$m" || echo "devices: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 20 ]; do sleep 1; i=$((i + 1)); done
echo "devices: nproc $(nproc)"
echo "devices: vda sectors $(cat /sys/block/vda/size 2>/dev/null || echo none)"
echo "devices: vda read $(dd if=/dev/vda bs=64k count=16 2>/dev/null | wc -c) bytes"
sleep 2 # psmouse probes the aux port after its module loads
grep '^N: Name=' /proc/bus/input/devices | sed 's/^/devices: input /'
echo "devices: done"
poweroff -f
