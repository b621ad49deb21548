#!/usr/bin/env python3
"""Guest screen over VNC: vmws vs QEMU, same guest, same client, same run.

Both run the built-in guest (assets/guest/vmws-guest.bzImage) on KVM with 256 MiB and 1 vCPU
and draw the same 1024x768x32 screen: under vmws on the framebuffer vmws describes in
boot_params.screen_info; under QEMU (`-kernel`, no VESA mode is set for us) the guest finds
QEMU's Bochs VBE display (-vga std), programs 1024x768x32 itself and draws on its BAR, so the
guest-side work is identical. One VNC client, tests/e2e/vncprobe (libvncclient, its default
encodings: tight, zrle, ultra, copyrect, hextile, zlib, corre, rre, raw), connects to each.

Per sample the guest changes the whole screen (`fb fill RRGGBB`: one colour; `fb noise N`:
incompressible pixels; measured again with the client refusing JPEG, since libvncserver's
tight encoder sends JPEG when a client allows it and QEMU's does not unless started lossy) and prints a line on its serial port right after the last pixel write.
Latency runs from that line's arrival on the host to the client having the new pixel at the
screen's centre (both CLOCK_MONOTONIC); bytes are what the client's socket received for that
change (TCP_INFO), 3 MiB being the raw size. Also: the VMM's CPU with one client on a still
screen for 5 s. Prints medians and ratios; never fails on timing. Usage: bench_display.py BUILDDIR
"""
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SAMPLES = 10


class Serial:
    """A guest serial line on pipes; remembers when each chunk arrived."""

    def __init__(self, p):
        self.p = p
        self.chunks = []  # (monotonic time, bytes)
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            d = self.p.stdout.read1(65536)
            if not d:
                return
            with self.lock:
                self.chunks.append((time.monotonic(), d))

    def mark(self):
        with self.lock:
            return len(self.chunks)

    def wait(self, pattern, since, timeout):
        """Monotonic time at which PATTERN was complete in the output after mark SINCE."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                buf = b""
                for t, d in self.chunks[since:]:
                    buf += d
                    if re.search(pattern, buf):
                        return t
            time.sleep(0.0005)
        raise RuntimeError("no %r on the serial line" % pattern)

    def send(self, s):
        self.p.stdin.write(s.encode())
        self.p.stdin.flush()


def free_port(lo, hi):
    for port in range(lo, hi):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            pass
        finally:
            s.close()
    raise RuntimeError("no free port")


def cpu_seconds(pid):
    """CPU time of PID's live threads, in ns resolution (schedstat), not 10 ms ticks."""
    total = 0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that just ended
    return total / 1e9


def measure(probe, port, serial, vmm_pid):
    out = {}
    # Idle cost: one client attached, nothing changes.
    serial.send("\r")
    time.sleep(1.0)
    while not 2 <= time.gmtime().tm_sec <= 52:  # the guest's clock moves once a minute
        time.sleep(0.2)
    c0, t0 = cpu_seconds(vmm_pid), time.monotonic()
    r = subprocess.run([probe, "127.0.0.1:%d" % port, "watch", "5"], capture_output=True,
                       text=True, timeout=30)
    out["idle_cpu"] = (cpu_seconds(vmm_pid) - c0) / (time.monotonic() - t0) * 100
    m = re.search(r"updates (\d+) rects \d+ bytes (\d+)", r.stdout)
    out["idle_updates"] = int(m.group(1)) if m else -1
    out["idle_bytes"] = int(m.group(2)) if m else -1

    for kind in ("fill", "noise", "noise-lossless"):
        args = [probe, "--timeout", "10", "127.0.0.1:%d" % port]
        if kind == "noise-lossless":
            args.insert(1, "--lossless")
        for _ in range(SAMPLES):
            args += ["wait-change", "512", "384", "10"]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        lat, lat_cmd, nbytes = [], [], []
        colors = ["ff0000", "00ff00", "0000ff", "ffff00", "00ffff"]
        for i in range(SAMPLES):
            line = p.stdout.readline()
            while line and not line.startswith("ready"):
                line = p.stdout.readline()
            if not line:
                raise RuntimeError("vncprobe ended early")
            time.sleep(0.2)
            if kind == "fill":
                cmd, marker = "fb fill %s\r" % colors[i % 5], rb"fb fill: " + colors[i % 5].encode()
            else:
                cmd, marker = "fb noise %d\r" % (i + 1), rb"fb noise: %d\r\n" % (i + 1)
            mk = serial.mark()
            t_cmd = time.monotonic()
            serial.send(cmd)
            t_marker = serial.wait(marker, mk, 10)
            line = p.stdout.readline()
            m = re.match(r"changed \w+ at (\d+) ns bytes (\d+)", line)
            if not m:
                raise RuntimeError("vncprobe: %r" % line)
            t_vnc = int(m.group(1)) / 1e9
            lat.append((t_vnc - t_marker) * 1000)
            lat_cmd.append((t_vnc - t_cmd) * 1000)
            nbytes.append(int(m.group(2)))
        p.wait(timeout=10)
        out[kind] = (statistics.median(lat), statistics.median(lat_cmd), statistics.median(nbytes),
                     min(lat), max(lat))
    return out


