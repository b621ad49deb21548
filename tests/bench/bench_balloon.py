#!/usr/bin/env python3
"""Giving memory back: vmws's virtio-balloon vs QEMU 7.2's virtio-balloon-pci
(free-page-reporting=on), the same Debian kernel and busybox initramfs (tests/linux/fixture.py,
shell-init.sh), 640 MiB in a file each (vmws's .vmem; QEMU's memory-backend-file, share=on), one
vCPU, in the same place and run. Per run and tool:
  reclaim   the guest touches all but 32 MiB of its available memory (dd through a buffer that
            big, free page reporting paused: page_reporting_order 11), then the host asks for
            256 MiB (vmws: set-balloon on the control socket; QEMU: QMP balloon); timed until
            the memory file's allocated blocks fell by 250 MiB: MiB/s returned
  reporting with no target, the guest fills a 256 MiB tmpfs file and deletes it; timed from the
            guest's answer to the rm until allocated fell by 200 MiB
Both tools' commands go over their sockets (no CLI process in the timings); allocated is
polled every 10 ms with stat(). vmws and QEMU alternate, RUNS times; medians. Never fails on
timing; exits 1 if something breaks. Usage: bench_balloon.py BUILDDIR [RUNS]
"""
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from bench_cli import where  # same folder
from bench_snapshot import connect_retry  # sockets come up late

MiB = 1 << 20
GUEST_MIB = 640
ORDER = "/sys/module/page_reporting/parameters/page_reporting_order"


class Shell:
    """The guest's shell-init.sh over a stream socket: 'N CMD' in, 'guest: N rc=S' out."""

    def __init__(self, sock):
        self.sock, self.buf, self.n = sock, b"", 0

    def expect(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.buf)
            if m:
                before, self.buf = self.buf[:m.start()], self.buf[m.end():]
                return before, m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waiting for {pattern!r}; saw {self.buf[-300:]!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"console closed waiting for {pattern!r}")
            self.buf += chunk

    def run(self, cmd, timeout=300):
        """Runs CMD; returns its output. Fails unless it exits 0."""
        self.n += 1
        self.sock.sendall(f"{self.n} {cmd}\n".encode())
        out, m = self.expect(rb"guest: %d rc=(\d+)\r?\n" % self.n, timeout)
        if m.group(1) != b"0":
            raise RuntimeError(f"guest: {cmd!r} exited {m.group(1).decode()}: {out[-300:]!r}")
        return out.decode(errors="replace")


class Json:
    """A line-per-object JSON socket: QMP, or vmws's control socket (QMP-style)."""

    def __init__(self, path, qmp):
        self.f = connect_retry(path, 60).makefile("rwb")
        self.f.readline()  # the greeting
        if qmp:
            self.execute("qmp_capabilities")

    def execute(self, cmd, **args):
        self.f.write(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "error" in r:
                raise RuntimeError(f"{cmd}: {r['error']}")
            if "return" in r:
                return r["return"]


class Vmws:
    name = "vmws"

    def __init__(self, build, kernel, initrd, tmp):
        self.vmws = os.path.join(build, "vmws")
        self.env = dict(os.environ, VMWS_HOME=os.path.join(tmp, "home"),
                        VMWS_RUNTIME_DIR=os.path.join(tmp, "run"))
        for d in ("home", "run"):
            os.makedirs(os.path.join(tmp, d), mode=0o700)
        self.cli("create", "bb", "--memory", f"{GUEST_MIB}M", "--kernel", kernel, "--initrd",
                 initrd, "--append", "console=ttyS0")
        self.cli("start", "bb", "--display", "none")
        self.mem_path = os.path.join(tmp, "home", "bb", "bb.vmem")
        run = self.env["VMWS_RUNTIME_DIR"]
        self.ctl = Json(os.path.join(run, "bb.ctl"), qmp=False)
        self.shell = Shell(connect_retry(os.path.join(run, "bb.console"), 60))

    def cli(self, *args):
        subprocess.run([self.vmws, *args], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def set_balloon(self, mib):  # how much the guest gives back
        self.ctl.execute("set-balloon", target=mib * MiB)

    def close(self):
        subprocess.run([self.vmws, "kill", "bb"], env=self.env, capture_output=True)


class Qemu:
    name = "QEMU"

    def __init__(self, build, kernel, initrd, tmp):
        self.mem_path = os.path.join(tmp, "qemu.vmem")
        qmp, ser = os.path.join(tmp, "qmp.sock"), os.path.join(tmp, "serial.sock")
        self.p = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "kvm", "-M", "pc", "-m", f"{GUEST_MIB}M",
             "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot",
             "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0",
             "-object", f"memory-backend-file,id=ram,size={GUEST_MIB}M,"
                        f"mem-path={self.mem_path},share=on",
             "-machine", "memory-backend=ram",
             "-device", "virtio-balloon-pci,free-page-reporting=on",
             "-chardev", f"socket,id=s0,path={ser},server=on,wait=off", "-serial", "chardev:s0",
             "-qmp", f"unix:{qmp},server=on,wait=off"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "qemu.log"), "w"))
        self.ctl = Json(qmp, qmp=True)
        self.shell = Shell(connect_retry(ser, 60))

    def set_balloon(self, mib):  # QEMU's value is the RAM the guest keeps
        self.ctl.execute("balloon", value=(GUEST_MIB - mib) * MiB)

    def close(self):
        self.p.kill()
        self.p.wait()


