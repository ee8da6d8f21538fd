// The DHT node cache file's codec ({v: 1, nodes: [NodeExport...]}, msgpack;
// see dht/README.md). DhtNode reads and writes the file; the bytes are
// handled here so tests and the fuzzer (tests/fuzz) can drive the parser.
// dht/ and tests only (OpenDHT types).
#pragma once

#include "juice/crypto/result.hpp"

#include <opendht/infohash.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace juice::dht::detail {

inline constexpr std::size_t k_max_cached_nodes = 512;
inline constexpr std::uintmax_t k_max_cache_file = 1 << 20;

// Parses a node cache file. Never throws: a damaged file is errc::malformed
// (with the reason). Input over k_max_cache_file is refused; nodes past
// k_max_cached_nodes are dropped, and so are entries whose address is not a
// complete IPv4 or IPv6 socket address (OpenDHT would be handed garbage).
Result<std::vector<::dht::NodeExport>> parse_node_cache(std::span<const std::uint8_t> bytes);

// The file's bytes for `nodes` (at most k_max_cached_nodes are kept).
std::string encode_node_cache(std::vector<::dht::NodeExport> nodes);

}  // namespace juice::dht::detail
