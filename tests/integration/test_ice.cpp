// ICE sessions (libnice) on loopback: two agents in one process find each
// other, pseudo-TCP carries bytes both ways, and a real Link (TLS 1.3, hello,
// frames) runs over the stream. The NAT cases live in the [nat] lab tests.
#include "ice/ice.hpp"
#include "link.hpp"

#include "juice/crypto/identity.hpp"

#include <asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <chrono>

using namespace juice;
using namespace juice::node;
using namespace std::chrono_literals;

namespace {

// Runs `io` until `done()` or the deadline; true if done.
template <class F>
bool run_until(asio::io_context& io, F done, std::chrono::milliseconds limit = 15s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < end) {
        io.restart();
        io.run_for(10ms);
    }
    return done();
}

Bytes pattern(std::size_t n, std::uint8_t seed) {
    Bytes b(n);
    for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>((i * 31 + seed) ^ (i >> 9));
    return b;
}

// Two reliable sessions on 127.0.0.1 whose descriptions are swapped in
// memory (the DHT's part in the daemon).
struct Pair {
    asio::io_context io;
    ice::Runtime rt;
    std::shared_ptr<ice::Session> a, b;
    bool a_writable = false, b_writable = false;
    ice::State a_state = ice::State::gathering, b_state = ice::State::gathering;
    Bytes a_got, b_got;

    Pair() {
        ice::SessionConfig ca;
        ca.controlling = true;
        ca.local_addresses = {"127.0.0.1"};
        ice::SessionConfig cb = ca;
        cb.controlling = false;
        a = ice::Session::create(rt, io.get_executor(), ca, events(true));
        b = ice::Session::create(rt, io.get_executor(), cb, events(false));
    }
    ice::Session::Events events(bool is_a) {
        ice::Session::Events ev;
        ev.on_gathered = [this, is_a](ice::Description d) {
            REQUIRE(!d.candidates.empty());
            CHECK(d.complete);
            (is_a ? b : a)->set_remote(d);
        };
        ev.on_state = [this, is_a](ice::State s) { (is_a ? a_state : b_state) = s; };
        ev.on_writable = [this, is_a] { (is_a ? a_writable : b_writable) = true; };
        ev.on_bytes = [this, is_a](std::span<const std::uint8_t> bytes) {
            auto& got = is_a ? a_got : b_got;
            got.insert(got.end(), bytes.begin(), bytes.end());
        };
        return ev;
    }
    bool connect() {
        return run_until(io, [&] { return a_writable && b_writable && a->selected() && b->selected(); });
    }
};

}  // namespace

TEST_CASE("ice: two agents on loopback connect and carry bytes both ways through pseudo-TCP", "[ice]") {
    Pair p;
    REQUIRE(p.connect());
    CHECK(p.a->selected()->kind == "host");
    CHECK(p.a->selected()->remote == p.b->selected()->local);
    CHECK(p.a_state != ice::State::failed);

    const auto up = pattern(1 << 20, 1), down = pattern(256 * 1024 + 13, 2);
    // In pieces, as a Link writes TLS records.
    for (std::size_t off = 0; off < up.size(); off += 16384)
        p.a->send(std::span(up).subspan(off, std::min<std::size_t>(16384, up.size() - off)));
    p.b->send(down);
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(run_until(
        p.io, [&] { return p.b_got.size() >= up.size() && p.a_got.size() >= down.size(); }, 60s));
    const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    WARN("1 MiB + 256 KiB through pseudo-TCP on loopback in " << ms << " ms");
    CHECK(p.b_got == up);
    CHECK(p.a_got == down);
    CHECK(run_until(p.io, [&] { return p.a->queued_bytes() == 0; }));
}

