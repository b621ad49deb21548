#!/usr/bin/env python3
"""The built-in guest's ES1370 driver against a second, independent ES1370: QEMU's.

Boots assets/guest/vmws-guest.bzImage in QEMU (TCG) with `-device ES1370` and `-audiodev pa`
pointed at a private pulseaudio with a null sink, runs `tone 440 500`, records the sink's
monitor with parec and checks the guest found the card, completed on interrupts, and that the
sink heard 440 Hz +- 2% for 500 ms +- 10%. If our guest driver only worked with our own device
model, this is where it would show. Exit 0 pass, 1 fail, 77 skip (no qemu/pulseaudio/parec).
"""
import math
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time

RATE = 44100


def fail(msg, console=b""):
    print("FAIL: " + msg)
    if console:
        print("---- guest console ----")
        print(console.decode("latin-1").replace("\r", ""))
    return 1


def goertzel(x, hz):
    w = 2 * math.pi * hz / RATE
    c = 2 * math.cos(w)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + c * s1 - s2, s1
    return s1 * s1 + s2 * s2 - c * s1 * s2


def analyse(path):
    data = open(path, "rb").read()
    n = len(data) // 2
    x = struct.unpack(f"<{n}h", data[:2 * n])
    loud = [i for i, v in enumerate(x) if abs(v) > 1000]
    if not loud:
        return 0.0, 0.0, max((abs(v) for v in x), default=0)
    seg = x[loud[0]:loud[-1]][:30000]
    best = max(range(380, 501, 2), key=lambda hz: goertzel(seg, hz))
    best = max((best + d / 4 for d in range(-8, 9)), key=lambda hz: goertzel(seg, hz))
    return (loud[-1] - loud[0]) / RATE, best, max(abs(v) for v in x)


def main():
    builddir = os.environ.get("builddir", ".")
    image = os.path.join(builddir, "assets", "guest", "vmws-guest.bzImage")
    for tool in ("qemu-system-x86_64", "pulseaudio", "parec", "pactl"):
        if not shutil.which(tool):
            print(f"SKIP: {tool} not installed (./bootstrap installs it)")
            return 77
    if not os.path.exists(image):
        return fail(f"{image} not built")
    tmp = tempfile.mkdtemp(prefix="vmws-audio-qemu-")
    procs = []
    try:
        os.makedirs(os.path.join(tmp, "rt"))
        sock = os.path.join(tmp, "native")
        server = "unix:" + sock
        env = dict(os.environ, HOME=tmp, PULSE_RUNTIME_PATH=os.path.join(tmp, "rt"))
        env.pop("PULSE_SERVER", None)
        procs.append(subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--disallow-exit",
             "--disable-shm", f"--log-target=file:{tmp}/pulse.log",
             "--load=module-null-sink sink_name=qemu_test rate=44100",
             f"--load=module-native-protocol-unix socket={sock} auth-anonymous=1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(100):
            if subprocess.run(["pactl", "--server", server, "info"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        else:
            return fail("pulseaudio did not start")
        qemu = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-M", "pc", "-m", "256M", "-kernel", image,
             "-display", "none", "-nodefaults", "-no-reboot", "-serial", "stdio", "-monitor",
             "none", "-audiodev", f"pa,id=snd0,server={server}", "-device",
             "ES1370,audiodev=snd0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(os.path.join(tmp, "qemu.err"), "wb"))
        procs.append(qemu)
        os.set_blocking(qemu.stdout.fileno(), False)
        console = b""

        def expect(text, timeout):
            nonlocal console
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if text in console:
                    return True
                r, _, _ = select.select([qemu.stdout], [], [], 0.05)
                if r:
                    console += qemu.stdout.read() or b""
            return text in console

        def send(line):
            qemu.stdin.write(line.encode() + b"\n")
            qemu.stdin.flush()

        if not expect(b"vmws> ", 60):
            err = open(os.path.join(tmp, "qemu.err"), "rb").read().decode(errors="replace")
            return fail("no prompt from the guest in QEMU; QEMU said: " + err.strip(), console)
        time.sleep(0.3)
        send("")
        send("sound info")
        if not expect(b"sound: ES1370 at 00:", 10):
            return fail("the guest did not find QEMU's ES1370", console)
        rec_path = os.path.join(tmp, "rec.raw")
        rec = subprocess.Popen(["parec", "--server", server, "-d", "qemu_test.monitor", "--raw",
                                "--format=s16le", "--rate=44100", "--channels=1",
                                "--latency-msec=10"], stdout=open(rec_path, "wb"))
        procs.append(rec)
        for _ in range(100):
            if os.path.getsize(rec_path) >= 4410:
                break
            time.sleep(0.05)
        send("tone 440 500")
        if not expect(b"tone: done (25 periods, irq)", 20):
            return fail("tone did not complete on QEMU's ES1370 interrupts", console)
        time.sleep(0.5)
        rec.terminate()
        rec.wait()
        seconds, hz, peak = analyse(rec_path)
        print(f"QEMU ES1370, tone 440 500: heard {hz:.1f} Hz for {seconds * 1000:.0f} ms "
              f"(peak {peak})")
        if peak <= 1000:
            return fail("the sink heard silence", console)
        if abs(hz - 440) > 440 * 0.02 or abs(seconds - 0.5) > 0.05:
            return fail("expected 440 Hz +- 2% for 500 ms +- 10%", console)
        print("PASS")
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
