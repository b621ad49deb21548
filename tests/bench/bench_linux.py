#!/usr/bin/env python3
"""Debian's kernel on vmws vs QEMU 7.2 with KVM: same kernel, same initramfs, same run, same place.

The guest is tests/linux/shell-init.sh's (busybox, virtio disk): it says "guest: ready" and then
runs "N COMMAND" lines from the serial console, answering "guest: N rc=S". Both machines get
512 MiB, 1 vCPU and a 64 MiB virtio disk.
  boot      process start to "guest: ready" (Linux to userspace, modules loaded, disk found)
  take      256 MiB touched in a tmpfs, then 4 MiB changed: vmws `snapshot take` guest pause
            vs QEMU `savevm` (QEMU's guest stays stopped throughout)
  revert    back to the snapshot before the 4 MiB: vmws `snapshot revert` pause vs `loadvm`
Prints a table with ratios; never fails on timing. Usage: bench_linux.py BUILDDIR [RUNS]
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_snapshot import Qemu, Serial, Vmws, timed  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 256 MiB of non-zero pages (zero pages would be skipped by both): one random MiB, repeated.
TOUCH = ("mount -t tmpfs -o size=300m tmpfs /mnt && dd if=/dev/urandom of=/mnt/seed bs=1M "
         "count=1 2>/dev/null && for i in $(seq 256); do cat /mnt/seed; done >/mnt/touched")


class Guest:
    """shell-init.sh's protocol over a Serial."""

    def __init__(self, serial):
        self.s = serial
        self.n = 0

    def run(self, cmd, timeout=600):
        self.n += 1
        self.s.sock.sendall(f"{self.n} {cmd}\n".encode())
        self.s.expect(f"guest: {self.n} rc=0", timeout)


def fixture():
    out = subprocess.run([sys.executable, os.path.join(SRC, "tests/linux/fixture.py"), "--init",
                          os.path.join(SRC, "tests/linux/shell-init.sh"), "--modules",
                          "virtio_pci,virtio_blk"], check=True, capture_output=True, text=True)
    return out.stdout.split()


def vmws_run(build, kernel, initrd, runs):
    res = {"boot": [], "take": [], "revert": []}
    home = tempfile.mkdtemp(prefix="vmws-bench-linux-")
    v = Vmws(build, home)
    try:
        for i in range(runs):
            name = f"l{i}"
            v.cmd("create", name, "--memory", "512M", "--cpus", "1", "--disk", "64M",
                  "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0")
            t0 = time.monotonic()
            v.cmd("start", name, "--display", "none")
            log = os.path.join(home, name, "serial.log")
            while b"guest: ready" not in open(log, "rb").read():
                if time.monotonic() - t0 > 600:
                    raise TimeoutError("vmws: Linux did not reach userspace in 600 s")
                time.sleep(0.01)
            res["boot"].append(time.monotonic() - t0)
            g = Guest(v.console(name))
            g.run(TOUCH)
            v.json("snapshot", "take", name, "touched")
            g.run("dd if=/dev/urandom of=/mnt/changed bs=1M count=4 2>/dev/null")
            res["take"].append(v.json("snapshot", "take", name, "changed")["pause_ms"] / 1e3)
            res["revert"].append(v.json("snapshot", "revert", name, "touched")["pause_ms"] / 1e3)
            v.cmd("kill", name)
    finally:
        for i in range(runs):
            subprocess.run([v.bin, "kill", f"l{i}"], env=v.env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    return res


def qemu_run(kernel, initrd, runs):
    res = {"boot": [], "take": [], "revert": []}
    for _ in range(runs):
        tmp = tempfile.mkdtemp(prefix="vmws-bench-linux-qemu-")
        q = None
        try:
            t0 = time.monotonic()
            q = Qemu(kernel, "512M", tmp, "kvm", ["-initrd", initrd, "-append", "console=ttyS0",
                                                  "-device", "virtio-blk-pci,drive=d0"])
            q.serial.expect("guest: ready", 600)
            res["boot"].append(time.monotonic() - t0)
            g = Guest(q.serial)
            g.run(TOUCH)
            q.hmp("savevm touched")
            g.run("dd if=/dev/urandom of=/mnt/changed bs=1M count=4 2>/dev/null")
            res["take"].append(timed(lambda: q.hmp("savevm changed")))
            res["revert"].append(timed(lambda: q.hmp("loadvm touched")))
        finally:
            if q:
                q.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return res


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "."
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    kernel, initrd = fixture()
    ours = vmws_run(build, kernel, initrd, runs)
    theirs = qemu_run(kernel, initrd, runs)
    med = statistics.median
    print(f"Debian's kernel {os.path.basename(kernel)}, busybox initramfs, 512 MiB, 1 vCPU; "
          f"median of {runs} runs.")
    print("Snapshots: 256 MiB touched in a tmpfs, then 4 MiB changed. QEMU 7.2 with KVM, qcow2.")
    print(f"{'operation':34} {'vmws':>12} {'QEMU':>12} {'QEMU / vmws':>12}")
    for key, what in (("boot", "boot to userspace"),
                      ("take", "take (guest paused) vs savevm"),
                      ("revert", "revert (guest paused) vs loadvm")):
        a, b = med(ours[key]), med(theirs[key])
        print(f"{what:34} {a * 1e3:>9.1f} ms {b * 1e3:>9.1f} ms {b / a:>11.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
