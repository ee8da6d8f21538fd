// Presence record codec: round trips and rejects of hostile input.
#include "juice/dht/presence.hpp"

#include <catch2/catch.hpp>
#include <msgpack.hpp>

#include <limits>
#include <map>
#include <string>
#include <vector>

using namespace juice;
using namespace juice::dht;

namespace {

PresenceRecord full_record() {
    PresenceRecord r;
    r.version = 1;
    r.name = "Alice";
    r.status = "away";
    r.note = "back at 5 \xe2\x98\x95";
    r.caps = {"text", "voice", "video", "file"};
    r.device = "laptop-1f2e";
    r.addrs = {{"192.168.1.20", 40001, "host"},
               {"fe80::1234:5678:9abc:def0", 40001, "host"},
               {"203.0.113.7", 51234, "public"}};
    r.ts = 1'700'000'000'123;
    r.protocol = 3;
    return r;
}

// Builds a msgpack map by hand, so tests can write what encode_presence never would.
struct MapWriter {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk{buf};
    explicit MapWriter(std::uint32_t n) { pk.pack_map(n); }
    template <class T>
    MapWriter& kv(const char* k, const T& v) {
        pk.pack(k);
        pk.pack(v);
        return *this;
    }
    Bytes bytes() const {
        auto* p = reinterpret_cast<const std::uint8_t*>(buf.data());
        return Bytes(p, p + buf.size());
    }
};

// A valid minimal record (v, s, t) plus one extra field written by `extra`.
template <class F>
Bytes minimal_plus(F&& extra) {
    MapWriter w(4);
    w.kv("v", 1).kv("s", "online").kv("t", 5);
    extra(w);
    return w.bytes();
}

bool is_malformed(const Result<PresenceRecord>& r) {
    return !r.ok() && r.error().code == make_error_code(errc::malformed);
}

}  // namespace

TEST_CASE("presence: full record round trips", "[presence]") {
    auto r = full_record();
    auto dec = decode_presence(encode_presence(r));
    REQUIRE(dec.ok());
    CHECK(*dec == r);
}

TEST_CASE("presence: default record round trips", "[presence]") {
    PresenceRecord r;
    auto dec = decode_presence(encode_presence(r));
    REQUIRE(dec.ok());
    CHECK(*dec == r);
}

TEST_CASE("presence: each status round trips", "[presence]") {
    for (const char* s : {"online", "away", "busy", "offline"}) {
        auto r = full_record();
        r.status = s;
        auto dec = decode_presence(encode_presence(r));
        REQUIRE(dec.ok());
        CHECK(dec->status == s);
    }
}

TEST_CASE("presence: extreme values round trip", "[presence]") {
    auto r = full_record();
    r.name = std::string(64, 'n');
    r.note = std::string(256, 'm');
    r.device = std::string(64, 'd');
    r.caps.assign(16, std::string(16, 'c'));
    r.addrs.assign(16, Candidate{"::ffff:10.0.0.1", 65535, "public"});
    r.ts = -42;  // a publisher's clock may be anything; only ordering matters
    r.protocol = 0xffffffffu;
    auto dec = decode_presence(encode_presence(r));
    REQUIRE(dec.ok());
    CHECK(*dec == r);
}

TEST_CASE("presence: minimal record uses defaults for absent keys", "[presence]") {
    MapWriter w(3);
    w.kv("v", 1).kv("s", "busy").kv("t", 77);
    auto dec = decode_presence(w.bytes());
    REQUIRE(dec.ok());
    CHECK(dec->status == "busy");
    CHECK(dec->ts == 77);
    CHECK(dec->name.empty());
    CHECK(dec->caps.empty());
    CHECK(dec->addrs.empty());
    CHECK(dec->protocol == 1);
}

TEST_CASE("presence: unknown keys are ignored", "[presence]") {
    MapWriter w(7);
    w.kv("v", 2).kv("s", "online").kv("t", 9).kv("n", "Bob");
    w.kv("future", std::vector<int>{1, 2, 3});
    w.pk.pack(42);  // a non-string key
    w.pk.pack("x");
    w.kv("zz", std::map<std::string, int>{{"a", 1}});
    auto dec = decode_presence(w.bytes());
    REQUIRE(dec.ok());
    CHECK(dec->version == 2);
    CHECK(dec->name == "Bob");
}

