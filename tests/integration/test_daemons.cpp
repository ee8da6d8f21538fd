// Real juiced daemons on loopback, a real stock dhtnode as their only
// bootstrap, driven through their API sockets. Waits poll with deadlines.
#include "harness.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <fstream>

using namespace juice::test;
using json = nlohmann::json;

namespace {

auto presence_of(const std::string& id, const std::string& status) {
    return [=](const json& e) { return e["type"] == "presence" && e["id"] == id && e["status"] == status; };
}

auto link_of(const std::string& id, bool up) {
    return [=](const json& e) { return e["type"] == "link" && e["id"] == id && e["up"] == up; };
}

auto message_state(const std::string& msg_id, const std::string& state) {
    return [=](const json& e) {
        return e["type"] == "message.state" && e["msg_id"] == msg_id && e["state"] == state;
    };
}

std::vector<std::string> texts(const json& history) {
    std::vector<std::string> out;
    for (auto& m : history) out.push_back(m["text"].get<std::string>());
    return out;
}

}  // namespace

TEST_CASE("buddies: presence, links, messages, offline delivery and restarts", "[daemon]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot), c("carol", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    REQUIRE(c.start());
    INFO("alice " << a.id() << " bob " << b.id() << " carol " << c.id());

    // Adding oneself is refused with a clear reason.
    REQUIRE_THROWS_WITH(a.call("contacts.add", {{"id", a.id()}}), Catch::Contains("your own id"));

    EventWatcher ea(a), eb(b);
    // Every pair becomes mutual contacts.
    for (auto* x : {&a, &b, &c})
        for (auto* y : {&a, &b, &c})
            if (x != y)
                CHECK(x->call("contacts.add", {{"id", y->id()}, {"name", y->name()}})["state"] ==
                      "pending_out");

    // Links come up and contacts turn mutual on both sides.
    REQUIRE(ea.wait_for(link_of(b.id(), true), 20s));
    REQUIRE(eb.wait_for(link_of(a.id(), true), 20s));
    REQUIRE(wait_until([&] { return contact_entry(a, b.id())["state"] == "mutual"; }, 10s));
    REQUIRE(wait_until([&] { return contact_entry(b, a.id())["linked"] == true; }, 10s));
    REQUIRE(wait_until([&] { return contact_entry(c, a.id())["linked"] == true; }, 20s));

    // Presence: online -> away with a note -> offline.
    REQUIRE(ea.wait_for(presence_of(b.id(), "online"), 10s));
    b.call("presence.set", {{"status", "away"}, {"note", "lunch"}});
    auto away = ea.wait_for(presence_of(b.id(), "away"), 10s);
    REQUIRE(away);
    CHECK((*away)["note"] == "lunch");
    CHECK(contact_entry(a, b.id())["status"] == "away");

    // Messages both ways reach delivered; the receiver gets message.received.
    auto m1 = a.call("messages.send", {{"to", b.id()}, {"text", "hi bob"}});
    REQUIRE(ea.wait_for(message_state(m1["msg_id"], "delivered"), 10s));
    auto got = eb.wait_for(
        [&](const json& e) { return e["type"] == "message.received" && e["msg_id"] == m1["msg_id"]; }, 10s);
    REQUIRE(got);
    CHECK((*got)["from"] == a.id());
    CHECK((*got)["text"] == "hi bob");
    auto m2 = b.call("messages.send", {{"to", a.id()}, {"text", "hi alice ☕"}});
    REQUIRE(eb.wait_for(message_state(m2["msg_id"], "delivered"), 10s));

    // Clean shutdown of bob: alice sees him offline at once through the bye.
    REQUIRE(b.stop() == 0);
    auto off = ea.wait_for(presence_of(b.id(), "offline"), 5s);
    REQUIRE(off);
    CHECK((*off)["online"] == false);
    REQUIRE(ea.wait_for(link_of(b.id(), false), 5s));

    // A message to bob while he is down waits: queued, then sent to his DHT inbox.
    auto m3 = a.call("messages.send", {{"to", b.id()}, {"text", "are you there?"}});
    auto hist = a.call("messages.history", {{"with", b.id()}});
    REQUIRE(hist.size() == 3);
    CHECK((hist.back()["state"] == "queued" || hist.back()["state"] == "sent"));

    // Bob comes back: the link returns and the waiting message is delivered.
    REQUIRE(b.start());
    REQUIRE(ea.wait_for(message_state(m3["msg_id"], "delivered"), 20s));
    REQUIRE(ea.wait_for(presence_of(b.id(), "away"), 10s));  // his status survived the restart

    // History is intact on both sides, in order, after restarts of both.
    REQUIRE(a.stop() == 0);
    REQUIRE(a.start());
    std::vector<std::string> want{"hi bob", "hi alice ☕", "are you there?"};
    CHECK(texts(a.call("messages.history", {{"with", b.id()}})) == want);
    CHECK(texts(b.call("messages.history", {{"with", a.id()}})) == want);
    for (auto& m : b.call("messages.history", {{"with", a.id()}})) CHECK(m["state"] == "delivered");
    for (auto& m : a.call("messages.history", {{"with", b.id()}})) CHECK(m["state"] == "delivered");
    // Paging: the newest one, then the page before it.
    auto last = a.call("messages.history", {{"with", b.id()}, {"limit", 1}});
    REQUIRE(last.size() == 1);
    CHECK(last[0]["text"] == "are you there?");
    auto before = a.call("messages.history", {{"with", b.id()}, {"limit", 5}, {"before", last[0]["seq"]}});
    CHECK(texts(before) == std::vector<std::string>{"hi bob", "hi alice ☕"});

    // The contact list survived the restart too.
    CHECK(contact_entry(a, b.id())["state"] == "mutual");
    CHECK(contact_entry(a, c.id())["name"] == "carol");
    CHECK(a.stop() == 0);
    CHECK(b.stop() == 0);
    CHECK(c.stop() == 0);
}

