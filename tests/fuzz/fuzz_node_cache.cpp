// The DHT node cache file: parse_node_cache, and what parses must encode and
// parse to the same nodes.
#include "fuzz.hpp"
#include "node_cache.hpp"

#include <cstring>

namespace jd = juice::dht::detail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto nodes = jd::parse_node_cache(juice::fuzz::bytes(data, size));
    if (!nodes) return 0;
    JUICE_FUZZ_CHECK(nodes->size() <= jd::k_max_cached_nodes);
    auto wire = jd::encode_node_cache(*nodes);
    auto again =
        jd::parse_node_cache(std::span(reinterpret_cast<const std::uint8_t*>(wire.data()), wire.size()));
    JUICE_FUZZ_CHECK(again.ok());
    JUICE_FUZZ_CHECK(again->size() == nodes->size());
    for (std::size_t i = 0; i < nodes->size(); ++i) {
        const auto& a = (*nodes)[i];
        const auto& b = (*again)[i];
        JUICE_FUZZ_CHECK(a.id == b.id && a.sslen == b.sslen && std::memcmp(&a.ss, &b.ss, a.sslen) == 0);
    }
    return 0;
}
