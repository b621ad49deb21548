#!/bin/sh
# `vmws ssh NAME [-- ARGS]` runs ssh through the VM's forward to its port 22 (judged by what it
# runs: an `ssh` first on PATH that prints its arguments), and a VM without such a forward gets a
# clear error. The Debian test (test_os_debian.sh) logs in for real.
set -u
BIN=${VMWS_BIN:-./vmws}
HOME_DIR=$(mktemp -d /tmp/vmws-test-ssh-XXXXXX)
export VMWS_HOME="$HOME_DIR" VMWS_RUNTIME_DIR="$HOME_DIR/run"
trap 'rm -rf "$HOME_DIR"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
mkdir -p "$HOME_DIR/bin"
printf '#!/bin/sh\necho "ssh $*"\n' >"$HOME_DIR/bin/ssh"
chmod +x "$HOME_DIR/bin/ssh"
"$BIN" create withfw --memory 64M --forward tcp:2299:22 >/dev/null || fail "create withfw"
out=$(PATH="$HOME_DIR/bin:$PATH" "$BIN" ssh withfw -- uname -a 2>&1) || fail "vmws ssh: $out"
want="ssh -p 2299 -o HostKeyAlias=vmws-withfw -o StrictHostKeyChecking=accept-new debian@127.0.0.1 uname -a"
[ "$out" = "$want" ] || fail "vmws ssh ran '$out', expected '$want'"
echo "ok: vmws ssh withfw -- uname -a runs: $out"
out=$(PATH="$HOME_DIR/bin:$PATH" "$BIN" ssh withfw --user root 2>&1)
case "$out" in *" root@127.0.0.1") echo "ok: --user root: $out" ;; *) fail "--user root ran '$out'" ;; esac
"$BIN" create nofw --memory 64M >/dev/null || fail "create nofw"
out=$(PATH="$HOME_DIR/bin:$PATH" "$BIN" ssh nofw 2>&1) && fail "vmws ssh nofw succeeded: $out"
case "$out" in *"has no forward to its port 22"*) echo "ok: no forward: $out" ;; *) fail "no forward: $out" ;; esac
echo "PASS"
