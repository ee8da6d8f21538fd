#!/usr/bin/env bash
# The scale sweep behind docs/SCALE.md: juice's DHT model and the broadcast
# model at several network sizes, idle traffic against offline buddies, and
# the plots. Long (about an hour on 2 cores with the defaults); not part of
# the test suite. Needs a built tree (tools/setup.sh), gnuplot and jq.
#
#   tools/scale.sh [OUT_DIR]          default OUT_DIR: scale-results/
#   SIZES="100 1000" tools/scale.sh   juice model sizes (default: 1000 300 100)
#   BSIZES="..."                      broadcast sizes (default: 100 300 1000 2000)
#   BUDDIES=10 IDLE=300               buddies per user, idle window (s)
#   PLOT_ONLY=1 tools/scale.sh DIR    redraw the plots from DIR's JSON
#
# Writes OUT_DIR/dht-N.json, broadcast-N.json, buddies.json, summary.txt and
# the PNG plots (traffic-vs-n.png, presence-cdf.png, idle-vs-buddies.png).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-scale-results}"
build="${JUICE_BUILD_DIR:-build}"
sim="${JUICE_SIM:-$build/tools/juice-sim}"  # (JUICED=path picks the juiced it spawns)
sizes="${SIZES:-1000 300 100}"
bsizes="${BSIZES:-100 300 1000 2000}"
buddies="${BUDDIES:-10}"
idle="${IDLE:-300}"
mkdir -p "$out"
for tool in gnuplot jq; do
  command -v "$tool" >/dev/null || { echo "scale.sh: $tool is missing (apt-get install ${tool/gnuplot/gnuplot-nox})" >&2; exit 2; }
done

if [ -z "${PLOT_ONLY:-}" ]; then
  [ -x "$sim" ] || { echo "scale.sh: $sim is missing; run tools/setup.sh first" >&2; exit 2; }
  # Many sockets and threads in one process.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  for n in $sizes; do
    echo "scale.sh: juice model, N=$n" >&2
    # A gentle login: at 40 users/s with every watch within 20 s, 1000 users
    # overload 2 cores for good (docs/SCALE.md, "1000 users on 2 cores").
    "$sim" --out "$out/dht-$n.json" dht --nodes "$n" --buddies "$buddies" --idle "$idle" --samples \
      --login-rate 10 --watch-spread "$(( n / 10 > 20 ? n / 10 : 20 ))"
  done
  # The buddies run measures bytes only, so the broadcast runs (which load
  # the CPU) go beside it.
  echo "scale.sh: idle traffic against offline buddies, and the broadcast model" >&2
  # juiced's default (watches of offline buddies sleep after 10 min: the
  # window starts after that), and always listening, as before; the latter
  # over 30 min, so that it holds the 10-minute search resyncs.
  "$sim" --out "$out/buddies.json" buddies --nodes 100 --probes 0,10,25,50,100 --idle "$idle" &
  "$sim" --out "$out/buddies-listen.json" buddies --nodes 100 --probes 0,10,25,50,100 --dormant-after 0 \
    --idle 1800 &
  for n in $bsizes; do
    echo "scale.sh: broadcast model, N=$n" >&2
    "$sim" --out "$out/broadcast-$n.json" broadcast --nodes "$n" --buddies "$buddies" --window 120
  done
  wait
fi

# ---- tables ---------------------------------------------------------------
{
  echo "# per-user traffic (bytes/min, in+out) against N"
  echo "# N juice_idle_mean juice_idle_p99 broadcast_mean"
  for n in $(printf '%s\n' $sizes $bsizes | sort -n | uniq); do
    j=$( [ -f "$out/dht-$n.json" ] && jq '.idle.bytes_per_min_total.mean' "$out/dht-$n.json" || echo "?")
    jp=$( [ -f "$out/dht-$n.json" ] && jq '.idle.bytes_per_min_total.p99' "$out/dht-$n.json" || echo "?")
    b=$( [ -f "$out/broadcast-$n.json" ] && jq '.per_user.bytes_per_min_total.mean' "$out/broadcast-$n.json" || echo "?")
    echo "$n $j $jp $b"
  done
} > "$out/traffic.dat"

