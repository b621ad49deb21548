#!/bin/sh
# `make check-sanitizers`: the tests built with ASan and UBSan (`make check-tsan`: with
# ThreadSanitizer, SAN_KIND=thread). The source tree is configured in place by ./bootstrap, so the
# sanitizer build is a copy of the tracked files (as they are in the working tree) in BUILD_DIR,
# configured there with --enable-sanitizers[=thread].
#   sanitize.sh SRCDIR BUILD_DIR          the tests that need no KVM (tests/unit): CI, every run
#   SAN_TESTS=all sanitize.sh SRCDIR DIR  the whole of make check (the Linux tests in the KVM
#                                         box where they go there): run by hand, about 40 min
#   SAN_TESTS='tests/e2e/test_x ...'      those tests
# Every process writes its reports into DIR/sanitizer-reports - the VMMs too, whose stderr is
# their vmm.log, deleted with the test - and any report there fails the run and is printed.
# Leaks inside third-party libraries are suppressed in tests/lsan.supp, ThreadSanitizer's reports
# of them in tests/tsan.supp (each says where).
set -eu
src=$(cd "$1" && pwd)
build=$2
rm -rf "$build"
mkdir -p "$build"
(cd "$src" && git ls-files -z | xargs -0 cp --parents -t "$build")
cd "$build"
autoreconf -fi >/dev/null 2>&1
kind=${SAN_KIND:-address}
case $kind in
address) ./configure --enable-sanitizers >/dev/null ;;
thread) ./configure --enable-sanitizers=thread >/dev/null ;;
*) echo "sanitize.sh: SAN_KIND=$kind (expected address or thread)" >&2; exit 2 ;;
esac
make -j"${SAN_JOBS:-$(nproc)}" >/dev/null
jobs=${SAN_JOBS:-$(nproc)}
case ${SAN_TESTS:-unit} in
unit) tests=$(cd tests/unit && ls test_*.c | sed 's|^|tests/unit/|; s|\.c$||' | tr '\n' ' ') ;;
all) tests= jobs=1 ;; # one at a time, as make check runs in CI
*) tests=$SAN_TESTS jobs=1 ;;
esac
reports=$build/sanitizer-reports
mkdir -p "$reports"
# halt_on_error: the first report fails the test; leaks count as errors too.
rc=0
ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:log_path=$reports/asan \
    LSAN_OPTIONS=suppressions=$build/tests/lsan.supp \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan \
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$build/tests/tsan.supp:log_path=$reports/tsan \
    make -j"$jobs" check ${tests:+TESTS="$tests"} || rc=$?
# A leak report whose every allocation was made by a library unloaded before the report (its
# frames all "<unknown module>": SDL2 unloads the X11 libraries it loaded, at SDL_Quit) can
# name no code, so it is printed but does not fail the run; vmws never unloads its own modules,
# so its own leaks are always named. Any other report fails it.
for f in "$reports"/*; do
    [ -f "$f" ] || continue
    if /usr/bin/python3 - "$f" <<'PY'; then
import re, sys
text = open(sys.argv[1]).read()
blocks = re.findall(r"leak of \d+ byte.*?allocated from:\n((?:    #\d+ .*\n)+)", text)
ok = "LeakSanitizer" in text and "AddressSanitizer: " not in text.replace("SUMMARY: AddressSanitizer: ", "")
ok = ok and blocks and all(
    all("<unknown module>" in fr for fr in b.splitlines()[1:]) for b in blocks)
sys.exit(0 if ok else 1)
PY
        echo "---- sanitizer report $f (leaks of an unloaded library only: not counted)"
        cat "$f"
        continue
    fi
    echo "---- sanitizer report $f"
    cat "$f"
    rc=1
done
exit $rc
