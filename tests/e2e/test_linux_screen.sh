#!/bin/sh
# Debian's kernel drives vmws's screen and input, judged by a VNC client (tests/e2e/vncprobe,
# libvncclient) as a user's viewer sees it: a pattern Linux writes to /dev/fb0 (vesafb) shows
# up pixel for pixel in the client's screenshot; keys typed in the client reach Linux's
# console on tty1 (atkbd behind our i8042), shifted characters included; pointer motion and a
# click reach /dev/input/mice (psmouse) with the direction and distance the client moved.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../linux/lib.sh"
linux_setup scr
probe=$(dirname "$vmws")/tests/e2e/vncprobe
[ -x "$probe" ] || probe=$here/vncprobe
# The pattern: 1024x256 pixels of XRGB8888 (vesafb's format), B = x, G = y, R = x/4 xor y. A
# fixed path (the initramfs holds it at the same one), so the fixture is built once.
pattern=/tmp/vmws-fb-pattern-v1.raw
/usr/bin/python3 - "$pattern" <<'EOF' || exit 99
import os, sys
rows = bytearray()
for y in range(256):
    for x in range(1024):
        rows += bytes((x & 255, y, ((x >> 2) ^ y) & 255, 0))
tmp = sys.argv[1] + ".%d" % os.getpid()
open(tmp, "wb").write(rows)
os.rename(tmp, sys.argv[1])
EOF
linux_fixture shell-init.sh virtio_pci,virtio_blk,psmouse "" "$pattern"
"$vmws" create scr --memory 256M --cpus 1 --disk 16M --kernel "$kernel" --initrd "$initrd" \
    --append "$linux_console" >/dev/null || exit 99
"$vmws" vnc-password scr --clear >/dev/null || exit 99
out=$("$vmws" start scr --display vnc) || { echo "start: $out"; exit 99; }
port=$(echo "$out" | sed -n 's/.*vnc: *127\.0\.0\.1:\([0-9]*\).*/\1/p' | head -n 1)
[ -n "$port" ] || { echo "no VNC address in: $out"; exit 99; }
log=$VMWS_HOME/scr/serial.log
ready 1 || { cat "$log"; exit 1; }
vnc() { "$probe" --lossless --timeout 20 "127.0.0.1:$port" "$@"; }

# The screen: the pattern into the framebuffer's rows 512..767 (far below the console's text).
check "Linux wrote the pattern to /dev/fb0" guest "dd if=$pattern of=/dev/fb0 bs=4096 seek=512"
compare() { # the screenshot's rows 512..767 against the pattern, RGB for BGRX
    vnc capture "$VMWS_HOME/screen.ppm" >/dev/null || return 1
    /usr/bin/python3 - "$VMWS_HOME/screen.ppm" "$pattern" <<'EOF'
import sys
ppm = open(sys.argv[1], "rb").read()
parts = ppm.split(b"\n", 3)
w, h = map(int, parts[1].split())
px = parts[3]
pat = open(sys.argv[2], "rb").read()
if (w, h) != (1024, 768):
    print("screen is %dx%d, not 1024x768" % (w, h))
    sys.exit(1)
bad = 0
for y in range(256): # a row at a time (Python runs on an emulated CPU in the KVM box)
    row = pat[y * 4096:(y + 1) * 4096]
    want = bytearray(3072)
    want[0::3], want[1::3], want[2::3] = row[2::4], row[1::4], row[0::4]
    o = (512 + y) * w * 3
    if px[o:o + 3072] == want:
        continue
    for x in range(1024):
        if px[o + 3 * x:o + 3 * x + 3] != want[3 * x:3 * x + 3]:
            if bad < 5:
                print("pixel (%d,%d) is %s, expected %s" % (x, 512 + y, px[o + 3 * x:o + 3 * x + 3].hex(),
                                                            want[3 * x:3 * x + 3].hex()))
            bad += 1
print("%d of %d pixels differ" % (bad, 1024 * 256))
sys.exit(1 if bad else 0)
EOF
}
ok=1
for _ in 1 2 3 4 5; do compare && { ok=0; break; }; sleep 1; done
check "the VNC client's screenshot shows the pattern pixel for pixel" test $ok -eq 0

# The keyboard: a reader on tty1 (the console on screen), then a line typed in the client.
guest "head -n 1 /dev/tty1 >/tmp/typed 2>&1 &"
sleep 1
vnc keys 'Hello, VMWS! 42
' >/dev/null || echo "vncprobe keys failed"
typed=1
for _ in $(seq 1 20); do guest "grep -qx 'Hello, VMWS! 42' /tmp/typed" && { typed=0; break; }; sleep 0.5; done
check "keys typed over VNC reached tty1 as 'Hello, VMWS! 42'" test $typed -eq 0
[ $typed -eq 0 ] || guest "cat /tmp/typed"

# The mouse: 200 pixels right, 150 down, a left click; /dev/input/mice speaks PS/2 (y up).
guest "cat /dev/input/mice >/tmp/mice &"
sleep 1
vnc pointer 100 100 0 pointer 150 100 0 pointer 200 100 0 pointer 300 100 0 \
    pointer 300 175 0 pointer 300 250 0 pointer 300 250 1 pointer 300 250 0 watch 0.5 >/dev/null ||
    echo "vncprobe pointer failed"
sleep 1
guest "echo mice: \$(od -An -tu1 -v /tmp/mice)"
mice=$(sed -n 's/^mice: //p' "$log" | tail -n 1)
echo "/dev/input/mice: $mice"
set -- $(echo "$mice" | awk '{
    for (i = 1; i + 2 <= NF; i += 3) {
        f = $i; dx = $(i + 1); dy = $(i + 2)
        if (int(f / 16) % 2) dx -= 256
        if (int(f / 32) % 2) dy -= 256
        sx += dx; sy += dy; if (f % 2) left = 1
    }
    print sx + 0, sy + 0, left + 0
}')
echo "mouse: moved $1 right, $2 up, left button seen $3"
check "the mouse moved 200 right" test "${1:-0}" -eq 200
check "the mouse moved 150 down (PS/2: -150 up)" test "${2:-0}" -eq -150
check "the left button click arrived" test "${3:-0}" -eq 1

check "no kernel BUG, WARNING or call trace" guest "! dmesg | grep -qE 'BUG:|WARNING: CPU|Call Trace'"
[ $fails -eq 0 ] || { echo "---- serial.log"; cat "$log"; echo "$fails check(s) failed"; exit 1; }