TEST_CASE("ice: bytes sent before the peer listens are kept for it", "[ice]") {
    Pair p;
    REQUIRE(p.connect());
    p.b->set_events({});  // nobody listens on b for now
    const auto msg = pattern(5000, 3);
    p.a->send(msg);
    REQUIRE(run_until(p.io, [&] { return p.a->queued_bytes() == 0; }));
    p.io.restart();
    p.io.run_for(200ms);
    Bytes got;
    ice::Session::Events ev;
    ev.on_bytes = [&](std::span<const std::uint8_t> b) { got.insert(got.end(), b.begin(), b.end()); };
    p.b->set_events(std::move(ev));
    REQUIRE(run_until(p.io, [&] { return got.size() >= msg.size(); }));
    CHECK(got == msg);
}

TEST_CASE("ice: a TLS link runs over the ICE stream with the usual identity checks", "[ice]") {
    auto alice = crypto::Identity::generate(2048, "Alice");
    auto bob = crypto::Identity::generate(2048, "Bob");
    REQUIRE(alice);
    REQUIRE(bob);
    Pair p;
    REQUIRE(p.connect());

    std::vector<std::string> at_bob;
    bool a_open = false, b_open = false;
    std::string a_closed, b_closed;
    auto callbacks = [&](bool is_alice) {
        Link::Callbacks cb;
        cb.make_hello = [is_alice] {
            HelloFrame h;
            h.name = is_alice ? "Alice" : "Bob";
            h.status = "online";
            return h;
        };
        cb.on_open = [&, is_alice](Link&) { (is_alice ? a_open : b_open) = true; };
        cb.on_frame = [&](Link&, Frame&& f) {
            if (auto* m = std::get_if<MessageFrame>(&f)) at_bob.push_back(m->text);
        };
        cb.on_closed = [&, is_alice](Link&, const std::string& why) {
            (is_alice ? a_closed : b_closed) = why;
        };
        return cb;
    };
    // Alice controls the ICE session and dials (TLS client); Bob accepts Alice only.
    auto la = std::make_shared<Link>(p.io.get_executor(), std::make_shared<ice::IceStream>(p.a),
                                     crypto::TlsEngine::Role::client, *alice, bob->id(), nullptr,
                                     LinkTimeouts{}, callbacks(true));
    auto lb = std::make_shared<Link>(
        p.io.get_executor(), std::make_shared<ice::IceStream>(p.b), crypto::TlsEngine::Role::server, *bob,
        std::nullopt, [&](const UserId& id) { return id == alice->id(); }, LinkTimeouts{}, callbacks(false));
    lb->start();
    la->start();
    REQUIRE(run_until(p.io, [&] { return a_open && b_open; }));
    CHECK(lb->peer() == alice->id());
    CHECK(la->path().kind == "host");
    CHECK(la->remote_endpoint() == p.b->selected()->local);
    for (int i = 0; i < 50; ++i)
        la->send(MessageFrame{MessageId::random(), 0, "m" + std::to_string(i) + std::string(1000, 'x')});
    REQUIRE(run_until(p.io, [&] { return at_bob.size() == 50; }));
    CHECK(a_closed.empty());
    CHECK(b_closed.empty());

    // A close on one side reaches the other as a closed TLS session.
    la->close("bye");
    REQUIRE(run_until(p.io, [&] { return !b_closed.empty(); }));
    CHECK(b_closed == "peer closed the tls session");
}

TEST_CASE("ice: a TLS link over ICE refuses a peer it does not accept", "[ice]") {
    auto alice = crypto::Identity::generate(2048, "Alice");
    auto bob = crypto::Identity::generate(2048, "Bob");
    REQUIRE(alice);
    REQUIRE(bob);
    Pair p;
    REQUIRE(p.connect());
    std::string a_closed, b_closed;
    auto callbacks = [&](std::string& closed) {
        Link::Callbacks cb;
        cb.make_hello = [] { return HelloFrame{}; };
        cb.on_closed = [&closed](Link&, const std::string& why) { closed = why; };
        return cb;
    };
    auto la = std::make_shared<Link>(p.io.get_executor(), std::make_shared<ice::IceStream>(p.a),
                                     crypto::TlsEngine::Role::client, *alice, bob->id(), nullptr,
                                     LinkTimeouts{}, callbacks(a_closed));
    auto lb = std::make_shared<Link>(
        p.io.get_executor(), std::make_shared<ice::IceStream>(p.b), crypto::TlsEngine::Role::server, *bob,
        std::nullopt, [](const UserId&) { return false; }, LinkTimeouts{}, callbacks(b_closed));
    lb->start();
    la->start();
    REQUIRE(run_until(p.io, [&] { return !a_closed.empty() && !b_closed.empty(); }));
    CHECK(!la->is_open());
    CHECK(!lb->is_open());
}

