// DhtNode: juice's one handle on OpenDHT. Only the dht/ module includes
// OpenDHT headers; everything above talks to this class.
//
// Threading: OpenDHT runs its own threads. Every callback given to DhtNode is
// delivered through Options::post (the daemon passes a function that posts to
// its event loop), never on an OpenDHT thread, so callers need no locks and
// can call DhtNode again from inside a callback. DhtNode's own methods may be
// called from any one thread (the daemon's loop).
//
// OpenDHT 2.4.12 rules applied here (see shared DESIGN.md): binds IPv4 and
// IPv6; values are filtered by owner and signature before they reach a
// callback; the UDP socket is created by DhtNode and passed to OpenDHT through
// DhtRunner::Context::sock, with Options::packet_filter in front of it.
#pragma once

#include "juice/crypto/identity.hpp"
#include "juice/dht/presence.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace juice::dht {

// Presence values use this OpenDHT value type id; juice nodes register it
// with k_presence_lifetime. Stock nodes keep it their default 10 minutes.
inline constexpr std::uint16_t k_presence_type_id = 0x4a50;  // "JP"
inline constexpr std::chrono::minutes k_presence_lifetime{5};

struct DhtInfo {
    std::string state;      // "disconnected" | "connecting" | "connected"
    std::size_t nodes = 0;  // good nodes in the routing tables (v4 + v6)
    std::uint64_t network = 0;
    std::uint16_t port = 0;   // bound UDP port
    std::string public_addr;  // our IP as other nodes see it (no port), "" if unknown
};

class DhtNode {
public:
    using Post = std::function<void(std::function<void()>)>;

    struct Options {
        std::uint16_t port = 0;              // UDP; 0 = any
        std::uint64_t network = 0;           // OpenDHT network id
        std::vector<std::string> bootstrap;  // "host:port" (IPv6 as "[::1]:port")
        bool lan_discovery = true;           // OpenDHT multicast peer discovery
        std::filesystem::path node_cache;    // routing table persisted here ("" = none)
        Post post;                           // required: runs callbacks on the caller's loop
        // Called on an OpenDHT thread for every received datagram before
        // OpenDHT parses it; return false to drop it. Empty = accept all.
        std::function<bool(std::span<const std::uint8_t>, const std::string& from)> packet_filter;
    };

    explicit DhtNode(Options options);
    ~DhtNode();  // stops the node if running (blocking, bounded)
    DhtNode(const DhtNode&) = delete;
    DhtNode& operator=(const DhtNode&) = delete;

    // Binds and starts. With an identity, values can be signed and owners
    // verified; without one (bootstrap mode) the node only routes and stores.
    Result<void> start(const crypto::Identity* identity);

    // Publishes (or replaces) our signed presence record, and keeps it alive
    // until the next publish or stop. `done(ok)` runs on the loop once the
    // put completed (ok = at least one node stored it).
    void publish_presence(const PresenceRecord& record, std::function<void(bool ok)> done = {});

    // Watches a user's presence key. `on_record` runs on the loop for every
    // valid record (signed by `user`, decodable, not older than the newest
    // seen) — including the current one at the time of the call — and
    // `on_expired` when the record we last delivered expired from the DHT.
    // Returns a token for unwatch().
    std::uint64_t watch_presence(const UserId& user, std::function<void(const PresenceRecord&)> on_record,
                                 std::function<void()> on_expired = {});
    void unwatch(std::uint64_t token);

    // Publishes `final_record` (typically status "offline") without keeping
    // it alive, waits up to `timeout` for it to be stored, saves the node
    // cache, and shuts the node down. Blocking; call from the loop thread at
    // shutdown. Safe to call twice or without start().
    void stop(std::optional<PresenceRecord> final_record = std::nullopt,
              std::chrono::milliseconds timeout = std::chrono::milliseconds(1500));

    DhtInfo info() const;
    bool running() const;

    struct Impl;

private:
    std::unique_ptr<Impl> m_impl;
};

}  // namespace juice::dht
