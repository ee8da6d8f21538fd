// Presence record codec (msgpack) and the dht module's error category.
//
// Decoding is hostile-input safe: the raw bytes come from any DHT node. The
// msgpack parser runs with container/string limits (so a 5-byte header cannot
// make it allocate gigabytes), every msgpack exception is caught, and every
// known field is type-, size- and range-checked. Required keys: "v", "s", "t";
// the other known keys default to empty when absent.
#include "juice/dht/presence.hpp"

#include <arpa/inet.h>
#include <msgpack.hpp>

#include <cstring>
#include <limits>
#include <optional>
#include <string_view>

namespace juice::dht {

namespace {

class DhtErrorCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "juice.dht"; }
    std::string message(int code) const override {
        switch (static_cast<errc>(code)) {
            case errc::malformed:
                return "a presence record from the DHT is malformed (ignored; the peer may run an "
                       "incompatible version)";
            case errc::bad_signature:
                return "a presence record is unsigned or signed by someone other than its owner (ignored)";
            case errc::stale:
                return "a presence record is older than one already seen (ignored as a replay)";
            case errc::not_running:
                return "the DHT node is not running; start the daemon's network first";
            case errc::start_failed:
                return "could not start the DHT node: check that the UDP port is free and the network is up";
            case errc::no_key:
                return "the recipient's public key is not known yet (it is looked up on the DHT)";
            case errc::too_large:
                return "an inbox payload is larger than an inbox value can carry";
            case errc::seal_failed:
                return "could not encrypt or sign an inbox value";
        }
        return "unknown dht error";
    }
};

// Caps from the wire-format comment in presence.hpp.
constexpr std::size_t k_max_name = 64;
constexpr std::size_t k_max_note = 256;
constexpr std::size_t k_max_caps = 16;
constexpr std::size_t k_max_cap_len = 16;
constexpr std::size_t k_max_device = 64;
constexpr std::size_t k_max_addrs = 16;
constexpr std::size_t k_max_kind = 16;
constexpr std::size_t k_max_ip = 64;  // longest textual IPv6 is 45; leave room, inet_pton decides
// A DHT value is at most 64 KiB, so nothing larger can be a record.
constexpr std::size_t k_max_record = 64 * 1024;

Error malformed(std::string what) {
    return make_error(errc::malformed, "malformed presence record: " + what);
}

bool valid_status(std::string_view s) {
    return s == "online" || s == "away" || s == "busy" || s == "offline";
}

bool valid_ip(const std::string& ip) {
    if (ip.empty() || ip.size() > k_max_ip) return false;
    unsigned char buf[sizeof(in6_addr)];
    return inet_pton(AF_INET, ip.c_str(), buf) == 1 || inet_pton(AF_INET6, ip.c_str(), buf) == 1;
}

// Reads a string of at most `max` bytes; nullopt on a type or size mismatch.
std::optional<std::string> read_str(const msgpack::object& o, std::size_t max) {
    if (o.type != msgpack::type::STR || o.via.str.size > max) return std::nullopt;
    return std::string(o.via.str.ptr, o.via.str.size);
}

std::optional<std::uint64_t> read_uint(const msgpack::object& o, std::uint64_t max) {
    if (o.type != msgpack::type::POSITIVE_INTEGER || o.via.u64 > max) return std::nullopt;
    return o.via.u64;
}

