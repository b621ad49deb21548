#!/bin/sh
# vmws without KVM (app/cli_boxed.c): with KVM forced off (VMWS_BOX=always; on a machine
# without /dev/kvm the probe gives the same), the workstation runs its VMs in a KVM box of its
# own, and a user sees the same workstation:
#   - `vmws` in tmux shows the default VM running within 2 minutes, the dashboard's header
#     says VMs run in an emulated KVM host, the Host panel counts the box's QEMU;
#   - `vmws list` on the host lists it; `vmws console default` runs `mem alloc 64`,
#     `mem fill`, `mem verify`;
#   - the dashboard's t takes a snapshot and r reverts to it (guest memory as it was);
#   - a VNC client on the host's 127.0.0.1 gets the guest's screen;
#   - the VM's .vmem is in the host's $VMWS_HOME with its true allocated size;
#   - `vmws stop default` (the last VM) stops the box, and nothing is left running.
# It boots its own box (not the test suite's), so it runs outside any box, like test_box.sh;
# whoever runs it holds /tmp/vmws-box.lock. Exit 0 pass, 1 fail.
set -u
srcdir=${srcdir:-$(dirname "$0")/../..}
export VMWS_BOX=always
exec python3 - "$srcdir/tests/e2e" <<'EOF_PY'
import os, re, shutil, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from test_dashboard_lib import *

PROBE = os.path.join(os.path.dirname(os.path.abspath(VMWS)), "tests", "e2e", "vncprobe")


class BoxedDash(Dash):
    def box_dir(self):
        return os.path.join(self.home, ".box")

    def cleanup(self):
        # The VMMs run in the box: stopping the box ends them (never kill host pids from a
        # pidfile written in the box: they are the box's).
        subprocess.run([VMWS, "box", "stop", "--dir", self.box_dir()], env=self.env,
                       capture_output=True, timeout=60)
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], env=self.env,
                       capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def console(d, lines, expect, timeout=180):
    """`vmws console default` on a pipe: LINES typed, the output once it was quiet for 10 s."""
    r = subprocess.run([VMWS, "console", "default", "--idle", "10000"], env=d.env,
                       input="".join(l + "\n" for l in lines), capture_output=True, text=True,
                       timeout=timeout)
    for e in expect:
        if e not in r.stdout:
            raise Fail("vmws console: no %r after %r in:\n%s\nstderr: %s" %
                       (e, lines, r.stdout, r.stderr))
    return r.stdout


