#!/usr/bin/env python3
"""Guest screen end to end, through real peers: Xvfb with the VM's SDL window (screenshots
with ImageMagick's import, keys typed with xdotool), VNC clients (vncsnapshot and our
libvncclient probe, tests/e2e/vncprobe), the VM's serial console for what the guest shell did.
Checks: `fb test` bars at their place and colour in the window and over VNC; keys from the
window and from VNC run shell commands; a still screen (within one minute: the status line's
clock moves once a minute) costs the display's threads < 2% of a core (5% in the KVM box) and sends no updates; VNC passwords (none, wrong, right, a file others can read); garbage and floods from
a client leave the VM running. Every wait is bounded; what was seen is printed on failure."""
import os
import re
import shutil
import signal
import stat
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.path.abspath(os.environ.get("VMWS_BIN") or "./vmws")
PROBE = os.path.join(os.path.dirname(BIN), "tests", "e2e", "vncprobe")
BARS = [0xFFFFFF, 0xFFFF00, 0x00FFFF, 0x00FF00, 0xFF00FF, 0xFF0000, 0x0000FF, 0x000000]
BAR_W, BAR_Y = 128, 300  # `fb test` on 1024x768: bar i spans x in [128i, 128i+128)
STARTED = time.monotonic()
procs = []


def log(msg):
    print("[%5.1fs] %s" % (time.monotonic() - STARTED, msg), flush=True)


def fail(msg):
    log("FAIL: " + msg)
    sys.exit(1)


def skip(msg):
    log("SKIP: " + msg)
    sys.exit(77)


def run(args, env, timeout=30, check=True):
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        fail("%s exited %d\nstdout: %s\nstderr: %s" % (" ".join(args), r.returncode, r.stdout,
                                                       r.stderr))
    return r


