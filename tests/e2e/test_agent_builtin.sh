#!/bin/sh
# Without a guest agent (the built-in guest has no virtio-console driver), every use of the agent
# falls back at once and says so: a take reports "not quiesced: no guest agent", a revert says
# the clock was not set, `vmws status` shows no agent and no OS name, and `vmws stop` says the
# agent could not shut it down and stops the VM anyway. Each step is timed: none waits on the
# guest.
set -u
BIN=${VMWS_BIN:-./vmws}
HOME_DIR=$(mktemp -d /tmp/vmws-test-agent-XXXXXX)
export VMWS_HOME="$HOME_DIR" VMWS_RUNTIME_DIR="$HOME_DIR/run"
unset DISPLAY WAYLAND_DISPLAY
cleanup() {
    [ -f "$HOME_DIR/ag/vmm.pid" ] && kill -9 "$(cat "$HOME_DIR/ag/vmm.pid")" 2>/dev/null
    rm -rf "$HOME_DIR"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
now_ms() { date +%s%3N; }
expect() { # expect WHAT OUTPUT PATTERN MAX_MS START_MS
    case "$2" in *"$3"*) ;; *) fail "$1: no '$3' in: $2" ;; esac
    took=$(($(now_ms) - $5))
    [ "$took" -le "$4" ] || fail "$1 took $took ms (at most $4 expected: it waited on the guest)"
    echo "ok: $1 ($took ms): $3"
}

"$BIN" create ag --memory 128M >/dev/null || fail "create"
"$BIN" start ag --display none >/dev/null || fail "start"
t=$(now_ms)
out=$("$BIN" snapshot take ag one 2>&1) || fail "snapshot take: $out"
expect "take without an agent" "$out" "not quiesced: no guest agent" 3000 "$t"
out=$("$BIN" snapshot info ag one 2>&1)
expect "the node records it" "$out" "file systems:  not quiesced: no guest agent" 3000 "$t"
grep -q '"quiesced": "not quiesced: no guest agent' "$HOME_DIR/ag/snapshots/tree.json" ||
    fail "tree.json does not record the take as not quiesced"
t=$(now_ms)
out=$("$BIN" snapshot revert ag one 2>&1) || fail "snapshot revert: $out"
expect "revert without an agent" "$out" "guest clock: not set: no guest agent" 3000 "$t"
out=$("$BIN" status ag 2>&1)
expect "status" "$out" "guest agent:     none" 30000 "$t"
expect "status" "$out" "guest OS:        unknown" 30000 "$t"
t=$(now_ms)
out=$("$BIN" stop ag 2>&1) || fail "stop: $out"
expect "stop without an agent" "$out" "no shutdown through the guest agent: no guest agent" 15000 "$t"
expect "stop without an agent" "$out" "stopped ag" 15000 "$t"
echo "PASS"
