#!/bin/busybox sh
# The KVM box's first process (its initramfs is built by app/box/initramfs.c). It loads
# kvm_amd and the virtio modules, makes the host's / (9p, read-only) the root under a tmpfs
# overlay, mounts the shares read-write at their own paths, brings up the network QEMU
# forwards the agent's port through, and hands PID 1 to the agent (`vmws box agent`).
# Anything that fails is reported as one "VMWS-BOX-FAIL:" line; the host shows it.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

fail() {
    echo "VMWS-BOX-FAIL: $*"
    poweroff -f
    sleep 60
}

echo "vmws-box: loading modules at $(cut -d' ' -f1 /proc/uptime) s"
while read -r mod params; do
    [ -n "$mod" ] || continue
    out=$(insmod "$mod" $params 2>&1) && continue
    case "$mod" in
    */kvm-amd.ko)
        grep -qw svm /proc/cpuinfo || fail "the box's CPU offers no SVM, so kvm_amd cannot load" \
            "(QEMU too old for -cpu ...,+svm,+npt under TCG?)"
        fail "kvm_amd did not load: $out" ;;
    *) fail "cannot load $mod: $out" ;;
    esac
done < /box/modules
[ -c /dev/kvm ] || fail "kvm_amd loaded but /dev/kvm did not appear"

cfg=/sys/firmware/qemu_fw_cfg/by_name/opt/vmws/box/raw
[ -r "$cfg" ] || fail "no configuration in fw_cfg (opt/vmws/box)"
agent=
shares=
while IFS='=' read -r key value; do
    case "$key" in
    agent) agent=$value ;;
    share) shares="$shares
$value" ;;
    esac
done < "$cfg"
[ -n "$agent" ] || fail "the configuration names no agent"

echo "vmws-box: mounting at $(cut -d' ' -f1 /proc/uptime) s"
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$opts,ro,cache=loose" root /lower || fail "cannot mount the host's / over 9p"
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work root /newroot ||
    fail "cannot mount the overlay root"

r=/newroot
mount -t tmpfs -o mode=1777,nosuid,nodev tmp $r/tmp
mount -t tmpfs -o mode=0755,nosuid,nodev run $r/run
mount --move /dev $r/dev
mount --move /proc $r/proc
mount --move /sys $r/sys
mkdir -p $r/dev/pts $r/dev/shm $r/dev/mqueue
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts $r/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev shm $r/dev/shm
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup
ln -sfn /proc/self/fd $r/dev/fd
ln -sfn /proc/self/fd/0 $r/dev/stdin
ln -sfn /proc/self/fd/1 $r/dev/stdout
ln -sfn /proc/self/fd/2 $r/dev/stderr
[ -e $r/dev/ptmx ] || ln -sfn pts/ptmx $r/dev/ptmx

i=0
echo "$shares" | while read -r dir; do
    [ -n "$dir" ] || continue
    mkdir -p "$r$dir"
    mount -t 9p -o "$opts,cache=mmap" "share$i" "$r$dir" || fail "cannot mount the share $dir"
    i=$((i + 1))
done

hostname vmws-box
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 ||
    fail "cannot configure eth0 (virtio-net)"
rm -f $r/etc/resolv.conf
echo "nameserver 10.0.2.3" > $r/etc/resolv.conf

[ -x "$r$agent" ] || fail "the agent $agent cannot be run in the box (a share hides it?)"
echo "vmws-box: root ready after $(cut -d' ' -f1 $r/proc/uptime) s"
exec switch_root $r "$agent" box agent --config "$cfg"