class Console:
    """`vmws console NAME` on pipes: everything the guest prints, and a way to type."""

    def __init__(self, env, name):
        self.p = subprocess.Popen([BIN, "console", name], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(self.p)
        self.buf = b""
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            data = self.p.stdout.read1(4096)
            if not data:
                return
            with self.lock:
                self.buf += data

    def send(self, text):
        self.p.stdin.write(text.encode())
        self.p.stdin.flush()

    def mark(self):
        with self.lock:
            return len(self.buf)

    def expect(self, pattern, timeout, what, since=0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                m = re.search(pattern.encode(), self.buf[since:])
            if m:
                return m
            time.sleep(0.02)
        with self.lock:
            tail = self.buf[-600:]
        fail("%s: no %r on the serial console within %.0f s; its last bytes: %r" %
             (what, pattern, timeout, tail))

    def close(self):
        self.p.kill()
        self.p.wait()


def read_ppm(data):
    m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    if not m:
        fail("not a PPM image (%d bytes)" % len(data))
    w, h = int(m.group(1)), int(m.group(2))
    return w, h, data[m.end():]


def pixel(img, x, y):
    w, h, px = img
    i = (y * w + x) * 3
    return px[i] << 16 | px[i + 1] << 8 | px[i + 2]


def close_to(a, b, tol):
    return all(abs((a >> s & 255) - (b >> s & 255)) <= tol for s in (16, 8, 0))


def check_bars(img, ox, oy, tol, what):
    seen = [pixel(img, ox + BAR_W * i + BAR_W // 2, oy + BAR_Y) for i in range(8)]
    # Edges too: the first and last columns of each bar are the bar's colour.
    edges = [pixel(img, ox + BAR_W * i + d, oy + BAR_Y) for i in range(8) for d in (2, BAR_W - 3)]
    ok = all(close_to(s, b, tol) for s, b in zip(seen, BARS)) and \
        all(close_to(e, BARS[i // 2], tol) for i, e in enumerate(edges))
    return ok, "%s: bar centres at y=%d: %s (expected %s)" % (
        what, oy + BAR_Y, " ".join("%06x" % s for s in seen), " ".join("%06x" % b for b in BARS))


def probe(port, *actions, password=None, timeout=20, check=False):
    """vncprobe: connect, take the first full frame (within TIMEOUT s: a loaded machine, e.g.
    one running the KVM box beside this test, can be slow), then ACTIONS. CHECK: fail the test
    with the probe's output unless it succeeded."""
    args = [PROBE, "--timeout", str(timeout)]
    if password is not None:
        args += ["--password", password]
    args += ["127.0.0.1:%d" % port] + list(actions)
    r = subprocess.run(args, capture_output=True, text=True, timeout=2 * timeout + 30)
    if check and r.returncode != 0:
        fail("vncprobe %s exited %d\nstdout: %s\nstderr: %s" % (" ".join(actions), r.returncode,
                                                                 r.stdout, r.stderr))
    return r


def probe_bars(port, password=None):
    acts = []
    for i in range(8):
        acts += ["pixel", str(BAR_W * i + BAR_W // 2), str(BAR_Y)]
    r = probe(port, *acts, password=password)
    got = [int(v, 16) for v in re.findall(r"pixel \d+ \d+ ([0-9a-f]{6})", r.stdout)]
    return r, got


def cpu_ticks(pid, display_only=False):
    """utime + stime of PID, or of its display threads only: all but the vCPUs, the sound
    card's mixer and the disk's I/O thread, which run whether or not there is a screen."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                head, rest = f.read().rsplit(")", 1)
        except OSError:
            continue  # a thread that ended
        comm = head.split("(", 1)[1]
        if display_only and re.match(r"vcpu\d+$|vmws-audio$|vmws-virtio$", comm):
            continue
        fields = rest.split()
        total += int(fields[11]) + int(fields[12])
    return total


def x_pixels(xdisplay, points):
    """The colours (0xRRGGBB) at POINTS of the X display's root window, read with XGetImage:
    what the screen shows there, at a fraction of a full screenshot's cost (polling loops)."""
    import ctypes
    x11 = ctypes.CDLL("libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XGetImage.restype = ctypes.c_void_p
    x11.XGetImage.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int,
                              ctypes.c_uint, ctypes.c_uint, ctypes.c_ulong, ctypes.c_int]
    x11.XGetPixel.restype = ctypes.c_ulong
    x11.XGetPixel.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x11.XOpenDisplay(xdisplay.encode())
    if not dpy:
        fail("cannot open X display %s" % xdisplay)
    root = x11.XDefaultRootWindow(dpy)
    seen = []
    for x, y in points:
        img = x11.XGetImage(dpy, root, x, y, 1, 1, 0xFFFFFFFF, 2)  # AllPlanes, ZPixmap
        seen.append(x11.XGetPixel(img, 0, 0) & 0xFFFFFF if img else -1)
    x11.XCloseDisplay(dpy)
    return seen


def close_window(xdisplay, wid):
    """Asks window WID to close as a window manager's close button does (WM_DELETE_WINDOW)."""
    import ctypes
    x11 = ctypes.CDLL("libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long,
                               ctypes.c_void_p]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]

    class ClientMessage(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                    ("display", ctypes.c_void_p), ("window", ctypes.c_ulong),
                    ("message_type", ctypes.c_ulong), ("format", ctypes.c_int),
                    ("l", ctypes.c_long * 5), ("pad", ctypes.c_char * 96)]
    dpy = x11.XOpenDisplay(xdisplay.encode())
    if not dpy:
        fail("cannot open X display %s" % xdisplay)
    ev = ClientMessage(type=33, window=int(wid), format=32,
                       message_type=x11.XInternAtom(dpy, b"WM_PROTOCOLS", 0))
    ev.l[0] = x11.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
    x11.XSendEvent(dpy, int(wid), 0, 0, ctypes.byref(ev))
    x11.XFlush(dpy)
    x11.XCloseDisplay(dpy)


def ctl(home, name, command):
    """One command on the VM's control socket; returns the reply line."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(os.path.join(home, "run", name + ".ctl"))
    f = s.makefile("rwb")
    f.readline()  # greeting
    f.write(('{"execute": "%s"}\n' % command).encode())
    f.flush()
    while True:
        line = f.readline()
        if not line or b'"return"' in line or b'"error"' in line:
            s.close()
            return line


def wait_title(xenv, wid, text, timeout=5):
    end = time.monotonic() + timeout
    title, seen = "", []
    while time.monotonic() < end:
        title = run(["xdotool", "getwindowname", wid], xenv).stdout.strip()
        if text in title:
            return title
        if not seen or seen[-1] != title:
            seen.append(title)
        time.sleep(0.05)
    fail("window title never showed %r in %d s; it showed %r" % (text, timeout, seen))


def start_xvfb():
    for n in range(91, 200):
        if not os.path.exists("/tmp/.X11-unix/X%d" % n) and not os.path.exists("/tmp/.X%d-lock" % n):
            break
    p = subprocess.Popen(["Xvfb", ":%d" % n, "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    end = time.monotonic() + 10
    while not os.path.exists("/tmp/.X11-unix/X%d" % n):
        if time.monotonic() > end or p.poll() is not None:
            fail("Xvfb :%d did not start" % n)
        time.sleep(0.05)
    return ":%d" % n


def start_vm(env, name, mode, expect_ok=True):
    r = run([BIN, "start", name, "--display", mode], env, check=expect_ok)
    if not expect_ok:
        return r
    m = re.search(r"vnc: +127\.0\.0\.1:(\d+)", r.stdout)
    port = int(m.group(1)) if m else None
    if mode != "sdl" and not port:
        fail("`vmws start` did not print the VNC address: %r" % r.stdout)
    return port


def vmm_pid(home, name):
    with open(os.path.join(home, name, "vmm.pid")) as f:
        return int(f.read().split()[0])


def main():
    for tool in ("Xvfb", "xdotool", "import", "vncsnapshot", "convert"):
        if not shutil.which(tool):
            skip("%s is not installed (./bootstrap installs it)" % tool)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        skip("/dev/kvm is not usable")
    if not os.access(PROBE, os.X_OK):
        fail("%s is missing (make check builds it)" % PROBE)

    home = tempfile.mkdtemp(prefix="vmws-display-")
    work = os.path.join(home, "shots")
    os.makedirs(work)
    os.mkdir(os.path.join(home, "run"), 0o700)
    env = dict(os.environ, VMWS_HOME=home, VMWS_RUNTIME_DIR=os.path.join(home, "run"))
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("DISPLAY", None)
    try:
        xdisplay = start_xvfb()
        xenv = dict(env, DISPLAY=xdisplay)
        r = run([BIN, "create", "scr", "--memory", "64M"], env)
        # VNC is never open by default: create makes a random 8-character password (0600) and
        # says it. This test's screens need none until its password part.
        pw = os.path.join(home, "scr", "vnc.passwd")
        with open(pw) as f:
            made = f.read().strip()
        if (len(made) != 8 or os.stat(pw).st_mode & 0o777 != 0o600 or
                "VNC password: %s" % made not in r.stdout):
            fail("create: no 8-character 0600 vnc.passwd shown (%r, %r)" % (made, r.stdout))
        run([BIN, "vnc-password", "scr", "--clear"], env)
        log("ok: a new VM has a random VNC password (create shows it)")

        # --- SDL window and VNC together ---
        port = start_vm(xenv, "scr", "sdl,vnc")
        log("started with SDL on %s and VNC on port %d" % (xdisplay, port))
        st = run([BIN, "status", "scr"], env).stdout
        if "127.0.0.1:%d" % port not in st:
            fail("`vmws status` does not show the VNC address:\n" + st)
        con = Console(env, "scr")
        con.send("\r")
        con.expect(r"vmws> ", 10, "the prompt")
        mark = con.mark()
        con.send("fb test\r")
        con.expect(r"fb test: 8 bars of 128 px, 1024x768\r\nvmws> ", 10, "fb test", mark)

        wid = None
        end = time.monotonic() + 10
        while time.monotonic() < end and not wid:
            r = run(["xdotool", "search", "--name", "^vmws: scr "], xenv, check=False)
            wid = r.stdout.split()[0] if r.stdout.split() else None
            time.sleep(0.1)
        if not wid:
            fail("no SDL window titled 'vmws: scr ...' on %s" % xdisplay)
        title = wait_title(xenv, wid, "(running)")
        if "Ctrl+Alt+G" not in title:
            fail("window title %r lacks the state or the grab hint" % title)
        geo = dict(re.findall(r"(\w+)=(\d+)",
                              run(["xdotool", "getwindowgeometry", "--shell", wid], xenv).stdout))
        wx, wy = int(geo["X"]), int(geo["Y"])
        if (int(geo["WIDTH"]), int(geo["HEIGHT"])) != (1024, 768):
            fail("the window is %sx%s, expected 1024x768" % (geo["WIDTH"], geo["HEIGHT"]))
        log("window %s %r at %d,%d" % (wid, title, wx, wy))

        # Screenshot of the X display: the bars where the window shows the guest's screen.
        end = time.monotonic() + 10
        while True:
            shot = os.path.join(work, "x.ppm")
            run(["import", "-display", xdisplay, "-window", "root", "-depth", "8", "ppm:" + shot], xenv)
            ok, msg = check_bars(read_ppm(open(shot, "rb").read()), wx, wy, 8, "X screenshot")
            if ok or time.monotonic() > end:
                break
            time.sleep(0.2)
        if not ok:
            fail(msg)
        log("ok: " + msg)

        # vncsnapshot (JPEG: colours within a tolerance) and our probe (exact).
        jpg = os.path.join(work, "vnc.jpg")
        run(["vncsnapshot", "-quiet", "-allowblank", "127.0.0.1::%d" % port, jpg], env)
        img = read_ppm(subprocess.run(["convert", jpg, "-depth", "8", "ppm:-"], capture_output=True).stdout)
        ok, msg = check_bars(img, 0, 0, 48, "vncsnapshot")
        if not ok or img[:2] != (1024, 768):
            fail(msg + " size %dx%d" % img[:2])
        log("ok: " + msg)
        # Two VNC clients at once (vncsnapshot's was the first), both exact.
        acts = []
        for i in range(8):
            acts += ["pixel", str(BAR_W * i + BAR_W // 2), str(BAR_Y)]
        both = [subprocess.Popen([PROBE, "127.0.0.1:%d" % port] + acts + ["watch", "0.5"],
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
        procs.extend(both)
        for p in both:
            out = p.communicate(timeout=15)[0]
            got = [int(v, 16) for v in re.findall(r"pixel \d+ \d+ ([0-9a-f]{6})", out)]
            if got != BARS:
                fail("vncprobe bars %s (expected %s); output %r" % (got, BARS, out))
        log("ok: two VNC clients at once see the 8 bars exactly")

        # The title follows the VM's state.
        ctl(home, "scr", "stop")
        log("ok: paused: title %r" % wait_title(xenv, wid, "(paused)"))
        ctl(home, "scr", "cont")
        wait_title(xenv, wid, "(running)")

        # Keys typed into the SDL window (XTEST through the X server, as a person types).
        run(["xdotool", "windowfocus", "--sync", wid], xenv)
        mark = con.mark()
        run(["xdotool", "type", "--delay", "30", "mem stat"], xenv)
        run(["xdotool", "key", "Return"], xenv)
        con.expect(r"mem stat\r\nallocated: 0 MiB, filled: none\r\n", 10, "keys from the SDL window",
                   mark)
        log("ok: `mem stat` typed with xdotool ran in the guest")
        # Keys over VNC.
        mark = con.mark()
        r = probe(port, "keys", "cpus\n", check=True)
        con.expect(r"cpus\r\ncpus: 1 online \(apic ids 0\)\r\n", 10, "keys over VNC", mark)
        log("ok: `cpus` sent over VNC ran in the guest")
        # Shifted keys, end to end: typed -> guest command -> framebuffer -> viewers.
        mark = con.mark()
        run(["xdotool", "type", "--delay", "30", "fb fill 00FF00"], xenv)
        run(["xdotool", "key", "Return"], xenv)
        con.expect(r"fb fill 00FF00\r\nfb fill: 00ff00\r\n", 10, "Shift from the SDL window",
                   mark)
        end = time.monotonic() + 5
        while True:
            seen = x_pixels(xdisplay, [(wx + 512, wy + 400)])[0]
            if seen == 0x00FF00 or time.monotonic() > end:
                break
            time.sleep(0.1)
        if seen != 0x00FF00:
            fail("after `fb fill 00FF00` the window shows %06x at its centre" % seen)
        mark = con.mark()
        r = probe(port, "keys", "fb fill 0000FF\n", "pixel", "512", "400", check=True)
        con.expect(r"fb fill 0000FF\r\nfb fill: 0000ff\r\n", 10, "Shift over VNC", mark)
        r = probe(port, "pixel", "512", "400")
        if "pixel 512 400 0000ff" not in r.stdout:
            fail("after `fb fill 0000FF` over VNC the client sees %r" % r.stdout)
        log("ok: `fb fill 00FF00` typed in the window and `fb fill 0000FF` over VNC (Shift) "
            "filled the screen, seen in the window and over VNC")

        # Ctrl+Alt+G grabs and releases (the title says which); the keys never reach the guest.
        mark = con.mark()
        run(["xdotool", "key", "ctrl+alt+g"], xenv)
        wait_title(xenv, wid, "Ctrl+Alt+G releases")
        run(["xdotool", "key", "ctrl+alt+g"], xenv)
        wait_title(xenv, wid, "Ctrl+Alt+G or click grabs")
        time.sleep(0.2)
        if con.mark() != mark:
            fail("the grab combination reached the guest: %r" % con.buf[-100:])
        log("ok: Ctrl+Alt+G grabbed and released (title), nothing typed into the guest")

        # The window scales: at half size, `fb test`'s bars at half their place and width.
        con.send("fb test\r")
        con.expect(r"fb test: 8 bars", 10, "fb test again", mark)
        run(["xdotool", "windowsize", "--sync", wid, "512", "384"], xenv, check=False)
        end = time.monotonic() + 10
        while True:
            seen = x_pixels(xdisplay, [(wx + 32 + 64 * i, wy + BAR_Y // 2) for i in range(8)])
            if all(close_to(a, b, 8) for a, b in zip(seen, BARS)) or time.monotonic() > end:
                break
            time.sleep(0.2)
        if not all(close_to(a, b, 8) for a, b in zip(seen, BARS)):
            fail("the window at 512x384 shows %s at the scaled bar centres" %
                 " ".join("%06x" % v for v in seen))
        log("ok: the window scaled to 512x384 shows the bars at half size")

        # A still screen: the VMM idles and the VNC client gets nothing.
        pid = vmm_pid(home, "scr")
        time.sleep(0.5)
        # The status line's clock (HH:MM) changes once a minute: stay inside one minute.
        while not 2 <= time.gmtime().tm_sec <= 52:
            time.sleep(0.2)
        hz = os.sysconf("SC_CLK_TCK")
        t0, c0, d0 = time.monotonic(), cpu_ticks(pid), cpu_ticks(pid, True)
        r = probe(port, "watch", "5")
        t1, c1, d1 = time.monotonic(), cpu_ticks(pid), cpu_ticks(pid, True)
        cpu = (c1 - c0) / hz / (t1 - t0) * 100
        dcpu = (d1 - d0) / hz / (t1 - t0) * 100
        m = re.search(r"watch [\d.]+ s: updates (\d+) rects (\d+) bytes (\d+)", r.stdout)
        if not m:
            fail("vncprobe watch failed: %r" % (r.stdout + r.stderr))
        # Natively 2% of a core. In the KVM box the VMM runs on an emulated CPU, 9-13 times
        # slower (README), and a display thread's wakeups cost more: 1.3% and 2.2% there in two
        # runs of 12-03; 5% still fails a display that spins or redraws.
        limit = 5.0 if os.environ.get("VMWS_IN_BOX") else 2.0
        log("still screen, SDL window + 1 VNC client, %.1f s: display threads %.2f%% of a core "
            "(limit %g%%; the whole VMM %.2f%%), %s" % (t1 - t0, dcpu, limit, cpu, m.group(0)))
        if int(m.group(1)) != 0:
            fail("the VNC client received %s framebuffer updates from a still screen" % m.group(1))
        if dcpu >= limit:
            fail("the display used %.2f%% of a core on a still screen (limit %g%%)" % (dcpu, limit))

        # Misbehaving clients: garbage, a handshake cut off, a flood of events.
        for payload in (b"RFB 003.008\n" + os.urandom(4096), b"RFB 003.0", b"GET / HTTP/1.0\r\n\r\n"):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                s.recv(12)
                s.sendall(payload)
            except OSError:
                pass
            s.close()
        # Clients past the handshake that misbehave: one asks for the whole screen and leaves
        # before reading it (mid-update); others send a nonsense pixel format, an encoding
        # list longer than what follows, a 2 GiB clipboard, an unknown message type.
        bad = [bytes([3, 0, 0, 0, 0, 0, 4, 0, 3, 0]),
               bytes([0, 0, 0, 0, 7, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
               bytes([2, 0, 0xff, 0xff, 0, 0, 0, 0]),
               bytes([6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]) + b"x" * 1000,
               bytes([200]) + os.urandom(64)]
        for msg in bad:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.recv(12)
            s.sendall(b"RFB 003.008\n")
            s.recv(2)  # one security type: None
            s.sendall(b"\x01")
            s.recv(4)
            s.sendall(b"\x01")  # ClientInit, shared
            s.recv(24)
            try:
                s.sendall(msg)
            except OSError:
                pass
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            s.close()  # RST, with whatever the server was sending on its way
        r = probe(port, "flood", "20000")
        if "flooded 20000" not in r.stdout:
            fail("flood probe: %r" % (r.stdout + r.stderr))
        mark = con.mark()
        con.send("version\r")
        con.expect(r"vmws-guest [^\r]* \(built-in guest of vmws\)\r\n", 10, "after garbage", mark)
        r, got = probe_bars(port)
        if r.returncode != 0 or "running" not in run([BIN, "status", "scr"], env).stdout:
            fail("after garbage and a flood the VM or its VNC server is not well: %r" % r.stdout)
        log("ok: garbage, a cut handshake, malformed messages, clients gone mid-update and 20000 "
            "events left the VMM serving")

        # The watch above only means something if changes do reach the client.
        w = subprocess.Popen([PROBE, "127.0.0.1:%d" % port, "watch", "2"], stdout=subprocess.PIPE,
                             text=True)
        procs.append(w)
        time.sleep(0.7)
        con.send("fb info\r")
        out = w.communicate(timeout=10)[0]
        m = re.search(r"updates (\d+) rects \d+ bytes (\d+)", out)
        if not m or int(m.group(1)) == 0:
            fail("a changing screen sent no updates to the VNC client: %r" % out)
        log("ok: a command's output reached the VNC client (%s)" % m.group(0))

        # Closing the window leaves the VM running (and its VNC server serving).
        close_window(xdisplay, wid)
        end = time.monotonic() + 5
        while run(["xdotool", "search", "--name", "^vmws: scr "], xenv, check=False).stdout.strip():
            if time.monotonic() > end:
                fail("the SDL window did not close on WM_DELETE_WINDOW")
            time.sleep(0.1)
        st = run([BIN, "status", "scr"], env).stdout
        if "state:           running" not in st or "SDL window not open" not in st:
            fail("after closing the window, status says:\n" + st)
        mark = con.mark()
        con.send("version\r")
        con.expect(r"\(built-in guest of vmws\)\r\n", 10, "after closing the window", mark)
        log("ok: closing the SDL window left the VM running")
        con.close()
        run([BIN, "stop", "scr"], env)

        # --- VNC password ---
        pw = os.path.join(home, "scr", "vnc.passwd")
        r = subprocess.run([BIN, "vnc-password", "scr"], input="s3cret\n", env=env,
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0 or os.stat(pw).st_mode & 0o777 != 0o600:
            fail("`vmws vnc-password` did not write a 0600 %s: %r" % (pw, r.stdout + r.stderr))
        os.chmod(pw, 0o644)
        r = start_vm(env, "scr", "vnc", expect_ok=False)
        if r.returncode == 0 or "chmod 600" not in r.stderr:
            fail("a password file others can read was accepted: %r %r" % (r.stdout, r.stderr))
        os.chmod(pw, 0o600)
        r = run([BIN, "start", "scr", "--display", "vnc"], env)
        if "password required" not in r.stdout:
            fail("`vmws start` does not say a password is required: %r" % r.stdout)
        st = run([BIN, "status", "scr"], env).stdout
        if not re.search(r"vnc password: +s3cret", st):
            fail("`vmws status` does not show the VNC password: %r" % st)
        port = int(re.search(r"127\.0\.0\.1:(\d+)", r.stdout).group(1))
        con = Console(env, "scr")
        con.send("fb test\r")
        con.expect(r"fb test: 8 bars", 10, "fb test (password run)")
        for bad in (None, "wrong"):
            r = probe(port, password=bad)
            if r.returncode != 3:
                fail("password %r: vncprobe exited %d, expected refusal (3): %r" %
                     (bad, r.returncode, r.stdout))
        r, got = probe_bars(port, password="s3cret")
        if r.returncode != 0 or got != BARS:
            fail("right password: exit %d, bars %s: %r" % (r.returncode, got, r.stdout))
        log("ok: VNC password: none and wrong refused, right one sees the bars")
        # Guessing is rate-limited: after 5 wrong passwords in a row even the right one is
        # refused for 3 s; then it works again.
        for i in range(5):
            probe(port, password="guess%d" % i)
        r = probe(port, password="s3cret")
        if r.returncode != 3:
            fail("after 5 wrong passwords the right one was not refused: exit %d: %r" %
                 (r.returncode, r.stdout))
        time.sleep(3.5)
        r, got = probe_bars(port, password="s3cret")
        if r.returncode != 0 or got != BARS:
            fail("after the block: exit %d, bars %s: %r" % (r.returncode, got, r.stdout))
        with open(os.path.join(home, "scr", "vmm.log")) as f:
            if "5 wrong passwords in a row" not in f.read():
                fail("vmm.log does not say why password attempts were refused")
        log("ok: wrong passwords are rate-limited (5, then 3 s for everyone)")
        # A WebSocket handshake (what a web page's `new WebSocket("ws://127.0.0.1:PORT")` sends)
        # is refused: the connection closes, no RFB session follows.
        ws = socket.create_connection(("127.0.0.1", port), timeout=10)
        ws.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\n\r\n")
        closed = False
        try:
            while ws.recv(4096):
                pass
            closed = True
        except socket.timeout:
            pass
        ws.close()
        if not closed:
            fail("a WebSocket client's connection stayed open")
        with open(os.path.join(home, "scr", "vmm.log")) as f:
            if "refused a WebSocket client" not in f.read():
                fail("vmm.log does not say a WebSocket client was refused")
        log("ok: a WebSocket client is refused")
        con.close()
        run([BIN, "stop", "scr"], env)

        # --- VNC on a Unix socket (vnc_listen = unix): no TCP port, a 0600 socket in the
        # runtime dir that `vmws status` names, and the guest's screen over it ---
        conf = os.path.join(home, "scr", "vm.conf")
        with open(conf) as f:
            text = f.read()
        with open(conf, "w") as f:
            f.write(re.sub(r"(?m)^vnc_listen *=.*$", "vnc_listen = unix", text))
        r = run([BIN, "start", "scr", "--display", "vnc"], env)
        sock = os.path.join(home, "run", "scr.vnc")
        st = run([BIN, "status", "scr"], env).stdout
        mode = os.stat(sock).st_mode
        if sock not in st or re.search(r"127\.0\.0\.1:59\d\d", st + r.stdout):
            fail("`vmws status` does not show only the VNC socket %s:\n%s" % (sock, st))
        if not stat.S_ISSOCK(mode) or mode & 0o777 != 0o600:
            fail("%s is not a 0600 socket (mode %o)" % (sock, mode))
        con = Console(env, "scr")
        con.send("fb test\r")
        con.expect(r"fb test: 8 bars", 10, "fb test (unix socket run)")
        acts = []
        for i in range(8):
            acts += ["pixel", str(BAR_W * i + BAR_W // 2), str(BAR_Y)]
        args = [PROBE, "--timeout", "20", "--password", "s3cret", sock] + acts
        r = subprocess.run(args, capture_output=True, text=True, timeout=70)
        got = [int(v, 16) for v in re.findall(r"pixel \d+ \d+ ([0-9a-f]{6})", r.stdout)]
        if r.returncode != 0 or got != BARS:
            fail("over %s: exit %d, bars %s: %r %r" % (sock, r.returncode, got, r.stdout,
                                                        r.stderr))
        log("ok: VNC on a 0600 Unix socket (%s) shows the bars; status names it" % sock)
        con.close()
        run([BIN, "stop", "scr"], env)
        if os.path.exists(sock):
            fail("%s is left behind after the VM stopped" % sock)
        log("PASS")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run("for p in %s/*/vmm.pid; do [ -f \"$p\" ] && kill -9 $(cat \"$p\"); done" % home,
                       shell=True, stderr=subprocess.DEVNULL)
        if os.environ.get("KEEP"): log("kept " + home)
        else: shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    signal.alarm(150)
    main()
