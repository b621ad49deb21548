#!/bin/sh
# `vmws create NAME --os debian`: a bootable Debian 12 system on the VM's disk. Linked into vmws
# (assets/os_debian.S), which runs it and shows its "step:" lines as progress.
#   debian.sh base CACHE          builds once (root: debootstrap and chroot), then reuses
#       CACHE/debian-12-VERSION/{root.img,vmlinuz,initrd.img}; prints "base DIR" last.
#   debian.sh vm BASE OUT SIZE HOSTNAME [SSH_KEY_FILE]   (the password hash in $VMWS_OS_PWHASH)
#       copies BASE/root.img to OUT (sparse), grows its file system to SIZE bytes and writes the
#       VM's own /etc/hostname, the user debian's password hash and SSH key into it with debugfs:
#       no root, no loop device, no mount.
# The one idea: the expensive part (debootstrap, ~10 minutes) happens once per machine and
# version of this script; each VM then costs a sparse copy and a few file writes.
set -eu
VERSION=1 # bump when the base system's recipe changes: a new cache entry is built
MIRROR=${VMWS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=linux-image-amd64,initramfs-tools,systemd-sysv,udev,dbus,systemd-resolved,qemu-guest-agent
PACKAGES=$PACKAGES,openssh-server,sudo,iproute2,iputils-ping,ca-certificates,less,nano
step() { echo "step: $*"; }
die() { echo "error: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 not found: install the Debian package $2"; }

base() {
    dir=$1/debian-12-v$VERSION
    if [ -f "$dir/ready" ]; then
        echo "base $dir"
        return
    fi
    [ "$(id -u)" = 0 ] || die "the Debian base image is built once with debootstrap, which needs root: run this once as root"
    need debootstrap debootstrap
    need mke2fs e2fsprogs
    rm -rf "$dir"
    mkdir -p "$dir"
    root=$dir/root
    step "debootstrap: Debian 12 (bookworm) from $MIRROR into $root (once per machine; minutes)"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" \
        >"$dir/debootstrap.log" 2>&1 || die "debootstrap failed (see $dir/debootstrap.log)"
    step "configuring: user debian (sudo), DHCP on every wired link, consoles on ttyS0 and tty1"
    chroot "$root" useradd -m -s /bin/bash -G sudo debian
    chroot "$root" passwd -l debian >/dev/null
    echo "/dev/vda / ext4 defaults,errors=remount-ro 0 1" >"$root/etc/fstab"
    mkdir -p "$root/etc/systemd/network"
    printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/20-wired.network"
    # Every VM makes its own SSH host keys and machine id at its first boot.
    rm -f "$root"/etc/ssh/ssh_host_*
    cat >"$root/etc/systemd/system/vmws-ssh-host-keys.service" <<'EOF'
[Unit]
Description=SSH host keys of this VM
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"
    chroot "$root" systemctl enable systemd-networkd systemd-resolved vmws-ssh-host-keys \
        >/dev/null 2>&1 || die "cannot enable the VM's services"
    chroot "$root" apt-get clean
    cp "$root"/boot/vmlinuz-* "$dir/vmlinuz"
    cp "$root"/boot/initrd.img-* "$dir/initrd.img"
    chmod 0644 "$dir/vmlinuz" "$dir/initrd.img"
    step "making the root file system image (mke2fs -d)"
    mke2fs -q -t ext4 -L debian -d "$root" "$dir/root.img" 2G || die "mke2fs failed"
    rm -rf "$root"
    touch "$dir/ready"
    echo "base $dir"
}

vm() {
    base=$1 out=$2 size=$3 host=$4 key=${5:-} hash=${VMWS_OS_PWHASH:-}
    [ -n "$hash" ] || die "no password hash in VMWS_OS_PWHASH"
    need debugfs e2fsprogs
    need resize2fs e2fsprogs
    step "copying the base system (sparse)"
    cp --sparse=always "$base/root.img" "$out"
    step "growing its file system to the disk's size"
    truncate -s "$size" "$out"
    resize2fs -f "$out" >/dev/null 2>&1 || die "resize2fs failed on $out"
    step "writing this VM's host name, password and SSH key"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    debugfs -R "cat /etc/shadow" "$base/root.img" 2>/dev/null |
        awk -F: -v OFS=: -v h="$hash" '$1 == "debian" { $2 = h } { print }' >"$tmp/shadow"
    grep -q '^debian:\$' "$tmp/shadow" || die "no user debian in the base image's /etc/shadow"
    echo "$host" >"$tmp/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$host" >"$tmp/hosts"
    {
        for f in shadow hostname hosts; do
            echo "rm /etc/$f"
            echo "write $tmp/$f /etc/$f"
            echo "set_inode_field /etc/$f uid 0"
            echo "set_inode_field /etc/$f gid 0"
            echo "set_inode_field /etc/$f mode 0100644"
        done
        echo "set_inode_field /etc/shadow mode 0100640"
        echo "set_inode_field /etc/shadow gid 42" # the group shadow
        if [ -n "$key" ]; then
            uid=$(debugfs -R "stat /home/debian" "$base/root.img" 2>/dev/null | sed -n 's/.*User: *\([0-9]*\).*/\1/p')
            echo "mkdir /home/debian/.ssh"
            echo "set_inode_field /home/debian/.ssh mode 040700"
            echo "set_inode_field /home/debian/.ssh uid $uid"
            echo "set_inode_field /home/debian/.ssh gid $uid"
            echo "write $key /home/debian/.ssh/authorized_keys"
            echo "set_inode_field /home/debian/.ssh/authorized_keys mode 0100600"
            echo "set_inode_field /home/debian/.ssh/authorized_keys uid $uid"
            echo "set_inode_field /home/debian/.ssh/authorized_keys gid $uid"
        fi
    } >"$tmp/cmds"
    debugfs -w -f "$tmp/cmds" "$out" >"$tmp/log" 2>&1 || die "debugfs failed: $(cat "$tmp/log")"
    # (an "rm" of a file the base lacks, such as /etc/hosts, is no failure)
    if grep -v '^rm: ' "$tmp/log" | grep -iE "error|not found|cannot" >&2; then
        die "debugfs could not write the VM's files"
    fi
    e2fsck -fn "$out" >/dev/null 2>&1 || die "the VM's file system does not check clean"
}

case ${1:-} in
base) base "$2" ;;
vm) shift; vm "$@" ;;
*) die "usage: debian.sh base CACHE | VMWS_OS_PWHASH=HASH debian.sh vm BASE OUT SIZE HOSTNAME [SSH_KEY]" ;;
esac
