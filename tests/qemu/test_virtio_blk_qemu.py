#!/usr/bin/env python3
"""The built-in guest's virtio-blk driver and file store against an independent device: QEMU's
(and its virtio-net driver against QEMU's virtio-net-pci with -netdev user).

Boots assets/guest/vmws-guest.bzImage in QEMU (TCG) with a modern-only virtio-blk-pci on a
raw image, formats the file store, writes and reads a file, runs a short random write/flush
workload, powers off, and checks the image on the host: the file's bytes at the offsets the
file store's layout gives (assets/guest/user/fs.c) and the stress region hashing to what the
guest read back; `net info` sees the link up and `net arp` gets slirp's MAC for 10.0.2.2 (the
same checks tests/e2e/test_virtio_net.c makes on vmws's card). If our drivers only worked with
our own device models, this is where it would show. Exit 0 pass, 1 fail, 77 skip (no qemu-system-x86_64).
"""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time


def fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def main():
    builddir = os.environ.get("builddir", ".")
    image = os.path.join(builddir, "assets", "guest", "vmws-guest.bzImage")
    if not shutil.which("qemu-system-x86_64"):
        print("SKIP: qemu-system-x86_64 not installed")
        return 77
    if not os.path.exists(image):
        print(f"FAIL: {image} not built")
        return 1
    tmp = tempfile.mkdtemp(prefix="vmws-vblk-qemu.")
    disk = os.path.join(tmp, "disk.raw")
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    sock_path = os.path.join(tmp, "serial.sock")
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-M", "pc", "-m", "256M", "-kernel", image,
           "-append", "console=ttyS0", "-display", "none", "-nodefaults", "-no-reboot",
           "-drive", f"file={disk},if=none,id=d0,format=raw",
           "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
           "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,disable-legacy=on",
           "-chardev", f"socket,id=con,path={sock_path},server=on,wait=on",
           "-serial", "chardev:con"]
    log = open(os.path.join(tmp, "qemu.log"), "w")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    seen = b""

    def fail(msg):
        print("FAIL: " + msg)
        print("---- guest console ----")
        print(seen.decode("latin-1").replace("\r", ""))
        print("---- qemu ----")
        log.flush()
        print(open(os.path.join(tmp, "qemu.log")).read())
        return 1

    try:
        conn = None
        deadline = time.time() + 30
        while conn is None and time.time() < deadline:
            try:
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.connect(sock_path)
            except OSError:
                conn = None
                time.sleep(0.05)
        if conn is None:
            return fail("no serial socket from qemu")
        conn.settimeout(0.2)

        def expect(text, secs):
            nonlocal seen
            start = len(seen)
            end = time.time() + secs
            while time.time() < end:
                i = seen.find(text, start)
                if i >= 0:
                    return seen[start:i + len(text)]
                try:
                    d = conn.recv(65536)
                    if not d:
                        break
                    seen += d
                except socket.timeout:
                    pass
            return None

        def run(command, want, secs=60):
            mark = len(seen)
            conn.sendall(command.encode() + b"\r")
            out = expect(b"vmws> ", secs)
            text = seen[mark:].decode("latin-1").replace("\r", "")
            if out is None or want not in text:
                return None
            return text

        if expect(b"vmws> ", 60) is None:
            return fail("no prompt")
        if not run("ls", "0 files"):
            return fail("ls on a fresh disk")
        if run("write greeting hello from qemu", "vmws> ") is None:
            return fail("write")
        if not run("cat greeting", "hello from qemu\n"):
            return fail("cat")
        out = run("disk stress 40 99", "verified, fnv1a ", 120)
        if not out:
            return fail("disk stress")
        guest_hash = out.split("fnv1a ")[1][:16]
        if not run("sync", "sync: done"):
            return fail("sync")
        if not run("net info", "link up"):
            return fail("net info")
        if not run("net arp", "10.0.2.2 is at 52:55:0a:00:02:02"):
            return fail("net arp")
        conn.sendall(b"poweroff\r")
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return fail("qemu did not exit after poweroff")

        img = open(disk, "rb").read()
        if img[:8] != b"VMWSFS01":
            return fail("no file store superblock in the image")
        for i in range(64):
            e = img[512 + 64 * i:512 + 64 * (i + 1)]
            size, used = struct.unpack_from("<II", e, 48)
            if used and e[:48].rstrip(b"\0") == b"greeting":
                data = img[(64 + 8 * i) * 512:][:size]
                if data != b"hello from qemu\n":
                    return fail(f"greeting in the image is {data!r}")
                break
        else:
            return fail("no directory entry for greeting in the image")
        host_hash = fnv1a(img[1 << 20:2 << 20])
        if host_hash != guest_hash:
            return fail(f"stress region hashes to {host_hash}, the guest read {guest_hash}")
        print(f"PASS: file store and {guest_hash} stress region agree with QEMU's virtio-blk; "
              "ARP through QEMU's virtio-net")
        return 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
