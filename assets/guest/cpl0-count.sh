#!/bin/sh
# Counts the CPL-0 instructions the guest executes from its 64-bit entry to an idle shell
# prompt (our machines' KVM emulates each at ~2.2 us): QEMU TCG runs one instruction per
# translation block (-singlestep) and logs each executed block with its CPL (-d exec,nochain),
# filtered to the kernel's addresses; string-instruction iterations count one by one.
# Usage: cpl0-count.sh ELF BZIMAGE [SMP]   (make guest-cpl0-count)
set -eu
elf=$1
image=$2
smp=${3:-2}
nm=${NM:-nm}
qemu=${QEMU:-qemu-system-x86_64}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vmws-cpl0.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

sym() { "$nm" "$elf" | awk -v s="$1" '$3 == s { print "0x" $1; exit }'; }
kstart=$(sym guest_kernel_text_start)
kend=$(sym guest_kernel_text_end)
tramp=$(sym trampoline_start)
tramp_end=$(sym trampoline_end)
tramp_len=$((tramp_end - tramp))

"$qemu" -accel tcg -M pc -m 1G -smp "$smp" -singlestep -d exec,nochain -D "$tmp/exec.log" \
    -dfilter "$kstart..$((kend - 1)),0x8000+$tramp_len" -kernel "$image" -display none \
    -nodefaults -serial "file:$tmp/serial.out" -no-reboot &
qpid=$!
i=0
until grep -q 'vmws> ' "$tmp/serial.out" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 600 ] || ! kill -0 $qpid 2>/dev/null; then
        echo "cpl0-count: no shell prompt within 60 s" >&2
        kill $qpid 2>/dev/null || true
        exit 1
    fi
    sleep 0.1
done
sleep 1 # let the shell reach its wait syscall
kill $qpid
wait $qpid 2>/dev/null || true
cat "$tmp/serial.out"
echo

python3 - "$tmp/exec.log" <<'EOF'
import collections, re, sys
rx = re.compile(r"Trace (\d+): \S+ \[[0-9a-f]+/([0-9a-f]+)/([0-9a-f]+)/")
started, per_cpu, per_pc = False, collections.Counter(), collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    m = rx.match(line)
    if not m:
        continue
    cpu, pc, flags = int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16)
    started = started or pc == 0x100200  # the 64-bit entry: what vmws runs
    if started and flags & 3 == 0:
        per_cpu[cpu] += 1
        per_pc[pc] += 1
total = sum(per_cpu.values())
print("CPL-0 instructions executed from the 64-bit entry to the idle prompt: %d" % total)
for cpu in sorted(per_cpu):
    print("  cpu %d: %d" % (cpu, per_cpu[cpu]))
print("  at ~2.2 us each on kvm_pvm: %.2f ms" % (total * 2.2e-3))
EOF
