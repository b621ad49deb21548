#!/usr/bin/env python3
"""Snapshots and suspend: vmws vs QEMU 7.2, same built-in guest, same run.

Guest with 1 GiB RAM and 512 MiB filled, then 4 MiB changed:
  take     vmws `snapshot take` guest pause   vs QEMU `savevm` (guest stopped throughout)
  revert   vmws `snapshot revert` guest pause vs QEMU `loadvm`
  storage  bytes on disk for the incremental snapshot vs QEMU's VM SIZE
Guest with 2 GiB RAM and 512 MiB filled:
  suspend  vmws `suspend` guest pause vs QEMU stop + migrate to a file (virsh managedsave)
Prints a table with ratios; never fails on timing. Usage: bench_snapshot.py BUILDDIR [RUNS]
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

MiB = 1 << 20


class Serial:
    """Expect-style driver of the guest shell over a stream socket or a pipe."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def run(self, cmd, expect, timeout=120):
        self.sock.sendall(cmd.encode() + b"\n")
        return self.expect(expect, timeout)

    def expect(self, text, timeout=120):
        deadline = time.monotonic() + timeout
        want = text.encode()
        while want not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waiting for {text!r}; saw {self.buf[-300:]!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"console closed waiting for {text!r}")
            self.buf += chunk
        self.buf = self.buf[self.buf.index(want) + len(want):]


class Vmws:
    def __init__(self, build, home):
        self.bin = os.path.join(build, "vmws")
        self.env = dict(os.environ, VMWS_HOME=home, VMWS_RUNTIME_DIR=home + "/run")
        self.home = home

    def cmd(self, *args):
        r = subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"vmws {' '.join(args)}: {r.stderr}{r.stdout}")
        return r.stdout

    def json(self, *args):
        return json.loads(self.cmd(*args, "--json"))

    def console(self, name):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(os.path.join(self.home, "run", name + ".console"))
        return Serial(s)


