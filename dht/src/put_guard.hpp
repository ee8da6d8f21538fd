// PutGuard: stands between the UDP socket and OpenDHT 2.4.12's parser and
// drops the one kind of packet known to crash it.
//
// The bug (securedht.cpp, SecureDht::secureType's edit policy): when a put
// carries a value whose id equals the id of a *signed* value already stored
// under the same key, OpenDHT asks the old value's edit policy, which
// dereferences the new value's owner before checking there is one. A value
// without an owner (unsigned, or encrypted) therefore segfaults the storing
// node: one packet takes down a stock dhtnode (verified here).
//
// The guard keeps the (key, value id) pairs of signed values it has seen put
// to us (and the ones we sign ourselves), and drops a put that carries a
// value without an owner for such a pair. Values too large for one datagram
// arrive in parts ("p" packets after a put whose "values" are sizes): the
// guard reassembles them the way OpenDHT does and drops the part that would
// complete an offending value (OpenDHT then times the partial message out).
// It also drops a datagram whose msgpack headers claim more elements or bytes
// than the datagram holds (msgpack would try to allocate that much). Anything
// else passes untouched: the guard never rejects a packet merely for being
// unparsable (OpenDHT does that itself).
//
// Bounds: at most k_max_protected pairs (oldest forgotten first), at most
// k_max_partials puts in parts being followed at once, k_max_partials_per_sender
// of them from one address (a put beyond either is dropped: it could not be
// checked, and evicting another to make room would let that one's parts
// through unchecked), each at most k_max_partial_bytes. A put is forgotten
// once its last part arrived, or after k_partial_ttl.
//
// Every value over 600 bytes travels in parts (OpenDHT's
// MAX_PACKET_VALUE_SIZE), and that includes every signed presence record, so
// a busy storage node follows many puts at once; found by the multi-host
// test, where a cap of 64 that freed slots only after the TTL dropped real
// contact requests. Thread-safe: inspect() runs on the socket's receive thread,
// protect() on the caller's.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace juice::dht {

class PutGuard {
public:
    using Key = std::array<std::uint8_t, 20>;
    using Clock = std::chrono::steady_clock;
    static constexpr std::size_t k_max_protected = 1 << 17;
    static constexpr std::size_t k_max_partials = 4096;
    static constexpr std::size_t k_max_partials_per_sender = 32;
    static constexpr std::size_t k_max_partial_bytes = 1 << 20;
    static constexpr std::chrono::seconds k_partial_ttl{10};

    // Returns false if the datagram must be dropped.
    bool inspect(std::span<const std::uint8_t> datagram, const std::string& from, Clock::time_point now);
    // A signed value of ours at `key` with `id` (stored locally without a packet).
    void protect(const Key& key, std::uint64_t id);

    std::uint64_t dropped() const;            // crash packets (puts) dropped
    std::uint64_t dropped_oversized() const;  // datagrams whose msgpack claims more than they hold
    std::uint64_t dropped_untracked() const;  // puts in parts refused: no room to follow them
    std::size_t partials() const;             // puts in parts being followed now
    std::size_t protected_pairs() const;

private:
    struct Partial {
        Key key{};
        // By the value's place in the put's "values" array: announced size, bytes so far.
        std::map<std::uint32_t, std::pair<std::size_t, std::vector<std::uint8_t>>> parts;
        bool poisoned = false;
        Clock::time_point started;
    };

    // Applies the rule to one value (a msgpack::object, or its bytes); false = drop.
    bool check_value(const Key& key, const void* value);
    bool check_value_bytes(const Key& key, std::span<const std::uint8_t> value);
    bool check_put(const void* args_map, const std::string& from, Clock::time_point now,
                   std::optional<std::uint64_t> tid);
    bool check_part(const void* parts_map, const std::string& from, std::uint64_t tid);
    void protect_locked(const Key& key, std::uint64_t id);

    mutable std::mutex m_mtx;
    std::set<std::pair<Key, std::uint64_t>> m_protected;
    std::deque<std::pair<Key, std::uint64_t>> m_order;
    std::map<std::pair<std::string, std::uint64_t>, Partial> m_partials;
    std::map<std::string, std::size_t> m_partials_by_sender;
    void erase_partial(std::map<std::pair<std::string, std::uint64_t>, Partial>::iterator it);
    std::uint64_t m_dropped = 0;
    std::uint64_t m_dropped_oversized = 0;
    std::uint64_t m_dropped_untracked = 0;
};

}  // namespace juice::dht