TEST_CASE("buddies: a contact offline for a while is no longer listened to, and its knock wakes us",
          "[daemon]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    const std::vector<std::string> args{"--presence-dormant-after", "2"};
    Juiced a("alice", dir.path(), boot, args), b("bob", dir.path(), boot, args);
    REQUIRE(a.start());
    REQUIRE(b.start());
    befriend(a, b);
    // The one with the lower id dials: make it the one who stays, so that
    // nothing but the other's knock can tell it the other is back (its poll
    // is an hour away).
    Juiced& stay = a.id() < b.id() ? a : b;
    Juiced& leave = a.id() < b.id() ? b : a;
    INFO("stays " << stay.name() << " " << stay.id() << ", leaves " << leave.name() << " " << leave.id());
    REQUIRE(wait_until([&] { return contact_entry(stay, leave.id())["linked"] == true; }, 20s));
    CHECK(contact_entry(stay, leave.id())["watch"] == "listening");

    EventWatcher es(stay);
    REQUIRE(leave.stop() == 0);
    REQUIRE(es.wait_for(presence_of(leave.id(), "offline"), 10s));
    // 2 s offline, then the next sweep (every 5 s) puts the listen to sleep.
    REQUIRE(wait_until([&] { return contact_entry(stay, leave.id())["watch"] == "dormant"; }, 20s));
    CHECK(contact_entry(stay, leave.id())["online"] == false);

    // Back: it sees us live, knocks, we wake, see its record and dial.
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(leave.start());
    REQUIRE(es.wait_for(presence_of(leave.id(), "online"), 30s));
    REQUIRE(es.wait_for(link_of(leave.id(), true), 30s));
    WARN("back online -> linked again through a knock: "
         << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
                .count()
         << " ms (including its start)");
    CHECK(contact_entry(stay, leave.id())["watch"] == "listening");
    CHECK(stay.log().find("it knocked") != std::string::npos);
    CHECK(stay.stop() == 0);
    CHECK(leave.stop() == 0);
}

