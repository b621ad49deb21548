#!/usr/bin/env python3
"""Disk throughput: vmws's virtio-blk vs QEMU 7.2's, same built-in guest, same qcow2, same run.

Each run copies one empty qcow2 image (qemu-img defaults: v3, 64 KiB clusters) for each tool,
so both start from identical bytes, boots the built-in guest on it (1 CPU, 256 MiB) and runs,
in this order, from 4 MiB on (past its file store; see `disk bench` in
assets/guest/user/virtio_blk.c):
  seq-write   SEQ MiB in 64 KiB requests + flush (fresh clusters: measures allocation)
  seq-read    the same SEQ MiB
  rand-write  RAND/2 MiB of 4 KiB requests + flush at random offsets in a fresh region 32
              times as large, after the sequential one (~80% of writes allocate a cluster)
  rand-write  RAND MiB of 4 KiB requests + flush inside the written sequential region
  rand-read   RAND MiB of 4 KiB requests inside the sequential region
The guest times each step with its TSC (calibrated against the ACPI PM timer) and keeps one
request in flight: its driver is synchronous. QEMU runs with cache=writeback, which is what
vmws does (pread/pwrite through the host page cache, fdatasync on a guest flush); reads hit
the host page cache on both. vmws and QEMU alternate, RUNS times; the table shows medians.
After each run both images are checked (qemu-img check) and compared (qemu-img compare: the
guest wrote the same bytes through both). Never fails on timing; exits 1 if something breaks.
Usage: bench_disk.py BUILDDIR [SEQ_MIB [RAND_MIB [RUNS]]]
"""
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from bench_snapshot import connect_retry  # same folder: QEMU's sockets come up late

MiB = 1 << 20
IMAGE_MIB = 1024
START_MIB = 4
LINE = re.compile(rb"disk bench (\S+): (\d+) MiB in (\d+) ms, (\d+\.\d) MiB/s, (\d+) requests "
                  rb"of (\d+) KiB \((\d+)/s\)([^\r\n]*)")


class Serial:
    """Expect-style driver of the guest shell over a stream socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def run(self, cmd, expect, timeout=120):
        """Sends CMD, skips to its echo (past any prompt left over) and returns what came
        between the echo and EXPECT."""
        self.sock.sendall(cmd.encode() + b"\r")
        if cmd:
            self.expect(cmd, 10)
        return self.expect(expect, timeout)

    def expect(self, text, timeout=120):
        """Waits for TEXT; returns everything before it and drops both from the buffer."""
        deadline = time.monotonic() + timeout
        want = text.encode() if isinstance(text, str) else text
        while want not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waiting for {want!r}; saw {self.buf[-300:]!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"console closed waiting for {want!r}; saw {self.buf[-300:]!r}")
            self.buf += chunk
        i = self.buf.index(want)
        before, self.buf = self.buf[:i], self.buf[i + len(want):]
        return before


def plan(seq_mib, rand_mib):
    """(row label, guest command) in the order both tools run them, and the MiB they span."""
    fresh, alloc_mib = START_MIB + seq_mib, max(rand_mib // 2, 1)
    steps = [("seq-write 64K (allocating)", f"disk bench seq-write {seq_mib} {START_MIB}"),
             ("seq-read 64K", f"disk bench seq-read {seq_mib} {START_MIB}"),
             ("rand-write 4K (allocating)",
              f"disk bench rand-write {alloc_mib} {fresh} {alloc_mib * 32}"),
             ("rand-write 4K (overwrite)",
              f"disk bench rand-write {rand_mib} {START_MIB} {seq_mib}"),
             ("rand-read 4K", f"disk bench rand-read {rand_mib} {START_MIB} {seq_mib}")]
    return steps, fresh + alloc_mib * 32


def run_plan(serial, steps, booting):
    """Runs each step; returns {label: (MiB/s, requests/s, guest ms, host ms, line)}. BOOTING:
    the console was connected before the guest started, so its banner's prompt will come."""
    if booting:
        # Nothing may be typed before the prompt: a byte that reaches QEMU's UART before the
        # guest turns its FIFO on is dropped, and QEMU's serial then stops taking input.
        serial.expect("vmws> ", 300)
    else:
        serial.run("", "vmws> ", 300)
    serial.run("disk info", "vmws> ")
    res = {}
    for label, cmd in steps:
        t0 = time.monotonic()
        out = serial.run(cmd, "vmws> ", 600)
        host_ms = (time.monotonic() - t0) * 1e3
        m = LINE.search(out)
        if not m:
            raise RuntimeError(f"`{cmd}` printed {out.decode('latin-1').strip()!r}")
        res[label] = (float(m.group(4)), int(m.group(7)), int(m.group(3)), host_ms,
                      m.group(0).decode())
    return res


