#!/bin/sh
# The KVM box (`vmws box`), on any machine: it needs QEMU, not KVM. Checks what a user and
# the test suite rely on: a command's output, exit status and working directory; an ordinary
# userspace inside (loopback, /dev/fd, /dev/shm, /dev/pts, /run, HOME, cgroup2, a usable
# /dev/kvm where VMs run) and the supervisor's pulse arriving; a time limit that kills the
# command and reaps QEMU; a panic in the box's own kernel reported as a box failure (125) with
# its cause; and clear messages when QEMU, the kernel or SVM is missing.
set -u
vmws=${VMWS_BIN:-./vmws}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vmws-box-test.XXXXXX") || exit 1
export VMWS_RUNTIME_DIR=$tmp/run
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
no_qemu_left() { ! pgrep -f "qemu-system-x86_64 -name vmws-box.*$tmp" >/dev/null; }

# 1. Output, status, working directory (shared read-write), and an ordinary userspace.
mkdir -p "$tmp/work"
cat > "$tmp/work/inside.sh" <<'IN'
echo "cwd=$(pwd)"
echo "to stderr" >&2
echo written > from-box.txt
[ -c /dev/kvm ] && echo "kvm=yes"
"$VMWS" box check | sed -n 's/^native KVM: /native-kvm=/p'
[ -e /dev/fd/0 ] && echo "devfd=yes"
touch /dev/shm/x && echo "shm=yes"
grep -q " /dev/pts devpts" /proc/mounts && echo "pts=yes"
grep -q " /run tmpfs" /proc/mounts && echo "run=yes"
grep -q " /sys/fs/cgroup cgroup2" /proc/mounts && echo "cgroup2=yes"
echo "home=$HOME"
# The supervisor's pulse (app/box/launch.c, POKE_MS): datagrams keep arriving (at 200 ms, 2 s
# bring about 10; UDP's NoPorts counts them: nothing listens).
noports() { awk '/^Udp:/ { if (n++) print $3 }' /proc/net/snmp; }
a=$(noports); sleep 2; b=$(noports)
[ $((b - a)) -ge 4 ] && echo "pulse=yes" || echo "pulse: $((b - a)) datagrams in 2 s"
python3 - <<'PY'
import socket, threading
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
threading.Thread(target=lambda: s.accept()[0].sendall(b"loopback=yes\n"), daemon=True).start()
c = socket.create_connection(s.getsockname()); print(c.recv(100).decode().strip())
PY
exit 7
IN
out=$(VMWS="$vmws" "$vmws" box run -C "$tmp/work" -- sh inside.sh 2>"$tmp/err")
rc=$?
[ $rc -eq 7 ] && ok "the command's exit status (7) is box run's" || fail "box run exited $rc, expected 7"
for want in "cwd=$tmp/work" kvm=yes native-kvm=yes devfd=yes shm=yes pts=yes run=yes cgroup2=yes \
    "home=$HOME" pulse=yes loopback=yes; do
    echo "$out" | grep -qx "$want" || fail "inside the box: no '$want' in: $out $(cat "$tmp/err")"
done
grep -qx "to stderr" "$tmp/err" && ok "stderr arrives on stderr" || fail "stderr: $(cat "$tmp/err")"
[ "$(cat "$tmp/work/from-box.txt" 2>/dev/null)" = written ] && ok "the working directory is shared" ||
    fail "from-box.txt was not written through to the host"
no_qemu_left && ok "QEMU is gone after box run" || fail "a box QEMU is still running"

# 2. A time limit kills the command and the box; QEMU is reaped.
"$vmws" box run --timeout 20 -- sleep 600 >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 124 ] && grep -q "did not finish within 20 s" "$tmp/out" && ok "--timeout: 124 and why" ||
    fail "--timeout: exit $rc: $(cat "$tmp/out")"
no_qemu_left && ok "QEMU is gone after a timeout" || fail "a box QEMU survived the timeout"

# 3. A panic of the box's own kernel is a box failure, named as such.
"$vmws" box run -- sh -c 'echo c > /proc/sysrq-trigger; sleep 60' >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 125 ] && grep -q "the box's kernel panicked" "$tmp/out" && ok "a panic: 125, named" ||
    fail "a panic in the box: exit $rc: $(tail -5 "$tmp/out")"
no_qemu_left || fail "a box QEMU survived the panic"

# 4. What is missing is named, with the package that has it.
PATH=/nonexistent "$vmws" box run -- true >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 125 ] && grep -q "qemu-system-x86" "$tmp/out" && ok "no QEMU: $(head -1 "$tmp/out")" ||
    fail "no QEMU: exit $rc: $(cat "$tmp/out")"
VMWS_BOX_KERNEL=0.0-none "$vmws" box run -- true >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 125 ] && grep -q "linux-image-amd64" "$tmp/out" && ok "no kernel: $(head -1 "$tmp/out")" ||
    fail "no kernel: exit $rc: $(cat "$tmp/out")"
VMWS_BOX_CPU="EPYC,-svm" "$vmws" box run -- true >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 125 ] && grep -q "no SVM" "$tmp/out" && ok "no SVM: $(grep -m1 'no SVM' "$tmp/out")" ||
    fail "no SVM: exit $rc: $(cat "$tmp/out")"
no_qemu_left || fail "a box QEMU survived a failed start"

[ $fails -eq 0 ] && echo PASS || echo "$fails failure(s)"
[ $fails -eq 0 ]
