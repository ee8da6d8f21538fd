// PeerRateLimiter: a token bucket per source IP address, in front of
// OpenDHT's parser (DhtNode::Options::max_packets_per_ip). OpenDHT 2.4.12
// limits *requests* after parsing them; this drops a flood before any
// msgpack work, which is what a bootstrap node facing the internet wants.
//
// Sans-I/O: the caller passes the address bytes and the time. Runs on the
// socket's receive thread only (no lock). Memory is bounded: at most
// k_max_peers buckets; when full, buckets that have refilled (idle peers) are
// forgotten, and if every peer is busy the table starts over (a flood from
// more than k_max_peers addresses gets through at most one burst each).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace juice::dht {

class PeerRateLimiter {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr std::size_t k_max_peers = 16384;

    // `per_second` datagrams per address, bursts of 2 s worth. 0 = no limit.
    explicit PeerRateLimiter(std::uint32_t per_second) : m_rate(per_second), m_burst(2.0 * per_second) {}

    // `ip`: the raw address bytes (4 or 16). Returns false to drop.
    bool allow(std::string_view ip, Clock::time_point now);

    std::uint64_t dropped() const { return m_dropped; }
    std::size_t peers() const { return m_buckets.size(); }

private:
    struct Bucket {
        double tokens;
        Clock::time_point last;
    };
    void make_room(Clock::time_point now);

    double m_rate;
    double m_burst;
    std::unordered_map<std::string, Bucket> m_buckets;
    std::uint64_t m_dropped = 0;
};

}  // namespace juice::dht