TEST_CASE("presence: address candidates of an unknown kind are skipped", "[presence]") {
    auto b = minimal_plus([](MapWriter& w) {
        w.pk.pack("a");
        w.pk.pack_array(2);
        w.pk.pack_array(3);
        w.pk.pack("10.0.0.1");
        w.pk.pack(1000);
        w.pk.pack("relay");
        w.pk.pack_array(4);  // an extra trailing element is tolerated
        w.pk.pack("10.0.0.2");
        w.pk.pack(1001);
        w.pk.pack("host");
        w.pk.pack(true);
    });
    auto dec = decode_presence(b);
    REQUIRE(dec.ok());
    REQUIRE(dec->addrs.size() == 1);
    CHECK(dec->addrs[0] == Candidate{"10.0.0.2", 1001, "host"});
}

TEST_CASE("presence: missing required keys are rejected", "[presence]") {
    {
        MapWriter w(2);
        w.kv("s", "online").kv("t", 1);
        CHECK(is_malformed(decode_presence(w.bytes())));
    }
    {
        MapWriter w(2);
        w.kv("v", 1).kv("t", 1);
        CHECK(is_malformed(decode_presence(w.bytes())));
    }
    {
        MapWriter w(2);
        w.kv("v", 1).kv("s", "online");
        CHECK(is_malformed(decode_presence(w.bytes())));
    }
}

TEST_CASE("presence: wrong types are rejected", "[presence]") {
    CHECK(is_malformed(decode_presence(minimal_plus([](MapWriter& w) { w.kv("n", 12); }))));
    CHECK(is_malformed(decode_presence(minimal_plus([](MapWriter& w) { w.kv("m", true); }))));
    CHECK(is_malformed(decode_presence(minimal_plus([](MapWriter& w) { w.kv("c", "text"); }))));
    CHECK(is_malformed(decode_presence(minimal_plus([](MapWriter& w) { w.kv("c", std::vector<int>{1}); }))));
    CHECK(is_malformed(decode_presence(minimal_plus([](MapWriter& w) { w.kv("d", 1.5); }))));
    CHECK(is_malformed(decode_presence(minimal_plus([](MapWriter& w) { w.kv("a", "1.2.3.4"); }))));
    CHECK(is_malformed(decode_presence(minimal_plus([](MapWriter& w) { w.kv("p", -1); }))));
    CHECK(is_malformed(decode_presence(minimal_plus([](MapWriter& w) { w.kv("p", 1ull << 33); }))));
    {
        MapWriter w(3);
        w.kv("v", "1").kv("s", "online").kv("t", 1);
        CHECK(is_malformed(decode_presence(w.bytes())));
    }
    {
        MapWriter w(3);
        w.kv("v", 0).kv("s", "online").kv("t", 1);
        CHECK(is_malformed(decode_presence(w.bytes())));
    }
    {
        MapWriter w(3);
        w.kv("v", 1).kv("s", "online").kv("t", "yesterday");
        CHECK(is_malformed(decode_presence(w.bytes())));
    }
    {
        MapWriter w(3);
        w.kv("v", 1).kv("s", "online");
        w.pk.pack("t");
        w.pk.pack(std::numeric_limits<std::uint64_t>::max());  // does not fit int64
        CHECK(is_malformed(decode_presence(w.bytes())));
    }
    {
        // Not a map at all.
        msgpack::sbuffer buf;
        msgpack::pack(buf, std::vector<int>{1, 2});
        Bytes b(buf.data(), buf.data() + buf.size());
        CHECK(is_malformed(decode_presence(b)));
    }
}

