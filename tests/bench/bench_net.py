#!/usr/bin/env python3
"""Network: vmws's virtio-net behind libslirp vs QEMU 7.2's virtio-net-pci with -netdev user
(libslirp too), the same Debian kernel and busybox initramfs (tests/linux/fixture.py), 1 CPU,
256 MiB, same run, same place (both natively, or both in the KVM box with -accel kvm).

The guest gets its address by udhcpc, then, against an HTTP server this script runs on the
host's 127.0.0.1 (10.0.2.2 in the guest):
  host->guest  busybox wget of BIG MiB to /dev/null: the time from sending the command on the
               serial console to its answer (the guest's process start is in both)
  guest->host  busybox wget --post-file of BIG/2 MiB (random, without NUL bytes: busybox posts
               the file as a string) from the guest's tmpfs: the server times it from the
               request's arrival to the body's last byte
  fetch        20 sequential wget of a 1 KiB file: the median time between two requests'
               arrivals at the server (a whole fetch: wget's start, connect, request, response)
QEMU is run twice: as a user gets it (its virtio-net offers checksum and segmentation offloads,
which vmws's does not) and with the offloads off (the same features as vmws's card). vmws and
QEMU alternate, RUNS times; the table shows medians. Never fails on timing; exits 1 if a
transfer fails. Usage: bench_net.py BUILDDIR [BIG_MIB [RUNS]]
"""
import http.server
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench_snapshot import connect_retry  # same folder: QEMU's sockets come up late

