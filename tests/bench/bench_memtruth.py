#!/usr/bin/env python3
"""What query-memory costs, before and after the cheap memory truth (issue 15), on a 1 GiB and
an 8 GiB guest (sparse: the built-in guest touches 256 MiB of each with `mem alloc 256` and
`mem fill`), file backend, no display, no sound.
  before  query-memory {"detail": true}: everything from /proc/self/smaps, every call (what
          every query-memory did before)
  after   query-memory: allocated by fstat, resident and dirty by cachestat(2) on the .vmem
          (or mincore for anonymous memory), smaps' other figures at most 5 s old
Per call: the VMM's own measuring time (its reply's cost_us) and the round trip over the
control socket, medians of N calls. Beside them, QEMU 7.2 (same guest, same sizes, a
memory-backend-file share=on): its nearest equivalent, query-memory-size-summary over QMP (it
reports only configured sizes, no allocated or resident figure), same run and place.
Never fails on timing. Usage: bench_memtruth.py BUILDDIR [CALLS]
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench_cli import where
from bench_snapshot import Qemu, Vmws
from bench_dashboard import Ctl

TOUCH_MIB = 256


def ctl_call(ctl, cmd, args=None):
    ctl.id += 1
    msg = {"execute": cmd, "id": ctl.id}
    if args:
        msg["arguments"] = args
    ctl.s.sendall(json.dumps(msg).encode() + b"\n")
    while True:
        m = json.loads(ctl.f.readline())
        if m.get("id") == ctl.id:
            if "error" in m:
                raise RuntimeError(f"{cmd}: {m['error']}")
            return m["return"]


def measure(fn, calls):
    """(median round trip µs, median cost_us of the replies or None, last reply)."""
    rtt, cost, r = [], [], None
    for _ in range(calls):
        t0 = time.perf_counter()
        r = fn()
        rtt.append((time.perf_counter() - t0) * 1e6)
        if isinstance(r, dict) and "cost_us" in r:
            cost.append(r["cost_us"])
    return statistics.median(rtt), (statistics.median(cost) if cost else None), r


def print_vmws(gib, before, after):
    (b_rtt, b_cost, _), (a_rtt, a_cost, a) = before, after
    print(f"  vmws {gib} GiB, {TOUCH_MIB} MiB touched        VMM measuring     round trip")
    print("    %-26s %11.0f µs %11.0f µs   smaps" % ("before (smaps each call)", b_cost, b_rtt))
    print("    %-26s %11.0f µs %11.0f µs   %s, %.1fx cheaper to measure" %
          ("after", a_cost, a_rtt, a["method"], b_cost / max(a_cost, 1)))
    print("    after: resident %d MiB, allocated %d MiB, dirty %d MiB" %
          (a["vm"]["resident"] >> 20, a["vm"]["allocated"] >> 20, a["vm"]["dirty"] >> 20),
          flush=True)


def vmws_sizes(build, sizes, calls):
    home = tempfile.mkdtemp(prefix="vmws-bench-mt-")
    v = Vmws(build, home)
    out = {}
    try:
        for gib in sizes:
            name = f"m{gib}"
            v.cmd("create", name, "--memory", f"{gib}G", "--cpus", "1", "--net", "none")
            conf = os.path.join(home, name, "vm.conf")
            text = open(conf).read().replace("[audio]\nenabled = yes", "[audio]\nenabled = no")
            open(conf, "w").write(text)
            v.cmd("start", name, "--display", "none")
            c = v.console(name)
            c.run("", "vmws> ")
            c.run(f"mem alloc {TOUCH_MIB}", f"allocated {TOUCH_MIB} MiB", 600)
            c.run("mem fill A", f"filled {TOUCH_MIB} MiB", 600)
            ctl = Ctl(os.path.join(home, "run", name + ".ctl"))
            before = measure(lambda: ctl_call(ctl, "query-memory", {"detail": True}), calls)
            after = measure(lambda: ctl_call(ctl, "query-memory"), calls)
            out[gib] = (before, after)
            print_vmws(gib, before, after)
            v.cmd("kill", name)
    finally:
        for gib in sizes:
            subprocess.run([v.bin, "kill", f"m{gib}"], env=v.env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    return out


def qemu_sizes(build, sizes, calls, accel):
    image = os.path.join(build, "assets", "guest", "vmws-guest.bzImage")
    out = {}
    for gib in sizes:
        tmp = tempfile.mkdtemp(prefix="vmws-bench-mtq-")
        q = None
        try:
            q = Qemu(image, f"{gib}G", tmp, accel,
                     ["-object", f"memory-backend-file,id=ram,size={gib}G,mem-path={tmp}/ram,"
                      "share=on", "-machine", "memory-backend=ram"])
            q.serial.run("", "vmws> ", 120)
            touched = f"{TOUCH_MIB} MiB touched"
            try:  # QEMU's figures do not depend on it (configured sizes only): bounded
                q.serial.run(f"mem alloc {TOUCH_MIB}", f"allocated {TOUCH_MIB} MiB", 120)
            except TimeoutError:
                touched = f"its guest's mem alloc {TOUCH_MIB} unfinished after 120 s"
            out[gib] = (touched,measure(lambda: q.execute("query-memory-size-summary"), calls),
                        measure(lambda: q.hmp("info memory_size_summary"), calls))
        except Exception as e:  # QEMU is the peer; say why it has no figures
            out[gib] = str(e)
        finally:
            if q:
                q.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main():
    build = sys.argv[1]
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    sizes = (1, 8)
    print(f"query-memory's cost, {where()}; {calls} calls each, medians")
    v = vmws_sizes(build, sizes, calls)
    accel = "kvm" if os.access("/dev/kvm", os.W_OK) else "tcg"
    q = qemu_sizes(build, sizes, calls, accel)
    for gib in sizes:
        if isinstance(q.get(gib), str):
            print(f"  QEMU ({accel}) {gib} GiB: not measured: {q[gib]}")
        else:
            touched, (s_rtt, _, s), (h_rtt, _, _) = q[gib]
            print("  QEMU (%s) %d GiB, %s: query-memory-size-summary %.0f µs round trip "
                  "(configured sizes only: %s); HMP info memory_size_summary %.0f µs" %
                  (accel, gib, touched, s_rtt, json.dumps(s), h_rtt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
