#include "traffic_kind.hpp"

#include "msgpack_text.hpp"

#include <msgpack.hpp>

#include <optional>
#include <string_view>

namespace juice::dht {

namespace {

using Obj = msgpack::object;

constexpr auto text = msgpack_text;

// The transaction id as bytes (OpenDHT sends 4 bytes, or an integer).
std::string tid_key(const Obj& o) {
    if (auto t = text(o)) return std::string(*t);
    if (o.type == msgpack::type::POSITIVE_INTEGER) return "#" + std::to_string(o.via.u64);
    return {};
}

}  // namespace

std::string TrafficKinds::classify(Dir dir, std::span<const std::uint8_t> bytes, const std::string& peer) {
    msgpack::object_handle handle;
    try {
        // Sizes capped by the datagram, as in the put guard: a short packet
        // cannot claim gigabytes.
        const auto n = bytes.size();
        msgpack::unpack_limit limit(n, n, n, n, n, 16);
        handle = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), n, nullptr, nullptr, limit);
    } catch (const std::exception&) {
        return "other";
    }
    const Obj& msg = handle.get();
    if (msg.type != msgpack::type::MAP) return "other";
    std::optional<std::string_view> q;
    std::string tid;
    bool is_reply = false, is_update = false, is_parts = false;
    for (std::uint32_t i = 0; i < msg.via.map.size; ++i) {
        const auto& kv = msg.via.map.ptr[i];
        auto key = text(kv.key);
        if (!key) continue;
        if (*key == "q")
            q = text(kv.val);
        else if (*key == "t")
            tid = tid_key(kv.val);
        else if (*key == "r" || *key == "e")
            is_reply = true;
        else if (*key == "u")
            is_update = true;
        else if (*key == "p")
            is_parts = true;
    }
    // Precedence as in OpenDHT's ParsedMessage: error/reply, parts, update, query.
    if (is_reply) {
        // The query went the other way: an outgoing reply answers a query
        // that came in, and the other way round.
        const std::string k = (dir == Dir::out ? "i|" : "o|") + peer + "|" + tid;
        auto it = m_pending.find(k);
        if (it == m_pending.end()) return "reply";
        std::string method = it->second;
        m_pending.erase(it);  // (its m_order entry ages out on its own)
        return method;
    }
    if (is_parts) return "value_parts";
    if (is_update) return "listen_update";
    if (!q) return "other";
    std::string method(*q);
    if (method != "ping" && method != "find" && method != "get" && method != "listen" && method != "put" &&
        method != "refresh" && method != "update")
        return "other";
    if (!tid.empty()) {
        std::string k = (dir == Dir::out ? "o|" : "i|") + peer + "|" + tid;
        if (m_pending.size() >= k_pending) {
            while (!m_order.empty() && m_pending.size() >= k_pending) {
                m_pending.erase(m_order.front());
                m_order.pop_front();
            }
        }
        if (m_pending.emplace(k, method).second) m_order.push_back(std::move(k));
        if (m_order.size() > 2 * k_pending) {
            // Entries answered long ago: drop their names from the order.
            std::deque<std::string> kept;
            for (auto& o : m_order)
                if (m_pending.count(o)) kept.push_back(std::move(o));
            m_order.swap(kept);
        }
    }
    return method;
}

std::string TrafficKinds::record(Dir dir, std::span<const std::uint8_t> bytes, const std::string& peer) {
    std::lock_guard lk(m_mtx);
    auto kind = classify(dir, bytes, peer);
    auto& c = m_counts[kind];
    if (dir == Dir::in) {
        ++c.packets_in;
        c.bytes_in += bytes.size();
    } else {
        ++c.packets_out;
        c.bytes_out += bytes.size();
    }
    return kind;
}

std::map<std::string, KindCount> TrafficKinds::counts() const {
    std::lock_guard lk(m_mtx);
    return m_counts;
}

}  // namespace juice::dht