def run_vmws(build, probe):
    home = tempfile.mkdtemp(prefix="vmws-bench-display-")
    env = dict(os.environ, VMWS_HOME=home, VMWS_RUNTIME_DIR=home + "/run")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    os.mkdir(home + "/run", 0o700)
    vmws = os.path.join(build, "vmws")
    subprocess.run([vmws, "create", "bd", "--memory", "256M"], env=env, check=True,
                   capture_output=True)
    subprocess.run([vmws, "vnc-password", "bd", "--clear"], env=env, check=True,
                   capture_output=True)  # the probe, like QEMU's side, connects without one
    vmm = con = None
    try:
        r = subprocess.run([vmws, "start", "bd", "--display", "vnc"], env=env, check=True,
                           capture_output=True, text=True)
        port = int(re.search(r"127\.0\.0\.1:(\d+)", r.stdout).group(1))
        with open(os.path.join(home, "bd", "vmm.pid")) as f:
            vmm = int(f.read().split()[0])
        con = subprocess.Popen([vmws, "console", "bd"], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
        serial = Serial(con)
        serial.send("\r")
        serial.wait(rb"vmws> ", 0, 20)
        return measure(probe, port, serial, vmm)
    finally:
        if con:
            con.kill()
            con.wait()
        subprocess.run([vmws, "kill", "bd"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def run_qemu(build, probe):
    image = os.path.join(build, "assets", "guest", "vmws-guest.bzImage")
    port = free_port(5970, 5999)
    q = subprocess.Popen(["qemu-system-x86_64", "-accel", "kvm", "-M", "pc", "-m", "256M",
                          "-smp", "1", "-kernel", image, "-vga", "std",
                          "-vnc", "127.0.0.1:%d" % (port - 5900), "-nodefaults", "-no-reboot",
                          "-serial", "stdio", "-monitor", "none"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    try:
        serial = Serial(q)
        serial.wait(rb"vmws> ", 0, 60)
        mk = serial.mark()
        serial.send("fb info\r")
        serial.wait(rb"fb: 1024x768", mk, 10)
        return measure(probe, port, serial, q.pid)
    finally:
        q.kill()
        q.wait()


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    probe = os.path.join(build, "tests", "e2e", "vncprobe")
    if not os.access(probe, os.X_OK):
        subprocess.run(["make", "-C", build, "tests/e2e/vncprobe"], capture_output=True)
    if not os.access(probe, os.X_OK) or not os.access("/dev/kvm", os.W_OK):
        print("bench_display: needs %s and /dev/kvm" % probe)
        return 0
    results = {"vmws": run_vmws(build, probe)}
    if shutil.which("qemu-system-x86_64"):
        try:
            results["qemu"] = run_qemu(build, probe)
        except Exception as e:  # a peer that fails is reported, not fatal
            print("bench_display: QEMU run failed: %s" % e)
    print("\nGuest screen over VNC (1024x768x32, 1 client, %d samples each, medians)" % SAMPLES)
    print("%-34s %12s %12s %8s" % ("", "vmws", "qemu", "vmws/qemu"))

    def row(label, key, idx, fmt):
        v = results["vmws"][key][idx] if idx is not None else results["vmws"][key]
        q = results.get("qemu")
        qv = (q[key][idx] if idx is not None else q[key]) if q else None
        ratio = "%8.2f" % (v / qv) if qv else "%8s" % "-"
        print("%-34s %12s %12s %s" % (label, fmt % v, fmt % qv if qv is not None else "-", ratio))

    row("fill: latency ms (write->client)", "fill", 0, "%.1f")
    row("fill: latency ms (command->client)", "fill", 1, "%.1f")
    row("fill: bytes per full-screen change", "fill", 2, "%d")
    row("noise: latency ms (write->client)", "noise", 0, "%.1f")
    row("noise: latency ms (command->client)", "noise", 1, "%.1f")
    row("noise: bytes per full-screen change", "noise", 2, "%d")
    row("noise, no JPEG: latency ms", "noise-lossless", 0, "%.1f")
    row("noise, no JPEG: bytes per change", "noise-lossless", 2, "%d")
    row("still screen 5 s: VMM CPU %", "idle_cpu", None, "%.3f")
    row("still screen 5 s: bytes to client", "idle_bytes", None, "%d")
    for name, r in results.items():
        print("%s latency range ms: fill %.1f..%.1f, noise %.1f..%.1f" %
              (name, r["fill"][3], r["fill"][4], r["noise"][3], r["noise"][4]))
    print("(raw size of one full screen: %d bytes)" % (1024 * 768 * 4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