MiB = 1 << 20
OFFLOADS_OFF = ("csum=off,guest_csum=off,gso=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,"
                "guest_ufo=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off,"
                "mrg_rxbuf=off")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, big):
        super().__init__(("127.0.0.1", 0), Handler)
        self.big, self.small = os.urandom(big), os.urandom(1024)
        self.arrivals, self.uploads = [], []


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.arrivals.append((self.path, time.monotonic()))
        body = self.server.big if self.path == "/big" else self.server.small
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        view = memoryview(body)
        for off in range(0, len(body), MiB):
            self.wfile.write(view[off:off + MiB])

    def do_POST(self):
        t0 = time.monotonic()
        left = int(self.headers.get("Content-Length", "0"))
        got = 0
        while left:
            chunk = self.rfile.read(min(left, MiB))
            if not chunk:
                break
            got += len(chunk)
            left -= len(chunk)
        self.server.uploads.append((got, time.monotonic() - t0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Guest:
    """tests/linux/shell-init.sh over a stream socket: 'N CMD' in, 'guest: N rc=S' out."""

    def __init__(self, sock):
        self.sock, self.buf, self.n = sock, b"", 0

    def expect(self, want, timeout):
        deadline = time.monotonic() + timeout
        while want not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waiting for {want!r}; saw {self.buf[-400:]!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"console closed waiting for {want!r}")
            self.buf += chunk
        self.buf = self.buf[self.buf.index(want) + len(want):]

    def check(self, cmd, timeout=300):
        """Runs CMD; returns the seconds from sending it to its answer. Raises if it failed."""
        self.n += 1
        t0 = time.monotonic()
        self.sock.sendall(f"{self.n} {cmd}\n".encode())
        want = f"guest: {self.n} rc=".encode()
        self.expect(want, timeout)
        dt = time.monotonic() - t0
        deadline = time.monotonic() + 10
        while b"\n" not in self.buf and time.monotonic() < deadline:
            self.sock.settimeout(1)
            self.buf += self.sock.recv(4096)
        status = self.buf.split(b"\n", 1)[0].strip()
        if status != b"0":
            raise RuntimeError(f"`{cmd}` in the guest: exit status {status.decode()}")
        return dt


def workload(guest, srv, big_mib, script):
    """The three measures: (host->guest MiB/s, guest->host MiB/s, fetch ms)."""
    port = srv.server_address[1]
    guest.expect(b"guest: ready", 300)
    guest.check(f"udhcpc -i eth0 -s {script} -n -q -t 10 -T 2 >/dev/null")
    url = f"http://10.0.2.2:{port}"
    guest.check(f"timeout 120 wget -q -O /dev/null {url}/small")  # ARP, first connection
    down = guest.check(f"timeout 600 wget -q -O /dev/null {url}/big")
    up_mib = max(big_mib // 2, 1)
    # busybox wget posts the file as a C string: no NUL bytes in it
    guest.check(f"dd if=/dev/urandom bs=1M count={up_mib} 2>/dev/null | tr '\\000' '\\001' "
                ">/tmp/up")
    srv.uploads.clear()
    guest.check(f"timeout 600 wget -q -O /dev/null --post-file /tmp/up {url}/up")
    got, up_s = srv.uploads[-1]
    if got != up_mib * MiB:
        raise RuntimeError(f"the server got {got} of {up_mib * MiB} uploaded bytes")
    guest.check("rm /tmp/up")
    srv.arrivals.clear()
    guest.check(f"for i in $(seq 21); do timeout 60 wget -q -O /dev/null {url}/small || exit 1; "
                "done")
    t = [at for path, at in srv.arrivals if path == "/small"]
    fetch_ms = statistics.median(b - a for a, b in zip(t, t[1:])) * 1e3
    return big_mib / down, up_mib / up_s, fetch_ms


def vmws_run(build, kernel, initrd, srv, big_mib, script):
    home = tempfile.mkdtemp(prefix="vmws-bench-net-")
    env = dict(os.environ, VMWS_HOME=home, VMWS_RUNTIME_DIR=home + "/run")
    binary = os.path.join(build, "vmws")

    def vmws(*args):
        r = subprocess.run([binary, *args], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"vmws {' '.join(args)}: {r.stderr}{r.stdout}")

    try:
        vmws("create", "n", "--memory", "256M", "--cpus", "1", "--disk", "16M", "--kernel", kernel,
             "--initrd", initrd, "--append", "console=ttyS0")
        vmws("start", "n", "--display", "none")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(os.path.join(home, "run", "n.console"))
        res = workload(Guest(s), srv, big_mib, script)
        s.close()
        return res
    finally:
        subprocess.run([binary, "kill", "n"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def qemu_run(kernel, initrd, srv, big_mib, script, tmp, device):
    ser = os.path.join(tmp, "serial.sock")
    disk = os.path.join(tmp, "disk.raw")
    with open(disk, "wb") as f:
        f.truncate(16 * MiB)
    qlog = open(os.path.join(tmp, "qemu.log"), "w")
    p = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "kvm", "-M", "pc", "-m", "256M", "-smp", "1",
         "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0", "-display", "none",
         "-nodefaults", "-no-reboot",
         "-drive", f"file={disk},format=raw,if=none,id=d0",
         "-device", "virtio-blk-pci,drive=d0,disable-legacy=on",
         "-netdev", "user,id=n0", "-device", device,
         "-chardev", f"socket,id=s0,path={ser},server=on,wait=on", "-serial", "chardev:s0"],
        stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT)
    try:
        return workload(Guest(connect_retry(ser, 30)), srv, big_mib, script)
    except Exception:
        qlog.flush()
        sys.stderr.write(open(os.path.join(tmp, "qemu.log")).read())
        raise
    finally:
        p.kill()
        p.wait()


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    big_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    if not shutil.which("qemu-system-x86_64"):
        print("bench_net: qemu-system-x86_64 is not installed; nothing to compare against")
        return 1
    here = os.path.dirname(os.path.abspath(__file__))
    linux = os.path.normpath(os.path.join(here, "..", "linux"))
    script = os.path.join(linux, "udhcpc.script")
    out = subprocess.run([sys.executable, os.path.join(linux, "fixture.py"), "--init",
                          os.path.join(linux, "shell-init.sh"), "--modules",
                          "virtio_pci,virtio_blk,virtio_net", "--files", script],
                         capture_output=True, text=True, check=True).stdout.split()
    kernel, initrd = out[0], out[1]
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    srv = Server(big_mib * MiB)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    tools = [("vmws", None), ("QEMU", "virtio-net-pci,netdev=n0,disable-legacy=on"),
             ("QEMU, no offloads", "virtio-net-pci,netdev=n0,disable-legacy=on," + OFFLOADS_OFF)]
    got = {name: [] for name, _ in tools}
    tmp = tempfile.mkdtemp(prefix="vmws-bench-net-")
    try:
        for _ in range(runs):
            for name, device in tools:
                if device is None:
                    got[name].append(vmws_run(build, kernel, initrd, srv, big_mib, script))
                else:
                    got[name].append(qemu_run(kernel, initrd, srv, big_mib, script, tmp, device))
    finally:
        srv.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    where = "both in the KVM box" if os.environ.get("VMWS_IN_BOX") else "both natively"
    print(f"Network: Debian's {os.path.basename(kernel)[8:]} with busybox (1 CPU, 256 MiB), "
          f"user-mode NAT, against a server on the host's 127.0.0.1; median of {runs} runs "
          f"({where}).")
    print(f"{'':28} {'host->guest MiB/s':>17} {'guest->host MiB/s':>17} {'fetch ms':>9}")
    rows = {name: [med(r[i] for r in got[name]) for i in range(3)] for name, _ in tools}
    for name, _ in tools:
        down, up, fetch = rows[name]
        print(f"{name:28} {down:>17.1f} {up:>17.1f} {fetch:>9.1f}")
    for name, _ in tools[1:]:
        down, up, fetch = rows[name]
        v = rows["vmws"]
        print(f"{'vmws / ' + name:28} {v[0] / down:>17.2f} {v[1] / up:>17.2f} "
              f"{v[2] / fetch:>9.2f}")
    if load > 0.5:
        print(f"note: load average {load:.2f} when the bench started: other work shared the "
              "CPUs, expect noise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
