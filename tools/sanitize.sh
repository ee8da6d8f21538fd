#!/usr/bin/env bash
# Builds juice with AddressSanitizer + UndefinedBehaviorSanitizer (or
# ThreadSanitizer with `tools/sanitize.sh thread`) in its own build dir and
# runs the whole test suite there. Sanitized juiced processes exit non-zero on
# a leak or error, which the integration tests check.
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-address;undefined}"
dir="build-$(echo "$kind" | tr ';' '-')"
JUICE_BUILD_DIR="$dir" JUICE_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Debug -DJUICE_SANITIZE=$kind" tools/setup.sh
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# TSan: races inside uninstrumented system libraries are suppressed in
# tools/tsan.supp (each entry says why). GLib's slice allocator hands memory
# between threads in a way TSan cannot see; G_SLICE=always-malloc makes it
# use malloc, which TSan tracks. A report makes the process exit 66, which
# the tests check for juiced.
export TSAN_OPTIONS="${TSAN_OPTIONS:-suppressions=$PWD/tools/tsan.supp second_deadlock_stack=1}"
export G_SLICE=always-malloc
ctest --test-dir "$dir" --output-on-failure