def allocated_mib(path):
    return os.stat(path).st_blocks * 512 / MiB


def until_fallen(path, start, by, timeout):
    """Seconds until PATH's allocated MiB fell BY below START (None after TIMEOUT)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if start - allocated_mib(path) >= by:
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


def one_run(tool, build, kernel, initrd):
    tmp = tempfile.mkdtemp(prefix=f"vmws-bench-balloon-{tool.name.lower()}-")
    vm = tool(build, kernel, initrd, tmp)
    try:
        t0 = time.monotonic()
        vm.shell.expect(rb"guest: ready\r?\n", 600)
        boot = time.monotonic() - t0
        sh = vm.shell
        sh.run(f"echo 11 > {ORDER}")
        avail = int(sh.run("awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo"))
        sh.run(f"dd if=/dev/zero of=/dev/null bs={avail - 32}M count=1 2>/dev/null")
        a0 = allocated_mib(vm.mem_path)
        t0 = time.monotonic()
        vm.set_balloon(256)
        left = until_fallen(vm.mem_path, a0, 250, 120)
        reclaim = None if left is None else time.monotonic() - t0
        fallen = a0 - allocated_mib(vm.mem_path)
        vm.set_balloon(0)
        time.sleep(3)  # deflated meanwhile
        sh.run(f"echo 9 > {ORDER}")
        sh.run("mkdir -p /t && mount -t tmpfs -o size=300M tmpfs /t")
        sh.run("dd if=/dev/zero of=/t/fill bs=1M count=256 2>/dev/null")
        b1 = allocated_mib(vm.mem_path)
        sh.run("rm /t/fill")
        report = until_fallen(vm.mem_path, b1, 200, 60)
        return {"boot": boot, "reclaim_s": reclaim, "reclaim_mib": fallen,
                "rate": fallen / reclaim if reclaim else None, "report_s": report}
    finally:
        vm.close()
        shutil.rmtree(tmp, ignore_errors=True)


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def main():
    build = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, os.path.join(here, "..", "linux", "fixture.py"),
                          "--init", os.path.join(here, "..", "linux", "shell-init.sh"),
                          "--modules", "virtio_pci,virtio_balloon"],
                         capture_output=True, text=True, check=True).stdout.split()
    kernel, initrd = out[0], out[1]
    print(f"bench_balloon: {GUEST_MIB} MiB, 1 vCPU, {os.path.basename(kernel)}, "
          f"{runs} run(s) each, {where()}")
    res = {Vmws: [], Qemu: []}
    failed = False
    for i in range(runs):
        for tool in (Vmws, Qemu):
            try:
                r = one_run(tool, build, kernel, initrd)
            except Exception as e:  # a broken run is reported, the others still count
                print(f"  run {i + 1} {tool.name}: FAILED: {e}")
                failed = True
                continue
            res[tool].append(r)
            fmt = lambda v, f: "-" if v is None else f % v
            print(f"  run {i + 1} {tool.name:4}: boot {r['boot']:.1f} s; 256 MiB asked, "
                  f"{r['reclaim_mib']:.0f} MiB fell in {fmt(r['reclaim_s'], '%.2f')} s "
                  f"({fmt(r['rate'], '%.0f')} MiB/s); reported 200 MiB in "
                  f"{fmt(r['report_s'], '%.2f')} s", flush=True)
    print()
    print("| median | vmws | QEMU | QEMU / vmws |")
    print("|---|---|---|---|")
    for key, label, f in (("rate", "reclaim on a 256 MiB inflate, MiB/s", "%.0f"),
                          ("reclaim_s", "... seconds until 250 MiB fell", "%.2f"),
                          ("report_s", "free page reporting: 200 MiB fell after the rm, s",
                           "%.2f")):
        a, b = med(r[key] for r in res[Vmws]), med(r[key] for r in res[Qemu])
        ratio = f"{b / a:.2f}" if a and b else "-"
        print(f"| {label} | {'-' if a is None else f % a} | {'-' if b is None else f % b} "
              f"| {ratio} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
