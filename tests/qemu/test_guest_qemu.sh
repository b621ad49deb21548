#!/bin/sh
# Boots the built-in guest's bzImage in QEMU (TCG, 2 CPUs, 1 GiB) through QEMU's own -kernel
# loader (real-mode setup -> 32-bit -> 64-bit entry) and drives its serial shell like a user:
# banner, CPU count, mem alloc/fill/verify (and a verify that must fail), line editing, the
# RTC against the host's UTC clock, and poweroff, after which QEMU must exit by itself.
# Exit 0 pass, 1 fail, 77 skip (no qemu-system-x86_64). Prints the console it saw on failure.
set -u
srcdir=${srcdir:-.}
builddir=${builddir:-.}
image="$builddir/assets/guest/vmws-guest.bzImage"
qemu=${QEMU:-qemu-system-x86_64}

if ! command -v "$qemu" >/dev/null 2>&1; then
    echo "SKIP: $qemu not installed (./bootstrap installs qemu-system-x86)"
    exit 77
fi
if [ ! -f "$image" ]; then
    echo "FAIL: $image not built (make assets/guest/vmws-guest.bzImage)"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vmws-guest-qemu.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

python3 - "$qemu" "$image" "$tmp" <<'EOF'
import datetime, os, re, socket, subprocess, sys, time

qemu, image, tmp = sys.argv[1:4]
sock_path = os.path.join(tmp, "serial.sock")
log_path = os.path.join(tmp, "qemu.log")
cmd = [qemu, "-accel", "tcg", "-M", "pc", "-m", "1G", "-smp", "2",
       "-kernel", image, "-append", "console=ttyS0",
       "-display", "none", "-nodefaults", "-no-reboot",
       "-chardev", "socket,id=con,path=%s,server=on,wait=on" % sock_path,
       "-serial", "chardev:con"]
log = open(log_path, "w")
proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
seen = b""
pos = 0

def fail(msg):
    print("FAIL: " + msg)
    print("---- guest console (%d bytes) ----" % len(seen))
    print(seen.decode("latin-1").replace("\r\n", "\n").replace("\r", "\n"))
    print("---- qemu output ----")
    log.flush()
    print(open(log_path).read())
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    sys.exit(1)

conn = None
deadline = time.time() + 30
while conn is None:
    if proc.poll() is not None:
        fail("qemu exited with status %d before the serial socket was up" % proc.returncode)
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(sock_path)
    except OSError:
        conn.close()
        conn = None
        if time.time() > deadline:
            fail("no serial socket after 30 s")
        time.sleep(0.05)

def expect(pattern, timeout, what, anchored=False):
    """Waits until PATTERN (a regex on bytes) matches the output after the last match; if
    ANCHORED, it must match right where the last match ended."""
    global seen, pos
    rx = re.compile(pattern)
    deadline = time.time() + timeout
    while True:
        m = rx.match(seen, pos) if anchored else rx.search(seen, pos)
        if m:
            pos = m.end()
            return m
        if anchored and len(seen) - pos >= 256:
            fail("expected %s right after the previous output (%r)" % (what, pattern))
        left = deadline - time.time()
        if left <= 0:
            fail("timed out after %d s waiting for %s (%r)" % (timeout, what, pattern))
        conn.settimeout(min(left, 0.5))
        try:
            data = conn.recv(4096)
        except socket.timeout:
            continue
        if not data:
            fail("serial connection closed while waiting for %s" % what)
        seen += data

def send(text):
    conn.sendall(text.encode())

PROMPT = rb"vmws> "
expect(rb"vmws-guest \d+\.\d+\.\d+ \(built-in guest of vmws\)\r\n", 120, "the version banner")
m = expect(rb"memory: (\d+) MiB usable\r\n", 30, "the memory line")
usable = int(m.group(1))
if not 1000 <= usable <= 1024:
    fail("memory: %d MiB usable, expected about 1023 for -m 1G" % usable)
expect(rb"cpus: 2 online\r\n", 60, "cpus: 2 online")
expect(PROMPT, 10, "the first prompt")

# Backspace (DEL and BS) edits the line; CRLF is one Enter, so the next thing after the
# version's prompt must be the echo of the next command, not a second prompt.
send("verx\x7fsioo\x08n\r\n")
expect(rb"vmws-guest \d+\.\d+\.\d+ \(built-in guest of vmws\)\r\n" + PROMPT, 20, "version")
send("cpus\r")
expect(rb"cpus\r\ncpus: 2 online \(apic ids 0 1\)\r\n" + PROMPT, 20,
       "the cpus command right after the prompt (a CRLF ran two commands?)", anchored=True)
send("\r")
expect(rb"\r\n" + PROMPT, 10, "a bare prompt for an empty line", anchored=True)
send("cp\x1b[Aus\x1bOB\r")  # arrow keys (CSI and SS3 forms) are swallowed
expect(rb"cpus\r\ncpus: 2 online", 20, "cpus typed around arrow-key escape sequences")
send("mem al\x03")
expect(rb"mem al\^C\r\n" + PROMPT, 20, "^C dropping the line")
send("bogus\n")
expect(rb"bogus\r\nunknown command: bogus \(try help\)\r\n" + PROMPT, 20, "the unknown command")
send("help\r")
expect(rb"mem verify \[PATTERN\][^\n]*\r\n(?:[^\n]*\r\n)*" + PROMPT, 20, "help")

send("mem verify\r")
expect(rb"mem: nothing allocated\r\n" + PROMPT, 20, "verify with nothing allocated")
send("mem alloc 64\r")
expect(rb"allocated 64 MiB\r\n" + PROMPT, 120, "mem alloc 64")
send("mem fill abc\r")
expect(rb"filled 64 MiB with abc\r\n" + PROMPT, 120, "mem fill abc")
send("mem verify\r")
expect(rb"verify OK: 64 MiB match abc\r\n" + PROMPT, 120, "mem verify")
send("mem verify xyz\r")
expect(rb"verify FAILED at 0x[0-9a-f]+: expected 0x[0-9a-f]+, found 0x[0-9a-f]+\r\n" + PROMPT,
       120, "mem verify xyz to fail")
send("mem stat\r")
m = expect(rb"allocated: 64 MiB, filled: abc\r\nusable: (\d+) MiB, free: (\d+) MiB\r\n" + PROMPT,
           20, "mem stat")
if int(m.group(1)) != usable or not 0 < int(m.group(2)) < usable - 64:
    fail("mem stat figures do not add up: %r" % m.group(0))
send("mem alloc 100000\r")
expect(rb"mem: cannot allocate 100000 MiB: only \d+ MiB free\r\n" + PROMPT, 20, "alloc refusal")
send("mem free\r")
expect(rb"freed 64 MiB\r\n" + PROMPT, 20, "mem free")

send("time\r")
m = expect(rb"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) UTC\r\n" + PROMPT, 20, "time")
guest = datetime.datetime(*[int(x) for x in m.groups()], tzinfo=datetime.timezone.utc)
host = datetime.datetime.now(datetime.timezone.utc)
if abs((host - guest).total_seconds()) > 120:
    fail("guest RTC says %s, host UTC is %s" % (guest, host))

send("poweroff\r")
expect(rb"powering off\r\n", 20, "powering off")
try:
    rc = proc.wait(timeout=60)
except subprocess.TimeoutExpired:
    fail("qemu still running 60 s after poweroff")
if rc != 0:
    fail("qemu exited with status %d after poweroff" % rc)
print("PASS: banner, 2 CPUs, mem alloc/fill/verify, line editing, RTC, poweroff")
EOF
