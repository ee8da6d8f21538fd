// The presence record: what a user publishes, signed, at
//   InfoHash::get("juice:presence:" + <40-hex user id>)
//
// Wire format: a msgpack map (keys below), version field "v" = 1. Unknown keys
// are ignored (newer writers stay readable); every known key is type- and
// size-checked, and decode never throws.
//   v      uint     record format version (1)
//   n      str      display name, <= 64 bytes
//   s      str      "online" | "away" | "busy" | "offline"
//   m      str      note, <= 256 bytes
//   c      [str]    capabilities ("text", "voice", ...), <= 16 x <= 16 bytes
//   d      str      device id, <= 64 bytes
//   a      [[str ip, uint port, str kind]]  link candidates, <= 16
//                   kind: "host" (local interface) | "public" (as the DHT sees us)
//   t      int      timestamp, Unix ms, of the publisher's clock
//   p      uint     link protocol version
#pragma once

#include "juice/crypto/ids.hpp"
#include "juice/crypto/result.hpp"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace juice::dht {

enum class errc {
    malformed = 1,  // a record that does not decode
    bad_signature,  // unsigned, or signed by someone else than the key owner
    stale,          // older than a record already seen (replay)
    not_running,    // the DHT node is not started
    start_failed,   // could not bind or start the DHT node
    no_key,         // an inbox recipient's public key is unknown
    too_large,      // an inbox payload over k_max_inbox_payload
    seal_failed,    // encryption or signing of an inbox value failed
};
const std::error_category& error_category() noexcept;
inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

struct Candidate {
    std::string ip;  // textual IPv4 or IPv6 address
    std::uint16_t port = 0;
    std::string kind;  // "host" | "public"
    bool operator==(const Candidate&) const = default;
};

struct PresenceRecord {
    std::uint32_t version = 1;
    std::string name;
    std::string status = "online";
    std::string note;
    std::vector<std::string> caps;
    std::string device;
    std::vector<Candidate> addrs;
    std::int64_t ts = 0;
    std::uint32_t protocol = 1;
    bool operator==(const PresenceRecord&) const = default;
};

Bytes encode_presence(const PresenceRecord& record);
Result<PresenceRecord> decode_presence(std::span<const std::uint8_t> data);

// "juice:presence:<hex id>" (the string hashed into the DHT key).
std::string presence_key_name(const UserId& id);
// The key of a user's inbox: "juice:inbox:<40 hex>".
std::string inbox_key_name(const UserId& id);

}  // namespace juice::dht

template <>
struct std::is_error_code_enum<juice::dht::errc> : std::true_type {};
