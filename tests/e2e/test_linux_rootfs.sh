#!/bin/sh
# A root file system on the VM's disk, booted the way the README tells users: a busybox system
# made into an ext4 image with `mke2fs -d` (no root, no loop device), imported with
# `vmws create --disk-from`, booted by Debian's kernel and Debian's own initramfs
# (initramfs-tools: it loads virtio_blk and ext4) with root=/dev/vda. Its /sbin/init says what
# / is, writes a file and reboots through our reset path; the second boot finds the file and
# powers off. Afterwards the image passes `qemu-img check`. (Only the kernel's warnings and
# worse go to the console, $linux_console: each byte there costs about 0.5 ms in the KVM box.)
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../linux/lib.sh"
linux_setup rootfs
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
initrd=/boot/initrd.img-${kernel#/boot/vmlinuz-}
[ -f "$kernel" ] && [ -f "$initrd" ] ||
    { echo "no Debian kernel with its initramfs in /boot (install linux-image-amd64)"; exit 99; }
root=$VMWS_HOME/root
mkdir -p "$root/bin" "$root/sbin" "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/tmp" || exit 99
cp /bin/busybox "$root/bin/busybox" || exit 99
cat >"$root/sbin/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
echo "rootfs: / is $(awk '$2 == "/" { print $1, $3, substr($4, 1, 2) }' /proc/mounts)"
if [ -f /boot-1 ]; then
    echo "rootfs: boot 2 found '$(cat /boot-1)'"
    poweroff -f
fi
echo "written in boot 1" >/boot-1 && sync && echo "rootfs: boot 1 wrote /boot-1"
reboot -f
EOF
chmod +x "$root/sbin/init"
mke2fs -q -t ext4 -d "$root" "$VMWS_HOME/root.img" 64M || exit 99
"$vmws" create rootfs --memory 256M --cpus 1 --disk-from "$VMWS_HOME/root.img" \
    --kernel "$kernel" --initrd "$initrd" --append "root=/dev/vda rw $linux_console" || exit 99
"$vmws" start rootfs --display none >/dev/null || exit 99
log=$VMWS_HOME/rootfs/serial.log
for i in $(seq 1 300); do
    grep -q "rootfs: boot 2" "$log" 2>/dev/null && break
    sleep 1
done
for i in $(seq 1 30); do "$vmws" status rootfs 2>/dev/null | grep -q running || break; sleep 1; done
cat "$log"
echo "---- checks"
check "the first boot's / is /dev/vda, ext4, read-write" grep -q "rootfs: / is /dev/vda ext4 rw" "$log"
check "the first boot wrote a file" grep -q "rootfs: boot 1 wrote /boot-1" "$log"
check "the second boot (after reboot -f) found it" grep -q "rootfs: boot 2 found 'written in boot 1'" "$log"
check "poweroff ended the VM" sh -c "! '$vmws' status rootfs | grep -q running"
check "the disk image passes qemu-img check" qemu-img check -q "$VMWS_HOME/rootfs/disk.qcow2"
check "no kernel BUG, WARNING or call trace" sh -c "! grep -qE 'BUG:|WARNING: CPU|Call Trace' '$log'"
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
