// Contact requests, offline delivery through the DHT inbox, receipts and
// typing, between real juiced daemons and a real stock dhtnode on loopback.
#include "harness.hpp"

// Before Catch: OpenDHT's logger has a member called WARN.
#include <opendht/dhtrunner.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <fstream>
#include <random>

#include <signal.h>

using namespace juice::test;
using json = nlohmann::json;
using std::chrono::steady_clock;

namespace {

auto event_of(const std::string& type, const std::string& key, const std::string& value) {
    return [=](const json& e) { return e["type"] == type && e.value(key, std::string()) == value; };
}

auto state_of(const std::string& id, const std::string& state) {
    return
        [=](const json& e) { return e["type"] == "contact.state" && e["id"] == id && e["state"] == state; };
}

auto message_state(const std::string& msg_id, const std::string& state) {
    return [=](const json& e) {
        return e["type"] == "message.state" && e["msg_id"] == msg_id && e["state"] == state;
    };
}

double ms_since(steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(steady_clock::now() - t).count();
}

// How many inbox values of `kind` `from` has seen stored for `to` (from its
// debug log, which accumulates over restarts).
std::size_t stored_for(Juiced& from, Juiced& to, const std::string& kind) {
    auto log = from.log();
    auto needle = "inbox: stored a " + kind + " value for " + to.id().substr(0, 8);
    std::size_t n = 0;
    for (auto pos = log.find(needle); pos != std::string::npos; pos = log.find(needle, pos + 1)) ++n;
    return n;
}

}  // namespace

TEST_CASE("contact requests: request, accept, reject, block, merged repeats", "[daemon][request]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot, {"--inbox-refresh", "1"}), b("bob", dir.path(), boot),
        c("carol", dir.path(), boot, {"--inbox-refresh", "1"}), d("dave", dir.path(), boot);
    for (auto* x : {&a, &b, &c, &d}) REQUIRE(x->start());
    EventWatcher ea(a), eb(b), ec(c);

    // alice asks bob: he gets one contact.request with her name and message.
    auto t0 = steady_clock::now();
    CHECK(a.call("contacts.add", {{"id", b.id()}, {"message", "hi bob, it's alice"}})["state"] ==
          "pending_out");
    auto req = eb.wait_for(event_of("contact.request", "id", a.id()), 20s);
    REQUIRE(req);
    WARN("contact request: contacts.add -> contact.request in " << ms_since(t0) << " ms");
    CHECK((*req)["name"] == "alice");
    CHECK((*req)["message"] == "hi bob, it's alice");
    auto pending = contact_entry(b, a.id());
    CHECK(pending["state"] == "pending_in");
    CHECK(pending["message"] == "hi bob, it's alice");
    CHECK(pending["linked"] == false);  // no link before he says yes
    // alice keeps re-putting the request (every second here): still one request.
    REQUIRE(wait_until([&] { return a.log().find("inbox: refreshed") != std::string::npos; }, 10s));
    CHECK_FALSE(eb.wait_for(event_of("contact.request", "id", a.id()), 2500ms));

    // bob accepts: both mutual, a link forms, messages flow.
    b.call("contacts.accept", {{"id", a.id()}});
    REQUIRE(ea.wait_for(state_of(b.id(), "mutual"), 20s));
    REQUIRE(wait_until([&] { return contact_entry(b, a.id())["linked"] == true; }, 20s));
    auto m = a.call("messages.send", {{"to", b.id()}, {"text", "thanks!"}});
    REQUIRE(ea.wait_for(message_state(m["msg_id"], "delivered"), 10s));
    REQUIRE_THROWS_WITH(b.call("contacts.accept", {{"id", a.id()}}), Catch::Contains("no contact request"));

    // carol asks bob; he declines: she learns it, and her re-puts stay declined.
    c.call("contacts.add", {{"id", b.id()}, {"message", "remember me?"}});
    REQUIRE(eb.wait_for(event_of("contact.request", "id", c.id()), 20s));
    b.call("contacts.reject", {{"id", c.id()}});
    REQUIRE(ec.wait_for(state_of(b.id(), "rejected"), 20s));
    CHECK(contact_entry(c, b.id()).is_null());
    CHECK(contact_entry(b, c.id()).is_null());
    CHECK_FALSE(eb.wait_for(event_of("contact.request", "id", c.id()), 2500ms));

    // dave asks bob; bob blocks him: no answer, no link, no presence watch,
    // and his later requests vanish.
    d.call("contacts.add", {{"id", b.id()}});
    REQUIRE(eb.wait_for(event_of("contact.request", "id", d.id()), 20s));
    b.call("contacts.block", {{"id", d.id()}});
    CHECK(contact_entry(b, d.id())["state"] == "blocked");
    d.call("contacts.remove", {{"id", b.id()}});
    d.call("contacts.add", {{"id", b.id()}, {"message", "again"}});
    CHECK_FALSE(eb.wait_for(event_of("contact.request", "id", d.id()), 3s));
    CHECK(contact_entry(d, b.id())["state"] == "pending_out");
    CHECK(contact_entry(b, d.id())["linked"] == false);
    REQUIRE_THROWS_WITH(b.call("messages.send", {{"to", d.id()}, {"text", "x"}}), Catch::Contains("blocked"));
}

