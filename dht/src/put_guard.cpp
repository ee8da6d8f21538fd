#include "put_guard.hpp"

#include "msgpack_text.hpp"

#include <msgpack.hpp>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string_view>

namespace juice::dht {

namespace {

using Obj = msgpack::object;

// The guard must read a packet exactly as OpenDHT 2.4.12's ParsedMessage
// does, or a packet crafted to be read differently would slip past it:
// - top-level keys are read with as<string_view> (str or bin), the last
//   occurrence wins;
// - keys of the request map ("a") must be str, the last occurrence wins;
// - keys inside a value are found with findMapValue: str only, first wins;
// - strings compared as values ("y", "q") may be str or bin.
constexpr auto text = msgpack_text;

const Obj* last_key(const Obj& map, std::string_view key, bool bin_keys) {
    if (map.type != msgpack::type::MAP) return nullptr;
    const Obj* found = nullptr;
    for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
        const auto& k = map.via.map.ptr[i].key;
        if (k.type != msgpack::type::STR && !(bin_keys && k.type == msgpack::type::BIN)) continue;
        if (text(k) == key) found = &map.via.map.ptr[i].val;
    }
    return found;
}

const Obj* first_key(const Obj& map, std::string_view key) {
    if (map.type != msgpack::type::MAP) return nullptr;
    for (std::uint32_t i = 0; i < map.via.map.size; ++i) {
        const auto& k = map.via.map.ptr[i].key;
        if (k.type == msgpack::type::STR && text(k) == key) return &map.via.map.ptr[i].val;
    }
    return nullptr;
}

bool as_u64(const Obj* o, std::uint64_t& out) {
    if (!o || o->type != msgpack::type::POSITIVE_INTEGER) return false;
    out = o->via.u64;
    return true;
}

// OpenDHT's unpackTid: an unsigned 32-bit integer, or 4 bytes (big endian).
std::optional<std::uint64_t> tid_of(const Obj* o) {
    if (!o) return std::nullopt;
    if (o->type == msgpack::type::POSITIVE_INTEGER) {
        if (o->via.u64 > 0xffffffffULL) return std::nullopt;
        return o->via.u64;
    }
    std::uint8_t b[4];
    if ((o->type == msgpack::type::BIN || o->type == msgpack::type::STR) && text(*o)->size() == 4) {
        std::memcpy(b, text(*o)->data(), 4);
    } else if (o->type == msgpack::type::ARRAY && o->via.array.size == 4) {
        for (int i = 0; i < 4; ++i) {
            const auto& e = o->via.array.ptr[i];
            if (e.type == msgpack::type::POSITIVE_INTEGER && e.via.u64 <= 255)
                b[i] = static_cast<std::uint8_t>(e.via.u64);
            else if (e.type == msgpack::type::NEGATIVE_INTEGER && e.via.i64 >= -128)
                b[i] = static_cast<std::uint8_t>(e.via.i64);
            else
                return std::nullopt;
        }
    } else {
        return std::nullopt;
    }
    return std::uint64_t{b[0]} << 24 | std::uint64_t{b[1]} << 16 | std::uint64_t{b[2]} << 8 | b[3];
}

// What Value::msgpack_unpack will make of a serialized value: its id, and
// whether it ends up with an owner. An encrypted value ("dat" is binary) has
// none; a clear one has one only if its body carries "owner".
struct ValueInfo {
    bool parsed = false;
    std::uint64_t id = 0;
    bool has_owner = false;
};

ValueInfo value_info(const Obj& v) {
    ValueInfo info;
    if (v.type != msgpack::type::MAP || v.via.map.size < 2) return info;
    if (!as_u64(first_key(v, "id"), info.id)) return info;
    const Obj* dat = first_key(v, "dat");
    if (!dat) return info;
    info.parsed = true;
    if (dat->type == msgpack::type::MAP)
        if (const Obj* body = first_key(*dat, "body")) info.has_owner = first_key(*body, "owner") != nullptr;
    return info;
}

// The bytes of a value part ("d"), as unpackBlob reads them.
std::optional<std::string_view> blob_view(const Obj& o, std::string& scratch) {
    if (auto t = text(o)) return t;
    if (o.type != msgpack::type::ARRAY) return std::nullopt;
    scratch.clear();
    for (std::uint32_t i = 0; i < o.via.array.size; ++i) {
        const auto& e = o.via.array.ptr[i];
        if (e.type != msgpack::type::POSITIVE_INTEGER || e.via.u64 > 255) return std::nullopt;
        scratch.push_back(static_cast<char>(e.via.u64));
    }
    return std::string_view(scratch);
}

constexpr std::uint64_t k_max_value_size = 64 * 1024 + 32;  // OpenDHT skips larger announced parts

}  // namespace

