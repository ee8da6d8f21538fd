// juice notify's core: events and a driven clock in, notifications out.
// No bus, no daemon, no sleeps: time is a number these tests move.
#include "notify/notifier.hpp"

#include <catch2/catch.hpp>

#include <string>

using namespace juice::notify;
using namespace std::chrono_literals;

namespace {

const std::string k_alice = "a11ce00000000000000000000000000000000001";
const std::string k_bob = "b0b0000000000000000000000000000000000002";
const std::string k_carol = "ca401000000000000000000000000000000000003";
const std::string k_dave = "da7e000000000000000000000000000000000004";

const Clock::time_point t0 = Clock::time_point{} + 1000h;

json contacts(bool alice_online = false, bool bob_online = false) {
    return json::array({
        {{"id", k_alice}, {"name", "Alice"}, {"state", "mutual"}, {"online", alice_online}, {"note", ""}},
        {{"id", k_bob}, {"name", "Bob"}, {"state", "mutual"}, {"online", bob_online}, {"note", "at work"}},
    });
}

json message(const std::string& from, const std::string& text) {
    return {{"type", "message.received"},
            {"msg_id", "00"},
            {"from", from},
            {"text", text},
            {"ts", 1},
            {"seq", 1}};
}

json presence(const std::string& id, bool online, const std::string& note = "") {
    return {{"type", "presence"}, {"id", id},         {"status", online ? "online" : "offline"},
            {"note", note},       {"caps", {"text"}}, {"online", online}};
}

json request(const std::string& id, const std::string& name, const std::string& text) {
    return {{"type", "contact.request"}, {"id", id}, {"name", name}, {"message", text}};
}

// A notifier knowing Alice and Bob (both offline), window 400 ms, interval 3 s.
Notifier make(NotifierOptions options = {}) {
    Notifier n(options);
    n.set_contacts(contacts(), ContactsUpdate::initial, t0);
    return n;
}

void feed(Notifier& n, const json& event, Clock::time_point now) {
    (void)n.on_event(event, now);
}

bool valid_utf8(const std::string& s) {
    return clean_text(s, true) == s;
}

std::size_t code_points(const std::string& s) {
    std::size_t count = 0;
    for (char c : s)
        if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++count;
    return count;
}

}  // namespace

TEST_CASE("notify: a message shows the sender's name and the text after the window", "[notify]") {
    Notifier n = make();
    CHECK_FALSE(n.next_due());
    CHECK(n.on_event(message(k_alice, "hi there"), t0) == Followup::none);
    REQUIRE(n.next_due());
    CHECK(*n.next_due() == t0 + 400ms);
    CHECK_FALSE(n.poll(t0));
    CHECK_FALSE(n.poll(t0 + 399ms));
    auto shown = n.poll(t0 + 400ms);
    REQUIRE(shown);
    CHECK(shown->summary == "Alice");
    CHECK(shown->body == "hi there");
    CHECK(shown->category == "im.received");
    CHECK(shown->urgency == Urgency::normal);
    CHECK(shown->replace_key == "messages:" + k_alice);
    // Shown once: nothing is held any more.
    CHECK_FALSE(n.next_due());
    CHECK_FALSE(n.poll(t0 + 10s));
}

TEST_CASE("notify: names come from contacts.list, else the event, else a short id", "[notify]") {
    Notifier n = make();
    CHECK(n.name_of(k_alice) == "Alice");

    // An id not in the list: ask for the list once, show the short id meanwhile.
    CHECK(n.on_event(message(k_carol, "who am I"), t0) == Followup::refresh_names);
    CHECK(n.on_event(message(k_carol, "still me"), t0 + 1ms) == Followup::none);
    CHECK(n.name_of(k_carol) == k_carol.substr(0, 8));

    // The list answered before the notification was due: the name is used.
    json list = contacts();
    list.push_back({{"id", k_carol}, {"name", "Carol\n\x1b[31m"}, {"online", false}});
    n.set_contacts(list, ContactsUpdate::names, t0 + 2ms);
    auto shown = n.poll(t0 + 400ms);
    REQUIRE(shown);
    CHECK(shown->summary == "Carol \xEF\xBF\xBD[31m: 2 new messages");  // control characters defused

    // contact.request carries a name for strangers.
    feed(n, request(k_dave, "Dave", "hi, it's Dave"), t0 + 1s);
    CHECK(n.name_of(k_dave) == "Dave");
    // contact.state always refreshes the names.
    CHECK(n.on_event({{"type", "contact.state"}, {"id", k_dave}, {"state", "mutual"}}, t0 + 1s) ==
          Followup::refresh_names);
    // An empty name in the list falls back, too.
    n.set_contacts(json::array({{{"id", k_bob}, {"name", ""}}}), ContactsUpdate::names, t0 + 1s);
    CHECK(n.name_of(k_bob) == k_bob.substr(0, 8));
    CHECK(n.name_of("") == "someone");
}

