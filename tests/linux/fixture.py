#!/usr/bin/env python3
"""Linux guest fixtures built at test time from Debian's packages, never committed.

    fixture.py --init INIT [--modules m1,m2] [--tools t1,t2] [--files f1,d2] [--kernel VERSION]

prints two lines: the kernel (/boot/vmlinuz-VERSION, the newest with modules unless given) and
an initramfs (uncompressed cpio) holding busybox-static as /bin/*, the named modules with
their dependencies (modules.dep order) in /lib/modules, the named host tools with the shared
libraries ldd lists, the named host files and directories (their whole trees) at the same
paths (executable if they start with "#!", like a udhcpc script), INIT as /init, and /modules,
the insmod order. Initramfs files are cached
in $XDG_CACHE_HOME/vmws/fixtures (default ~/.cache) under a hash of every input, so a run
builds each once and a kernel or package update builds anew.
"""
import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys


def die(msg):
    print("fixture.py: " + msg, file=sys.stderr)
    sys.exit(1)


def newest_kernel(want):
    versions = [os.path.basename(p)[len("vmlinuz-"):] for p in glob.glob("/boot/vmlinuz-*")]
    versions = [v for v in versions if os.path.isdir("/lib/modules/" + v) and (not want or v == want)]
    if not versions:
        die("no /boot/vmlinuz-* with /lib/modules: install the Debian package linux-image-amd64")
    key = lambda v: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)]
    return sorted(versions, key=key)[-1]


def module_order(kver, names):
    deps = {}
    with open(f"/lib/modules/{kver}/modules.dep") as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[os.path.basename(path)] = (path, rest.split())
    builtin = open(f"/lib/modules/{kver}/modules.builtin").read()
    order = []

    def add(name, depth=0):
        if depth > 20:
            die("module dependency loop at " + name)
        base = name if name.endswith(".ko") else name + ".ko"
        if base not in deps:
            alt = base.replace("_", "-") if "_" in base else base.replace("-", "_")
            if alt in deps:
                base = alt
            elif "/" + base[:-3] + ".ko" in builtin or "/" + alt[:-3] + ".ko" in builtin:
                return  # built into the kernel
            else:
                die(f"module {name} is not in {kver}'s modules.dep (install linux-image-amd64)")
        path, d = deps[base]
        for dep in d:
            add(os.path.basename(dep), depth + 1)
        if path not in order:
            order.append(path)

    for n in names:
        add(n)
    return order


def tool_files(tools):
    """(path in the image, host path) for each tool and every library ldd names for it."""
    files = {}
    for t in tools:
        host = shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if not host:
            die(f"tool {t} not found (install the Debian package that has it)")
        host = os.path.realpath(host)
        files["/usr/bin/" + t] = host
        out = subprocess.run(["ldd", host], capture_output=True, text=True).stdout
        for m in re.finditer(r"(/\S+) \(0x", out):
            lib = m.group(1)
            files[lib] = os.path.realpath(lib)
    return files


class Cpio:
    def __init__(self, f):
        self.f, self.ino = f, 0

    def entry(self, name, mode, data=b"", rdev=(0, 0)):
        self.ino += 1
        name = name.lstrip("/").encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name), 0))
        self.f.write(hdr.encode() + name)
        self.f.write(b"\0" * (-(110 + len(name)) % 4))
        self.f.write(data)
        self.f.write(b"\0" * (-len(data) % 4))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True)
    ap.add_argument("--modules", default="")
    ap.add_argument("--tools", default="")
    ap.add_argument("--files", default="")
    ap.add_argument("--kernel", default="")
    a = ap.parse_args()
    kver = newest_kernel(a.kernel)
    busybox = next((p for p in ("/bin/busybox", "/usr/bin/busybox")
                    if os.path.exists(p) and b"INTERP" not in
                    subprocess.run(["readelf", "-l", p], capture_output=True).stdout), None)
    if not busybox:
        die("no static busybox: install the Debian package busybox-static")
    mods = module_order(kver, [m for m in a.modules.split(",") if m])
    tools = tool_files([t for t in a.tools.split(",") if t])
    init = open(a.init, "rb").read()
    files = {}
    for f in [f for f in a.files.split(",") if f]:
        if not os.path.exists(f):
            die(f"file {f} not found")
        paths = [f] if os.path.isfile(f) else [os.path.join(d, n) for d, _, ns in os.walk(f)
                                                for n in ns]
        for path in paths:
            if os.path.isfile(path):
                files[path] = open(path, "rb").read()

    h = hashlib.sha256(init + open(__file__, "rb").read())
    for p in [busybox] + [f"/lib/modules/{kver}/{m}" for m in mods] + sorted(tools.values()):
        st = os.stat(p)
        h.update(f"{p} {st.st_size} {st.st_mtime_ns}\n".encode())
    h.update(repr(sorted(tools)).encode())
    for path in sorted(files):
        h.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                         "vmws", "fixtures")
    os.makedirs(cache, exist_ok=True)
    out = os.path.join(cache, f"initramfs-{kver}-{h.hexdigest()[:16]}.cpio")
    if not os.path.exists(out):
        tmp = f"{out}.{os.getpid()}"
        with open(tmp, "wb") as f:
            c = Cpio(f)
            dirs = set()
            for path in ["/bin/", "/dev/", "/proc/", "/sys/", "/tmp/", "/mnt/", "/lib/modules/",
                         "/usr/bin/"] + list(tools) + list(files):
                d = os.path.dirname(path)
                while d != "/":
                    dirs.add(d)
                    d = os.path.dirname(d)
            for d in sorted(dirs):
                c.entry(d, 0o40755)
            c.entry("/dev/console", 0o20600, rdev=(5, 1))
            c.entry("/bin/busybox", 0o100755, open(busybox, "rb").read())
            c.entry("/init", 0o100755, init)
            c.entry("/modules", 0o100644,
                    "".join(f"/lib/modules/{os.path.basename(m)}\n" for m in mods).encode())
            for m in mods:
                c.entry("/lib/modules/" + os.path.basename(m), 0o100644,
                        open(f"/lib/modules/{kver}/{m}", "rb").read())
            for path, host in sorted(tools.items()):
                c.entry(path, 0o100755, open(host, "rb").read())
            for path, data in sorted(files.items()):
                c.entry(path, 0o100755 if data.startswith(b"#!") else 0o100644, data)
            c.entry("TRAILER!!!", 0)
        os.rename(tmp, out)
    print(f"/boot/vmlinuz-{kver}")
    print(out)


if __name__ == "__main__":
    main()
