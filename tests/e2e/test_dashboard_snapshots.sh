#!/bin/sh
# Snapshots through the dashboard's keys, driven in tmux: in the default VM, `mem alloc 64`
# and `mem fill before` typed into the Console panel; t (label prompt, Enter takes the
# default "snap1") puts snap1 in the tree; s suspends (VMs panel says suspended and the VMM
# process is gone) and s resumes (running again, memory intact); after `mem fill after`, r on
# snap1 reverts with no dialog: `mem verify before` passes in the guest and the tree shows the
# automatic node that kept the pre-revert state. Exit 0 pass, 1 fail, 77 skip.
set -u
srcdir=${srcdir:-$(dirname "$0")/../..}
exec python3 - "$srcdir/tests/e2e" <<'EOF_PY'
import os, re, sys, time
sys.path.insert(0, sys.argv[1])
from test_dashboard_lib import *


def console(d, cmd, expect, timeout=15):
    """Types CMD into the focused Console panel and waits for EXPECT after it."""
    d.text(cmd)
    d.keys("Enter")
    return d.wait("%r to answer %r" % (cmd, expect),
                  lambda s: s.rfind(expect) > s.rfind(cmd) >= 0, timeout)


def focus(d, panel):
    """Presses Tab until PANEL has the focus (its title is highlighted by name in the bar)."""
    for _ in range(4):
        s = d.screen()
        if panel == "Console" and "typing goes to the guest" in s:
            return
        if panel != "Console" and "typing goes to the guest" not in s and d.focus == panel:
            return
        d.keys("Tab")
        d.focus = {"VMs": "Snapshots", "Snapshots": "Console", "Console": "VMs"}[d.focus]
        time.sleep(0.3)
    raise Fail("cannot focus %s" % panel)


def pid_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return open("/proc/%d/stat" % pid).read().split(")")[-1].split()[0] in "ZX"


def main():
    d = Dash(120, 40)
    d.focus = "VMs"
    step = "start"
    try:
        t0 = time.time()
        d.start()
        d.wait("the default VM running", lambda s: (vm_row(s, "default") or ("",))[0] ==
               "running" and "vmws> " in s, 30)
        step = "fill guest memory"
        focus(d, "Console")
        console(d, "mem alloc 64", "allocated 64 MiB")
        console(d, "mem fill before", "filled 64 MiB with before")
        focus(d, "VMs")

        step = "t: take snap1"
        d.keys("t")
        d.wait("the label prompt", lambda s: "Snapshot label for default: snap1" in s, 5)
        d.keys("Enter")
        d.wait("snap1 in the tree", lambda s: re.search(r"snap1\s+\d+[smhd]", s) and
               "done" in s, 20)
        print("ok: t took snap1 (%.1fs)" % (time.time() - t0))

        step = "s: suspend"
        pid = d.status("default")["pid"]
        d.keys("s")
        d.wait("suspended in the VMs panel",
               lambda s: (vm_row(s, "default") or ("",))[0] == "suspended", 30)
        deadline = time.time() + 10
        while not pid_gone(pid):
            if time.time() > deadline:
                raise Fail("VMM %d still alive after suspend" % pid)
            time.sleep(0.1)
        print("ok: s suspended default; VMM %d gone" % pid)

        step = "s: resume"
        d.keys("s")
        d.wait("running again", lambda s: (vm_row(s, "default") or ("",))[0] == "running", 30)
        focus(d, "Console")
        d.wait("the console reconnected", lambda s: "not connected" not in s, 10)
        console(d, "mem verify before", "verify OK")
        print("ok: s resumed default; guest memory intact")

        step = "r: revert to snap1"
        console(d, "mem fill after", "filled 64 MiB with after")
        focus(d, "Snapshots")
        d.keys("Home")  # the first row: snap1 (the only root)
        time.sleep(0.3)
        d.keys("r")
        d.wait("the revert to finish", lambda s: "reverting default to snap1: done" in s, 30)
        d.wait("the automatic node in the tree", lambda s: "(auto)" in s, 15)
        d.wait("default running after the revert",
               lambda s: (vm_row(s, "default") or ("",))[0] == "running", 15)
        focus(d, "Console")
        d.wait("the console reconnected", lambda s: "not connected" not in s, 10)
        console(d, "mem verify before", "verify OK")
        print("ok: r reverted to snap1: guest memory matches it; tree shows the automatic node")
        d.keys("Tab")
        d.keys("q")
        d.wait("the dashboard to quit", lambda s: "[dashboard exited 0]" in s, 10)
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
