#include "juice/node/inbox.hpp"

#include <msgpack.hpp>

#include <algorithm>
#include <limits>

namespace juice::node {

namespace {

Error malformed(const std::string& what) {
    return make_error(frame_errc::malformed, "malformed inbox chunk: " + what);
}

bool key_is(const msgpack::object& k, std::string_view name) {
    return k.type == msgpack::type::STR && std::string_view(k.via.str.ptr, k.via.str.size) == name;
}

}  // namespace

Bytes encode_inbox_chunk(const InboxChunk& c) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_map(5);
    pk.pack("v");
    pk.pack_uint32(1);
    pk.pack("b");
    pk.pack_uint64(c.bundle);
    pk.pack("i");
    pk.pack_uint32(c.index);
    pk.pack("n");
    pk.pack_uint32(c.count);
    pk.pack("d");
    pk.pack_bin(static_cast<std::uint32_t>(c.data.size()));
    pk.pack_bin_body(reinterpret_cast<const char*>(c.data.data()), static_cast<std::uint32_t>(c.data.size()));
    return Bytes(buf.data(), buf.data() + buf.size());
}

Result<InboxChunk> decode_inbox_chunk(std::span<const std::uint8_t> bytes) {
    if (bytes.empty() || bytes.size() > k_max_chunk_data + 256) return malformed("empty or too large");
    try {
        std::size_t off = 0;
        // A chunk is a flat map: a few entries, no nesting worth allocating for.
        msgpack::unpack_limit limit(16, 16, 64, k_max_chunk_data + 256, 16, 3);
        auto handle = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size(), off, nullptr,
                                      nullptr, limit);
        if (off != bytes.size()) return malformed("extra bytes after the map");
        const auto& root = handle.get();
        if (root.type != msgpack::type::MAP) return malformed("not a map");
        InboxChunk c;
        bool have_v = false, have_b = false, have_i = false, have_n = false, have_d = false;
        for (std::uint32_t i = 0; i < root.via.map.size; ++i) {
            const auto& kv = root.via.map.ptr[i];
            const auto& v = kv.val;
            auto uint = [&](std::uint64_t max, std::uint64_t& out) {
                if (v.type != msgpack::type::POSITIVE_INTEGER || v.via.u64 > max) return false;
                out = v.via.u64;
                return true;
            };
            std::uint64_t n = 0;
            if (key_is(kv.key, "v")) {
                if (have_v || !uint(std::numeric_limits<std::uint32_t>::max(), n) || n != 1)
                    return malformed("'v' must be 1");
                have_v = true;
            } else if (key_is(kv.key, "b")) {
                if (have_b || !uint(std::numeric_limits<std::uint64_t>::max(), n))
                    return malformed("'b' must be an unsigned integer");
                c.bundle = n;
                have_b = true;
            } else if (key_is(kv.key, "i")) {
                if (have_i || !uint(k_max_bundle_chunks - 1, n)) return malformed("'i' is out of range");
                c.index = static_cast<std::uint32_t>(n);
                have_i = true;
            } else if (key_is(kv.key, "n")) {
                if (have_n || !uint(k_max_bundle_chunks, n) || n == 0)
                    return malformed("'n' is out of range");
                c.count = static_cast<std::uint32_t>(n);
                have_n = true;
            } else if (key_is(kv.key, "d")) {
                if (have_d || v.type != msgpack::type::BIN || v.via.bin.size > k_max_chunk_data)
                    return malformed("'d' must be binary of at most " + std::to_string(k_max_chunk_data) +
                                     " bytes");
                c.data.assign(v.via.bin.ptr, v.via.bin.ptr + v.via.bin.size);
                have_d = true;
            }
        }
        if (!have_v || !have_b || !have_i || !have_n || !have_d)
            return malformed("a required key is missing");
        if (c.index >= c.count) return malformed("'i' is not below 'n'");
        return c;
    } catch (const std::exception& e) {
        return malformed(std::string("not valid msgpack (") + e.what() + ")");
    }
}

std::vector<InboxChunk> make_bundle(std::uint64_t bundle, const std::vector<Frame>& frames) {
    Bytes all;
    for (const auto& f : frames) {
        auto enc = encode_frame(f);
        if (enc.empty()) return {};
        all.insert(all.end(), enc.begin(), enc.end());
    }
    if (all.empty()) return {};
    std::size_t count = (all.size() + k_max_chunk_data - 1) / k_max_chunk_data;
    if (count > k_max_bundle_chunks) return {};
    std::vector<InboxChunk> out;
    for (std::size_t i = 0; i < count; ++i) {
        auto begin = all.begin() + static_cast<std::ptrdiff_t>(i * k_max_chunk_data);
        auto end =
            all.begin() + static_cast<std::ptrdiff_t>(std::min(all.size(), (i + 1) * k_max_chunk_data));
        out.push_back(
            {bundle, static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(count), Bytes(begin, end)});
    }
    return out;
}

Result<std::vector<Frame>> decode_bundle(std::span<const std::uint8_t> bytes) {
    FrameDecoder dec;
    dec.feed(bytes);
    std::vector<Frame> frames;
    while (auto next = dec.next()) {
        if (!*next) {
            if (frames.empty()) return next->error();
            break;
        }
        frames.push_back(std::move(**next));
    }
    if (frames.empty()) return malformed("the bundle holds no complete frame");
    return frames;
}

std::optional<Bytes> BundleAssembler::add(const UserId& from, InboxChunk chunk, Clock::time_point now) {
    if (chunk.count == 0 || chunk.count > k_max_bundle_chunks || chunk.index >= chunk.count)
        return std::nullopt;
    if (chunk.count == 1) return std::move(chunk.data);
    for (auto it = m_partial.begin(); it != m_partial.end();)
        it = now - it->second.first > k_partial_ttl ? m_partial.erase(it) : std::next(it);
    auto key = std::make_pair(from, chunk.bundle);
    auto it = m_partial.find(key);
    if (it == m_partial.end()) {
        if (m_partial.size() >= k_max_partial) {
            auto oldest = std::min_element(
                m_partial.begin(), m_partial.end(),
                [](const auto& a, const auto& b) { return a.second.first < b.second.first; });
            m_partial.erase(oldest);
        }
        Partial p;
        p.chunks.resize(chunk.count);
        p.first = now;
        it = m_partial.emplace(key, std::move(p)).first;
    }
    auto& p = it->second;
    if (p.chunks.size() != chunk.count || p.chunks[chunk.index])
        return std::nullopt;  // inconsistent or repeat
    p.chunks[chunk.index] = std::move(chunk.data);
    if (++p.have < p.chunks.size()) return std::nullopt;
    Bytes all;
    for (auto& c : p.chunks) all.insert(all.end(), c->begin(), c->end());
    m_partial.erase(it);
    return all;
}

}  // namespace juice::node