void PutGuard::protect(const Key& key, std::uint64_t id) {
    std::lock_guard lk(m_mtx);
    protect_locked(key, id);
}

void PutGuard::protect_locked(const Key& key, std::uint64_t id) {
    if (!m_protected.emplace(key, id).second) return;
    m_order.emplace_back(key, id);
    if (m_order.size() > k_max_protected) {
        m_protected.erase(m_order.front());
        m_order.pop_front();
    }
}

std::uint64_t PutGuard::dropped() const {
    std::lock_guard lk(m_mtx);
    return m_dropped;
}

std::uint64_t PutGuard::dropped_untracked() const {
    std::lock_guard lk(m_mtx);
    return m_dropped_untracked;
}

std::size_t PutGuard::partials() const {
    std::lock_guard lk(m_mtx);
    return m_partials.size();
}

void PutGuard::erase_partial(std::map<std::pair<std::string, std::uint64_t>, Partial>::iterator it) {
    auto s = m_partials_by_sender.find(it->first.first);
    if (s != m_partials_by_sender.end() && --s->second == 0) m_partials_by_sender.erase(s);
    m_partials.erase(it);
}

std::uint64_t PutGuard::dropped_oversized() const {
    std::lock_guard lk(m_mtx);
    return m_dropped_oversized;
}

std::size_t PutGuard::protected_pairs() const {
    std::lock_guard lk(m_mtx);
    return m_protected.size();
}

bool PutGuard::check_value(const Key& key, const void* value) {
    auto info = value_info(*static_cast<const Obj*>(value));
    if (!info.parsed) return true;  // OpenDHT will refuse it
    if (info.has_owner) {
        protect_locked(key, info.id);
        return true;
    }
    return !m_protected.count({key, info.id});
}

bool PutGuard::check_value_bytes(const Key& key, std::span<const std::uint8_t> bytes) {
    try {
        const auto n = bytes.size();
        msgpack::unpack_limit limit(n, n, n, n, n, 64);
        auto handle =
            msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), n, nullptr, nullptr, limit);
        return check_value(key, &handle.get());
    } catch (const msgpack::size_overflow&) {
        return false;  // claims more than it holds: not a value, and costly to try
    } catch (const std::exception&) {
        return true;  // not a value OpenDHT can read either
    }
}

bool PutGuard::inspect(std::span<const std::uint8_t> datagram, const std::string& from,
                       Clock::time_point now) {
    msgpack::object_handle handle;
    try {
        // Every element needs at least a byte: a header claiming more than
        // the datagram holds is never a real packet, and unbounded it makes
        // msgpack try to allocate gigabytes (found by fuzz_put_guard). Such
        // a packet is dropped, so OpenDHT does not try either.
        const auto n = datagram.size();
        msgpack::unpack_limit limit(n, n, n, n, n, 64);
        handle = msgpack::unpack(reinterpret_cast<const char*>(datagram.data()), n, nullptr, nullptr, limit);
    } catch (const msgpack::size_overflow&) {
        std::lock_guard lk(m_mtx);
        ++m_dropped_oversized;
        return false;
    } catch (const std::exception&) {
        return true;  // OpenDHT drops what it cannot parse
    }
    const Obj& root = handle.get();
    const Obj* y = last_key(root, "y", true);
    if (!y || !text(*y)) return true;
    auto tid = tid_of(last_key(root, "t", true));
    std::lock_guard lk(m_mtx);
    for (auto it = m_partials.begin(); it != m_partials.end();) {
        auto next = std::next(it);
        if (now - it->second.started > k_partial_ttl) erase_partial(it);
        it = next;
    }
    bool keep = true;
    const auto untracked_before = m_dropped_untracked;
    if (*text(*y) == "q") {
        const Obj* q = last_key(root, "q", true);
        // OpenDHT takes the arguments from "a", else "r", else "u", else "e".
        const Obj* args = last_key(root, "a", true);
        for (const char* alt : {"r", "u", "e"})
            if (!args) args = last_key(root, alt, true);
        if (q && args && text(*q) == "put") keep = check_put(args, from, now, tid);
    } else if (*text(*y) == "p") {
        const Obj* parts = last_key(root, "p", true);
        if (parts && tid) keep = check_part(parts, from, *tid);
    }
    // Crash puts only; puts refused for want of room are counted apart.
    if (!keep && m_dropped_untracked == untracked_before) ++m_dropped;
    return keep;
}

