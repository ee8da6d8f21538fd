// Strong id types and hex helpers shared by every layer.
//
// UserId    20 bytes: the SHA-1 key id of the user's RSA public key, the same
//           value OpenDHT's PublicKey::getId() returns. Shown as 40 hex digits.
// MessageId 16 random bytes, 32 hex digits.
// CallId    16 random bytes, 32 hex digits.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace juice {

using Bytes = std::vector<std::uint8_t>;

std::string to_hex(std::span<const std::uint8_t> bytes);
// Accepts upper or lower case; returns nullopt on odd length or a non-hex digit.
std::optional<Bytes> from_hex(std::string_view hex);

// Fills `out` from the operating system's CSPRNG (GnuTLS nonce/random level).
void random_bytes(std::span<std::uint8_t> out);

template <std::size_t N, class Tag>
struct FixedId {
    static constexpr std::size_t size = N;
    std::array<std::uint8_t, N> bytes{};

    std::string hex() const { return to_hex(bytes); }
    bool is_zero() const {
        for (auto b : bytes)
            if (b) return false;
        return true;
    }
    // Exactly 2*N hex digits, else nullopt.
    static std::optional<FixedId> from_hex(std::string_view hex) {
        if (hex.size() != 2 * N) return std::nullopt;
        auto raw = juice::from_hex(hex);
        if (!raw) return std::nullopt;
        FixedId id;
        for (std::size_t i = 0; i < N; ++i) id.bytes[i] = (*raw)[i];
        return id;
    }
    static std::optional<FixedId> from_bytes(std::span<const std::uint8_t> raw) {
        if (raw.size() != N) return std::nullopt;
        FixedId id;
        for (std::size_t i = 0; i < N; ++i) id.bytes[i] = raw[i];
        return id;
    }
    static FixedId random() {
        FixedId id;
        random_bytes(id.bytes);
        return id;
    }
    auto operator<=>(const FixedId&) const = default;
};

using UserId = FixedId<20, struct UserIdTag>;
using MessageId = FixedId<16, struct MessageIdTag>;
using CallId = FixedId<16, struct CallIdTag>;

}  // namespace juice

template <std::size_t N, class Tag>
struct std::hash<juice::FixedId<N, Tag>> {
    std::size_t operator()(const juice::FixedId<N, Tag>& id) const noexcept {
        std::size_t h = 0;
        for (std::size_t i = 0; i < sizeof(std::size_t) && i < N; ++i) h = (h << 8) | id.bytes[i];
        return h;
    }
};