def vmws_run(build, image, steps, log):
    home = tempfile.mkdtemp(prefix="vmws-bench-disk-")
    env = dict(os.environ, VMWS_HOME=home, VMWS_RUNTIME_DIR=home + "/run")
    binary = os.path.join(build, "vmws")

    def vmws(*args):
        r = subprocess.run([binary, *args], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"vmws {' '.join(args)}: {r.stderr}{r.stdout}")
        return r.stdout

    try:
        vmws("create", "d", "--memory", "256M", "--cpus", "1", "--disk", f"{IMAGE_MIB}M")
        disk = os.path.join(home, "d", "disk.qcow2")
        shutil.copyfile(image, disk)  # the VM's own disk.qcow2, replaced by the bench image
        vmws("start", "d", "--display", "none")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(os.path.join(home, "run", "d.console"))
        res = run_plan(Serial(s), steps, False)
        s.close()
        vmws("stop", "d")
        shutil.copyfile(disk, log)  # kept for the checks after both runs
        return res
    finally:
        subprocess.run([binary, "kill", "d"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def qemu_run(kernel, disk, steps, tmp):
    ser = os.path.join(tmp, "serial.sock")
    qlog = open(os.path.join(tmp, "qemu.log"), "w")
    p = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "kvm", "-M", "pc", "-m", "256M", "-smp", "1",
         "-kernel", kernel, "-display", "none", "-nodefaults", "-no-reboot",
         "-drive", f"file={disk},format=qcow2,if=none,id=d0,cache=writeback",
         "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
         "-chardev", f"socket,id=s0,path={ser},server=on,wait=on", "-serial", "chardev:s0"],
        stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT)
    try:
        serial = Serial(connect_retry(ser, 30))
        res = run_plan(serial, steps, True)
        serial.sock.sendall(b"poweroff\r")
        p.wait(timeout=30)
        return res
    except Exception:
        qlog.flush()
        sys.stderr.write(open(os.path.join(tmp, "qemu.log")).read())
        raise
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


def sizes(path):
    st = os.stat(path)
    return st.st_size, st.st_blocks * 512


def check_images(ours_img, theirs_img):
    """What is wrong with the two images after a run: qemu-img check on each, and compare."""
    broken = []
    for name, img in (("vmws", ours_img), ("QEMU", theirs_img)):
        r = subprocess.run(["qemu-img", "check", "-q", img], capture_output=True, text=True)
        if r.returncode != 0:
            broken.append(f"qemu-img check on the {name} image: {r.stdout}{r.stderr}".strip())
    r = subprocess.run(["qemu-img", "compare", "-q", ours_img, theirs_img],
                       capture_output=True, text=True)
    if r.returncode != 0:
        broken.append(f"the two images' contents differ: {r.stdout}{r.stderr}".strip())
    return broken


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    seq_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    rand_mib = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    kernel = os.path.join(build, "assets", "guest", "vmws-guest.bzImage")
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if not shutil.which(tool):
            print(f"bench_disk: {tool} is not installed; nothing to compare against")
            return 1
    steps, end_mib = plan(seq_mib, rand_mib)
    if end_mib > IMAGE_MIB:
        print(f"bench_disk: SEQ {seq_mib} and RAND {rand_mib} MiB need {end_mib} MiB, more "
              f"than the {IMAGE_MIB} MiB image")
        return 1
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    ours = {label: [] for label, _ in steps}
    theirs = {label: [] for label, _ in steps}
    broken, notes = [], []
    tmp = tempfile.mkdtemp(prefix="vmws-bench-disk-")
    try:
        base = os.path.join(tmp, "base.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, f"{IMAGE_MIB}M"],
                       check=True)
        ours_img, theirs_img = os.path.join(tmp, "vmws.qcow2"), os.path.join(tmp, "qemu.qcow2")
        for _ in range(runs):
            shutil.copyfile(base, theirs_img)
            for name, res, got in (("vmws", ours, vmws_run(build, base, steps, ours_img)),
                                   ("QEMU", theirs, qemu_run(kernel, theirs_img, steps, tmp))):
                for label, (mibs, iops, guest_ms, host_ms, _) in got.items():
                    res[label].append((mibs, iops))
                    if guest_ms > host_ms + 5:  # the guest's clock cannot outrun the host's
                        notes.append(f"{name} {label}: the guest counted {guest_ms} ms, the "
                                     f"host saw {host_ms:.0f} ms for the whole command")
            broken += check_images(ours_img, theirs_img)

        med = statistics.median
        print(f"Disk: built-in guest (1 CPU, 256 MiB), {IMAGE_MIB} MiB qcow2 from qemu-img "
              "(identical start), one request")
        print("in flight. vmws virtio-blk vs QEMU 7.2 KVM virtio-blk-pci (modern), "
              f"cache=writeback. Median of {runs} runs.")
        print(f"{'mode':27} {'vmws MiB/s':>10} {'QEMU MiB/s':>10} {'vmws/QEMU':>9} "
              f"{'vmws IO/s':>9} {'QEMU IO/s':>9} {'vmws min-max':>13} {'QEMU min-max':>13}")
        for label, _ in steps:
            a = med(m for m, _ in ours[label])
            b = med(m for m, _ in theirs[label])
            ai = med(i for _, i in ours[label])
            bi = med(i for _, i in theirs[label])
            ratio = f"{a / b:.2f}" if b else "-"
            spread = [f"{min(m for m, _ in r[label]):.0f}-{max(m for m, _ in r[label]):.0f}"
                      for r in (ours, theirs)]
            print(f"{label:27} {a:>10.1f} {b:>10.1f} {ratio:>9} {ai:>9.0f} {bi:>9.0f} "
                  f"{spread[0]:>13} {spread[1]:>13}")
        for name, img in (("vmws", ours_img), ("QEMU", theirs_img)):
            size, alloc = sizes(img)
            print(f"image after, {name}: {size / MiB:.1f} MiB file, {alloc / MiB:.1f} MiB "
                  "allocated on the host")
        if load > 0.5:
            print(f"note: load average {load:.2f} when the bench started: other work shared "
                  "the CPUs, expect noise")
        for n in notes:
            print("note: " + n)
        if broken:
            for b in broken:
                print("BROKEN: " + b)
            return 1
        print("qemu-img check: all images clean; qemu-img compare: vmws and QEMU images "
              "identical")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