bool PutGuard::check_put(const void* args_ptr, const std::string& from, Clock::time_point now,
                         std::optional<std::uint64_t> tid) {
    const Obj& args = *static_cast<const Obj*>(args_ptr);
    const Obj* h = last_key(args, "h", false);
    const Obj* values = last_key(args, "values", false);
    if (!h || !values || values->type != msgpack::type::ARRAY) return true;
    if (h->type != msgpack::type::BIN || h->via.bin.size != 20) return true;  // OpenDHT refuses it
    Key key;
    std::memcpy(key.data(), h->via.bin.ptr, key.size());
    Partial partial;
    partial.key = key;
    partial.started = now;
    std::size_t total = 0;
    for (std::uint32_t i = 0; i < values->via.array.size; ++i) {
        const Obj& v = values->via.array.ptr[i];
        if (v.type == msgpack::type::POSITIVE_INTEGER) {
            // A size: this value follows in parts, numbered by its place here.
            if (v.via.u64 > k_max_value_size) continue;  // OpenDHT ignores it too
            total += v.via.u64;
            partial.parts[i] = {static_cast<std::size_t>(v.via.u64), {}};
            continue;
        }
        if (!check_value(key, &v)) return false;
    }
    if (partial.parts.empty()) return true;
    // Parts will follow: they can only be checked if we follow them too.
    if (!tid || total > k_max_partial_bytes) {
        ++m_dropped_untracked;
        return false;
    }
    auto& from_sender = m_partials_by_sender[from];
    auto existing = m_partials.find({from, *tid});
    if (existing == m_partials.end() &&
        (m_partials.size() >= k_max_partials || from_sender >= k_max_partials_per_sender)) {
        if (from_sender == 0) m_partials_by_sender.erase(from);
        ++m_dropped_untracked;
        return false;
    }
    if (existing == m_partials.end()) ++from_sender;
    m_partials[{from, *tid}] = std::move(partial);
    return true;
}

bool PutGuard::check_part(const void* parts_ptr, const std::string& from, std::uint64_t tid) {
    const Obj& parts = *static_cast<const Obj*>(parts_ptr);
    auto it = m_partials.find({from, tid});
    if (it == m_partials.end()) return true;  // OpenDHT ignores parts it did not expect
    Partial& p = it->second;
    if (p.poisoned) return false;
    if (parts.type != msgpack::type::MAP) return true;
    std::string scratch;
    for (std::uint32_t i = 0; i < parts.via.map.size; ++i) {
        const auto& kv = parts.via.map.ptr[i];
        std::uint64_t index = 0, offset = 0;
        if (!as_u64(&kv.key, index) || index > 0xffffffffULL) continue;
        auto slot = p.parts.find(static_cast<std::uint32_t>(index));
        if (slot == p.parts.end()) continue;
        const Obj* d = first_key(kv.val, "d");
        if (kv.val.type != msgpack::type::MAP || !as_u64(first_key(kv.val, "o"), offset) || !d) continue;
        auto bytes = blob_view(*d, scratch);
        if (!bytes) continue;
        auto& [size, buf] = slot->second;
        // Like OpenDHT: in-order parts only, until the announced size is reached.
        if (offset != buf.size() || buf.size() >= size) continue;
        buf.insert(buf.end(), bytes->begin(), bytes->end());
        if (buf.size() > k_max_partial_bytes) {
            p.poisoned = true;  // cannot follow it any further: stop it
            return false;
        }
        if (buf.size() >= size && !check_value_bytes(p.key, buf)) {
            p.poisoned = true;
            return false;
        }
    }
    // Every value complete and clean: nothing more to follow.
    if (std::all_of(p.parts.begin(), p.parts.end(),
                    [](const auto& slot) { return slot.second.second.size() >= slot.second.first; }))
        erase_partial(it);
    return true;
}

}  // namespace juice::dht