def vmws_bench(build, runs):
    home = tempfile.mkdtemp(prefix="vmws-bench-")
    v = Vmws(build, home)
    res = {"take": [], "revert": [], "storage": [], "suspend": [], "durable": []}
    try:
        v.cmd("create", "b", "--memory", "1G", "--cpus", "1")
        v.cmd("start", "b", "--display", "none")
        c = v.console("b")
        c.run("", "vmws> ")
        c.run("mem alloc 512", "allocated 512 MiB")
        c.run("mem fill A", "filled 512 MiB")
        c.run("mem free", "freed")
        c.run("mem alloc 4", "allocated 4 MiB")  # 512 MiB of A stay in guest RAM
        v.json("snapshot", "take", "b", "base")
        for i in range(runs):
            c.run(f"mem fill B{i}", "filled 4 MiB")
            t = v.json("snapshot", "take", "b", f"inc{i}")
            res["take"].append(t["pause_ms"] / 1e3)
            res["storage"].append(t["memory_bytes"] + t["state_bytes"])
            r = v.json("snapshot", "revert", "b", "base")
            res["revert"].append(r["pause_ms"] / 1e3)
            c = v.console("b")
        v.cmd("stop", "b")
        v.cmd("create", "s", "--memory", "2G", "--cpus", "1")
        for i in range(runs):
            if i:
                v.cmd("stop", "s")  # discards the suspended state: every run starts fresh
            v.cmd("start", "s", "--display", "none")
            c = v.console("s")
            c.run("", "vmws> ")
            c.run("mem alloc 512", "allocated 512 MiB")
            c.run(f"mem fill S{i}", "filled 512 MiB")
            t0 = time.monotonic()
            out = v.cmd("suspend", "s")
            res["durable"].append(time.monotonic() - t0)
            res["suspend"].append(float(re.search(r"paused ([0-9.]+) ms", out).group(1)) / 1e3)
        v.cmd("stop", "s")
    finally:
        subprocess.run(["pkill", "-f", f"VMWS_HOME={home}"], capture_output=True)
        for name in ("b", "s"):
            subprocess.run([v.bin, "kill", name], env=v.env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    return res


def connect_retry(path, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Qemu:
    def __init__(self, image, mem, tmp, accel, extra=()):
        self.tmp = tmp
        disk = os.path.join(tmp, "disk.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"], check=True)
        qmp = os.path.join(tmp, "qmp.sock")
        ser = os.path.join(tmp, "serial.sock")
        self.p = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", accel, "-M", "pc", "-m", mem, "-smp", "1",
             "-kernel", image, "-display", "none", "-nodefaults", "-no-reboot",
             "-drive", f"if=none,id=d0,file={disk},format=qcow2",
             "-chardev", f"socket,id=s0,path={ser},server=on,wait=off", "-serial", "chardev:s0",
             "-qmp", f"unix:{qmp},server=on,wait=off", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.q = connect_retry(qmp)
        self.qf = self.q.makefile("rwb")
        self.qf.readline()
        self.execute("qmp_capabilities")
        self.serial = Serial(connect_retry(ser))

    def execute(self, cmd, **args):
        self.qf.write(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
        self.qf.flush()
        while True:
            r = json.loads(self.qf.readline())
            if "return" in r or "error" in r:
                if "error" in r:
                    raise RuntimeError(f"QEMU {cmd}: {r['error']}")
                return r["return"]

    def hmp(self, line):
        return self.execute("human-monitor-command", **{"command-line": line})

    def close(self):
        self.p.kill()
        self.p.wait()


def timed(f):
    t0 = time.monotonic()
    f()
    return time.monotonic() - t0


def qemu_bench(image, runs, accel):
    res = {"take": [], "revert": [], "storage": [], "suspend": [], "durable": []}
    tmp = tempfile.mkdtemp(prefix="vmws-bench-qemu-")
    try:
        q = Qemu(image, "1G", tmp, accel)
        q.serial.expect("vmws> ", 300)
        q.serial.run("mem alloc 512", "allocated 512 MiB", 300)
        q.serial.run("mem fill A", "filled 512 MiB", 300)
        q.serial.run("mem free", "freed")
        q.serial.run("mem alloc 4", "allocated 4 MiB")
        q.hmp("savevm base")
        for i in range(runs):
            q.serial.run(f"mem fill B{i}", "filled 4 MiB")
            res["take"].append(timed(lambda: q.hmp(f"savevm inc{i}")))
            info = q.hmp("info snapshots")
            m = re.search(rf"inc{i}\s+([0-9.]+) (\w+)", info)
            unit = {"KiB": 1 << 10, "MiB": MiB, "GiB": 1 << 30}.get(m.group(2), 1) if m else 0
            res["storage"].append(float(m.group(1)) * unit if m else 0)
            res["revert"].append(timed(lambda: q.hmp("loadvm base")))
        q.close()
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for i in range(runs):
            q = Qemu(image, "2G", tmp, accel)
            q.serial.expect("vmws> ", 300)
            q.serial.run("mem alloc 512", "allocated 512 MiB", 300)
            q.serial.run("mem fill S", "filled 512 MiB", 300)
            path = os.path.join(tmp, "managedsave")

            def save():
                q.execute("stop")
                q.execute("migrate", uri=f"exec:cat > {path}")
                while q.execute("query-migrate").get("status") not in ("completed", "failed"):
                    time.sleep(0.005)
            res["suspend"].append(timed(save))
            res["durable"].append(res["suspend"][-1] + timed(lambda: subprocess.run(["sync", path])))
            q.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "."
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    image = os.path.join(build, "assets", "guest", "vmws-guest.bzImage")
    ours = vmws_bench(build, runs)
    theirs = qemu_bench(image, runs, "kvm")
    med = statistics.median
    print("Snapshots: 1 GiB guest, 512 MiB filled, then 4 MiB changed; suspend: 2 GiB guest,")
    print(f"512 MiB filled. Median of {runs} runs. QEMU 7.2 with KVM, qcow2 internal snapshots.")
    print(f"{'operation':34} {'vmws':>12} {'QEMU':>12} {'QEMU / vmws':>12}")
    for key, what in (("take", "take (guest paused) vs savevm"),
                      ("revert", "revert (guest paused) vs loadvm"),
                      ("suspend", "suspend (guest paused) vs stop+migrate"),
                      ("durable", "suspend until RAM on disk vs same")):
        a, b = med(ours[key]), med(theirs[key])
        print(f"{what:34} {a * 1e3:>9.1f} ms {b * 1e3:>9.1f} ms {b / a:>11.0f}x")
    a, b = med(ours["storage"]), med(theirs["storage"])
    print(f"{'bytes on disk per snapshot':34} {a / MiB:>8.2f} MiB {b / MiB:>8.1f} MiB "
          f"{b / a:>11.0f}x")
    print(f"vmws storage / changed bytes (4 MiB): {a / (4 * MiB):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
