// Traffic by kind: which OpenDHT 2.4.12 messages a node's datagrams carry,
// so that "what dominates a user's idle traffic" has an answer in numbers.
//
// Sans-I/O: datagrams, their peer and direction in; counts out. A query is
// counted under its method ("ping", "find", "get", "listen", "put",
// "refresh", "update"); a reply or error under the method of the query it
// answers, matched by (peer, transaction id) for queries seen in the last
// k_pending of them, else "reply"; value updates pushed to listeners are
// "listen_update"; values sent in parts (any value over 600 bytes) are
// "value_parts". Anything unparsable is "other". Thread-safe (a mutex: the
// socket's receive thread and OpenDHT's send path both call record()).
#pragma once

#include "juice/dht/node.hpp"

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>

namespace juice::dht {

class TrafficKinds {
public:
    static constexpr std::size_t k_pending = 8192;  // queries remembered for matching replies

    enum class Dir { in, out };
    // `peer` names the other end (e.g. "127.0.0.1:4222"); `bytes` is the
    // whole datagram. Returns the kind it was counted under.
    std::string record(Dir dir, std::span<const std::uint8_t> bytes, const std::string& peer);

    std::map<std::string, KindCount> counts() const;

private:
    std::string classify(Dir dir, std::span<const std::uint8_t> bytes, const std::string& peer);

    mutable std::mutex m_mtx;
    std::map<std::string, KindCount> m_counts;
    // (direction of the query, peer, tid) -> method; oldest first in m_order.
    std::unordered_map<std::string, std::string> m_pending;
    std::deque<std::string> m_order;
};

}  // namespace juice::dht
