#!/usr/bin/env python3
"""Boot-to-banner time and VMM memory overhead of the built-in guest: vmws vs QEMU.

Both boot the very same bzImage (assets/guest/vmws-guest.bzImage) with 1 GiB, 1 vCPU and no
display (vmws --display none, QEMU -display none; vmws still runs its ES1370, QEMU has none). Boot
time runs from process start to the shell prompt on the serial console. Overhead is the VMM
process's RSS minus the resident pages of its guest-RAM mapping (found in /proc/PID/smaps as
the mapping of exactly the guest's RAM size), i.e. what the VMM itself costs. Prints a table
with ratios; never fails on timing. Usage: bench_boot.py BUILDDIR [RUNS]
"""
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

RAM = 1 << 30
PROMPT = b"vmws> "


def smaps_overhead(pid):
    """(total RSS, RSS of the guest RAM mapping) in bytes."""
    total = guest = 0
    size = rss = 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
            if m:
                if size == RAM:
                    guest += rss
                size = int(m.group(2), 16) - int(m.group(1), 16)
                rss = 0
            elif line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
                total += rss
    if size == RAM:
        guest += rss
    return total, guest


def wait_for(stream_read, deadline):
    buf = b""
    while time.monotonic() < deadline:
        chunk = stream_read()
        if chunk:
            buf += chunk
            if PROMPT in buf:
                return True
        else:
            time.sleep(0.0005)
    return False


def run_vmws(build, home):
    env = dict(os.environ, VMWS_HOME=home, VMWS_RUNTIME_DIR=home + "/run")
    vmws = os.path.join(build, "vmws")
    subprocess.run([vmws, "delete", "--force", "bench"], env=env, capture_output=True)
    subprocess.run([vmws, "create", "bench", "--memory", "1G", "--cpus", "1"], env=env,
                   check=True, capture_output=True)
    log = os.path.join(home, "bench", "serial.log")
    t0 = time.monotonic()
    p = subprocess.Popen([vmws, "run", "bench", "--display", "none"], env=env,
                         stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    pos = [0]

    def read():
        try:
            with open(log, "rb") as f:
                f.seek(pos[0])
                d = f.read()
                pos[0] += len(d)
                return d
        except FileNotFoundError:
            return b""

    ok = wait_for(read, t0 + 60)
    t = time.monotonic() - t0
    time.sleep(0.5)
    total, guest = smaps_overhead(p.pid)
    subprocess.run([vmws, "stop", "bench"], env=env, capture_output=True)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
    return (t if ok else None), total - guest


def run_qemu(image, accel):
    t0 = time.monotonic()
    p = subprocess.Popen(["qemu-system-x86_64", "-accel", accel, "-M", "pc", "-m", "1G",
                          "-smp", "1", "-kernel", image, "-display", "none", "-nodefaults",
                          "-no-reboot", "-serial", "stdio", "-monitor", "none"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    os.set_blocking(p.stdout.fileno(), False)

    def read():
        r, _, _ = select.select([p.stdout], [], [], 0.001)
        return p.stdout.read() if r else b""

    ok = wait_for(read, t0 + 120)
    t = time.monotonic() - t0
    time.sleep(0.5)
    total, guest = smaps_overhead(p.pid)
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
    return (t if ok else None), total - guest


def fmt_t(v):
    return "timeout" if v is None else f"{v * 1000:.1f} ms"


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "."
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    image = os.path.join(build, "assets", "guest", "vmws-guest.bzImage")
    if not shutil.which("qemu-system-x86_64"):
        print("bench: qemu-system-x86_64 is missing (./bootstrap installs it)")
        return 1
    home = tempfile.mkdtemp(prefix="vmws-bench-")
    try:
        results = {"vmws (KVM)": [run_vmws(build, home) for _ in range(runs)]}
        for accel in ("kvm", "tcg"):
            results[f"QEMU 7.2 -accel {accel}"] = [run_qemu(image, accel) for _ in range(runs)]
    finally:
        shutil.rmtree(home, ignore_errors=True)

    def med(rs, i):
        vals = [r[i] for r in rs if r[i] is not None]
        return statistics.median(vals) if vals else None

    base_t, base_o = med(results["vmws (KVM)"], 0), med(results["vmws (KVM)"], 1)
    print(f"Built-in guest, 1 GiB, 1 vCPU; median of {runs} runs")
    print(f"{'VMM':24} {'boot to prompt':>15} {'x vmws':>8} {'VMM overhead RSS':>18} {'x vmws':>8}")
    for name, rs in results.items():
        t, o = med(rs, 0), med(rs, 1)
        rt = f"{t / base_t:.1f}" if t and base_t else "-"
        ro = f"{o / base_o:.1f}" if o and base_o else "-"
        print(f"{name:24} {fmt_t(t):>15} {rt:>8} {o / 2**20 if o else 0:>14.1f} MiB {ro:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
