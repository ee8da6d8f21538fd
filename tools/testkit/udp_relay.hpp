// UdpRelay: a lossy, jittery UDP forwarder for tests and benchmarks.
//
// The netem qdisc does not work on this machine (no CAP_NET_ADMIN in the
// build containers), so loss and delay are simulated in a relay of our own:
// point daemon A at the relay instead of at daemon B and every datagram
// between them goes through a loss model and a delay line.
//
//     peer (any address) ──► [listen socket] ──loss/delay──► target
//     peer (latest)      ◄── [listen socket] ◄──loss/delay── target
//
// - A datagram from anyone but the target goes to the target, sent from the
//   listen socket. The relay remembers that sender as "the peer".
// - A datagram from the target goes to the peer that had most recently sent
//   something when it arrived (dropped and counted if nobody has yet).
// - Each direction has its own loss model state, its own random stream and
//   its own counters, with the same parameters. Given the seed and the
//   sequence of datagrams in a direction, the loss/delay decisions in that
//   direction are deterministic (independent of the other direction's
//   traffic and of timing).
//
// Delay: each datagram is due at arrival + delay + U[0, jitter] (uniform,
// drawn per datagram), so with jitter larger than the packet spacing packets
// reorder, as on a real multi-path route. Held datagrams wait in one
// priority queue ordered by due time (FIFO among equal times), bounded by
// max_queue across both directions; beyond it arrivals are dropped and
// counted as dropped_overflow.
//
// Threads: the relay owns one thread, started by the constructor, which alone
// touches the socket, the queue and the random state (a poll loop on the
// socket and an eventfd). stats() and port() may be called from any thread.
// The destructor wakes the thread through the eventfd and joins it; datagrams
// still held are discarded. Clean under ThreadSanitizer.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace juice::test {

struct UdpRelayOptions {
    // Where the relay listens. Port 0: an ephemeral port (see port()).
    std::string listen_host = "127.0.0.1";
    std::uint16_t listen_port = 0;
    // Where datagrams from the peer go (required; numeric or resolvable,
    // same address family as listen_host).
    std::string target_host = "127.0.0.1";
    std::uint16_t target_port = 0;

    // Independent (Bernoulli) loss probability per datagram, 0..1. With burst
    // loss enabled this is the loss probability in the "good" state.
    double loss = 0.0;
    // Base one-way delay and the extra uniform jitter on top of it.
    std::chrono::milliseconds delay{0};
    std::chrono::milliseconds jitter{0};

    // Burst loss: the Gilbert-Elliott two-state model. Per datagram, the
    // state first moves (good->bad with p_good_to_bad, bad->good with
    // p_bad_to_good), then the datagram is lost with `loss` in good and
    // `loss_in_bad` in bad. Mean burst length is 1/p_bad_to_good datagrams;
    // the stationary share of time in bad is p_gb / (p_gb + p_bg).
    // Example: p_good_to_bad 0.02, p_bad_to_good 0.25, loss 0 -> ~7.4% loss
    // in bursts of ~4 datagrams.
    struct Burst {
        bool enabled = false;
        double p_good_to_bad = 0.0;
        double p_bad_to_good = 1.0;
        double loss_in_bad = 1.0;
    } burst;

    // Seeds both directions' random streams (each derives its own).
    std::uint64_t seed = 1;
    // Most datagrams held in the delay queue, both directions together.
    std::size_t max_queue = 10000;
};

// Counters for one direction. `received` counts every datagram that entered
// the relay in that direction; each ends in exactly one of the other
// counters (or is still queued, or is discarded at destruction).
struct UdpRelayDirectionStats {
    std::uint64_t received = 0;
    std::uint64_t forwarded = 0;         // handed to sendto() successfully
    std::uint64_t dropped_loss = 0;      // by the loss model
    std::uint64_t dropped_overflow = 0;  // the queue was full
    std::uint64_t send_errors = 0;       // sendto() failed (e.g. ENOBUFS)
};

struct UdpRelayStats {
    UdpRelayDirectionStats to_target;    // peer -> target
    UdpRelayDirectionStats from_target;  // target -> peer
    // Datagrams from the target before any peer was known (not in
    // from_target.received).
    std::uint64_t dropped_no_peer = 0;
    // Datagrams held in the delay queue right now.
    std::size_t queued = 0;
};

class UdpRelay {
public:
    // Binds, resolves the target and starts the thread. Throws
    // std::runtime_error (saying what failed) on a bad address, a bind
    // failure or bad options (probabilities outside 0..1, negative delays).
    explicit UdpRelay(UdpRelayOptions options);
    // Stops and joins the thread (promptly: it does not wait for queued
    // datagrams to become due).
    ~UdpRelay();
    UdpRelay(const UdpRelay&) = delete;
    UdpRelay& operator=(const UdpRelay&) = delete;

    // The bound listen port (the ephemeral one when listen_port was 0).
    std::uint16_t port() const;
    // "host:port" of the listen socket, e.g. "127.0.0.1:40123".
    std::string address() const;
    // A consistent snapshot of the counters; any thread, never blocks for
    // long (a mutex held only while the loop updates counters).
    UdpRelayStats stats() const;
    const UdpRelayOptions& options() const;

private:
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

}  // namespace juice::test
