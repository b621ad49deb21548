#!/bin/busybox sh
# /init of the Linux guests whose test drives them (tests/e2e/test_linux_ext4.sh): loads the
# modules, waits for the virtio disk, says "guest: ready", then runs each line "N COMMAND" that
# arrives on the serial console and answers "guest: N rc=STATUS". No interactive shell: no line
# editing to swallow input, and the console does not echo the commands back.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod "$m" || echo "guest: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 20 ]; do sleep 1; i=$((i + 1)); done
dmesg -n 1 # the kernel's messages stay in dmesg (the test reads it), not between the answers
exec </dev/console
stty -echo
echo "guest: ready"
while read -r n cmd; do
    sh -c "$cmd" </dev/null
    echo "guest: $n rc=$?"
done
