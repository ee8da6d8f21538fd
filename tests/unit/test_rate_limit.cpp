// PeerRateLimiter: the per-address token bucket in front of OpenDHT's parser.
#include "rate_limit.hpp"

#include <catch2/catch.hpp>

using juice::dht::PeerRateLimiter;
using namespace std::chrono_literals;

namespace {
std::string ip4(std::uint32_t n) {
    return std::string(reinterpret_cast<const char*>(&n), 4);
}
int allowed(PeerRateLimiter& l, const std::string& ip, int tries, PeerRateLimiter::Clock::time_point t) {
    int n = 0;
    for (int i = 0; i < tries; ++i) n += l.allow(ip, t) ? 1 : 0;
    return n;
}
}  // namespace

TEST_CASE("rate limiter: a burst of 2 s worth, then the rate", "[dht][ratelimit]") {
    PeerRateLimiter l(100);
    auto t = PeerRateLimiter::Clock::time_point{} + 1h;
    CHECK(allowed(l, ip4(1), 1000, t) == 200);
    CHECK(l.dropped() == 800);
    // Half a second later: 50 more tokens.
    CHECK(allowed(l, ip4(1), 1000, t + 500ms) == 50);
    // Another address has its own bucket.
    CHECK(allowed(l, ip4(2), 10, t + 500ms) == 10);
    // Long idle: refills to the burst, never beyond.
    CHECK(allowed(l, ip4(1), 1000, t + 1h) == 200);
}

TEST_CASE("rate limiter: 0 means no limit", "[dht][ratelimit]") {
    PeerRateLimiter l(0);
    auto t = PeerRateLimiter::Clock::now();
    CHECK(allowed(l, ip4(1), 100000, t) == 100000);
    CHECK(l.dropped() == 0);
    CHECK(l.peers() == 0);
}

TEST_CASE("rate limiter: a clock going backwards adds nothing", "[dht][ratelimit]") {
    PeerRateLimiter l(10);
    auto t = PeerRateLimiter::Clock::time_point{} + 1h;
    CHECK(allowed(l, ip4(1), 100, t) == 20);
    CHECK(allowed(l, ip4(1), 100, t - 10s) == 0);
}

TEST_CASE("rate limiter: the table stays bounded under many addresses", "[dht][ratelimit]") {
    PeerRateLimiter l(5);
    auto t = PeerRateLimiter::Clock::time_point{} + 1h;
    // Busy peers (each spent its burst) fill the table...
    for (std::uint32_t i = 0; i < PeerRateLimiter::k_max_peers; ++i) allowed(l, ip4(i), 10, t);
    CHECK(l.peers() == PeerRateLimiter::k_max_peers);
    // ...one more address starts the table over rather than growing it.
    CHECK(l.allow(ip4(0xffffffff), t));
    CHECK(l.peers() <= PeerRateLimiter::k_max_peers);
    // Idle peers are forgotten first: after they refill, a newcomer makes room
    // by dropping them, and a busy one keeps its (empty) bucket.
    PeerRateLimiter m(5);
    for (std::uint32_t i = 0; i < PeerRateLimiter::k_max_peers; ++i) m.allow(ip4(i), t);
    allowed(m, ip4(7), 10, t + 10s);  // 7 is busy at t+10s
    CHECK(m.allow(ip4(0xfffffffe), t + 10s));
    CHECK(m.peers() == 2);
    CHECK_FALSE(m.allow(ip4(7), t + 10s));
}
