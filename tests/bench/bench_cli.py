#!/usr/bin/env python3
"""What vmws itself costs: a CLI command's wall time and a headless VMM's memory, vs QEMU 7.2.

CLI: wall time from spawn to exit of `vmws version`, `vmws --help`, `vmws list` and `vmws status
NAME` (one headless VM running, so list and status ask its VMM), median of 30 runs each, beside
`qemu-img info` on a small qcow2 (a CLI tool of the same family) and /bin/true (the spawn floor),
plus the shared libraries each binary loads (ldd). Goal: every vmws command <= 5 ms.
VMM: the built-in guest (assets/guest/vmws-guest.bzImage), 1 GiB, 1 vCPU, no display, no sound
(vmws `--display none` and `[audio] enabled = no`; QEMU `-display none -nodefaults`), with 128 MiB
allocated and filled by the guest (`mem alloc 128`, `mem fill`). Overhead is the VMM's RSS minus
its guest-RAM mapping's (bench_boot.py's smaps_overhead). Goal: vmws overhead <= 4 MiB.
Prints a table with ratios; fails only on errors, never on timing or a missed goal.
Usage: bench_cli.py BUILDDIR [RUNS]
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench_boot import smaps_overhead  # the same overhead as the boot bench
from bench_snapshot import Serial, Vmws, connect_retry

MiB = 1 << 20
FILL_MIB = 128
CLI_GOAL_MS = 5
OVERHEAD_GOAL = 4 * MiB


def where():
    place = "in the KVM box" if os.environ.get("VMWS_IN_BOX") else "natively (/dev/kvm here)"
    if os.path.exists("/sys/module/kvm_pvm"):
        place += " on a kvm_pvm host"
    return f"{place}, nice {os.nice(0)}, load average {os.getloadavg()[0]:.2f}"


def wall_ms(argv, env, runs):
    """Median wall time of argv in ms; the first (warm-up) run must succeed."""
    r = subprocess.run(argv, env=env, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.decode()}{r.stdout.decode()}")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def ldd_count(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if ".so" in line and "vdso" not in line)


def maps_count(pid):
    with open(f"/proc/{pid}/maps") as f:
        return len({line.split()[-1] for line in f if ".so" in line})


def memory(pid, extra=None):
    """/proc/PID/status RSS fields, smaps total and guest-RAM RSS, Rss of mappings named extra."""
    m = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                m[key] = int(val.split()[0]) * 1024
    m["total"], m["guest"] = smaps_overhead(pid)
    m["overhead"] = m["total"] - m["guest"]
    m["libs"] = maps_count(pid)
    m["extra"] = 0
    if extra:
        name = ""
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                    name = (line.split(None, 5)[5:] or [""])[0]  # path, maybe "(deleted)"
                elif line.startswith("Rss:") and extra in name:
                    m["extra"] += int(line.split()[1]) * 1024
    return m


def fill(serial, timeout):
    serial.run(f"mem alloc {FILL_MIB}", f"allocated {FILL_MIB} MiB", timeout)
    serial.run("mem fill B", f"filled {FILL_MIB} MiB", timeout)
    time.sleep(0.5)


def vmws_side(build, home, runs):
    v = Vmws(build, home)
    try:
        v.cmd("create", "b", "--memory", "1G", "--cpus", "1")
        conf = os.path.join(home, "b", "vm.conf")
        with open(conf) as f:
            text = f.read()
        if "[audio]\nenabled = yes" not in text:
            raise RuntimeError(f"{conf}: no '[audio] enabled = yes' to turn off")
        with open(conf, "w") as f:
            f.write(text.replace("[audio]\nenabled = yes", "[audio]\nenabled = no"))
        v.cmd("start", "b", "--display", "none")
        pid = v.json("status", "b")["pid"]
        c = v.console("b")
        c.run("", "vmws> ")
        fill(c, 120)
        mem = memory(pid, "vmws-framebuffer")
        cli = {f"vmws {' '.join(a)}": wall_ms([v.bin, *a], v.env, runs)
               for a in (["version"], ["--help"], ["list"], ["status", "b"])}
        v.cmd("stop", "b")
    finally:
        subprocess.run([v.bin, "kill", "b"], env=v.env, capture_output=True)
    return cli, mem


def qemu_side(image, tmp, runs):
    disk = os.path.join(tmp, "small.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "64M"], check=True)
    cli = {"qemu-img info (64M qcow2)": wall_ms(["qemu-img", "info", disk], None, runs),
           "/bin/true (spawn floor)": wall_ms(["/bin/true"], None, runs)}
    ser = os.path.join(tmp, "serial.sock")
    p = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "kvm", "-M", "pc", "-m", "1G", "-smp", "1",
         "-kernel", image, "-display", "none", "-nodefaults", "-no-reboot",
         "-chardev", f"socket,id=s0,path={ser},server=on,wait=off", "-serial", "chardev:s0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c = Serial(connect_retry(ser))
        c.expect("vmws> ", 300)
        fill(c, 300)
        mem = memory(p.pid)
    finally:
        p.kill()
        p.wait()
    return cli, mem


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "."
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    image = os.path.join(build, "assets", "guest", "vmws-guest.bzImage")
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if not shutil.which(tool):
            print(f"bench: {tool} is missing (./bootstrap installs it)")
            return 1
    home = tempfile.mkdtemp(prefix="vmws-bench-")
    try:
        cli, vm = vmws_side(build, home, runs)
        qcli, qm = qemu_side(image, home, runs)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    cli.update(qcli)

    print(f"Ran {where()}.")
    base = cli["qemu-img info (64M qcow2)"]
    print(f"CLI commands, spawn to exit, median of {runs} runs (one headless VM running):")
    print(f"{'command':28} {'wall time':>10} {'x qemu-img':>11}")
    for name, ms in cli.items():
        print(f"{name:28} {ms:>7.2f} ms {ms / base:>11.2f}")
    print(f"shared libraries (ldd): vmws {ldd_count(os.path.join(build, 'vmws'))}, "
          f"qemu-img {ldd_count(shutil.which('qemu-img'))}; mapped by the VMM: "
          f"vmws {vm['libs']}, qemu-system-x86_64 {qm['libs']}")
    slowest = max((k for k in cli if k.startswith("vmws")), key=cli.get)
    print(f"goal: <= {CLI_GOAL_MS} ms: {'met' if cli[slowest] <= CLI_GOAL_MS else 'not met'} "
          f"(slowest: {slowest}, {cli[slowest]:.2f} ms)")

    print()
    print(f"Headless VMM, built-in guest, 1 GiB, 1 vCPU, {FILL_MIB} MiB filled by the guest "
          "(MiB):")
    cols = ("VmRSS", "RssAnon", "RssFile", "RssShmem")
    print(f"{'VMM':20}" + "".join(f"{c:>10}" for c in cols) + f"{'guest RAM':>11}"
          f"{'overhead':>10}{'x vmws':>8}")
    for name, m in (("vmws", vm), ("QEMU 7.2 -accel kvm", qm)):
        print(f"{name:20}" + "".join(f"{m[c] / MiB:>10.1f}" for c in cols) +
              f"{m['guest'] / MiB:>11.1f}{m['overhead'] / MiB:>10.1f}"
              f"{m['overhead'] / vm['overhead']:>8.2f}")
    # The framebuffer is guest memory too: VRAM the guest draws in (headless or not, the
    # guest sees the same machine), sized by [display]. QEMU here has no display device.
    own = vm["overhead"] - vm["extra"]
    print(f"vmws's overhead above includes the framebuffer the guest drew in, "
          f"{vm['extra'] / MiB:.1f} MiB resident; without it: {own / MiB:.1f} MiB")
    print(f"goal: overhead besides guest RAM and framebuffer <= {OVERHEAD_GOAL // MiB} MiB: "
          f"{'met' if own <= OVERHEAD_GOAL else 'not met'} "
          f"({own / MiB:.1f} MiB; vmws / QEMU = {own / qm['overhead']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
