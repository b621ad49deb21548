#!/bin/sh
# `vmws create NAME --os debian`: a bootable Debian 12 system on the VM's disk. Linked into vmws
# (assets/os_debian.S), which runs it and shows its "step:" lines as progress.
#   debian.sh base CACHE          builds once (root: debootstrap and chroot), then reuses
#       CACHE/debian-12-vVERSION/{root.img,vmlinuz,initrd.img}; prints "base DIR" last. vmws
#       turns root.img into the read-only base.qcow2 that every VM's disk is an overlay on.
#   debian.sh vm BASE OUT HOSTNAME [SSH_KEY_FILE]   (the password hash in $VMWS_OS_PWHASH)
#       writes OUT: BASE/initrd.img followed by a second, uncompressed initramfs archive holding
#       the VM's settings in /vmws-config (host name, the user debian's password hash, the SSH
#       key, an id). The kernel unpacks both; the base's init-bottom script keeps /vmws-config in
#       /run, and its vmws-firstboot service applies it once, before getty and sshd: host name,
#       password, key, this VM's own SSH host keys, the root file system grown to the disk.
# The one idea: the expensive part (debootstrap, ~10 minutes) happens once per machine and
# version of this script; each VM then costs an empty qcow2 overlay and a few kilobytes.
set -eu
VERSION=2 # bump when the base system's recipe changes: a new cache entry is built
MIRROR=${VMWS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=linux-image-amd64,initramfs-tools,systemd-sysv,udev,dbus,systemd-resolved,qemu-guest-agent
PACKAGES=$PACKAGES,openssh-server,sudo,iproute2,iputils-ping,ca-certificates,less,nano
step() { echo "step: $*"; }
die() { echo "error: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 not found: install the Debian package $2"; }

# The first-boot pieces baked into the base (written into the chroot ROOT).
firstboot_files() {
    root=$1
    # The initramfs keeps what vmws appended (/vmws-config) in /run, which the system keeps.
    # klibc's tools only there (no cp): one cat per file.
    cat >"$root/etc/initramfs-tools/scripts/init-bottom/vmws-config" <<'EOF'
#!/bin/sh
case ${1:-} in prereqs) exit 0 ;; esac
if [ -d /vmws-config ]; then
    mkdir -m 0700 /run/vmws-config
    for f in /vmws-config/*; do
        [ -f "$f" ] && (umask 077 && cat "$f" >"/run/vmws-config/${f##*/}")
    done
fi
exit 0
EOF
    chmod 0755 "$root/etc/initramfs-tools/scripts/init-bottom/vmws-config"
    mkdir -p "$root/usr/local/sbin"
    cat >"$root/usr/local/sbin/vmws-firstboot" <<'EOF'
#!/bin/sh
# This VM's settings, which vmws handed over in the initramfs (/run/vmws-config), applied once
# (per id); the SSH host keys made whenever they are missing. /run/vmws-config goes either way.
set -eu
cfg=/run/vmws-config
mark=/var/lib/vmws/configured
if [ -f "$cfg/id" ] && [ "$(cat "$cfg/id")" != "$(cat "$mark" 2>/dev/null || true)" ]; then
    host=$(cat "$cfg/hostname")
    echo "$host" >/etc/hostname
    hostname "$host"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$host" >/etc/hosts
    [ ! -s "$cfg/pwhash" ] || usermod -p "$(cat "$cfg/pwhash")" debian
    if [ -s "$cfg/authorized_keys" ]; then
        install -d -m 0700 -o debian -g debian /home/debian/.ssh
        install -m 0600 -o debian -g debian "$cfg/authorized_keys" /home/debian/.ssh/authorized_keys
    fi
    rm -f /etc/ssh/ssh_host_*
    resize2fs "$(findmnt -n -o SOURCE /)" || echo "vmws-firstboot: the root file system was not grown"
    mkdir -p /var/lib/vmws
    cat "$cfg/id" >"$mark.new" && mv "$mark.new" "$mark"
    echo "vmws-firstboot: applied this VM's settings (host name $host)"
fi
rm -rf "$cfg"
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A
EOF
    chmod 0755 "$root/usr/local/sbin/vmws-firstboot"
    cat >"$root/etc/systemd/system/vmws-firstboot.service" <<'EOF'
[Unit]
Description=This VM's settings from vmws (host name, password, SSH key and host keys, disk size)
DefaultDependencies=no
After=local-fs.target systemd-remount-fs.service
Before=sysinit.target shutdown.target ssh.service getty.target serial-getty@ttyS0.service
Before=systemd-user-sessions.service systemd-networkd.service systemd-hostnamed.service
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/vmws-firstboot
StandardOutput=journal+console

[Install]
WantedBy=sysinit.target
EOF
}

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
    # Shared by every VM, so nothing of one VM: no SSH host keys, an empty machine id (systemd
    # makes one at the first boot), the settings come at the first boot.
    rm -f "$root"/etc/ssh/ssh_host_*
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"
    echo debian >"$root/etc/hostname"
    firstboot_files "$root"
    chroot "$root" systemctl enable systemd-networkd systemd-resolved vmws-firstboot \
        >/dev/null 2>&1 || die "cannot enable the VM's services"
    chroot "$root" update-initramfs -u -k all >"$dir/initramfs.log" 2>&1 ||
        die "update-initramfs failed (see $dir/initramfs.log)"
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
    base=$1 out=$2 host=$3 key=${4:-} hash=${VMWS_OS_PWHASH:-}
    [ -n "$hash" ] || die "no password hash in VMWS_OS_PWHASH"
    need cpio cpio
    step "this VM's settings (host name, password, SSH key) for its first boot"
    umask 077
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mkdir "$tmp/vmws-config"
    echo "$host" >"$tmp/vmws-config/hostname"
    printf '%s\n' "$hash" >"$tmp/vmws-config/pwhash"
    [ -z "$key" ] || cat "$key" >"$tmp/vmws-config/authorized_keys"
    od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$tmp/vmws-config/id"
    (cd "$tmp" && find vmws-config | cpio --quiet -o -H newc -R 0:0) >"$tmp/config.cpio" ||
        die "cpio failed"
    # The kernel looks for the next archive at a 4-byte boundary (zeroes before it are skipped).
    cat "$base/initrd.img" >"$out"
    pad=$(((4 - $(stat -c %s "$out") % 4) % 4))
    head -c "$pad" /dev/zero >>"$out"
    cat "$tmp/config.cpio" >>"$out"
}

case ${1:-} in
base) base "$2" ;;
vm) shift; vm "$@" ;;
*) die "usage: debian.sh base CACHE | VMWS_OS_PWHASH=HASH debian.sh vm BASE OUT HOSTNAME [SSH_KEY]" ;;
esac