for n in $sizes; do
  f="$out/dht-$n.json"
  [ -f "$f" ] || continue
  jq -r '.update.samples_ms // [] | sort | . as $s | length as $l
         | to_entries[] | "\(.value) \((.key + 1) / $l)"' "$f" > "$out/cdf-$n.dat"
done

for b in buddies buddies-listen; do
  jq -r '.probes[] | "\(.offline_buddies) \(.bytes_per_s) \(.bytes_in_per_s) \(.bytes_out_per_s)"' \
    "$out/$b.json" > "$out/$b.dat" 2>/dev/null || true
done

{
  echo "juice model (DhtNode, loopback), buddies=$buddies, idle window ${idle}s"
  printf '%6s %12s %12s %12s %12s %10s %10s %10s %10s\n' N update_p50 update_p99 delivered lookup_p99 idle_B/min idle_p99 kib/node kib/buddy
  for n in $sizes; do
    f="$out/dht-$n.json"
    [ -f "$f" ] || continue
    jq -r '[.config.nodes, .update.latency_ms.p50, .update.latency_ms.p99, .update.delivered_share,
            .lookup.latency_ms.p99, .idle.bytes_per_min_total.mean, .idle.bytes_per_min_total.p99,
            .memory.per_node_kib, .memory.per_buddy_kib] | @tsv' "$f" |
      awk '{printf "%6d %12.1f %12.1f %12.4f %12.1f %10.0f %10.0f %10.0f %10.1f\n", $1,$2,$3,$4,$5,$6,$7,$8,$9}'
  done
  echo
  echo "broadcast model (one relay, UDP, ping every 60 s)"
  printf '%6s %14s %14s\n' N B/min/user relay_dgram/s
  for n in $bsizes; do
    f="$out/broadcast-$n.json"
    [ -f "$f" ] || continue
    jq -r '[.config.nodes, .per_user.bytes_per_min_total.mean, .relay.datagrams_out_per_s] | @tsv' "$f" |
      awk '{printf "%6d %14.0f %14.0f\n", $1,$2,$3}'
  done
  echo
  echo "idle traffic against offline buddies (bytes/s, in+out)"
  cat "$out/buddies.dat" 2>/dev/null || true
} > "$out/summary.txt"
cat "$out/summary.txt"

# ---- plots ----------------------------------------------------------------
gnuplot <<EOF
set terminal pngcairo size 900,600 font "sans,11"
set grid
set key top left

set output "$out/traffic-vs-n.png"
set title "Per-user traffic against network size (idle, bytes/min in+out)"
set xlabel "users online (N)"
set ylabel "bytes per minute per user"
set logscale xy
plot "$out/traffic.dat" using 1:(strcol(2) eq "?" ? 1/0 : \$2) with linespoints lw 2 pt 7 title "juice (DHT), mean", \
     "$out/traffic.dat" using 1:(strcol(4) eq "?" ? 1/0 : \$4) with linespoints lw 2 pt 5 title "broadcast relay, mean"
unset logscale

set output "$out/presence-cdf.png"
set title "Presence propagation: publish -> buddy's event (steady state)"
set xlabel "latency (ms)"
set ylabel "share of (watcher, update) pairs"
set logscale x
set yrange [0:1]
plot for [n in "$sizes"] "$out/cdf-".n.".dat" using 1:2 with lines lw 2 title "N = ".n
unset logscale
set autoscale y

set output "$out/idle-vs-buddies.png"
set title "Idle traffic of one user against its offline buddies"
set xlabel "offline buddies watched"
set ylabel "bytes per second (in+out)"
set key top left
plot "$out/buddies-listen.dat" using 1:2 with linespoints lw 2 pt 5 title "always listening", \
     "$out/buddies.dat" using 1:2 with linespoints lw 2 pt 7 title "watches sleep after 10 min (default)", \
     "$out/buddies.dat" using 1:4 with linespoints lw 1 pt 9 title "  of which sent", \
     500 with lines dt 2 title "target 0.5 KB/s"
EOF
echo "scale.sh: results and plots in $out/" >&2
