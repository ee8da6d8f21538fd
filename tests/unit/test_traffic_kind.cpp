// TrafficKinds: OpenDHT messages sorted by kind, replies matched to the
// query they answer by (peer, transaction id).
#include "traffic_kind.hpp"

#include <catch2/catch.hpp>
#include <msgpack.hpp>

#include <string>
#include <vector>

using juice::dht::TrafficKinds;
using Dir = TrafficKinds::Dir;

namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;
using Bytes = std::vector<std::uint8_t>;

void str(Packer& pk, const std::string& s) {
    pk.pack_str(static_cast<std::uint32_t>(s.size()));
    pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

Bytes done(const msgpack::sbuffer& buf) {
    return Bytes(buf.data(), buf.data() + buf.size());
}

// A message shaped as OpenDHT 2.4.12 sends it: {"y":"q","q":method,"t":tid,"a":{}}
Bytes query(const std::string& method, std::uint32_t tid) {
    msgpack::sbuffer buf;
    Packer pk(buf);
    pk.pack_map(4);
    str(pk, "a");
    pk.pack_map(0);
    str(pk, "q");
    str(pk, method);
    str(pk, "t");
    pk.pack_bin(4);
    pk.pack_bin_body(reinterpret_cast<const char*>(&tid), 4);
    str(pk, "y");
    str(pk, "q");
    return done(buf);
}

// {"r":{...},"t":tid,"y":"r"} (or "e" for an error).
Bytes reply(std::uint32_t tid, const std::string& key = "r") {
    msgpack::sbuffer buf;
    Packer pk(buf);
    pk.pack_map(3);
    str(pk, key);
    if (key == "e") {
        pk.pack_array(2);
        pk.pack_uint16(401);
        str(pk, "unauthorized");
    } else {
        pk.pack_map(0);
    }
    str(pk, "t");
    pk.pack_bin(4);
    pk.pack_bin_body(reinterpret_cast<const char*>(&tid), 4);
    str(pk, "y");
    str(pk, key);
    return done(buf);
}

// A message with one top-level key `key` ("u" value update, "p" value parts).
Bytes with_key(const std::string& key) {
    msgpack::sbuffer buf;
    Packer pk(buf);
    pk.pack_map(2);
    str(pk, key);
    pk.pack_map(0);
    str(pk, "t");
    pk.pack_uint32(7);
    return done(buf);
}

}  // namespace

TEST_CASE("traffic kinds: a query and its reply count under the query's method", "[traffic]") {
    TrafficKinds k;
    const auto q = query("listen", 1), r = reply(1);
    CHECK(k.record(Dir::out, q, "10.0.0.1:4222") == "listen");
    CHECK(k.record(Dir::in, r, "10.0.0.1:4222") == "listen");
    auto c = k.counts();
    REQUIRE(c.count("listen"));
    CHECK(c["listen"].packets_out == 1);
    CHECK(c["listen"].bytes_out == q.size());
    CHECK(c["listen"].packets_in == 1);
    CHECK(c["listen"].bytes_in == r.size());
    CHECK(c.size() == 1);

    // A query that came in, answered by us: the other way round.
    CHECK(k.record(Dir::in, query("get", 9), "10.0.0.2:5000") == "get");
    CHECK(k.record(Dir::out, reply(9, "e"), "10.0.0.2:5000") == "get");
    CHECK(k.counts()["get"].packets_out == 1);
}

TEST_CASE("traffic kinds: a reply is matched once, by peer and tid, and in the right direction",
          "[traffic]") {
    TrafficKinds k;
    k.record(Dir::out, query("ping", 5), "10.0.0.1:1");
    CHECK(k.record(Dir::in, reply(5), "10.0.0.9:1") == "reply");   // another peer
    CHECK(k.record(Dir::in, reply(6), "10.0.0.1:1") == "reply");   // another tid
    CHECK(k.record(Dir::out, reply(5), "10.0.0.1:1") == "reply");  // our query is not answered by us
    CHECK(k.record(Dir::in, reply(5), "10.0.0.1:1") == "ping");
    CHECK(k.record(Dir::in, reply(5), "10.0.0.1:1") == "reply");  // a duplicate
}

TEST_CASE("traffic kinds: updates, parts and the unparsable", "[traffic]") {
    TrafficKinds k;
    CHECK(k.record(Dir::in, with_key("u"), "a") == "listen_update");
    CHECK(k.record(Dir::out, with_key("p"), "a") == "value_parts");
    CHECK(k.record(Dir::in, query("steal", 3), "a") == "other");
    const Bytes junk{0xc1, 0xff, 0x00};
    CHECK(k.record(Dir::in, junk, "a") == "other");
    CHECK(k.record(Dir::in, Bytes{}, "a") == "other");
    // A map header that claims far more entries than the datagram holds.
    const Bytes liar{0xdf, 0x7f, 0xff, 0xff, 0xff};
    CHECK(k.record(Dir::in, liar, "a") == "other");
    msgpack::sbuffer buf;
    Packer pk(buf);
    pk.pack_array(1);
    pk.pack_uint8(1);
    CHECK(k.record(Dir::in, done(buf), "a") == "other");
    CHECK(k.counts()["other"].packets_in == 5);
}

TEST_CASE("traffic kinds: queries never answered are forgotten past the bound", "[traffic]") {
    TrafficKinds k;
    const auto n = static_cast<std::uint32_t>(TrafficKinds::k_pending + 100);
    for (std::uint32_t t = 0; t < n; ++t) k.record(Dir::out, query("find", t), "10.0.0.1:1");
    CHECK(k.record(Dir::in, reply(0), "10.0.0.1:1") == "reply");     // the oldest went
    CHECK(k.record(Dir::in, reply(n - 1), "10.0.0.1:1") == "find");  // the newest is kept
    // Answered queries leave room: many more round trips still match.
    for (std::uint32_t t = n; t < n + 3 * TrafficKinds::k_pending; ++t) {
        k.record(Dir::out, query("get", t), "10.0.0.2:1");
        REQUIRE(k.record(Dir::in, reply(t), "10.0.0.2:1") == "get");
    }
}
