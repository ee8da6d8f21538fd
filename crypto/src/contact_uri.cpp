// Contact URIs (format in contact_uri.hpp). Parsing is lenient where it is
// harmless (surrounding whitespace, upper-case hex, "JUICE:", '+' for a space,
// unknown query keys) and strict where a mistake would give a wrong contact
// (id length, checksum, bad percent escapes, invalid UTF-8 in the name).
#include "juice/crypto/contact_uri.hpp"
#include "juice/crypto/text.hpp"

#include "juice/crypto/errors.hpp"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <array>

namespace juice::crypto {
namespace {

constexpr std::string_view k_scheme = "juice:";
constexpr std::size_t k_max_name_bytes = 64;

std::array<std::uint8_t, 2> checksum_of(const UserId& id) {
    std::array<std::uint8_t, 32> digest{};
    gnutls_hash_fast(GNUTLS_DIG_SHA256, id.bytes.data(), id.bytes.size(), digest.data());
    return {digest[0], digest[1]};
}

bool is_unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

std::string percent_encode(std::string_view s) {
    static constexpr char k_digits[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (is_unreserved(c)) {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(k_digits[c >> 4]);
            out.push_back(k_digits[c & 0xf]);
        }
    }
    return out;
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::optional<std::string> percent_decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%') {
            if (i + 2 >= s.size()) return std::nullopt;
            int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out.push_back(static_cast<char>(hi << 4 | lo));
            i += 2;
        } else if (s[i] == '+') {
            out.push_back(' ');
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

// Empty if `name` is acceptable, else what is wrong with it.
std::string check_name(std::string_view name) {
    if (name.size() > k_max_name_bytes) return "the name is longer than 64 bytes";
    for (std::size_t i = 0; i < name.size();) {
        auto n = utf8_sequence(name, i);
        if (n == 0) return "the name is not valid UTF-8";
        if (n == 1 && (static_cast<unsigned char>(name[i]) < 0x20 || name[i] == 0x7f))
            return "the name contains a control character";
        i += n;
    }
    return {};
}

std::string_view trim(std::string_view s) {
    auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!s.empty() && space(s.front())) s.remove_prefix(1);
    while (!s.empty() && space(s.back())) s.remove_suffix(1);
    return s;
}

bool starts_with_scheme(std::string_view s) {
    if (s.size() < k_scheme.size()) return false;
    for (std::size_t i = 0; i < k_scheme.size(); ++i) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != k_scheme[i]) return false;
    }
    return true;
}

Error bad(const std::string& what) {
    return make_error(errc::bad_uri, "not a valid juice contact: " + what);
}

}  // namespace

std::string format_contact_uri(const ContactUri& uri) {
    std::string out(k_scheme);
    out += uri.id.hex();
    out += '?';
    // Keep the output parseable: cut an over-long name at a character boundary.
    std::string_view name = uri.name;
    if (name.size() > k_max_name_bytes) {
        std::size_t cut = k_max_name_bytes;
        while (cut > 0 && (static_cast<unsigned char>(name[cut]) & 0xc0) == 0x80) --cut;
        name = name.substr(0, cut);
    }
    if (!name.empty()) out += "name=" + percent_encode(name) + "&";
    auto sum = checksum_of(uri.id);
    out += "c=" + to_hex(sum);
    return out;
}

Result<ContactUri> parse_contact(std::string_view text) {
    text = trim(text);
    if (text.empty()) return bad("the text is empty");

    if (!starts_with_scheme(text)) {
        // A bare id: no checksum to check, so it must be exactly 40 hex digits.
        auto id = UserId::from_hex(text);
        if (!id) return bad("expected 'juice:<id>?...' or a bare id of 40 hex digits");
        return ContactUri{*id, {}};
    }
    text.remove_prefix(k_scheme.size());
    auto q = text.find('?');
    std::string_view hex = text.substr(0, q);
    std::string_view query = q == std::string_view::npos ? std::string_view{} : text.substr(q + 1);
    auto id = UserId::from_hex(hex);
    if (!id) return bad("expected 40 hex digits after 'juice:'");

    std::optional<std::string> name;
    std::optional<std::string_view> checksum;
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view param = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (param.empty()) continue;
        auto eq = param.find('=');
        std::string_view key = param.substr(0, eq);
        std::string_view value = eq == std::string_view::npos ? std::string_view{} : param.substr(eq + 1);
        if (key == "name") {
            if (name) return bad("'name' appears twice");
            auto decoded = percent_decode(value);
            if (!decoded) return bad("the name has a broken %-escape");
            if (auto why = check_name(*decoded); !why.empty()) return bad(why);
            name = std::move(*decoded);
        } else if (key == "c") {
            if (checksum) return bad("'c' appears twice");
            checksum = value;
        }
        // Other keys: from a newer version, ignored.
    }
    if (!checksum) return bad("the checksum (c=<4 hex digits>) is missing");
    auto sum = checksum->size() == 4 ? from_hex(*checksum) : std::nullopt;
    if (!sum) return bad("the checksum must be 4 hex digits (c=...)");
    auto expected = checksum_of(*id);
    if ((*sum)[0] != expected[0] || (*sum)[1] != expected[1])
        return make_error(errc::bad_checksum, "the checksum does not match: check the id for a typo");
    return ContactUri{*id, name.value_or(std::string{})};
}

}  // namespace juice::crypto
