#include "juice/crypto/errors.hpp"
#include "juice/crypto/tls.hpp"

#include "identities.hpp"

#include <catch2/catch.hpp>

using namespace juice;
using namespace juice::crypto;
using State = TlsEngine::State;
using Role = TlsEngine::Role;

namespace {

using test::alice;
using test::bob;
using test::fake_bob;

auto accept_only(UserId id) {
    return [id](const UserId& peer) { return peer == id; };
}

// Moves ciphertext both ways until both engines are quiet.
void shuttle(TlsEngine& a, TlsEngine& b) {
    for (int i = 0; i < 1000; ++i) {
        auto from_a = a.take_output();
        auto from_b = b.take_output();
        if (from_a.empty() && from_b.empty()) return;
        if (!from_a.empty()) (void)b.feed(from_a);
        if (!from_b.empty()) (void)a.feed(from_b);
    }
    FAIL("the engines never went quiet");
}

Bytes pattern(std::size_t n, std::uint8_t seed) {
    Bytes b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(i * 31 + seed + (i >> 8));
    return b;
}

struct Pair {
    TlsEngine client;
    TlsEngine server;
    Pair(const Identity& c, const Identity& s, UserId expected, std::function<bool(const UserId&)> accept)
        : client(Role::client, c, expected), server(Role::server, s, std::nullopt, std::move(accept)) {}
};

// Client Alice dials server Bob; Bob accepts Alice.
std::unique_ptr<Pair> connected_pair() {
    auto p = std::make_unique<Pair>(alice(), bob(), bob().id(), accept_only(alice().id()));
    REQUIRE(p->server.start());
    REQUIRE(p->client.start());
    shuttle(p->client, p->server);
    REQUIRE(p->client.state() == State::open);
    REQUIRE(p->server.state() == State::open);
    return p;
}

}  // namespace

TEST_CASE("tls: a handshake in memory authenticates both sides") {
    auto p = connected_pair();
    CHECK(p->client.peer_id() == bob().id());
    CHECK(p->server.peer_id() == alice().id());
}

TEST_CASE("tls: data flows both ways, small and 1 MB") {
    auto p = connected_pair();
    auto size = GENERATE(std::size_t{1}, std::size_t{100}, std::size_t{16384}, std::size_t{1024 * 1024 + 7});
    auto up = pattern(size, 1), down = pattern(size, 2);
    REQUIRE(p->client.write(up));
    REQUIRE(p->server.write(down));
    Bytes got_up, got_down;
    for (int i = 0; i < 100 && (got_up.size() < size || got_down.size() < size); ++i) {
        shuttle(p->client, p->server);
        auto a = p->server.take_plaintext();
        auto b = p->client.take_plaintext();
        got_up.insert(got_up.end(), a.begin(), a.end());
        got_down.insert(got_down.end(), b.begin(), b.end());
    }
    CHECK(got_up == up);
    CHECK(got_down == down);
    CHECK(p->client.state() == State::open);
}

TEST_CASE("tls: the handshake survives being fed one byte at a time") {
    TlsEngine client(Role::client, alice(), bob().id());
    TlsEngine server(Role::server, bob(), std::nullopt, accept_only(alice().id()));
    REQUIRE(client.start());
    REQUIRE(server.start());
    for (int round = 0; round < 20; ++round) {
        auto c = client.take_output();
        auto s = server.take_output();
        if (c.empty() && s.empty()) break;
        for (auto byte : c) REQUIRE(server.feed(std::span(&byte, 1)));
        for (auto byte : s) REQUIRE(client.feed(std::span(&byte, 1)));
    }
    CHECK(client.state() == State::open);
    CHECK(server.state() == State::open);
    Bytes msg{'h', 'i'};
    REQUIRE(client.write(msg));
    for (auto byte : client.take_output()) REQUIRE(server.feed(std::span(&byte, 1)));
    CHECK(server.take_plaintext() == msg);
}

TEST_CASE("tls: exported keying material is equal on both sides") {
    auto p = connected_pair();
    auto c = p->client.export_keying_material("EXTRACTOR-dtls_srtp", 60);
    auto s = p->server.export_keying_material("EXTRACTOR-dtls_srtp", 60);
    REQUIRE(c);
    REQUIRE(s);
    CHECK(c->size() == 60);
    CHECK(*c == *s);
    auto other = p->client.export_keying_material("another label", 60);
    REQUIRE(other);
    CHECK(*other != *c);

    // Another session gets other keys.
    auto q = connected_pair();
    CHECK(*q->client.export_keying_material("EXTRACTOR-dtls_srtp", 60) != *c);
    // A context (a call id) gives both ends the same keys, unique to it.
    const Bytes call1(16, 0x01), call2(16, 0x02);
    auto k1 = p->client.export_keying_material("EXPERIMENTAL-juice-call", 60, call1);
    REQUIRE(k1);
    CHECK(*k1 == *p->server.export_keying_material("EXPERIMENTAL-juice-call", 60, call1));
    CHECK(*k1 != *p->client.export_keying_material("EXPERIMENTAL-juice-call", 60, call2));
    CHECK(*k1 != *p->client.export_keying_material("EXPERIMENTAL-juice-call", 60));

    TlsEngine idle(Role::client, alice(), bob().id());
    CHECK_FALSE(idle.export_keying_material("x", 16));
}

