#!/bin/busybox sh
# /init of the soak guest (tests/box-soak.sh): loads the virtio disk driver, then forever
# writes 4 MiB of random data through a 12 MiB tmpfs working set to a rotating place on
# /dev/vda, drops the page cache and reads it back, printing "soak: round N ok" or MISMATCH.
# (Rounds are small because in the box, next to a busy built-in guest, Linux runs several times
# slower than wall time: a 16 MiB round took about a minute, and a revert could leave none.)
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules); do insmod "$m" || echo "soak: insmod $m failed"; done
mount -t tmpfs -o size=160m tmp /tmp
echo "soak: up after $(cut -d' ' -f1 /proc/uptime) s with $(nproc) CPUs"
while [ ! -b /dev/vda ]; do sleep 1; done
i=0
while :; do
    dd if=/dev/urandom of=/tmp/a bs=1M count=4 2>/dev/null
    cp /tmp/a /tmp/b
    cat /tmp/a /tmp/b > /tmp/c
    sum=$(md5sum < /tmp/a)
    off=$(( (i % 64) * 4 ))
    dd if=/tmp/a of=/dev/vda bs=1M seek=$off conv=fsync 2>/dev/null
    echo 3 > /proc/sys/vm/drop_caches
    back=$(dd if=/dev/vda bs=1M skip=$off count=4 2>/dev/null | md5sum)
    if [ "$sum" = "$back" ] && cmp -s /tmp/a /tmp/b; then
        echo "soak: round $i ok"
    else
        echo "soak: round $i MISMATCH"
    fi
    rm -f /tmp/c
    i=$((i + 1))
done
