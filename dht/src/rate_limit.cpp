#include "rate_limit.hpp"

#include <algorithm>

namespace juice::dht {

namespace {
double seconds_between(PeerRateLimiter::Clock::time_point a, PeerRateLimiter::Clock::time_point b) {
    return b > a ? std::chrono::duration<double>(b - a).count() : 0.0;
}
}  // namespace

bool PeerRateLimiter::allow(std::string_view ip, Clock::time_point now) {
    if (m_rate <= 0) return true;
    auto it = m_buckets.find(std::string(ip));
    if (it == m_buckets.end()) {
        if (m_buckets.size() >= k_max_peers) make_room(now);
        it = m_buckets.emplace(std::string(ip), Bucket{m_burst, now}).first;
    } else {
        auto& b = it->second;
        b.tokens = std::min(m_burst, b.tokens + seconds_between(b.last, now) * m_rate);
        b.last = now;
    }
    if (it->second.tokens >= 1.0) {
        it->second.tokens -= 1.0;
        return true;
    }
    ++m_dropped;
    return false;
}

void PeerRateLimiter::make_room(Clock::time_point now) {
    for (auto it = m_buckets.begin(); it != m_buckets.end();) {
        const auto& b = it->second;
        if (b.tokens + seconds_between(b.last, now) * m_rate >= m_burst)
            it = m_buckets.erase(it);
        else
            ++it;
    }
    if (m_buckets.size() >= k_max_peers) m_buckets.clear();
}

}  // namespace juice::dht
