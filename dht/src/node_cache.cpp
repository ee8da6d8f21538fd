#include "node_cache.hpp"

#include "juice/dht/presence.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <msgpack.hpp>

namespace juice::dht::detail {

namespace odht = ::dht;

namespace {

struct NodeCacheFile {
    unsigned v = 1;
    std::vector<odht::NodeExport> nodes;
    MSGPACK_DEFINE_MAP(v, nodes)
};

bool plausible_address(const odht::NodeExport& n) {
    if (n.ss.ss_family == AF_INET) return n.sslen == sizeof(sockaddr_in);
    if (n.ss.ss_family == AF_INET6) return n.sslen == sizeof(sockaddr_in6);
    return false;
}

}  // namespace

Result<std::vector<odht::NodeExport>> parse_node_cache(std::span<const std::uint8_t> bytes) {
    if (bytes.empty() || bytes.size() > k_max_cache_file)
        return make_error(errc::malformed, "the node cache is empty or too large");
    try {
        // Limits, so a forged length cannot make msgpack allocate gigabytes:
        // a file holds one map, one array of nodes, and a 2-entry map per node.
        const msgpack::unpack_limit limits(/*array*/ 4 * k_max_cached_nodes, /*map*/ 64, /*str*/ 256,
                                           /*bin*/ 256, /*ext*/ 256, /*depth*/ 8);
        auto oh = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size(), nullptr, nullptr,
                                  limits);
        auto file = oh.get().as<NodeCacheFile>();
        std::vector<odht::NodeExport> out;
        for (auto& n : file.nodes) {
            if (out.size() == k_max_cached_nodes) break;
            if (plausible_address(n)) out.push_back(n);
        }
        return out;
    } catch (const std::exception& e) {
        return make_error(errc::malformed, std::string("the node cache is damaged: ") + e.what());
    }
}

std::string encode_node_cache(std::vector<odht::NodeExport> nodes) {
    if (nodes.size() > k_max_cached_nodes) nodes.resize(k_max_cached_nodes);
    NodeCacheFile file;
    file.nodes = std::move(nodes);
    msgpack::sbuffer buf;
    msgpack::pack(buf, file);
    return std::string(buf.data(), buf.size());
}

}  // namespace juice::dht::detail