TEST_CASE("presence: oversize fields are rejected", "[presence]") {
    auto r = full_record();
    SECTION("name") {
        r.name = std::string(65, 'x');
    }
    SECTION("note") {
        r.note = std::string(257, 'x');
    }
    SECTION("device") {
        r.device = std::string(65, 'x');
    }
    SECTION("one capability") {
        r.caps = {std::string(17, 'x')};
    }
    SECTION("too many capabilities") {
        r.caps.assign(17, "text");
    }
    SECTION("too many addresses") {
        r.addrs.assign(17, Candidate{"10.0.0.1", 1, "host"});
    }
    SECTION("huge note") {
        r.note = std::string(100'000, 'x');
    }
    CHECK(is_malformed(decode_presence(encode_presence(r))));
}

TEST_CASE("presence: bad status is rejected", "[presence]") {
    auto r = full_record();
    for (const char* s : {"", "Online", "invisible", "online "}) {
        r.status = s;
        CHECK(is_malformed(decode_presence(encode_presence(r))));
    }
}

TEST_CASE("presence: bad addresses are rejected", "[presence]") {
    auto r = full_record();
    SECTION("hostname") {
        r.addrs = {{"example.org", 1, "host"}};
    }
    SECTION("empty ip") {
        r.addrs = {{"", 1, "host"}};
    }
    SECTION("bad v4") {
        r.addrs = {{"300.1.2.3", 1, "host"}};
    }
    SECTION("bad v6") {
        r.addrs = {{"fe80:::1", 1, "host"}};
    }
    SECTION("ip with port") {
        r.addrs = {{"1.2.3.4:5", 1, "host"}};
    }
    SECTION("port zero") {
        r.addrs = {{"1.2.3.4", 0, "host"}};
    }
    CHECK(is_malformed(decode_presence(encode_presence(r))));
}

TEST_CASE("presence: port out of range is rejected", "[presence]") {
    auto b = minimal_plus([](MapWriter& w) {
        w.pk.pack("a");
        w.pk.pack_array(1);
        w.pk.pack_array(3);
        w.pk.pack("10.0.0.1");
        w.pk.pack(65536);
        w.pk.pack("host");
    });
    CHECK(is_malformed(decode_presence(b)));
    auto short_entry = minimal_plus([](MapWriter& w) {
        w.pk.pack("a");
        w.pk.pack_array(1);
        w.pk.pack_array(2);
        w.pk.pack("10.0.0.1");
        w.pk.pack(1);
    });
    CHECK(is_malformed(decode_presence(short_entry)));
}

TEST_CASE("presence: empty, truncated and garbage input is rejected", "[presence]") {
    CHECK(is_malformed(decode_presence({})));

    auto good = encode_presence(full_record());
    for (std::size_t n = 1; n < good.size(); ++n) {
        std::span<const std::uint8_t> prefix(good.data(), n);
        CHECK(is_malformed(decode_presence(prefix)));
    }

    auto trailing = good;
    trailing.push_back(0xc0);
    CHECK(is_malformed(decode_presence(trailing)));

    // A map header claiming 2^32-1 entries, and a str32 claiming 4 GiB.
    CHECK(is_malformed(decode_presence(Bytes{0xdf, 0xff, 0xff, 0xff, 0xff})));
    CHECK(is_malformed(decode_presence(Bytes{0x81, 0xa1, 'n', 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'})));
    // Reserved byte 0xc1, and deep nesting.
    CHECK(is_malformed(decode_presence(Bytes{0xc1})));
    CHECK(is_malformed(decode_presence(Bytes(200, 0x91))));

    // Deterministic pseudo-random garbage never throws.
    std::uint32_t x = 12345;
    for (int i = 0; i < 2000; ++i) {
        Bytes b(1 + i % 64);
        for (auto& c : b) {
            x = x * 1664525u + 1013904223u;
            c = static_cast<std::uint8_t>(x >> 24);
        }
        CHECK_NOTHROW((void)decode_presence(b));
    }
    // Bit flips of a valid record never throw either.
    for (std::size_t i = 0; i < good.size(); ++i) {
        auto b = good;
        b[i] ^= 0x5a;
        CHECK_NOTHROW((void)decode_presence(b));
    }
}

TEST_CASE("presence: key name and error messages", "[presence]") {
    auto id = UserId::from_hex("0123456789abcdef0123456789abcdef01234567");
    REQUIRE(id);
    CHECK(presence_key_name(*id) == "juice:presence:0123456789abcdef0123456789abcdef01234567");

    for (auto e :
         {errc::malformed, errc::bad_signature, errc::stale, errc::not_running, errc::start_failed}) {
        std::error_code ec = e;
        CHECK(std::string(ec.category().name()) == "juice.dht");
        CHECK_FALSE(ec.message().empty());
        CHECK(ec.message() != "unknown dht error");
    }
    auto err = make_error(errc::not_running);
    CHECK(err.what() == std::error_code(errc::not_running).message());
}
