// Inbox bundles: link frames that travel through a contact's DHT inbox
// instead of a link (contact requests and answers, messages, acks and read
// receipts for a peer that is offline).
//
// A bundle is a run of encoded frames, the same bytes a link carries. It is
// cut into chunks that fit one inbox value (dht::k_max_inbox_payload); each
// chunk is sealed and put as its own DHT value. The receiver reassembles a
// bundle once all its chunks arrived, then decodes its frames.
//
// Chunk wire format: msgpack map {"v": 1, "b": uint64 bundle id, "i": uint32
// index, "n": uint32 count (1..k_max_bundle_chunks), "d": bin chunk bytes}.
// Unknown keys are ignored. Sans-I/O, so tests and fuzzers drive it directly.
#pragma once

#include "juice/crypto/ids.hpp"
#include "juice/crypto/result.hpp"
#include "juice/node/frame.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

namespace juice::node {

inline constexpr std::size_t k_max_bundle_chunks = 8;
inline constexpr std::size_t k_max_chunk_data = 59 * 1024;  // + header stays under dht::k_max_inbox_payload

struct InboxChunk {
    std::uint64_t bundle = 0;
    std::uint32_t index = 0;
    std::uint32_t count = 1;
    Bytes data;
    bool operator==(const InboxChunk&) const = default;
};

Bytes encode_inbox_chunk(const InboxChunk& chunk);
Result<InboxChunk> decode_inbox_chunk(std::span<const std::uint8_t> bytes);

// Encodes `frames` as one bundle's chunks (empty if they do not fit
// k_max_bundle_chunks chunks, or a frame cannot be encoded).
std::vector<InboxChunk> make_bundle(std::uint64_t bundle, const std::vector<Frame>& frames);

// Decodes a whole bundle's bytes into frames. A malformed frame ends the
// bundle (frames before it are kept); an error only if nothing decoded.
Result<std::vector<Frame>> decode_bundle(std::span<const std::uint8_t> bytes);

// Collects chunks until a bundle is complete. Bounded: at most
// k_max_partial bundles wait at once (the oldest is dropped), and a partial
// bundle is forgotten after k_partial_ttl.
class BundleAssembler {
public:
    static constexpr std::size_t k_max_partial = 64;
    static constexpr std::chrono::minutes k_partial_ttl{30};
    using Clock = std::chrono::steady_clock;

    // Returns the bundle's bytes when `chunk` completed it.
    std::optional<Bytes> add(const UserId& from, InboxChunk chunk, Clock::time_point now);
    std::size_t partial() const { return m_partial.size(); }

private:
    struct Partial {
        std::vector<std::optional<Bytes>> chunks;
        std::size_t have = 0;
        Clock::time_point first;
    };
    std::map<std::pair<UserId, std::uint64_t>, Partial> m_partial;
};

}  // namespace juice::node