TEST_CASE("contact request between two who are never online together", "[daemon][request]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot);
    // bob has been online once (his certificate is on the DHT), then left.
    REQUIRE(b.start());
    REQUIRE(b.stop() == 0);
    REQUIRE(a.start());
    a.call("contacts.add", {{"id", b.id()}, {"message", "while you were out"}});
    // (Her key lookup finds his certificate on the DHT; the put is confirmed.)
    REQUIRE(wait_until([&] { return stored_for(a, b, "control") >= 1; }, 20s));
    REQUIRE(a.stop() == 0);

    // bob comes back while alice is away: the request waits in his inbox.
    REQUIRE(b.start());
    REQUIRE(wait_until([&] { return contact_entry(b, a.id())["state"] == "pending_in"; }, 20s));
    CHECK(contact_entry(b, a.id())["message"] == "while you were out");
    b.call("contacts.accept", {{"id", a.id()}});
    auto m = b.call("messages.send", {{"to", a.id()}, {"text", "welcome"}});
    REQUIRE(wait_until(
        [&] {
            return b.call("messages.history", {{"with", a.id()}})[0]["state"] == "sent";
        },
        10s));
    REQUIRE(wait_until([&] { return stored_for(b, a, "control") >= 1; }, 20s));  // the answer
    REQUIRE(wait_until([&] { return stored_for(b, a, "messages") >= 1; }, 20s));
    REQUIRE(b.stop() == 0);

    // alice comes back while bob is away: the answer and his message wait for her.
    REQUIRE(a.start());
    REQUIRE(wait_until([&] { return contact_entry(a, b.id())["state"] == "mutual"; }, 20s));
    REQUIRE(wait_until([&] { return a.call("messages.history", {{"with", b.id()}}).size() == 1; }, 20s));
    CHECK(a.call("messages.history", {{"with", b.id()}})[0]["text"] == "welcome");
    // Her ack goes to bob's inbox; he sees it delivered when he is back, alone.
    REQUIRE(wait_until([&] { return stored_for(a, b, "acks") >= 1; }, 20s));
    REQUIRE(a.stop() == 0);
    REQUIRE(b.start());
    REQUIRE(wait_until(
        [&] {
            return b.call("messages.history", {{"with", a.id()}})[0]["state"] == "delivered";
        },
        20s));
    CHECK(m["msg_id"] == b.call("messages.history", {{"with", a.id()}})[0]["msg_id"]);
}

TEST_CASE("offline delivery: messages wait in the DHT inbox, arrive once, in order", "[daemon][inbox]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    befriend(a, b);
    EventWatcher ea(a, {"message.*"});

    // bob leaves; alice writes; her messages go to his inbox (state sent).
    REQUIRE(b.stop() == 0);
    REQUIRE(wait_until([&] { return contact_entry(a, b.id())["linked"] == false; }, 10s));
    std::vector<std::string> ids;
    for (int i = 0; i < 5; ++i)
        ids.push_back(
            a.call("messages.send", {{"to", b.id()}, {"text", "offline " + std::to_string(i)}})["msg_id"]);
    for (auto& id : ids) REQUIRE(ea.wait_for(message_state(id, "sent"), 10s));
    // alice leaves too: nobody who sent anything is online now.
    REQUIRE(a.stop() == 0);

    // bob starts alone and finds the messages in his inbox.
    auto t0 = steady_clock::now();
    REQUIRE(b.start());
    // (They may arrive before any client could subscribe: read the history.)
    REQUIRE(wait_until([&] { return b.call("messages.history", {{"with", a.id()}}).size() == 5; }, 20s));
    WARN("offline delivery: bob start -> 5 messages from his inbox in his history in " << ms_since(t0)
                                                                                       << " ms");
    EventWatcher eb(b, {"message.*"});
    auto hist = b.call("messages.history", {{"with", a.id()}});
    REQUIRE(hist.size() == 5);
    for (int i = 0; i < 5; ++i) CHECK(hist[i]["text"] == "offline " + std::to_string(i));

    // alice comes back: the link forms, she resends what she has not seen
    // acked, bob drops the duplicates; everything ends delivered, once.
    REQUIRE(a.start());
    REQUIRE(wait_until(
        [&] {
            for (auto& m : a.call("messages.history", {{"with", b.id()}}))
                if (m["state"] != "delivered") return false;
            return true;
        },
        20s));
    CHECK(b.call("messages.history", {{"with", a.id()}}).size() == 5);
    CHECK_FALSE(eb.wait_for([](const json& e) { return e["type"] == "message.received"; }, 1s));
}

