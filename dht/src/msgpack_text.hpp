// A msgpack str or bin object as a string view, the way OpenDHT 2.4.12's
// ParsedMessage reads keys and strings (as<string_view> takes both).
// Internal to dht/ (put guard, traffic kinds).
#pragma once

#include <msgpack.hpp>

#include <optional>
#include <string_view>

namespace juice::dht {

inline std::optional<std::string_view> msgpack_text(const msgpack::object& o) {
    if (o.type == msgpack::type::STR) return std::string_view(o.via.str.ptr, o.via.str.size);
    if (o.type == msgpack::type::BIN) return std::string_view(o.via.bin.ptr, o.via.bin.size);
    return std::nullopt;
}

}  // namespace juice::dht
