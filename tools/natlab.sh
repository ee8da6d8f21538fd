#!/usr/bin/env bash
# The NAT lab: an "internet" and two homes behind NAT routers, built with
# Linux network namespaces, veth pairs and iptables. Needs root.
#
#   tools/natlab.sh up                 # build it (routers start as cone NATs)
#   tools/natlab.sh nat ROUTER TYPE    # ROUTER rA|rB, TYPE cone|symmetric
#   tools/natlab.sh turn DIR [USER PASS]  # start coturn in `turn` (log/pid in DIR)
#   tools/natlab.sh exec NAME CMD...   # run CMD in namespace NAME
#   tools/natlab.sh down               # tear everything down (safe to repeat)
#
#            "internet": bridge br0 in namespace inet, 203.0.113.0/24 (.1, a
#            default route that forwards nothing)
#   boot .2     turn .3 (+ .4;     rA wan .11           rB wan .12
#               relays from .5)
#                                  lan 192.168.1.1/24   lan 192.168.1.1/24
#                                  a   192.168.1.10     b   192.168.1.20
#
# Both homes use the same private subnet, as real homes do: neither side's
# host candidates reach the other. A cone router is a port-preserving
# MASQUERADE (endpoint-independent mapping) whose conntrack only lets in
# replies from where a packet went (address+port-dependent filtering): a
# port-restricted cone NAT. A symmetric router maps every UDP flow to a
# random port (--random-fully): endpoint-dependent mapping. New inbound
# connections are dropped silently, like a home router. Every internet host
# routes by default to .1, which forwards nothing: a packet to a private
# address vanishes, as on the real internet (with no route at all, coturn's
# relay gets ENETUNREACH for a peer's host candidate and drops the whole
# allocation). Namespace names carry
# a prefix (JUICE_NAT_PREFIX, default "jn-"). The [nat] tests drive this
# script (tests/integration/test_nat.cpp); docs/NAT.md explains the cases.
set -euo pipefail

P=${JUICE_NAT_PREFIX:-jn-}
die() { echo "natlab.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root (ip netns, iptables)"
ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# wan NAME ADDR...: a namespace with eth0 on the internet bridge.
wan() {
  local n=$1; shift
  ip netns add "${P}$n"
  ip -n "${P}$n" link set lo up
  ip link add "${P}${n}w" type veth peer name eth0 netns "${P}$n"
  ip link set "${P}${n}w" netns "${P}inet"
  ip -n "${P}inet" link set "${P}${n}w" master br0 up
  for a in "$@"; do ip -n "${P}$n" addr add "$a/24" dev eth0; done
  ip -n "${P}$n" link set eth0 up
  ip -n "${P}$n" route add default via 203.0.113.1
}

# home ROUTER HOST WANADDR HOSTADDR: a NAT router on the internet and one
# host behind it.
home() {
  local r=$1 h=$2
  wan "$r" "$3"
  ip netns add "${P}$h"
  ip -n "${P}$h" link set lo up
  ip link add "${P}${r}l" type veth peer name eth0 netns "${P}$h"
  ip link set "${P}${r}l" netns "${P}$r"
  ip -n "${P}$r" link set "${P}${r}l" name lan0
  ip -n "${P}$r" addr add 192.168.1.1/24 dev lan0
  ip -n "${P}$r" link set lan0 up
  ip -n "${P}$h" addr add "$4/24" dev eth0
  ip -n "${P}$h" link set eth0 up
  ip -n "${P}$h" route add default via 192.168.1.1
  ip netns exec "${P}$r" sysctl -qw net.ipv4.ip_forward=1
}

# nat ROUTER TYPE
nat() {
  local r=$1 type=$2
  local ipt="ip netns exec ${P}$r iptables"
  ns_exists "${P}$r" || die "no router $r (run up first)"
  $ipt -F; $ipt -t nat -F
  $ipt -P FORWARD DROP
  $ipt -A FORWARD -i lan0 -o eth0 -j ACCEPT
  $ipt -A FORWARD -i eth0 -o lan0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  $ipt -A INPUT -i eth0 -m conntrack --ctstate NEW -j DROP
  case $type in
    cone) $ipt -t nat -A POSTROUTING -o eth0 -j MASQUERADE ;;
    symmetric)
      $ipt -t nat -A POSTROUTING -o eth0 -p udp -j MASQUERADE --random-fully
      $ipt -t nat -A POSTROUTING -o eth0 -j MASQUERADE ;;
    *) die "NAT type must be cone or symmetric" ;;
  esac
  ip netns exec "${P}$r" conntrack -F >/dev/null 2>&1 || true
}

up() {
  down
  ip netns add "${P}inet"
  ip -n "${P}inet" link set lo up
  ip -n "${P}inet" link add br0 type bridge
  ip -n "${P}inet" addr add 203.0.113.1/24 dev br0
  ip -n "${P}inet" link set br0 up
  wan boot 203.0.113.2
  wan turn 203.0.113.3 203.0.113.4 203.0.113.5
  home rA a 203.0.113.11 192.168.1.10
  home rB b 203.0.113.12 192.168.1.20
  nat rA cone
  nat rB cone
  echo "natlab: internet 203.0.113.0/24 (boot .2, turn .3/.4), rA .11 -> a 192.168.1.10, rB .12 -> b 192.168.1.20"
}

down() {
  for n in a b rA rB boot turn inet; do
    if ns_exists "${P}$n"; then
      ip netns pids "${P}$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "${P}$n"
    fi
  done
}

# turn DIR [USER PASS]: coturn on .3 (and .4, which turns RFC 5780 on),
# long-term credentials, no TLS.
turn() {
  local dir=$1 user=${2:-juice} pass=${3:-lab-secret}
  mkdir -p "$dir"
  ip netns exec "${P}turn" turnserver -n --listening-ip=203.0.113.3 --listening-ip=203.0.113.4 \
    --relay-ip=203.0.113.5 --listening-port=3478 --min-port=49152 --max-port=49407 \
    --lt-cred-mech --user="$user:$pass" --realm=juice.test --fingerprint --no-tls --no-dtls --no-cli \
    --userdb="$dir/turndb" --pidfile="$dir/turn.pid" --log-file="$dir/turn.log" --simple-log ${JUICE_TURN_VERBOSE:+--verbose} \
    --allow-loopback-peers --no-multicast-peers >/dev/null 2>&1 &
  for _ in $(seq 50); do
    ip netns exec "${P}turn" ss -lun | grep -q 203.0.113.3:3478 && return 0
    sleep 0.1
  done
  die "coturn did not come up (see $dir/turn.log)"
}

cmd=${1:-}; shift || true
case $cmd in
  up) up ;;
  down) down ;;
  nat) [[ $# -eq 2 ]] || die "usage: nat ROUTER cone|symmetric"; nat "$1" "$2" ;;
  turn) [[ $# -ge 1 ]] || die "usage: turn DIR [USER PASS]"; turn "$@" ;;
  exec) [[ $# -ge 2 ]] || die "usage: exec NAME CMD..."; n=$1; shift; exec ip netns exec "${P}$n" "$@" ;;
  *) die "usage: natlab.sh up|down|nat ROUTER TYPE|turn DIR|exec NAME CMD..." ;;
esac
