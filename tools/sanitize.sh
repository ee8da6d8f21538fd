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
ctest --test-dir "$dir" --output-on-failure