TEST_CASE("a link from a non-contact is refused", "[daemon]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced x("x", dir.path(), boot), y("y", dir.path(), boot);
    REQUIRE(x.start());
    REQUIRE(y.start());
    // The lower id dials; make it the stranger, so it really tries.
    Juiced& stranger = x.id() < y.id() ? x : y;
    Juiced& target = x.id() < y.id() ? y : x;
    INFO("stranger " << stranger.id() << " target " << target.id());
    EventWatcher es(stranger), et(target);
    stranger.call("contacts.add", {{"id", target.id()}});

    // The stranger dials (its log says so) and the target refuses the key.
    REQUIRE(wait_until([&] { return target.log().find("refused") != std::string::npos; }, 20s));
    CHECK(target.log().find(stranger.id()) != std::string::npos);
    CHECK_FALSE(contact_entry(stranger, target.id())["linked"].get<bool>());
    CHECK(contact_entry(stranger, target.id())["state"] == "pending_out");
    CHECK_FALSE(et.wait_for(link_of(stranger.id(), true), 500ms));
    CHECK_FALSE(es.wait_for(link_of(target.id(), true), 10ms));

    // Once the target adds the stranger back, the link forms.
    target.call("contacts.add", {{"id", stranger.id()}});
    REQUIRE(es.wait_for(link_of(target.id(), true), 20s));
    CHECK(contact_entry(target, stranger.id())["state"] == "mutual");
}

TEST_CASE("juiced refuses bad passphrases and damaged keys without touching them", "[daemon][identity]") {
    TempDir dir;
    auto data = dir.path() / "data";
    std::vector<std::string> base{
        "--data-dir",         data.string(), "--api-socket", (dir.path() / "s.sock").string(),
        "--network",          "9",           "--bootstrap",  "127.0.0.1:9",
        "--no-lan-discovery", "--key-bits",  "2048"};
    auto run = [&](std::vector<std::string> extra, const std::string& tag) {
        auto args = base;
        args.insert(args.end(), extra.begin(), extra.end());
        auto p = std::make_unique<Process>(juiced_path(), args, dir.path() / (tag + ".log"));
        return p;
    };
    // No passphrase source and no terminal: refuse, create nothing.
    auto p1 = run({}, "nopass");
    CHECK(p1->wait(20s) == 3);
    CHECK(p1->log().find("--passphrase-file") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(data / "identity.key"));

    // Create an encrypted identity, then stop it cleanly.
    {
        std::ofstream(dir.path() / "good") << "correct horse\n";
        auto p2 = run({"--passphrase-file", (dir.path() / "good").string()}, "create");
        REQUIRE(wait_until(
            [&] { return juice::node::api::ApiClient::connect(dir.path() / "s.sock", 100ms).ok(); }, 30s));
        p2->signal(SIGTERM);
        CHECK(p2->wait(10s) == 0);
    }
    auto key = data / "identity.key";
    REQUIRE(std::filesystem::exists(key));
    CHECK((std::filesystem::status(key).permissions() & std::filesystem::perms::all) ==
          (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
    auto read = [](const std::filesystem::path& f) {
        std::ifstream in(f, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(in), {});
    };
    auto original = read(key);

    // Wrong passphrase: exit 3, a clear message, the key unchanged.
    std::ofstream(dir.path() / "bad") << "wrong\n";
    auto p3 = run({"--passphrase-file", (dir.path() / "bad").string()}, "wrong");
    CHECK(p3->wait(20s) == 3);
    CHECK(p3->log().find("passphrase is wrong") != std::string::npos);
    CHECK(read(key) == original);

    // A truncated key file: exit 3, no crash, the file left as it is.
    std::ofstream(key, std::ios::binary | std::ios::trunc) << original.substr(0, 200);
    auto p4 = run({"--passphrase-file", (dir.path() / "good").string()}, "damaged");
    CHECK(p4->wait(20s) == 3);
    CHECK(p4->log().find("damaged") != std::string::npos);
    CHECK(read(key) == original.substr(0, 200));
}

TEST_CASE("a second juiced on the same data dir refuses to start", "[daemon]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced first("solo", dir.path(), boot);
    REQUIRE(first.start());
    // Same data dir, another API socket: the database must not be shared.
    Process second(juiced_path(),
                   {"--data-dir", first.data_dir().string(), "--api-socket",
                    (dir.path() / "other.sock").string(), "--network", std::to_string(boot.network()),
                    "--bootstrap", boot.address(), "--no-lan-discovery", "--no-passphrase"},
                   dir.path() / "second.log");
    CHECK(second.wait(20s) == 1);
    CHECK(second.log().find("already using") != std::string::npos);
    // The first one is unharmed.
    CHECK(first.call("identity.get")["id"] == first.id());
    CHECK(first.stop() == 0);
}
