#!/usr/bin/env bash
# Installs the Debian 12 packages juice needs (only those missing), then
# configures and builds juice in ./build. Safe to run again: it only does
# what is left to do.
#
#   tools/setup.sh            # packages + build
#   JUICE_BUILD_DIR=dir ...   # another build directory
#   JUICE_CMAKE_ARGS="..."    # extra cmake arguments (e.g. -DJUICE_SANITIZE=address;undefined)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config
  # libraries
  libopendht-dev libgnutls28-dev libmsgpack-cxx-dev libsqlite3-dev libasio-dev
  nlohmann-json3-dev libfmt-dev libspdlog-dev libcli11-dev catch2
  # `juice notify`: desktop notifications through libnotify; GIO (from
  # libglib2.0-dev) for its D-Bus checks and the tests' fake notification server
  libnotify-dev libglib2.0-dev
  # voice calls (juice_media): Opus, SRTP, speexdsp (jitter buffer,
  # resampler), WAV files in/out, the PulseAudio simple API
  libopus-dev libsrtp2-dev libspeexdsp-dev libsndfile1-dev libpulse-dev
  # links through NATs (juice_ice): ICE and pseudo-TCP from libnice
  libnice-dev
  # real peers used by the integration tests (dbus-daemon: a private session
  # bus for the `juice notify` tests; gnutls-bin: gnutls-cli, an independent
  # TLS client for the hostile link tests)
  dhtnode dbus-daemon gnutls-bin
  # call tests: speech from espeak-ng, converted and inspected with sox; a
  # packet capture decoded by tshark; a private PulseAudio server with a
  # null sink for the sound-device backend; gnuplot draws the call benchmark
  espeak-ng sox tshark pulseaudio gnuplot-nox
  # tools/scale.sh reads juice-sim's JSON with jq (and plots with gnuplot)
  jq
  # the NAT lab (tools/natlab.sh, [nat] tests): NAT routers from iptables,
  # their state flushed with conntrack, a TURN/STUN server from coturn
  iptables conntrack coturn
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The dhtnode package enables a service that joins the public DHT; juice
  # only needs the binary (tests start their own on loopback).
  if [[ " ${missing[*]} " == *" dhtnode "* ]] && command -v systemctl >/dev/null; then
    $sudo systemctl disable --now dhtnode >/dev/null 2>&1 || true
  fi
  # Likewise coturn's packaged TURN service: the lab starts its own.
  if [[ " ${missing[*]} " == *" coturn "* ]] && command -v systemctl >/dev/null; then
    $sudo systemctl disable --now coturn >/dev/null 2>&1 || true
  fi
fi

build="${JUICE_BUILD_DIR:-build}"
# shellcheck disable=SC2086
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${JUICE_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)"
echo "setup: built juice in $build/" >&2