TEST_CASE("read receipts and typing, and turning them off", "[daemon][receipts]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    befriend(a, b);
    EventWatcher ea(a, {"message.*", "typing"});

    auto m1 = a.call("messages.send", {{"to", b.id()}, {"text", "one"}});
    auto m2 = a.call("messages.send", {{"to", b.id()}, {"text", "two"}});
    REQUIRE(ea.wait_for(message_state(m2["msg_id"], "delivered"), 10s));
    CHECK(b.call("messages.mark_read", {{"with", a.id()}, {"up_to", m2["msg_id"]}})["marked"] == 2);
    REQUIRE(ea.wait_for(message_state(m1["msg_id"], "read"), 10s));
    REQUIRE(ea.wait_for(message_state(m2["msg_id"], "read"), 10s));
    CHECK(a.call("messages.history", {{"with", b.id()}})[1]["state"] == "read");
    REQUIRE_THROWS_WITH(b.call("messages.mark_read", {{"with", a.id()}, {"up_to", "00"}}),
                        Catch::Contains("up_to"));

    // Typing shows, and expires by itself about 10 s later.
    CHECK(b.call("typing.set", {{"to", a.id()}, {"typing", true}})["sent"] == true);
    auto t0 = steady_clock::now();
    REQUIRE(ea.wait_for([&](const json& e) { return e["type"] == "typing" && e["typing"] == true; }, 5s));
    REQUIRE(ea.wait_for([&](const json& e) { return e["type"] == "typing" && e["typing"] == false; }, 15s));
    auto took = ms_since(t0);
    CHECK(took > 8000);
    CHECK(took < 13000);

    // bob turns receipts and typing off: alice sees neither.
    auto s = b.call("settings.set", {{"read_receipts", false}, {"typing", false}});
    CHECK(s["read_receipts"] == false);
    auto m3 = a.call("messages.send", {{"to", b.id()}, {"text", "three"}});
    REQUIRE(ea.wait_for(message_state(m3["msg_id"], "delivered"), 10s));
    b.call("messages.mark_read", {{"with", a.id()}, {"up_to", m3["msg_id"]}});
    CHECK(b.call("typing.set", {{"to", a.id()}, {"typing", true}})["sent"] == false);
    // A message from bob is a barrier: the link is ordered, so a receipt
    // sent before it would have arrived first.
    auto back = b.call("messages.send", {{"to", a.id()}, {"text", "ok"}});
    REQUIRE(ea.wait_for(
        [&](const json& e) { return e["type"] == "message.received" && e["msg_id"] == back["msg_id"]; },
        10s));
    CHECK(a.call("messages.history", {{"with", b.id()}})[2]["state"] == "delivered");
    CHECK(b.call("settings.get") == json{{"read_receipts", false}, {"typing", false}});
}

TEST_CASE("invisible: offline on the DHT, still online to linked contacts", "[daemon][presence]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot), c("carol", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    REQUIRE(c.start());
    befriend(a, b);
    // carol asked for bob and waits: she only sees his DHT record.
    c.call("contacts.add", {{"id", b.id()}});
    REQUIRE(wait_until([&] { return contact_entry(c, b.id())["online"] == true; }, 20s));
    auto seen_before = contact_entry(c, b.id())["last_seen"].get<std::int64_t>();
    CHECK(seen_before > 0);

    b.call("presence.set", {{"status", "invisible"}});
    REQUIRE(wait_until([&] { return contact_entry(c, b.id())["status"] == "offline"; }, 20s));
    CHECK(contact_entry(c, b.id())["online"] == false);
    // alice, linked, still sees him online and they still talk.
    CHECK(contact_entry(a, b.id())["online"] == true);
    CHECK(contact_entry(a, b.id())["status"] == "online");
    EventWatcher ea(a, {"message.*"});
    auto m = b.call("messages.send", {{"to", a.id()}, {"text", "psst"}});
    REQUIRE(ea.wait_for(
        [&](const json& e) { return e["type"] == "message.received" && e["msg_id"] == m["msg_id"]; }, 10s));
    // Back to online: carol sees it again.
    b.call("presence.set", {{"status", "online"}});
    REQUIRE(wait_until([&] { return contact_entry(c, b.id())["status"] == "online"; }, 20s));
    CHECK(contact_entry(c, b.id())["last_seen"].get<std::int64_t>() >= seen_before);
}