TEST_CASE("notify: long and broken text is cut at a code point and made valid UTF-8", "[notify]") {
    Notifier n = make();
    std::string long_text;
    for (int i = 0; i < 300; ++i) long_text += "é";  // 2 bytes each
    feed(n, message(k_alice, long_text), t0);
    auto shown = n.poll(t0 + 1s);
    REQUIRE(shown);
    CHECK(code_points(shown->body) == 200);
    CHECK(shown->body.size() == 199 * 2 + 3);
    CHECK(shown->body.ends_with("é…"));
    CHECK(valid_utf8(shown->body));

    // A 4-byte emoji right at the cut is kept whole or left out, never split.
    std::string emoji = std::string(198, 'x') + "😀😀😀";
    CHECK(cut_text(emoji, 200) == std::string(198, 'x') + "😀…");
    CHECK(cut_text("short", 200) == "short");
    CHECK(cut_text("abc", 0).empty());

    // Invalid UTF-8, overlong forms, surrogates, C0/C1 controls.
    CHECK(clean_text("a\xff"
                     "b",
                     true) ==
          "a\xEF\xBF\xBD"
          "b");
    CHECK(clean_text("\xC0\xAF", true) == "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong '/'
    CHECK(clean_text("\xED\xA0\x80", true) == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
    CHECK(clean_text("\xE2\x82", true) == "\xEF\xBF\xBD\xEF\xBF\xBD");                  // truncated
    CHECK(clean_text("x\x1b[2Jy\x7f", true) == "x\xEF\xBF\xBD[2Jy\xEF\xBF\xBD");
    CHECK(clean_text("\xC2\x9B", true) == "\xEF\xBF\xBD");  // C1 CSI
    CHECK(clean_text("a\tb\nc", true) == "a b\nc");
    CHECK(clean_text("a\tb\nc", false) == "a b c");
    CHECK(clean_text("ünïcödé ☕ 😀", false) == "ünïcödé ☕ 😀");

    feed(n, message(k_alice, "bad \xff\xfe bytes\n\n"), t0 + 10s);
    shown = n.poll(t0 + 20s);
    REQUIRE(shown);
    CHECK(shown->body == "bad \xEF\xBF\xBD\xEF\xBF\xBD bytes");
}

TEST_CASE("notify: a burst becomes one notification", "[notify]") {
    Notifier n = make();

    SECTION("five messages from one contact") {
        for (int i = 0; i < 5; ++i) feed(n, message(k_alice, "m" + std::to_string(i + 1)), t0 + i * 50ms);
        CHECK(*n.next_due() == t0 + 400ms);  // held from the first one
        auto shown = n.poll(t0 + 400ms);
        REQUIRE(shown);
        CHECK(shown->summary == "Alice: 5 new messages");
        CHECK(shown->body == "m5");
        CHECK(shown->replace_key == "messages:" + k_alice);
        CHECK_FALSE(n.poll(t0 + 1h));
    }
    SECTION("messages from several contacts") {
        feed(n, message(k_alice, "a1"), t0);
        feed(n, message(k_bob, "b1"), t0 + 10ms);
        feed(n, message(k_alice, "a2"), t0 + 20ms);
        auto shown = n.poll(t0 + 400ms);
        REQUIRE(shown);
        CHECK(shown->summary == "3 new messages from 2 contacts");
        CHECK(shown->body == "Alice (2): a2\nBob: b1");
        CHECK(shown->replace_key == "messages");
    }
    SECTION("many contacts coming online at once") {
        for (const auto& id : {k_alice, k_bob, k_carol}) feed(n, presence(id, true), t0);
        auto shown = n.poll(t0 + 400ms);
        REQUIRE(shown);
        CHECK(shown->summary == "3 contacts came online");
        CHECK(shown->body == "Alice, Bob and " + k_carol.substr(0, 8));
        CHECK(shown->urgency == Urgency::low);
        CHECK(shown->category == "presence.online");
    }
    SECTION("several kinds at once: one combined summary") {
        feed(n, message(k_alice, "hello"), t0);
        feed(n, message(k_alice, "again"), t0 + 1ms);
        feed(n, request(k_dave, "Dave", "let me in"), t0 + 2ms);
        feed(n, presence(k_bob, true), t0 + 3ms);
        auto shown = n.poll(t0 + 400ms);
        REQUIRE(shown);
        CHECK(shown->summary == "2 new messages from Alice, 1 contact request, Bob is online");
        CHECK(shown->body == "Alice (2): again\nContact request from Dave");
        CHECK(shown->category == "im.received");
        CHECK(shown->replace_key == "juice");
        CHECK_FALSE(n.poll(t0 + 1h));
    }
    SECTION("more senders than a body lists") {
        for (int i = 0; i < 100; ++i) {
            std::string id = std::string(38, '0') + (i < 10 ? "0" : "") + std::to_string(i);
            feed(n, message(id, "x"), t0);
        }
        auto shown = n.poll(t0 + 400ms);
        REQUIRE(shown);
        CHECK(shown->summary == "100 new messages from 100 contacts");
        CHECK(shown->body.ends_with("\nand 95 more contacts"));
    }
}

TEST_CASE("notify: contact requests", "[notify]") {
    Notifier n = make();
    feed(n, request(k_carol, "Carol", "hi, it's Carol from the climbing club"), t0);
    auto shown = n.poll(t0 + 400ms);
    REQUIRE(shown);
    CHECK(shown->summary == "Contact request from Carol");
    CHECK(shown->body == "hi, it's Carol from the climbing club");
    CHECK(shown->category == "im");
    CHECK(shown->replace_key == "request:" + k_carol);

    feed(n, request(k_carol, "Carol", "again"), t0 + 10s);  // the same one twice counts once
    feed(n, request(k_dave, "Dave", ""), t0 + 10s);
    shown = n.poll(t0 + 11s);
    REQUIRE(shown);
    CHECK(shown->summary == "2 contact requests");
    CHECK(shown->body == "From Carol and Dave");
}

TEST_CASE("notify: presence only on a change from offline to online", "[notify]") {
    Notifier n(NotifierOptions{0ms, 0ms});
    n.set_contacts(contacts(/*alice_online=*/true, /*bob_online=*/false), ContactsUpdate::initial, t0);

    // Alice was online at start: her (repeated) presence is no news.
    CHECK(n.on_event(presence(k_alice, true, "hi"), t0) == Followup::none);
    CHECK_FALSE(n.next_due());
    // Bob comes online.
    feed(n, presence(k_bob, true, "back"), t0);
    auto shown = n.poll(t0);
    REQUIRE(shown);
    CHECK(shown->summary == "Bob is online");
    CHECK(shown->body == "back");
    CHECK(shown->urgency == Urgency::low);
    CHECK(shown->replace_key == "presence");
    // Status changes while online are not announced.
    feed(n, {{"type", "presence"}, {"id", k_bob}, {"status", "away"}, {"note", ""}, {"online", true}},
         t0 + 1s);
    CHECK_FALSE(n.poll(t0 + 1s));
    // Offline, then online again: announced again.
    feed(n, presence(k_bob, false), t0 + 2s);
    CHECK_FALSE(n.poll(t0 + 2s));
    feed(n, presence(k_bob, true), t0 + 3s);
    CHECK(n.poll(t0 + 3s));
    // Without `online`, the status decides.
    feed(n, {{"type", "presence"}, {"id", k_alice}, {"status", "offline"}}, t0 + 4s);
    feed(n, {{"type", "presence"}, {"id", k_alice}, {"status", "busy"}}, t0 + 5s);
    shown = n.poll(t0 + 5s);
    REQUIRE(shown);
    CHECK(shown->summary == "Alice is online");
}

TEST_CASE("notify: online and offline again within the window is no news", "[notify]") {
    Notifier n = make();
    feed(n, presence(k_bob, true), t0);
    REQUIRE(n.next_due());
    feed(n, presence(k_bob, false), t0 + 100ms);
    CHECK_FALSE(n.next_due());
    CHECK_FALSE(n.poll(t0 + 1s));
}

TEST_CASE("notify: at most one notification per interval, later events merge into it", "[notify]") {
    Notifier n = make(NotifierOptions{400ms, 3000ms});
    feed(n, message(k_alice, "one"), t0);
    REQUIRE(n.poll(t0 + 400ms));  // shown at t0 + 400 ms

    // The next event comes soon after: it waits for the interval, not just the window.
    feed(n, message(k_bob, "two"), t0 + 500ms);
    CHECK(*n.next_due() == t0 + 3400ms);
    CHECK_FALSE(n.poll(t0 + 900ms));
    CHECK_FALSE(n.poll(t0 + 3399ms));
    // Events during the hold join it.
    feed(n, message(k_bob, "three"), t0 + 2s);
    feed(n, message(k_bob, "four"), t0 + 3s);
    CHECK(*n.next_due() == t0 + 3400ms);
    auto shown = n.poll(t0 + 3400ms);
    REQUIRE(shown);
    CHECK(shown->summary == "Bob: 3 new messages");
    CHECK(shown->body == "four");

    // Long after the interval, only the window applies.
    feed(n, message(k_alice, "five"), t0 + 60s);
    CHECK(*n.next_due() == t0 + 60s + 400ms);

    // flush() shows what is held at once (used on exit).
    shown = n.flush(t0 + 60s);
    REQUIRE(shown);
    CHECK(shown->body == "five");
    CHECK_FALSE(n.flush(t0 + 60s));
}

TEST_CASE("notify: a zero window and interval show every event at once", "[notify]") {
    Notifier n = make(NotifierOptions{0ms, 0ms});
    feed(n, message(k_alice, "a"), t0);
    CHECK(n.poll(t0));
    feed(n, message(k_alice, "b"), t0);
    CHECK(n.poll(t0));
}

TEST_CASE("notify: malformed events and lists are skipped, never thrown on", "[notify]") {
    Notifier n = make();
    const json bad[] = {
        json(),
        json(42),
        json("message.received"),
        json::array({1, 2}),
        json::object(),
        {{"type", 7}},
        {{"type", nullptr}},
        {{"type", "message.received"}},
        {{"type", "message.received"}, {"from", k_alice}},
        {{"type", "message.received"}, {"from", 12}, {"text", "x"}},
        {{"type", "message.received"}, {"from", ""}, {"text", "x"}},
        {{"type", "message.received"}, {"from", k_alice}, {"text", {{"nested", true}}}},
        {{"type", "contact.request"}},
        {{"type", "contact.request"}, {"id", 5}, {"name", "x"}},
        {{"type", "contact.request"}, {"id", ""}},
        {{"type", "presence"}, {"id", k_bob}},
        {{"type", "presence"}, {"id", k_bob}, {"online", "yes"}},
        {{"type", "presence"}, {"online", true}},
        {{"type", "presence"}, {"id", json::array()}, {"online", true}},
        {{"type", "link"}, {"id", k_bob}, {"up", true}},
        {{"type", "node.state"}, {"dht", "connected"}},
        {{"type", "no.such.event"}, {"from", k_alice}, {"text", "x"}},
    };
    for (const auto& e : bad) {
        INFO(e.dump());
        Followup f = Followup::none;
        CHECK_NOTHROW(f = n.on_event(e, t0));
        CHECK(f == Followup::none);
    }
    CHECK_FALSE(n.next_due());
    CHECK_FALSE(n.poll(t0 + 1h));

    // A contact.state of odd shape still only asks for the names.
    CHECK(n.on_event({{"type", "contact.state"}, {"id", 3}}, t0) == Followup::refresh_names);

    // Lists that are not arrays change nothing; junk entries are skipped.
    CHECK_NOTHROW(n.set_contacts(json::object(), ContactsUpdate::initial, t0));
    CHECK_NOTHROW(n.set_contacts(json("x"), ContactsUpdate::resync, t0));
    CHECK(n.name_of(k_alice) == "Alice");
    json junk = json::array({1, json(), json::object(), {{"id", 4}}, {{"id", k_dave}, {"name", 9}}});
    junk.push_back({{"id", k_alice}, {"name", "Alice"}, {"online", "yes"}});
    CHECK_NOTHROW(n.set_contacts(junk, ContactsUpdate::resync, t0));
    CHECK(n.name_of(k_alice) == "Alice");
    CHECK(n.name_of(k_dave) == k_dave.substr(0, 8));
    CHECK_FALSE(n.next_due());
}

TEST_CASE("notify: after lost events a fresh list announces who came online", "[notify]") {
    Notifier n = make();
    CHECK(n.on_event({{"type", "events_dropped"}, {"count", 12}}, t0) == Followup::resync);
    // Meanwhile Bob came online (the event was dropped); Alice is still offline.
    n.set_contacts(contacts(false, true), ContactsUpdate::resync, t0);
    auto shown = n.poll(t0 + 400ms);
    REQUIRE(shown);
    CHECK(shown->summary == "Bob is online");
    CHECK(shown->body == "at work");

    // A names-only refresh never announces anything, nor overrides known states.
    n.set_contacts(contacts(true, true), ContactsUpdate::names, t0 + 1s);
    CHECK_FALSE(n.next_due());
    feed(n, presence(k_alice, true), t0 + 2s);  // still news: the refresh did not mark her online
    CHECK(n.next_due());
}
