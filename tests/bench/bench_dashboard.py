#!/usr/bin/env python3
"""What the dashboard costs: CPU per refresh with 8 running VMs, and each data source's cost.

Starts 8 VMs (built-in guest, 256 MiB, each with 128 MiB touched by `mem alloc 128`) in a
fresh $VMWS_HOME, runs the dashboard (`vmws` with no arguments) in tmux at 200x60 for a
measured window, and reads its CPU time (utime+stime of the process, and of the child
commands it reaps: `vmws list`, `vmws snapshot list`) from /proc. It also measures, per call,
each source a refresh could use - the VMM's query-memory (which reads its own
/proc/self/smaps) and query-status, reading /proc/PID/smaps or smaps_rollup from outside,
stat() of the .vmem, /proc/meminfo - on a 256 MiB VM and on a 4 GiB VM with 1 GiB touched,
so the choice of sources is backed by numbers. Prints a table; never fails on timing.
Usage: bench_dashboard.py BUILDDIR [SECONDS]
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid):
    """(own CPU s, reaped children's CPU s) of PID from /proc/PID/stat."""
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    # after "(comm)": state=0 ... utime=11 stime=12 cutime=13 cstime=14
    return (int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK


class Ctl:
    """A control-socket client: one JSON object per line (QMP-style)."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rb")
        json.loads(self.f.readline())  # greeting
        self.id = 0

    def execute(self, cmd):
        self.id += 1
        self.s.sendall(json.dumps({"execute": cmd, "id": self.id}).encode() + b"\n")
        while True:
            m = json.loads(self.f.readline())
            if m.get("id") == self.id:
                return m.get("return")


def per_call(fn, n):
    """(wall µs, this process's CPU µs) per call."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return ((time.perf_counter() - w0) * 1e6 / n, (time.process_time() - c0) * 1e6 / n)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    vmws = os.path.join(build, "vmws")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or not shutil.which("tmux"):
        print("bench_dashboard: needs /dev/kvm and tmux; skipped")
        return 0
    tmp = tempfile.mkdtemp(prefix="vmws-bench-dash-")
    env = dict(os.environ, VMWS_HOME=tmp + "/home", VMWS_RUNTIME_DIR=tmp + "/run",
               LANG="C.UTF-8", LC_ALL="C.UTF-8")
    env.pop("DISPLAY", None)
    os.makedirs(env["VMWS_RUNTIME_DIR"], mode=0o700)
    sock = "vmws-bench-dash-%d" % os.getpid()

    def run(*args, inp=None, timeout=60):
        return subprocess.run([vmws] + list(args), env=env, input=inp, capture_output=True,
                              text=True, timeout=timeout)

    def vmm_pid(name):
        return json.loads(run("status", name, "--json").stdout)["pid"]

    names = ["vm%d" % i for i in range(1, 9)]
    try:
        for n in names:
            run("create", n, "--memory", "256M")
            r = run("start", n, "--display", "none")
            if r.returncode:
                print("cannot start %s: %s" % (n, r.stderr))
                return 0
            run("console", n, "--idle", "300", inp="mem alloc 128\n")
        pids = [vmm_pid(n) for n in names]

        # Baseline: the 8 idle VMMs' own CPU without a dashboard.
        v0 = sum(cpu_of(p)[0] for p in pids)
        time.sleep(10)
        vmm_idle = (sum(cpu_of(p)[0] for p in pids) - v0) / 10

        subprocess.run(["tmux", "-L", sock, "-f", "/dev/null", "new-session", "-d", "-x", "200",
                        "-y", "60", "-e", "VMWS_HOME=" + env["VMWS_HOME"], "-e",
                        "VMWS_RUNTIME_DIR=" + env["VMWS_RUNTIME_DIR"], "-e", "LANG=C.UTF-8",
                        "exec " + vmws], env=env, check=True)
        out = subprocess.run(["tmux", "-L", sock, "list-panes", "-F", "#{pane_pid}"], env=env,
                             capture_output=True, text=True).stdout
        dash = int(out.split()[0])
        time.sleep(5)  # the first refresh, snapshot lists, settling
        own0, kids0 = cpu_of(dash)
        v0 = sum(cpu_of(p)[0] for p in pids)
        t0 = time.time()
        time.sleep(seconds)
        own1, kids1 = cpu_of(dash)
        v1 = sum(cpu_of(p)[0] for p in pids)
        el = time.time() - t0
        refreshes = el  # 1 Hz
        own = (own1 - own0) / refreshes
        kids = (kids1 - kids0) / refreshes
        vmm_busy = (v1 - v0) / el
        screen = subprocess.run(["tmux", "-L", sock, "capture-pane", "-p"], env=env,
                                capture_output=True, text=True).stdout
        subprocess.run(["tmux", "-L", sock, "kill-server"], env=env)

        # The alternative it rejects: query-memory of every running VM at each refresh. (A new
        # tmux socket: a server just killed may still hold the old one.)
        sock += "-all"
        subprocess.run(["tmux", "-L", sock, "-f", "/dev/null", "new-session", "-d", "-x", "200",
                        "-y", "60", "-e", "VMWS_HOME=" + env["VMWS_HOME"], "-e",
                        "VMWS_RUNTIME_DIR=" + env["VMWS_RUNTIME_DIR"], "-e", "LANG=C.UTF-8",
                        "-e", "VMWS_DASHBOARD_MEMORY_ALL=1", "exec " + vmws], env=env, check=True)
        time.sleep(3)
        v0 = sum(cpu_of(p)[0] for p in pids)
        t0 = time.time()
        time.sleep(seconds / 2)
        all_vmm = (sum(cpu_of(p)[0] for p in pids) - v0) / (time.time() - t0)
        subprocess.run(["tmux", "-L", sock, "kill-server"], env=env)

        print("Dashboard with 8 running VMs (256 MiB, 128 MiB touched each), 200x60, %ds:" %
              seconds)
        print("  dashboard process        %6.2f ms CPU per refresh  (%.2f%% of a core at 1 Hz)"
              % (own * 1e3, own * 100))
        print("  + its child commands     %6.2f ms per refresh       (vmws list / snapshot "
              "list, run only when a file changed)" % (kids * 1e3))
        print("  VMMs answering it        %6.2f ms per refresh       (8 VMMs: %.2f%% of a core vs "
              "%.2f%% without the dashboard)" % (max(0.0, vmm_busy - vmm_idle) * 1e3, vmm_busy * 100,
                                vmm_idle * 100))
        print("  (CPU times from /proc/PID/stat, %d Hz ticks: +-%.0f ms over the window)" %
              (TICK, 1000 / TICK))
        print("  rejected alternative, query-memory of all 8 VMs each refresh: VMMs %.2f ms "
              "per refresh" % (max(0.0, all_vmm - vmm_idle) * 1e3))

        # Each source, per call.
        big = "big"
        run("create", big, "--memory", "4G")
        run("start", big, "--display", "none")
        run("console", big, "--idle", "300", inp="mem alloc 1024\n", timeout=120)
        rows = []
        for name in ("vm1", big):
            pid = vmm_pid(name)
            ctl = Ctl(os.path.join(env["VMWS_RUNTIME_DIR"], name + ".ctl"))
            n = 200
            c0 = cpu_of(pid)[0]
            qm = per_call(lambda: ctl.execute("query-memory"), n)
            qm_vmm = (cpu_of(pid)[0] - c0) * 1e6 / n
            c0 = cpu_of(pid)[0]
            qs = per_call(lambda: ctl.execute("query-status"), n)
            qs_vmm = (cpu_of(pid)[0] - c0) * 1e6 / n
            sm = per_call(lambda: read_file("/proc/%d/smaps" % pid), n)
            sr = per_call(lambda: read_file("/proc/%d/smaps_rollup" % pid), n)
            st = per_call(lambda: os.stat(os.path.join(env["VMWS_HOME"], name, name + ".vmem")),
                          n * 10)
            mi = per_call(lambda: read_file("/proc/meminfo"), n)
            vm = ctl.execute("query-memory")["vm"]
            label = "%s (%dM, %dM resident)" % (name, vm["configured"] >> 20,
                                                vm["resident"] >> 20)
            rows.append((label, qm, qm_vmm, qs, qs_vmm, sm, sr, st, mi))
        print("\nData sources, per call (wall µs / CPU µs of the side that does the work):")
        print("  %-30s %17s %17s %13s %13s %9s %9s" % ("VM", "query-memory", "query-status",
                                                      "smaps", "smaps_rollup", "stat",
                                                      "meminfo"))
        for label, qm, qm_vmm, qs, qs_vmm, sm, sr, st, mi in rows:
            print("  %-30s %8.0f / %6.0f %8.0f / %6.0f %6.0f/%6.0f %6.0f/%6.0f %4.1f/%4.1f "
                  "%4.0f/%4.0f" % (label, qm[0], qm_vmm, qs[0], qs_vmm, sm[0], sm[1], sr[0],
                                   sr[1], st[0], st[1], mi[0], mi[1]))
        print("  (query-* CPU is the VMM's, from /proc ticks; file reads are this process's)")
        print("\nThe dashboard uses: query-status on a kept-open connection for every running "
              "VM,\nstat() of each .vmem (allocated), query-memory for the selected VM only "
              "(exact\nfigures of the RAM mapping), /proc/meminfo for the host.")
        if os.environ.get("BENCH_SHOW_SCREEN"):
            print(screen)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], env=env, capture_output=True)
        home = env["VMWS_HOME"]
        for n in os.listdir(home) if os.path.isdir(home) else []:
            subprocess.run([vmws, "kill", n], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