TEST_CASE("tls: a client that reaches the wrong peer rejects it") {
    auto carol = *Identity::generate(2048, "Carol");
    // Alice dials expecting Carol, but Bob answers.
    Pair p(alice(), bob(), carol.id(), accept_only(alice().id()));
    REQUIRE(p.server.start());
    REQUIRE(p.client.start());
    shuttle(p.client, p.server);
    CHECK(p.client.state() == State::failed);
    auto r = p.client.feed(Bytes{});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::peer_rejected);
    CHECK_THAT(r.error().message, Catch::Contains(bob().id().hex()));
    CHECK_FALSE(p.client.peer_id());
    CHECK(p.server.state() == State::failed);  // it got our alert
}

TEST_CASE("tls: a server refuses a client it does not accept, and both sides fail") {
    Pair p(alice(), bob(), bob().id(), [](const UserId&) { return false; });
    REQUIRE(p.server.start());
    REQUIRE(p.client.start());
    shuttle(p.client, p.server);
    CHECK(p.server.state() == State::failed);
    CHECK(p.client.state() == State::failed);
    auto rs = p.server.feed(Bytes{});
    REQUIRE_FALSE(rs);
    CHECK(rs.error().code == errc::peer_rejected);
    CHECK_THAT(rs.error().message, Catch::Contains(alice().id().hex()));
    auto rc = p.client.feed(Bytes{});
    REQUIRE_FALSE(rc);
    CHECK(rc.error().code == errc::peer_rejected);
    CHECK_FALSE(p.server.peer_id());
    CHECK_FALSE(p.client.peer_id());
}

TEST_CASE("tls: a certificate with a contact's name but another key is rejected") {
    REQUIRE(fake_bob().certificate_name() == bob().certificate_name());
    REQUIRE(fake_bob().id() != bob().id());
    SECTION("the impostor answers a dial to Bob") {
        Pair p(alice(), fake_bob(), bob().id(), accept_only(alice().id()));
        REQUIRE(p.server.start());
        REQUIRE(p.client.start());
        shuttle(p.client, p.server);
        CHECK(p.client.state() == State::failed);
        auto r = p.client.feed(Bytes{});
        REQUIRE_FALSE(r);
        CHECK(r.error().code == errc::peer_rejected);
        CHECK_THAT(r.error().message, Catch::Contains(fake_bob().id().hex()));
    }
    SECTION("the impostor dials a server that knows Bob") {
        Pair p(fake_bob(), alice(), alice().id(), accept_only(bob().id()));
        REQUIRE(p.server.start());
        REQUIRE(p.client.start());
        shuttle(p.client, p.server);
        CHECK(p.server.state() == State::failed);
        CHECK(p.client.state() == State::failed);
        auto r = p.server.feed(Bytes{});
        REQUIRE_FALSE(r);
        CHECK(r.error().code == errc::peer_rejected);
    }
}

TEST_CASE("tls: garbage input fails the engine cleanly") {
    Bytes garbage = pattern(4096, 7);
    SECTION("a fresh server") {
        TlsEngine server(Role::server, bob(), std::nullopt, accept_only(alice().id()));
        REQUIRE(server.start());
        auto r = server.feed(garbage);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == errc::tls_error);
        CHECK(server.state() == State::failed);
        // The error sticks.
        auto again = server.feed(garbage);
        REQUIRE_FALSE(again);
        CHECK(again.error().code == errc::tls_error);
        CHECK_FALSE(server.write(Bytes{1}));
    }
    SECTION("a client in the middle of its handshake") {
        TlsEngine client(Role::client, alice(), bob().id());
        REQUIRE(client.start());
        CHECK_FALSE(client.take_output().empty());  // the ClientHello
        CHECK_FALSE(client.feed(garbage));
        CHECK(client.state() == State::failed);
    }
    SECTION("an open connection") {
        auto p = connected_pair();
        // A well-formed application-data record header with junk inside.
        Bytes record{23, 3, 3, 0, 200};
        record.resize(5 + 200, 0x42);
        auto r = p->server.feed(record);
        REQUIRE_FALSE(r);
        CHECK(p->server.state() == State::failed);
        CHECK(p->server.take_plaintext().empty());
    }
    SECTION("a flipped bit in a real record") {
        auto p = connected_pair();
        REQUIRE(p->client.write(Bytes{1, 2, 3}));
        auto out = p->client.take_output();
        REQUIRE(out.size() > 10);
        out[out.size() - 3] ^= 0x01;
        CHECK_FALSE(p->server.feed(out));
        CHECK(p->server.state() == State::failed);
        CHECK(p->server.take_plaintext().empty());
    }
}

TEST_CASE("tls: close sends close_notify and the peer sees closed") {
    auto p = connected_pair();
    Bytes last{'b', 'y', 'e'};
    REQUIRE(p->client.write(last));
    p->client.close();
    CHECK(p->client.state() == State::closed);
    CHECK_FALSE(p->client.write(last));
    REQUIRE(p->server.feed(p->client.take_output()));
    CHECK(p->server.take_plaintext() == last);
    CHECK(p->server.state() == State::closed);
    CHECK(p->server.peer_id() == alice().id());
}

TEST_CASE("tls: misuse is an error, not a crash") {
    SECTION("write before the handshake") {
        TlsEngine client(Role::client, alice(), bob().id());
        REQUIRE(client.start());
        auto r = client.write(Bytes{1});
        REQUIRE_FALSE(r);
        CHECK(r.error().code == errc::tls_error);
        CHECK(client.state() == State::handshaking);
    }
    SECTION("a client without an expected peer") {
        TlsEngine client(Role::client, alice(), std::nullopt);
        CHECK_FALSE(client.start());
        CHECK(client.state() == State::failed);
    }
    SECTION("a server without an accept check") {
        TlsEngine server(Role::server, bob(), std::nullopt);
        CHECK_FALSE(server.start());
        CHECK(server.state() == State::failed);
    }
}
