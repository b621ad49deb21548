#!/bin/sh
# `make fuzz [FUZZ_SECONDS=N]`: builds a copy of the tree with clang and ASan + UBSan + libFuzzer
# coverage in BUILD_DIR, links each harness of tests/fuzz/ against it, and runs each for N
# seconds (default 60) on its corpus: the seeds in tests/fuzz/corpus/NAME plus seeds made here
# (a qcow2 by qemu-img, the built-in guest's bzImage). Fails on the first crash, leak or
# sanitizer report, whose input libFuzzer leaves as BUILD_DIR/crash-*; prints the executions
# of each harness.
#   fuzz.sh SRCDIR BUILD_DIR [SECONDS]
set -eu
src=$(cd "$1" && pwd)
build=$2
secs=${3:-60}
command -v clang >/dev/null || { echo "fuzz.sh: clang not found: install the Debian package clang" >&2; exit 1; }
rm -rf "$build"
mkdir -p "$build"
(cd "$src" && git ls-files -z | xargs -0 cp --parents -t "$build")
cd "$build"
autoreconf -fi >/dev/null 2>&1
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
./configure CC=clang CFLAGS="-g -O1 $SAN -fsanitize=fuzzer-no-link" --disable-werror >/dev/null
make -j"${FUZZ_JOBS:-$(nproc)}" libvmws.a libvmws_ui.a assets/guest/vmws-guest.bzImage >/dev/null
LIBS="libvmws_ui.a libvmws.a $(pkg-config --libs jansson inih zlib slirp) -lm -pthread"
mkdir -p seeds/qcow2 seeds/bzimage
qemu-img create -q -f qcow2 -o cluster_size=512 seeds/qcow2/small.qcow2 64K
qemu-img create -q -f qcow2 -b small.qcow2 -F qcow2 seeds/qcow2/overlay.qcow2
cp assets/guest/vmws-guest.bzImage seeds/bzimage/
status=0
for h in tests/fuzz/fuzz_*.c; do
    name=$(basename "$h" .c)
    short=${name#fuzz_}
    if ! clang -g -O1 $SAN -fsanitize=fuzzer -I. -o "$name" "$h" $LIBS; then
        echo "$name: FAILED: does not build (see above)"
        status=1
        continue
    fi
    mkdir -p "corpus/$short"
    for d in "tests/fuzz/corpus/$short" "seeds/$short"; do
        [ -d "$d" ] && cp "$d"/* "corpus/$short/" 2>/dev/null || true
    done
    if ./"$name" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 "corpus/$short" \
        >"$name.log" 2>&1; then
        echo "$name: $(sed -n 's/^stat::number_of_executed_units: *//p' "$name.log") executions in ${secs}s, no finding"
    else
        echo "$name: FAILED (see $build/$name.log and its crash-* input)"
        tail -n 30 "$name.log"
        status=1
    fi
done
exit $status
