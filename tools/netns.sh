#!/usr/bin/env bash
# A small multi-host network on one machine, with Linux network namespaces:
# a hub namespace holding a bridge, a bootstrap namespace and HOSTS host
# namespaces, each plugged into the bridge by a veth pair. No NAT, no route
# to the outside: only these namespaces can talk to each other. Needs root.
#
#   tools/netns.sh up [HOSTS]     # build it (default 8 hosts); prints the layout
#   tools/netns.sh down           # tear everything down (safe to repeat)
#   tools/netns.sh exec NAME CMD  # run CMD in namespace NAME (boot, h1..hN)
#   tools/netns.sh list           # namespaces and addresses
#
# Addresses: bootstrap 10.77.0.1, host i 10.77.0.(10+i), /24 on the bridge.
# Namespace names carry a prefix (JUICE_NETNS_PREFIX, default "juice-") so
# that parallel runs can choose their own; everything made is named with it.
# The integration test `[netns]` (tests/integration/test_netns.cpp) drives
# this script; docs/SCALE.md shows a run by hand.
set -euo pipefail

prefix=${JUICE_NETNS_PREFIX:-juice-}
hub=${prefix}hub
subnet=10.77.0

die() { echo "netns.sh: $*" >&2; exit 1; }
need_root() { [[ $(id -u) -eq 0 ]] || die "needs root (ip netns)"; }

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# add_node NAME ADDR: a namespace with lo up and a veth into the hub's bridge.
add_node() {
  local name=$1 addr=$2 ns=${prefix}$1
  local hubside=${prefix:0:6}${1}h   # interface names are at most 15 bytes
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "$hubside" type veth peer name eth0 netns "$ns"
  ip link set "$hubside" netns "$hub"
  ip -n "$hub" link set "$hubside" master br0 up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
}

cmd_up() {
  need_root
  local hosts=${1:-8}
  [[ $hosts =~ ^[0-9]+$ && $hosts -ge 1 && $hosts -le 200 ]] || die "HOSTS must be 1..200"
  ns_exists "$hub" && die "$hub exists already: run '$0 down' first"
  trap 'echo "netns.sh: setup failed, tearing down" >&2; cmd_down >/dev/null 2>&1' ERR
  ip netns add "$hub"
  ip -n "$hub" link set lo up
  ip -n "$hub" link add br0 type bridge
  ip -n "$hub" link set br0 up
  add_node boot "$subnet.1"
  for i in $(seq 1 "$hosts"); do add_node "h$i" "$subnet.$((10 + i))"; done
  trap - ERR
  # (STP is off on the bridge, so its ports forward at once.)
  cmd_list
}

cmd_down() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep "^${prefix}" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

cmd_list() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep "^${prefix}" | sort -V || true); do
    printf '%s\t%s\n' "$ns" "$(ip -n "$ns" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}')"
  done
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) need_root; cmd_down ;;
  exec) need_root; shift; name=${1:?NAME}; shift; exec ip netns exec "${prefix}${name}" "$@" ;;
  list) cmd_list ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