std::optional<std::int64_t> read_int(const msgpack::object& o) {
    if (o.type == msgpack::type::NEGATIVE_INTEGER) return o.via.i64;
    if (o.type == msgpack::type::POSITIVE_INTEGER &&
        o.via.u64 <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return static_cast<std::int64_t>(o.via.u64);
    return std::nullopt;
}

bool key_is(const msgpack::object& k, std::string_view name) {
    return k.type == msgpack::type::STR && k.via.str.size == name.size() &&
           std::memcmp(k.via.str.ptr, name.data(), name.size()) == 0;
}

Result<PresenceRecord> decode_object(const msgpack::object& root) {
    if (root.type != msgpack::type::MAP) return malformed("not a map");
    PresenceRecord rec;
    bool have_v = false, have_s = false, have_t = false;
    for (std::uint32_t i = 0; i < root.via.map.size; ++i) {
        const auto& k = root.via.map.ptr[i].key;
        const auto& val = root.via.map.ptr[i].val;
        if (key_is(k, "v")) {
            auto v = read_uint(val, std::numeric_limits<std::uint32_t>::max());
            if (!v || *v == 0) return malformed("bad version");
            rec.version = static_cast<std::uint32_t>(*v);
            have_v = true;
        } else if (key_is(k, "n")) {
            auto s = read_str(val, k_max_name);
            if (!s) return malformed("bad name");
            rec.name = std::move(*s);
        } else if (key_is(k, "s")) {
            auto s = read_str(val, 16);
            if (!s || !valid_status(*s)) return malformed("bad status");
            rec.status = std::move(*s);
            have_s = true;
        } else if (key_is(k, "m")) {
            auto s = read_str(val, k_max_note);
            if (!s) return malformed("bad note");
            rec.note = std::move(*s);
        } else if (key_is(k, "c")) {
            if (val.type != msgpack::type::ARRAY || val.via.array.size > k_max_caps)
                return malformed("bad capabilities");
            rec.caps.clear();
            for (std::uint32_t j = 0; j < val.via.array.size; ++j) {
                auto s = read_str(val.via.array.ptr[j], k_max_cap_len);
                if (!s) return malformed("bad capability");
                rec.caps.push_back(std::move(*s));
            }
        } else if (key_is(k, "d")) {
            auto s = read_str(val, k_max_device);
            if (!s) return malformed("bad device id");
            rec.device = std::move(*s);
        } else if (key_is(k, "a")) {
            if (val.type != msgpack::type::ARRAY || val.via.array.size > k_max_addrs)
                return malformed("bad address list");
            rec.addrs.clear();
            for (std::uint32_t j = 0; j < val.via.array.size; ++j) {
                const auto& e = val.via.array.ptr[j];
                // [ip, port, kind]; extra trailing elements are a newer writer's and are ignored.
                if (e.type != msgpack::type::ARRAY || e.via.array.size < 3) return malformed("bad address");
                auto ip = read_str(e.via.array.ptr[0], k_max_ip);
                auto port = read_uint(e.via.array.ptr[1], 65535);
                auto kind = read_str(e.via.array.ptr[2], k_max_kind);
                if (!ip || !valid_ip(*ip)) return malformed("bad address ip");
                if (!port || *port == 0) return malformed("bad address port");
                if (!kind) return malformed("bad address kind");
                // A kind this version does not know (a newer writer's) is skipped, not fatal.
                if (*kind != "host" && *kind != "public") continue;
                rec.addrs.push_back(
                    Candidate{std::move(*ip), static_cast<std::uint16_t>(*port), std::move(*kind)});
            }
        } else if (key_is(k, "t")) {
            auto t = read_int(val);
            if (!t) return malformed("bad timestamp");
            rec.ts = *t;
            have_t = true;
        } else if (key_is(k, "p")) {
            auto p = read_uint(val, std::numeric_limits<std::uint32_t>::max());
            if (!p) return malformed("bad protocol version");
            rec.protocol = static_cast<std::uint32_t>(*p);
        }
        // Anything else: a newer writer's field, ignored.
    }
    if (!have_v) return malformed("missing version");
    if (!have_s) return malformed("missing status");
    if (!have_t) return malformed("missing timestamp");
    return rec;
}

}  // namespace

const std::error_category& error_category() noexcept {
    static const DhtErrorCategory category;
    return category;
}

Bytes encode_presence(const PresenceRecord& r) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_map(9);
    pk.pack("v");
    pk.pack(r.version);
    pk.pack("n");
    pk.pack(r.name);
    pk.pack("s");
    pk.pack(r.status);
    pk.pack("m");
    pk.pack(r.note);
    pk.pack("c");
    pk.pack(r.caps);
    pk.pack("d");
    pk.pack(r.device);
    pk.pack("a");
    pk.pack_array(static_cast<std::uint32_t>(r.addrs.size()));
    for (const auto& a : r.addrs) {
        pk.pack_array(3);
        pk.pack(a.ip);
        pk.pack(a.port);
        pk.pack(a.kind);
    }
    pk.pack("t");
    pk.pack(r.ts);
    pk.pack("p");
    pk.pack(r.protocol);
    const auto* p = reinterpret_cast<const std::uint8_t*>(buf.data());
    return Bytes(p, p + buf.size());
}

Result<PresenceRecord> decode_presence(std::span<const std::uint8_t> data) {
    if (data.empty()) return malformed("empty");
    if (data.size() > k_max_record) return malformed("too large");
    try {
        // Limits bound what the parser allocates before we look at anything:
        // arrays/maps of at most 256 entries, strings/bins of at most 4 KiB,
        // nesting depth 8. Known fields are capped far lower below.
        const msgpack::unpack_limit limit(256, 256, 4096, 4096, 4096, 8);
        std::size_t off = 0;
        auto oh = msgpack::unpack(reinterpret_cast<const char*>(data.data()), data.size(), off, nullptr,
                                  nullptr, limit);
        if (off != data.size()) return malformed("trailing bytes");
        return decode_object(oh.get());
    } catch (const std::exception& e) {
        // msgpack::unpack_error and friends (truncated input, limits), bad_alloc.
        return malformed(e.what());
    }
}

std::string presence_key_name(const UserId& id) {
    return "juice:presence:" + id.hex();
}

std::string inbox_key_name(const UserId& id) {
    return "juice:inbox:" + id.hex();
}

}  // namespace juice::dht
