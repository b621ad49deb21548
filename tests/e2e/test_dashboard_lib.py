# Helpers for the dashboard tests (test_dashboard*.sh): run `vmws` (the dashboard) in a
# private tmux server at a fixed size with a fresh $VMWS_HOME, read the screen with
# capture-pane, and check what a person would see. Every wait is bounded; a failure prints
# the screen as it was.
import json, os, re, shutil, signal, subprocess, sys, tempfile, time

VMWS = os.environ.get("VMWS_BIN") or os.path.abspath("./vmws")
BOX = "┌┐└┘│─"


class Fail(Exception):
    pass


class Dash:
    def __init__(self, width, height, extra_env=None):
        self.tmp = tempfile.mkdtemp(prefix="vmws-dash-")
        self.home = os.path.join(self.tmp, "home")
        self.run = os.path.join(self.tmp, "run")
        os.mkdir(self.home, 0o700)
        os.mkdir(self.run, 0o700)
        self.sock = "vmws-dash-%d" % os.getpid()
        self.env = dict(os.environ, VMWS_HOME=self.home, VMWS_RUNTIME_DIR=self.run,
                        LANG="C.UTF-8", LC_ALL="C.UTF-8")
        self.env.pop("DISPLAY", None)
        self.env.pop("WAYLAND_DISPLAY", None)
        self.width, self.height = width, height
        self.extra_env = extra_env or {}
        self.last = ""

    def tmux(self, *args, check=True):
        r = subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null"] + list(args),
                           env=self.env, capture_output=True, text=True, timeout=10)
        if check and r.returncode != 0:
            raise Fail("tmux %s: %s" % (" ".join(args), r.stderr.strip()))
        return r.stdout

    def start(self, window="main", extra_env=None):
        env = dict(self.extra_env, **(extra_env or {}))
        envs = " ".join("%s=%s" % (k, v) for k, v in env.items())
        # The pane keeps a shell line after vmws exits so the test can read its status.
        cmd = "env %s %s; echo \"[dashboard exited $?]\"; sleep 120" % (envs, VMWS)
        base = ["-e", "VMWS_HOME=" + self.home, "-e", "VMWS_RUNTIME_DIR=" + self.run,
                "-e", "LANG=" + env.get("LANG", "C.UTF-8"), "-e", "LC_ALL=" + env.get("LANG", "C.UTF-8")]
        if window == "main":
            self.tmux("new-session", "-d", "-s", "t", "-n", window, "-x", str(self.width),
                      "-y", str(self.height), *base, cmd)
        else:
            self.tmux("new-window", "-d", "-t", "t", "-n", window, *base, cmd)

    def screen(self, window="main"):
        self.last = self.tmux("capture-pane", "-p", "-t", "t:" + window)
        return self.last

    def keys(self, *keys, window="main"):
        self.tmux("send-keys", "-t", "t:" + window, *keys)

    def text(self, s, window="main"):
        self.tmux("send-keys", "-t", "t:" + window, "-l", s)

    def wait(self, what, pred, timeout, window="main"):
        deadline = time.time() + timeout
        while True:
            s = self.screen(window)
            r = pred(s)
            if r:
                return r
            if time.time() > deadline:
                raise Fail("timed out after %.0fs waiting for %s" % (timeout, what))
            time.sleep(0.2)

    def vmws(self, *args, timeout=30):
        r = subprocess.run([VMWS] + list(args), env=self.env, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        return r

    def status(self, name):
        r = self.vmws("status", name, "--json")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def cleanup(self):
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], env=self.env,
                       capture_output=True)
        # Every VMM started under this home: kill it, then remove the home.
        for name in os.listdir(self.home) if os.path.isdir(self.home) else []:
            pidfile = os.path.join(self.home, name, "vmm.pid")
            try:
                pid = int(open(pidfile).read().split()[0])
                cmdline = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")
                if len(cmdline) > 2 and cmdline[1] == b"run":
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
        time.sleep(0.2)
        shutil.rmtree(self.tmp, ignore_errors=True)


SIZE = re.compile(r"([0-9.]+)([BKMGTP])")
MULT = {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def size_bytes(s):
    m = SIZE.fullmatch(s)
    if not m:
        raise Fail("not a size: %r" % s)
    return float(m.group(1)) * MULT[m.group(2)]


def figure(screen, label):
    """The value of a figure row of the Memory panel ("│allocated   129M  ███···")."""
    m = re.search(r"[│|]%s\s+([0-9.]+[BKMGTP])[ /+]" % re.escape(label), screen)
    return size_bytes(m.group(1)) if m else None


def vm_row(screen, name):
    """(state, cpus, memory) from the VMs panel's row of NAME."""
    m = re.search(r"[│|][> ]%s\s+(\S+)\s+(\d+)\s+([0-9.]+[BKMGTP])" % re.escape(name), screen)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None


def check_layout(screen, width, height, titles, ascii_only=False):
    """Every panel title visible, no line wider than the pane, and every box closed: each
    top-left corner has a vertical edge down to a bottom-left corner in the same column, and
    the same on the right - panels that overlapped would break one of those edges."""
    lines = screen.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    problems = []
    if len(lines) > height:
        problems.append("%d lines on a %d-line pane" % (len(lines), height))
    for i, l in enumerate(lines):
        if len(l) > width:
            problems.append("line %d is %d columns wide (pane: %d)" % (i, len(l), width))
        if ascii_only and any(ord(c) > 126 for c in l):
            problems.append("line %d is not ASCII: %r" % (i, l))
    for t in titles:
        if not re.search(r"[─-] %s[ :]" % re.escape(t), screen):
            problems.append("panel title %r not visible" % t)
    tl, tr, bl, br, v = ("+", "+", "+", "+", "|") if ascii_only else ("┌", "┐", "└", "┘", "│")
    grid = [l.ljust(width) for l in lines] + [" " * width] * (height - len(lines))
    boxes = 0
    bottoms = set()  # corners already known to close a box (in ASCII they look like tops)
    for y, l in enumerate(grid):
        for x, c in enumerate(l):
            if c != tl or (y, x) in bottoms or (ascii_only and (x + 1 >= width or l[x + 1] != "-")):
                continue
            # the matching top-right corner: the first corner after a run of horizontal line
            x2 = x + 1
            while x2 < width and l[x2] not in (tr, tl) and (y, x2) not in bottoms:
                x2 += 1
            if x2 >= width or l[x2] != tr:
                problems.append("box at row %d col %d has no top-right corner" % (y, x))
                continue
            y2 = y + 1
            while y2 < height and grid[y2][x] == v and grid[y2][x2] == v:
                y2 += 1
            if y2 >= height or grid[y2][x] != bl or grid[y2][x2] != br:
                problems.append("box at row %d col %d-%d is not closed (row %d: %r)" %
                                (y, x, x2, y2, grid[y2] if y2 < height else ""))
                continue
            boxes += 1
            bottoms.update({(y2, x), (y2, x2)})
    if boxes != len(titles):
        problems.append("%d closed boxes, expected %d" % (boxes, len(titles)))
    return problems


def run(main):
    """Runs MAIN(fail) and returns the process exit status (0 pass, 1 fail, 77 skip)."""
    if not shutil.which("tmux"):
        print("SKIP: tmux not installed (./bootstrap installs it)")
        return 77
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("SKIP: /dev/kvm not usable")
        return 77
    return main()