// ---- juiced with --ice on ----------------------------------------------------

#include "call_flow.hpp"
#include "harness.hpp"

namespace {

using json = nlohmann::json;

std::optional<json> link_up(juice::test::EventWatcher& w, const std::string& id,
                            std::chrono::milliseconds t) {
    return w.wait_for([&](const json& e) { return e["type"] == "link" && e["id"] == id && e["up"] == true; },
                      t);
}

// Starts both, makes them contacts and waits for a's link to b.
std::optional<json> start_and_link(juice::test::Juiced& a, juice::test::Juiced& b) {
    REQUIRE(a.start());
    REQUIRE(b.start());
    juice::test::EventWatcher ea(a);
    juice::test::befriend(a, b);
    return link_up(ea, b.id(), 20s);
}

}  // namespace

TEST_CASE("ice: two juiced with --ice on link over ICE, and messages flow", "[ice][daemon]") {
    using namespace juice::test;
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot, {"--ice", "on"}), b("bob", dir.path(), boot, {"--ice", "on"});
    auto up = start_and_link(a, b);
    EventWatcher ea(a);
    REQUIRE(up);
    INFO(up->dump());
    // Loopback host candidates (--link-bind 127.0.0.1): a host path.
    CHECK((*up)["path"] == "host");
    CHECK((*up)["remote"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
    if (up->contains("setup_ms")) WARN("ice link setup: " << (*up)["setup_ms"] << " ms");
    CHECK(contact_entry(a, b.id())["link_path"] == "host");
    CHECK(contact_entry(b, a.id())["link_path"] == "host");

    for (int i = 0; i < 5; ++i) {
        auto m = a.call("messages.send", {{"to", b.id()}, {"text", "over ice " + std::to_string(i)}});
        REQUIRE(ea.wait_for(
            [&](const json& e) {
                return e["type"] == "message.state" && e["msg_id"] == m["msg_id"] &&
                       e["state"] == "delivered";
            },
            10s));
    }
    auto hist = b.call("messages.history", {{"with", a.id()}});
    CHECK(hist.size() == 5);
    CHECK(a.stop() == 0);
    CHECK(b.stop() == 0);
}

TEST_CASE("ice: a peer without ICE is linked over TCP", "[ice][daemon]") {
    using namespace juice::test;
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot, {"--ice", "on"}), b("bob", dir.path(), boot, {"--ice", "off"});
    auto up = start_and_link(a, b);
    REQUIRE(up);
    CHECK((*up)["path"] == "tcp");
    CHECK(contact_entry(a, b.id())["link_path"] == "tcp");
}

TEST_CASE("ice: a call over an ICE link takes an ICE session of its own, and the speech arrives",
          "[ice][daemon]") {
    using namespace juice::test;
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    std::vector<std::string> args{"--ice", "on", "--audio", "null"};
    Juiced a("alice", dir.path(), boot, args), b("bob", dir.path(), boot, args);
    auto up = start_and_link(a, b);
    REQUIRE(up);
    REQUIRE((*up)["path"] == "host");
    auto speech = make_speech(dir.path());
    auto r = speech_call(a, b, speech, dir.path() / "rec.wav");
    // The audio took its own ICE pair (host candidates on loopback), not the
    // UDP port of a TCP-era offer.
    CHECK(r.caller_stats["path"] == "host");
    CHECK(r.callee_stats["path"] == "host");
    CHECK(r.caller_stats["remote"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
    CHECK(audio::check(r.cmp, audio::k_clean_call) == "");
    CHECK(a.stop() == 0);
    CHECK(b.stop() == 0);
}
