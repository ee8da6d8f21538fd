#!/usr/bin/env bash
# Builds the libFuzzer targets (clang 14, JUICE_FUZZ=ON) in build-fuzz/ and
# runs each for SECONDS (default 60), one after the other, with its seed
# corpus and dictionary. New corpus entries go to build-fuzz/fuzz-out/corpus/
# (never into the repo); crashing inputs to build-fuzz/fuzz-out/crashes/.
# Prints per target the executions, exec/s, coverage and crashes, and a total;
# exits 1 if any target crashed.
#
#   tools/fuzz.sh                 # every target, 60 s each
#   tools/fuzz.sh 300 frame api   # those two, 5 minutes each
#
# JUICE_FUZZ_JOBS: build parallelism (default nproc). Extra libFuzzer flags:
# JUICE_FUZZ_ARGS="-max_len=1000".
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2; }
shift || true
all=(api frame inbox presence sealed node_cache contact identity store put_guard rtp)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")

# clang and its libFuzzer runtime (not needed by the normal gcc build).
missing=()
for p in clang-14 libclang-rt-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "fuzz: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build=build-fuzz
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
  -DJUICE_FUZZ=ON >/dev/null
cmake --build "$build" -j "${JUICE_FUZZ_JOBS:-$(nproc)}" --target juice_fuzzers

src=tests/fuzz
out="$build/fuzz-out"
mkdir -p "$out"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

total_execs=0
failed=()
summary=()
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz/fuzz_$t"
  [ -x "$bin" ] || { echo "fuzz: no target '$t' (have: ${all[*]})" >&2; exit 2; }
  corpus="$out/corpus/$t"
  crashes="$out/crashes/$t"
  mkdir -p "$corpus" "$crashes"
  log="$out/$t.log"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$crashes/")
  [ -f "$src/$t.dict" ] && args+=(-dict="$src/$t.dict")
  # shellcheck disable=SC2086
  args+=(${JUICE_FUZZ_ARGS:-})
  echo "fuzz: $t for ${seconds}s (log $log)" >&2
  rc=0
  # First corpus dir is written to (scratch); the seeds are only read.
  "$bin" "${args[@]}" "$corpus" "$src/corpus/$t" >"$log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -oE '(#[0-9]+\s+(INITED|DONE|NEW|REDUCE|pulse)).*cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 |
        grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
  cov0=$(grep -oE 'INITED cov: [0-9]+' "$log" | grep -oE '[0-9]+$' | head -1 || true)
  crash_files=$(find "$crashes" -type f | wc -l)
  total_execs=$((total_execs + ${execs:-0}))
  line=$(printf '%-11s execs %10s  exec/s %6s  %-22s (at start: cov %s)  crashes %s' "$t" "${execs:-?}" \
         "${eps:-?}" "${cov:-cov: ?}" "${cov0:-?}" "$crash_files")
  if ((rc != 0)) || ((crash_files > 0)); then
    failed+=("$t")
    line+="  FAILED (exit $rc): $(find "$crashes" -type f | head -3 | tr '\n' ' ')"
  fi
  summary+=("$line")
done

echo
echo "fuzz results (${seconds}s per target; scratch corpus and crashes in $out/):"
printf '  %s\n' "${summary[@]}"
echo "  total executions: $total_execs"
if ((${#failed[@]})); then
  echo "fuzz: crashes in: ${failed[*]} (see $out/crashes/ and the logs)" >&2
  exit 1
fi
