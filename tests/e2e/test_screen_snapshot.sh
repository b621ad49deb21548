#!/bin/sh
# The guest's screen comes back with its memory: fill the framebuffer red, take a snapshot, fill
# it blue, revert (red again), then suspend and resume (still red) -- each checked as a VNC
# client sees it (tests/e2e/vncprobe, a libvncclient viewer). Bounded waits; prints what it saw.
set -u
BIN=${VMWS_BIN:-./vmws}
PROBE=$(dirname "$BIN")/tests/e2e/vncprobe
HOME_DIR=$(mktemp -d /tmp/vmws-test-screen-XXXXXX)
export VMWS_HOME="$HOME_DIR" VMWS_RUNTIME_DIR="$HOME_DIR/run"
unset DISPLAY WAYLAND_DISPLAY
cleanup() {
    [ -f "$HOME_DIR/scr/vmm.pid" ] && kill -9 "$(cat "$HOME_DIR/scr/vmm.pid")" 2>/dev/null
    rm -rf "$HOME_DIR"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

guest() { # guest COMMAND EXPECTED
    out=$( (printf '%s\n' "$1"; sleep 1) | "$BIN" console scr --idle 500)
    case "$out" in *"$2"*) ;; *) fail "guest '$1' did not print '$2': $out" ;; esac
}
port_of() { echo "$1" | sed -n 's/.*vnc: *127\.0\.0\.1:\([0-9]*\).*/\1/p' | head -n 1; }
pixel() { # pixel PORT EXPECTED WHAT
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        got=$("$PROBE" --timeout 5 "127.0.0.1:$1" pixel 900 500 | sed -n 's/^pixel 900 500 //p')
        [ "$got" = "$2" ] && { echo "ok: $3: pixel (900,500) is $got"; return 0; }
        sleep 0.2
    done
    fail "$3: pixel (900,500) is '$got', expected $2"
}

"$BIN" create scr --memory 256M >/dev/null || fail "create"
"$BIN" vnc-password scr --clear >/dev/null || fail "clear the VNC password" # vncsnapshot connects without one
out=$("$BIN" start scr --display vnc) || fail "start: $out"
port=$(port_of "$out")
[ -n "$port" ] || fail "no VNC address in: $out"
guest "fb fill ff0000" "fb fill: ff0000"
pixel "$port" ff0000 "filled red"
"$BIN" snapshot take scr red >/dev/null || fail "snapshot take"
guest "fb fill 0000ff" "fb fill: 0000ff"
pixel "$port" 0000ff "filled blue"
"$BIN" snapshot revert scr red >/dev/null || fail "snapshot revert"
pixel "$port" ff0000 "after revert to red"
"$BIN" suspend scr >/dev/null || fail "suspend"
out=$("$BIN" resume scr) || fail "resume: $out"
port=$(port_of "$out")
pixel "$port" ff0000 "after suspend and resume"
"$BIN" stop scr >/dev/null || fail "stop"
echo "PASS"