def left_behind(d):
    """Processes on the host that belong to this test's workstation (its $VMWS_HOME in their
    command line or environment): the box's QEMU and supervisor, vmws clients."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read()
            env = open("/proc/%s/environ" % pid, "rb").read()
        except OSError:
            continue
        if d.home.encode() in cmd or ("VMWS_HOME=" + d.home).encode() + b"\0" in env + b"\0":
            found.append("%s %s" % (pid, cmd.replace(b"\0", b" ").decode(errors="replace")))
    return found


def main():
    d = BoxedDash(140, 45, {"VMWS_BOX": "always"})
    d.env["VMWS_BOX"] = "always"
    d.focus = "VMs"
    step = "start"
    try:
        t0 = time.time()
        d.start()
        d.wait("the default VM running in the dashboard (in the box)",
               lambda s: (vm_row(s, "default") or ("",))[0] == "running" and "vmws> " in s, 120)
        s = d.screen()
        if "emulated KVM host (vmws box)" not in s.split("\n")[0]:
            raise Fail("the header does not say the VMs run in the KVM box: %r" % s.split("\n")[0])
        d.wait("the Host panel counting the box's QEMU",
               lambda s: "Host (outside the KVM box)" in s and "KVM box (QEMU)" in s, 30)
        print("ok: the dashboard shows default running after %.1fs, in the KVM box" %
              (time.time() - t0))

        step = "vmws list"
        r = d.vmws("list", timeout=60)
        if not re.search(r"^default\s+running\s", r.stdout, re.M):
            raise Fail("vmws list: %r %r" % (r.stdout, r.stderr))
        print("ok: vmws list on the host lists default running")

        step = "vmws console"
        t = time.time()
        console(d, ["mem alloc 64", "mem fill before", "mem verify before"],
                ["allocated 64 MiB", "filled 64 MiB with before", "verify OK"])
        print("ok: vmws console default: mem alloc 64, fill, verify OK (%.1fs)" % (time.time() - t))
        # The box's kernel writes the guest's pages back to the host's file within its
        # writeback interval (30 s), so the host sees them soon, not at once.
        vmem = os.path.join(d.home, "default", "default.vmem")
        t = time.time()
        while True:
            st = os.stat(vmem)
            if 64 << 20 <= st.st_blocks * 512 < st.st_size:
                break
            if time.time() - t > 90:
                raise Fail("%s: %d bytes allocated of %d 90 s after the guest filled 64 MiB "
                           "(expected at least 64 MiB, sparse)" %
                           (vmem, st.st_blocks * 512, st.st_size))
            time.sleep(1)
        print("ok: %s on the host: %d MiB allocated of %d MiB (%.0fs after the fill)" %
              (vmem, st.st_blocks * 512 >> 20, st.st_size >> 20, time.time() - t))

        step = "t: take snap1"
        d.keys("t")
        d.wait("the label prompt", lambda s: "Snapshot label for default: snap1" in s, 10)
        d.keys("Enter")
        d.wait("snap1 in the tree", lambda s: re.search(r"snap1\s+\d+[smhd]", s) and
               "done" in s, 120)
        print("ok: t took snap1")
        console(d, ["mem fill after"], ["filled 64 MiB with after"])

        step = "r: revert to snap1"
        d.keys("Tab")  # VMs -> Snapshots
        time.sleep(0.5)
        d.keys("Home")
        time.sleep(0.5)
        d.keys("r")
        d.wait("the revert to finish", lambda s: "reverting default to snap1: done" in s, 120)
        d.wait("default running after the revert",
               lambda s: (vm_row(s, "default") or ("",))[0] == "running", 60)
        console(d, ["mem verify before"], ["verify OK"])
        print("ok: r reverted to snap1: the guest's memory is as it was")

        step = "VNC"
        st = d.status("default")
        port = (((st or {}).get("display") or {}).get("vnc") or {}).get("port")
        if not port:
            raise Fail("vmws status default --json names no VNC port: %r" % st)
        pw = open(os.path.join(d.home, "default", "vnc.passwd")).read().strip()
        ppm = os.path.join(d.tmp, "screen.ppm")
        r = subprocess.run([PROBE, "--timeout", "60", "--password", pw, "127.0.0.1:%d" % port,
                            "capture", ppm], capture_output=True, text=True, timeout=150)
        if r.returncode != 0:
            raise Fail("vncprobe on the host's 127.0.0.1:%d exited %d: %s %s" %
                       (port, r.returncode, r.stdout, r.stderr))
        data = open(ppm, "rb").read()
        m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+255\s", data)
        pixels = data[m.end():] if m else b""
        colors = len(set(pixels[i:i + 3] for i in range(0, len(pixels), 3 * 97)))
        if not m or colors < 2:
            raise Fail("the VNC frame is not the guest's screen (%r..., %d colours)" %
                       (data[:20], colors))
        print("ok: a VNC client on the host's 127.0.0.1:%d got the guest's %sx%s screen "
              "(%d colours sampled)" % (port, m.group(1).decode(), m.group(2).decode(), colors))

        step = "stop the last VM"
        d.keys("q")
        d.wait("the dashboard to quit", lambda s: "[dashboard exited 0]" in s, 30)
        subprocess.run(["tmux", "-L", d.sock, "kill-server"], env=d.env, capture_output=True)
        r = d.vmws("stop", "default", timeout=120)
        if r.returncode != 0:
            raise Fail("vmws stop default: %s %s" % (r.stdout, r.stderr))
        t = time.time()
        while time.time() - t < 60:
            r = subprocess.run([VMWS, "box", "status", "--dir", d.box_dir()], env=d.env,
                               capture_output=True, text=True)
            if r.returncode == 1 and "no box runs" in r.stdout:
                break
            time.sleep(1)
        else:
            raise Fail("the box still runs 60 s after the last VM stopped: %s" % r.stdout)
        time.sleep(1)
        left = left_behind(d)
        if left:
            raise Fail("left running: %s" % left)
        print("ok: stopping the last VM stopped the box after %.1fs (%s); nothing left running" %
              (time.time() - t, r.stdout.strip().split("ended: ")[-1]))
        print("PASS in %.1fs" % (time.time() - t0))
        return 0
    except Exception as e:
        print("FAIL (%s): %s" % (step, e))
        print("---- screen ----\n%s\n----------------" % d.last)
        con = os.path.join(d.box_dir(), "console.log")
        if os.path.exists(con):
            print("---- box console (tail) ----\n%s" % "".join(open(con, errors="replace").readlines()[-20:]))
        return 1
    finally:
        d.cleanup()


if not shutil.which("tmux"):
    print("FAIL: tmux is not installed (./bootstrap installs it)")
    sys.exit(1)
sys.exit(main())
EOF_PY