TEST_CASE("a flood of junk at a user's inbox and presence keys blinds no one", "[daemon][hostile][flood]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot), c("carol", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    REQUIRE(c.start());
    befriend(a, b);
    // carol asked alice and waits: she only sees alice's DHT record.
    c.call("contacts.add", {{"id", a.id()}});
    REQUIRE(wait_until([&] { return contact_entry(c, a.id())["online"] == true; }, 20s));
    REQUIRE(b.stop() == 0);

    // Mallory, a plain OpenDHT node, fills bob's inbox and alice's presence
    // key with junk: random bytes of the inbox type, unsigned and signed
    // fake presence records.
    ::dht::DhtRunner mallory;
    mallory.run(0, ::dht::crypto::generateIdentity("mallory", {}, 2048), true, boot.network());
    mallory.bootstrap("127.0.0.1", std::to_string(boot.port()));
    REQUIRE(wait_until([&] { return mallory.getNodesStats(AF_INET).good_nodes > 0; }, 10s));
    auto inbox_key = ::dht::InfoHash::get("juice:inbox:" + b.id());
    auto presence_key = ::dht::InfoHash::get("juice:presence:" + a.id());
    std::atomic<int> done{0};
    const int k_junk = 300;
    std::mt19937_64 rng(42);
    for (int i = 0; i < k_junk; ++i) {
        ::dht::Blob junk(200 + rng() % 2000);
        for (auto& x : junk) x = static_cast<std::uint8_t>(rng());
        mallory.put(inbox_key, ::dht::Value(0x4a49, junk, rng() | 1), [&](bool) { ++done; });
        auto fake = std::make_shared<::dht::Value>(0x4a50, junk, rng() | 1);
        if (i % 2)
            mallory.putSigned(presence_key, fake, [&](bool) { ++done; });
        else
            mallory.put(presence_key, fake, [&](bool) { ++done; });
    }
    REQUIRE(wait_until([&] { return done == 2 * k_junk; }, 60s));

    // alice writes to bob through his (flooded) inbox; bob starts and gets it.
    auto m = a.call("messages.send", {{"to", b.id()}, {"text", "through the junk"}});
    REQUIRE(wait_until(
        [&] {
            return a.call("messages.history", {{"with", b.id()}}).back()["state"] == "sent";
        },
        20s));
    REQUIRE(a.stop() == 0);
    auto t0 = steady_clock::now();
    REQUIRE(b.start());
    REQUIRE(wait_until([&] { return !b.call("messages.history", {{"with", a.id()}}).empty(); }, 30s));
    WARN("flood: bob got the message past " << k_junk << " junk inbox values in " << ms_since(t0) << " ms");
    CHECK(b.call("messages.history", {{"with", a.id()}}).back()["msg_id"] == m["msg_id"]);
    auto info = b.call("node.info");
    INFO(info.dump());
    CHECK(info["dht"]["inbox_backlog"].get<int>() >= 0);

    // alice comes back and changes her status: carol, watching the flooded
    // presence key, still sees the real record and only that.
    REQUIRE(a.start());
    a.call("presence.set", {{"status", "busy"}, {"note", "real"}});
    REQUIRE(wait_until([&] { return contact_entry(c, a.id())["status"] == "busy"; }, 20s));
    CHECK(contact_entry(c, a.id())["note"] == "real");
    mallory.join();
}

TEST_CASE("a peer that stops reading: the link queue stays bounded, nothing is lost",
          "[daemon][hostile][backpressure]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    befriend(a, b);
    // bob freezes (SIGSTOP): his socket buffers fill and alice's link queue
    // would grow with every message; 300 x 60 KiB is ~18 MiB: past what the
    // kernel's socket buffers absorb, over the 8 MiB high-water mark.
    ::kill(b.pid(), SIGSTOP);
    const int n = 300;
    std::string text(60 * 1024, 'q');
    const long rss_before = proc_rss_kib(a.pid());
    for (int i = 0; i < n; ++i) {
        text[0] = static_cast<char>('A' + i % 26);
        a.call("messages.send", {{"to", b.id()}, {"text", text}});
    }
    const long rss_peak = proc_rss_kib(a.pid());
    CHECK(a.log().find("link queue full, pausing") != std::string::npos);
    ::kill(b.pid(), SIGCONT);
    REQUIRE(wait_until(
        [&] {
            auto h = a.call("messages.history", {{"with", b.id()}, {"limit", n}});
            if (h.size() != static_cast<std::size_t>(n)) return false;
            for (auto& m : h)
                if (m["state"] != "delivered") return false;
            return true;
        },
        60s, 250ms));
    auto hb = b.call("messages.history", {{"with", a.id()}, {"limit", n}});
    REQUIRE(hb.size() == static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) CHECK(hb[i]["text"].get<std::string>()[0] == static_cast<char>('A' + i % 26));
    WARN("backpressure: alice's RSS before " << rss_before << " KiB, at the peak " << rss_peak << " KiB");
}
