#include "juice/crypto/contact_uri.hpp"
#include "juice/crypto/errors.hpp"

#include <gnutls/crypto.h>
#include <catch2/catch.hpp>

#include <cctype>
#include <cstring>

using namespace juice;
using namespace juice::crypto;

namespace {

UserId fixed_id() {
    return *UserId::from_hex("0123456789abcdef0123456789abcdef01234567");
}

std::string checksum_hex(const UserId& id) {
    std::uint8_t digest[32];
    gnutls_hash_fast(GNUTLS_DIG_SHA256, id.bytes.data(), id.bytes.size(), digest);
    return to_hex(std::span(digest, 2));
}

}  // namespace

TEST_CASE("contact uri: format matches the documented layout") {
    auto id = fixed_id();
    auto sum = checksum_hex(id);
    CHECK(format_contact_uri({id, "Alice"}) == "juice:" + id.hex() + "?name=Alice&c=" + sum);
    CHECK(format_contact_uri({id, ""}) == "juice:" + id.hex() + "?c=" + sum);
    CHECK(format_contact_uri({id, "A b&c=d%e"}) == "juice:" + id.hex() + "?name=A%20b%26c%3Dd%25e&c=" + sum);
}

TEST_CASE("contact uri: round trip keeps id and name") {
    auto name = GENERATE(as<std::string>{}, "", "Alice", "Alice Smith", "a&b=c%d?e#f+g", "Zoë 🍊 日本", "~-._",
                         std::string(64, 'x'));
    ContactUri uri{UserId::random(), name};
    auto text = format_contact_uri(uri);
    INFO(text);
    auto back = parse_contact(text);
    REQUIRE(back);
    CHECK(*back == uri);
    // Only URI-safe characters are emitted.
    for (char c : text) CHECK((std::isalnum(static_cast<unsigned char>(c)) || std::strchr(":?&=%-._~", c)));
}

TEST_CASE("contact uri: lenient where harmless") {
    auto id = fixed_id();
    auto sum = checksum_hex(id);
    SECTION("upper case, whitespace, scheme case") {
        std::string hex = id.hex();
        for (auto& c : hex) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        auto r = parse_contact("  JUICE:" + hex + "?c=" + sum + "\n");
        REQUIRE(r);
        CHECK(r->id == id);
        CHECK(r->name.empty());
    }
    SECTION("unknown parameters are ignored, in any order") {
        auto r = parse_contact("juice:" + id.hex() + "?x=1&c=" + sum + "&future&name=Bob%20B");
        REQUIRE(r);
        CHECK(r->id == id);
        CHECK(r->name == "Bob B");
    }
    SECTION("a plus is a space") {
        auto r = parse_contact("juice:" + id.hex() + "?name=Bob+B&c=" + sum);
        REQUIRE(r);
        CHECK(r->name == "Bob B");
    }
    SECTION("a bare id") {
        auto r = parse_contact(id.hex());
        REQUIRE(r);
        CHECK(r->id == id);
        CHECK(r->name.empty());
    }
}

TEST_CASE("contact uri: a typo in the id is caught by the checksum") {
    auto uri = format_contact_uri({fixed_id(), "Alice"});
    auto pos = std::string("juice:").size() + 7;
    uri[pos] = uri[pos] == '7' ? '8' : '7';
    auto r = parse_contact(uri);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::bad_checksum);
    CHECK(r.error().message.find("typo") != std::string::npos);

    auto good = format_contact_uri({fixed_id(), ""});
    good.back() = good.back() == '0' ? '1' : '0';  // a typo in the checksum itself
    auto r2 = parse_contact(good);
    REQUIRE_FALSE(r2);
    CHECK(r2.error().code == errc::bad_checksum);
}

TEST_CASE("contact uri: garbage is bad_uri with a useful message") {
    auto id = fixed_id();
    auto sum = checksum_hex(id);
    struct Case {
        std::string text;
        std::string says;
    };
    auto c = GENERATE_COPY(values<Case>({
        {"", "empty"},
        {"hello", "40 hex digits"},
        {"juice:", "40 hex digits after 'juice:'"},
        {"juice:1234?c=abcd", "40 hex digits after 'juice:'"},
        {"juice:" + std::string(40, 'g') + "?c=" + sum, "40 hex digits after 'juice:'"},
        {"juice:" + id.hex() + "0?c=" + sum, "40 hex digits after 'juice:'"},
        {"juice:" + id.hex(), "checksum"},
        {"juice:" + id.hex() + "?name=Al", "checksum"},
        {"juice:" + id.hex() + "?c=12", "4 hex digits"},
        {"juice:" + id.hex() + "?c=zzzz", "4 hex digits"},
        {"juice:" + id.hex() + "?name=%4&c=" + sum, "%-escape"},
        {"juice:" + id.hex() + "?name=%zz&c=" + sum, "%-escape"},
        {"juice:" + id.hex() + "?name=%FF&c=" + sum, "UTF-8"},
        {"juice:" + id.hex() + "?name=a%0Ab&c=" + sum, "control"},
        {"juice:" + id.hex() + "?name=" + std::string(65, 'x') + "&c=" + sum, "64 bytes"},
        {"juice:" + id.hex() + "?c=" + sum + "&c=" + sum, "twice"},
        {"mailto:" + id.hex(), "40 hex digits"},
        {std::string("juice:\0\0", 8), "40 hex digits"},
    }));
    INFO(c.text);
    auto r = parse_contact(c.text);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::bad_uri);
    CHECK_THAT(r.error().message, Catch::Contains(c.says));
}

TEST_CASE("contact uri: an over-long name is cut at a character boundary when formatted") {
    std::string name;
    for (int i = 0; i < 30; ++i) name += "é";  // 60 bytes
    name += "🍊🍊";                              // 68 bytes: too long
    auto r = parse_contact(format_contact_uri({fixed_id(), name}));
    REQUIRE(r);
    CHECK(r->name.size() <= 64);
    CHECK(name.rfind(r->name, 0) == 0);
    CHECK(r->name.size() == 64);
}
