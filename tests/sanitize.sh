#!/bin/sh
# `make check-sanitizers`: the tests that need no KVM (tests/unit, see tests/README.md) built
# with ASan and UBSan. The source tree is configured in place by ./bootstrap, so the
# sanitizer build is a copy of the tracked files (as they are in the working tree) in
# BUILD_DIR, configured there with --enable-sanitizers.
#   sanitize.sh SRCDIR BUILD_DIR
set -eu
src=$(cd "$1" && pwd)
build=$2
rm -rf "$build"
mkdir -p "$build"
(cd "$src" && git ls-files -z | xargs -0 cp --parents -t "$build")
cd "$build"
autoreconf -fi >/dev/null 2>&1
./configure --enable-sanitizers >/dev/null
make -j"${SAN_JOBS:-$(nproc)}" >/dev/null
units=$(cd tests/unit && ls test_*.c | sed 's|^|tests/unit/|; s|\.c$||' | tr '\n' ' ')
# halt_on_error: the first report fails the test; leaks count as errors too.
ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    make -j"${SAN_JOBS:-$(nproc)}" check TESTS="$units"
