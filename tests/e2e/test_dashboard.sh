#!/bin/sh
# The dashboard, driven in tmux like a person would: `vmws` with a fresh $VMWS_HOME creates
# and starts the default VM (1 GiB, 2 vCPUs, an 8 GiB disk) and shows it running, with its
# network (rx/tx rates, forwards) on the VMs panel; `mem alloc 48` typed into
# the Console panel makes the Memory panel's allocated figure rise by ~48 MiB within 3 s
# while apparent stays put; - and m set the volume and mute; b sets the balloon's target (shown
# in the Memory panel and by vmws mem); 80x24 and 200x60 layouts (after
# a resize: SIGWINCH) render
# without overlap; the ASCII/monochrome fallback renders; q quits and the VM keeps running.
# Exit 0 pass, 1 fail, 77 skip. Prints the screen it saw on failure.
set -u
srcdir=${srcdir:-$(dirname "$0")/../..}
exec python3 - "$srcdir/tests/e2e" <<'EOF_PY'
import os, sys, time
sys.path.insert(0, sys.argv[1])
from test_dashboard_lib import *

TITLES = ["VMs", "Host", "Memory", "Snapshots", "Console"]
MIB = 1 << 20


def main():
    d = Dash(120, 40)
    step = "start"
    try:
        t0 = time.time()
        step = "first run: the default VM appears and runs"
        d.start()
        row = d.wait("the default VM running in the VMs panel",
                     lambda s: (vm_row(s, "default") or ("",))[0] == "running" and
                     "vmws> " in s and vm_row(s, "default"), 30)
        if row[1] != 2 or row[2] != "1.0G":
            raise Fail("default VM shows %d vCPUs and %s (expected 2 and 1.0G)" % row[1:])
        st = d.status("default")
        if not st or st["state"] != "running" or st["cpus"] != 2 or st["memory"] != 1 << 30:
            raise Fail("vmws status default says %r" % st)
        disk = st.get("disk") or {}
        if disk.get("capacity") != 8 << 30 or disk.get("format") != "qcow2":
            raise Fail("the default VM's disk: %r (expected an 8 GiB qcow2)" % disk)
        pid = st["pid"]
        print("ok: default VM created and running (pid %d) after %.1fs" % (pid, time.time() - t0))

        step = "the default VM's VNC password is on screen"
        with open(os.path.join(d.home, "default", "vnc.passwd")) as f:
            pw = f.read().strip()
        d.wait("'password %s' in the VMs panel" % pw, lambda s: ("password " + pw) in s, 10)
        print("ok: the VMs panel shows the default VM's VNC password")

        step = "the default VM's network in the VMs panel"
        d.wait("'net default: rx/tx ... forwards none' in the VMs panel",
               lambda s: "net default: rx/tx" in s and "forwards none" in s, 10)
        print("ok: the VMs panel shows the default VM's network (rx/tx rates, forwards)")

        step = "allocated rises by ~48 MiB within 3 s, apparent stays"
        before = d.wait("the memory figures", lambda s: figure(s, "allocated") is not None and
                        (figure(s, "allocated"), figure(s, "apparent")), 10)
        alloc0, apparent0 = before
        d.keys("Tab", "Tab")  # VMs -> Snapshots -> Console
        d.wait("the console focused", lambda s: "typing goes to the guest" in s, 5)
        d.text("mem alloc 48")
        d.keys("Enter")
        d.wait("the guest's answer in the Console panel", lambda s: "allocated 48 MiB" in s, 10)
        t_answer = time.time()
        after = d.wait("allocated to rise by ~48 MiB",
                       lambda s: (figure(s, "allocated") or 0) - alloc0 >= 44 * MIB and
                       (figure(s, "allocated"), figure(s, "apparent")), 3)
        rise = (after[0] - alloc0) / MIB
        if not 44 <= rise <= 56:
            raise Fail("allocated rose by %.1f MiB, expected ~48" % rise)
        if after[1] != apparent0 or apparent0 != 1 << 30:
            raise Fail("apparent changed: %s -> %s (expected 1.0G both)" % (apparent0, after[1]))
        print("ok: allocated %.1fM -> %.1fM (+%.1f MiB) %.1fs after the guest answered; "
              "apparent %.1fG" % (alloc0 / MIB, after[0] / MIB, rise, time.time() - t_answer,
                                  apparent0 / (1 << 30)))
        d.keys("Tab")  # leave the console
        d.wait("the console unfocused", lambda s: "typing goes to the guest" not in s, 5)

        step = "- and m set the selected VM's volume (what `vmws volume` then reports)"
        d.keys("-")
        d.wait("the volume job", lambda s: "volume 90%" in s, 10)
        d.keys("m")
        d.wait("the mute job", lambda s: "volume 90%, muted" in s, 10)
        vol = json.loads(d.vmws("volume", "default", "--json").stdout)
        if vol.get("volume") != 90 or vol.get("muted") is not True:
            raise Fail("after - and m, vmws volume default says %r" % vol)
        print("ok: - and m: volume 90%, muted")

        step = "b sets the balloon (what `vmws mem --json` then reports)"
        d.wait("the Memory panel's balloon row (no driver in the built-in guest)",
               lambda s: "asked back 0B; no balloon driver in the guest" in s, 10)
        d.keys("b")
        d.wait("the balloon prompt", lambda s: "default gives back to the host" in s, 5)
        d.keys("C-u")
        d.text("64M")
        d.keys("Enter")
        d.wait("the balloon row to show the target", lambda s: "asked back 64.0M" in s, 10)
        bal = json.loads(d.vmws("mem", "default", "--json").stdout).get("balloon") or {}
        if bal.get("target") != 64 * MIB or bal.get("driver") is not False:
            raise Fail("after b 64M, vmws mem default --json's balloon is %r" % bal)
        print("ok: b 64M: the balloon's target is 64 MiB (the built-in guest has no driver)")

        for w, h in ((80, 24), (200, 60)):
            step = "layout %dx%d" % (w, h)
            d.tmux("resize-window", "-t", "t:main", "-x", str(w), "-y", str(h))
            problems = []

            def ok(s):
                nonlocal problems
                problems = check_layout(s, w, h, TITLES)
                return not problems and s.count("\n") >= h - 1
            try:
                d.wait("a clean %dx%d layout" % (w, h), ok, 5)
            except Fail:
                raise Fail("%dx%d layout: %s" % (w, h, "; ".join(problems)))
            if "allocated" not in d.last or "MemFree" not in d.last:
                raise Fail("%dx%d: memory or host figures missing" % (w, h))
            if w >= 200:  # a wide VMs panel has a column of network rates
                d.wait("the VMs panel's NET RX/TX column at %dx%d" % (w, h),
                       lambda s: "NET RX/TX /s" in s and not check_layout(s, w, h, TITLES), 5)
            print("ok: %dx%d layout: 5 panels, boxes closed, no line wider than %d" % (w, h, w))

        step = "ASCII and monochrome fallback at 80x24"
        d.tmux("resize-window", "-t", "t:main", "-x", "80", "-y", "24")
        d.start("ascii", {"VMWS_ASCII": "1", "NO_COLOR": "1", "LANG": "C"})
        d.tmux("resize-window", "-t", "t:ascii", "-x", "80", "-y", "24")
        problems = []

        def ascii_ok(s):
            nonlocal problems
            problems = check_layout(s, 80, 24, TITLES, ascii_only=True)
            return not problems and vm_row(s, "default")
        try:
            d.wait("an ASCII layout", ascii_ok, 10, window="ascii")
        except Fail:
            raise Fail("ASCII layout: %s" % "; ".join(problems))
        d.keys("q", window="ascii")
        d.wait("the ASCII dashboard to quit", lambda s: "[dashboard exited 0]" in s, 5,
               window="ascii")
        print("ok: ASCII/monochrome layout")

        step = "q quits, the VM keeps running"
        d.keys("q")
        d.wait("the dashboard to quit", lambda s: "[dashboard exited 0]" in s, 5)
        st = d.status("default")
        if not st or st["state"] != "running" or st["pid"] != pid:
            raise Fail("after q, vmws status default says %r (expected running, pid %d)" %
                       (st, pid))
        os.kill(pid, 0)
        print("ok: q quit the dashboard; default still running (pid %d)" % pid)
        r = d.vmws("kill", "default")
        if r.returncode != 0:
            raise Fail("vmws kill default: %s" % r.stderr)
        print("PASS in %.1fs" % (time.time() - t0))
        return 0
    except Exception as e:
        print("FAIL (%s): %s" % (step, e))
        print("---- screen ----\n%s\n----------------" % d.last)
        return 1
    finally:
        d.cleanup()


sys.exit(run(main))
EOF_PY
