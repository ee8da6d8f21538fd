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
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace juice::dht {

// Presence values use this OpenDHT value type id; juice nodes register it
// with k_presence_lifetime. Stock nodes keep it their default 10 minutes.
inline constexpr std::uint16_t k_presence_type_id = 0x4a50;  // "JP"
inline constexpr std::chrono::minutes k_presence_lifetime{5};

// Inbox values: mail for a user who may be offline, stored at
// inbox_key_name(recipient). The payload is signed by the sender, bound to
// the recipient and encrypted to the recipient's key (OpenDHT's
// Value::encrypt), and the cypher text travels as the data of an *unsigned*
// value of this type: storage nodes learn neither sender nor content, and
// juice nodes keep it k_inbox_lifetime (stock nodes 10 minutes) after the
// last put. (putEncrypted values would always be type 0, 10 minutes.)
inline constexpr std::uint16_t k_inbox_type_id = 0x4a49;  // "JI"
inline constexpr std::chrono::hours k_inbox_lifetime{72};
inline constexpr std::size_t k_max_inbox_payload = 60 * 1024;  // sealed, it stays under OpenDHT's 64 KiB

// Signals: sealed exactly like inbox values and put at the same key, but of
// their own type with a short life: notes that are worth nothing minutes
// later ("I just came online", ICE offers). The sealed inner value carries
// the type too, so an inbox value can never be replayed as a signal or the
// reverse. Signals are opened before queued inbox values.
inline constexpr std::uint16_t k_signal_type_id = 0x4a53;  // "JS"
inline constexpr std::chrono::minutes k_signal_lifetime{2};

enum class SealKind : std::uint8_t { inbox, signal };

// One inbox value as put on the DHT. Re-putting the same bytes refreshes its
// lifetime on the storage nodes without new crypto work.
struct SealedValue {
    std::uint64_t id = 0;  // OpenDHT value id
    Bytes data;            // the cypher text
    SealKind kind = SealKind::inbox;
};

// Datagrams and UDP payload bytes of one kind of message, both ways.
struct KindCount {
    std::uint64_t packets_in = 0, bytes_in = 0, packets_out = 0, bytes_out = 0;
    bool operator==(const KindCount&) const = default;
};

struct DhtInfo {
    std::string state;      // "disconnected" | "connecting" | "connected"
    std::size_t nodes = 0;  // good nodes in the routing tables (v4 + v6)
    std::uint64_t network = 0;
    std::uint16_t port = 0;           // bound UDP port
    std::string node_id;              // the DHT node id, 40 hex digits ("" when not running)
    std::string public_addr;          // our IP as other nodes see it (no port), "" if unknown
    std::uint64_t puts_refused = 0;   // packets dropped by the put guard (would have crashed OpenDHT)
    std::size_t inbox_backlog = 0;    // inbox values waiting to be opened
    std::uint64_t inbox_dropped = 0;  // inbox values not queued (queue full); a later fetch brings them back
    // Traffic on the DHT's UDP socket since start (every datagram, before any
    // filter; UDP payload bytes).
    std::uint64_t packets_in = 0, bytes_in = 0;
    std::uint64_t packets_out = 0, bytes_out = 0;
    std::uint64_t packets_rate_limited = 0;  // dropped by Options::max_packets_per_ip
    // Routing and storage, as OpenDHT counts them (v4 + v6).
    std::size_t dubious_nodes = 0;
    std::size_t searches = 0;       // searches OpenDHT keeps (gets, puts, listens)
    std::size_t stored_values = 0;  // values this node stores for the network
    std::size_t stored_bytes = 0;
    std::size_t network_size_estimate = 0;  // from the routing table's depth (rough)
    // With Options::classify_traffic: the same traffic by OpenDHT message
    // kind ("ping", "find", "get", "listen", "put", "refresh", "update",
    // each with its replies; "listen_update", "value_parts", "reply",
    // "other"). Empty otherwise.
    std::map<std::string, KindCount> traffic_by_kind;
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
        std::string bind4;                   // IPv4 address to bind ("" = any); IPv6 binds any
        // The DHT node id (20 bytes); empty = a random one. A bootstrap node
        // keeps its id across restarts so that the routing entries other
        // nodes hold for it stay right.
        Bytes node_id;
        // OpenDHT's public_stable: listens are refreshed every 4 min 50 s
        // instead of every 20 s (storing nodes keep a listen 10 minutes,
        // stock ones included), and a failed search does not count as a
        // connectivity change. The main lever on idle traffic per buddy.
        bool stable_listens = true;
        // Drop datagrams from an IP address above this rate (a token bucket
        // per address, burst = 2 s worth), before OpenDHT parses them.
        // 0 = no limit. Counted in DhtInfo::packets_rate_limited.
        std::uint32_t max_packets_per_ip = 0;
        // OpenDHT's request rate limits (requests/s, global and per IP);
        // 0 = OpenDHT's defaults (8192 and 1024), -1 = none.
        std::int64_t max_requests_per_s = 0;
        std::int64_t max_peer_requests_per_s = 0;
        // Count traffic by message kind (DhtInfo::traffic_by_kind): parses
        // every datagram once more, so off by default (the simulation and
        // operators investigating traffic turn it on).
        bool classify_traffic = false;
        Post post;  // required: runs callbacks on the caller's loop
        // Called on an OpenDHT thread for every received datagram before
        // OpenDHT parses it; return false to drop it. Empty = accept all.
        std::function<bool(std::span<const std::uint8_t>, const std::string& from)> packet_filter;
        // Called on the loop whenever a user's public key (DER) is learned for
        // the first time: from a signed presence record, an inbox value or a
        // certificate lookup. The daemon stores it to seal mail later.
        std::function<void(const UserId&, const Bytes& der)> on_key;
    };

    explicit DhtNode(Options options);
    ~DhtNode();  // stops the node if running (blocking, bounded)
    DhtNode(const DhtNode&) = delete;
    DhtNode& operator=(const DhtNode&) = delete;

    // Binds and starts. With an identity, values can be signed and owners
    // verified; without one (bootstrap mode) the node only routes and stores.
    Result<void> start(const crypto::Identity* identity);

    // Publishes (or replaces) our signed presence record, and keeps it alive
    // until the next publish or stop. Each record gets a fresh value id (an
    // edit in place would not reach watchers listening through other nodes);
    // the one it replaces is no longer re-announced and expires. `done(ok)`
    // runs on the loop once the put completed (ok = at least one node stored
    // it).
    void publish_presence(const PresenceRecord& record, std::function<void(bool ok)> done = {});

    // Watches a user's presence key. `on_record` runs on the loop for every
    // valid record (signed by `user`, decodable, not older than the newest
    // seen) — including the current one at the time of the call — and
    // `on_expired` when the record we last delivered expired from the DHT.
    // Returns a token for unwatch().
    std::uint64_t watch_presence(const UserId& user, std::function<void(const PresenceRecord&)> on_record,
                                 std::function<void()> on_expired = {});
    void unwatch(std::uint64_t token);
    // A dormant watch keeps its state (newest record seen) but no listen:
    // a listen costs a refresh to 4 nodes every ~5 minutes and a resync of
    // the search's 14 nodes every 10 (about 15 B/s per watched key, most of
    // the idle traffic of a user with many offline buddies). Waking it
    // listens again (with a get, so the current record arrives at once).
    void set_dormant(std::uint64_t token, bool dormant);
    bool dormant(std::uint64_t token) const;
    // One get of the watched key, through the same checks as the listen
    // (for dormant watches: a rare poll instead of a listen).
    void poll(std::uint64_t token);

    // ---- inbox ----------------------------------------------------------

    // Keys used to seal inbox values. remember_key takes a DER public key the
    // caller stored earlier; it is ignored unless its id is `user`.
    bool remember_key(const UserId& user, std::span<const std::uint8_t> der);
    bool knows_key(const UserId& user) const;
    // Finds `user`'s public key: the cache, else the certificate OpenDHT
    // announces at the user's id. `done(found)` runs on the loop.
    void find_key(const UserId& user, std::function<void(bool found)> done);

    // Signs `payload` (<= k_max_inbox_payload), binds it to `to` and
    // encrypts it to `to`'s key (errc::no_key if unknown: find_key first).
    // CPU-bound (one RSA signature): call it for bundles, not per message.
    // `kind` signal: a short-lived signal instead of an inbox value.
    Result<SealedValue> seal_inbox(const UserId& to, std::span<const std::uint8_t> payload,
                                   SealKind kind = SealKind::inbox);
    // Stores (or refreshes) a sealed value in `to`'s inbox. `done(ok)` runs
    // on the loop (ok = at least one node stored it).
    void put_inbox(const UserId& to, const SealedValue& value, std::function<void(bool ok)> done = {});
    // Listens to our own inbox (current values and new ones, inbox values
    // and signals). `on_item` runs on the loop once per distinct value that
    // decrypts, is signed by its sender and is addressed to us; everything
    // else is dropped.
    using InboxItem = std::function<void(const UserId& from, Bytes payload, SealKind kind)>;
    void watch_inbox(InboxItem on_item);
    // Gets our inbox again (values missed by the listen, or dropped while
    // the queue was full, come back this way). Call every few minutes.
    void refetch_inbox();
    // Call about once a second from the loop: resumes opening inbox values
    // held back by the rate limit (at most 200 a second).
    void tick();

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
