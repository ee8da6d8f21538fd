// `juice notify` end to end: real juiced daemons on loopback, the real CLI as
// a child process, and for the desktop path a private dbus-daemon with a
// fake notification server on it. Waits poll with deadlines.
#include "fake_notification_server.hpp"
#include "harness.hpp"

#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <sstream>

using namespace juice::test;
using json = nlohmann::json;
using Catch::Contains;

namespace {

// Both add each other; true once each sees the other linked and online.
bool make_buddies(Juiced& a, Juiced& b) {
    a.call("contacts.add", {{"id", b.id()}, {"name", b.name()}});
    b.call("contacts.add", {{"id", a.id()}, {"name", a.name()}});
    auto up = [](Juiced& x, Juiced& y) {
        json c = contact_entry(x, y.id());
        return c.is_object() && c["linked"] == true && c["online"] == true;
    };
    return wait_until([&] { return up(a, b) && up(b, a); }, 20s);
}

// The notification lines of a --dry-run (stderr lines start "juice notify:").
std::vector<std::string> notification_lines(const Process& p) {
    std::vector<std::string> out;
    std::istringstream log(p.log());
    for (std::string line; std::getline(log, line);)
        if (line.starts_with("[")) out.push_back(line);
    return out;
}

std::size_t line_count(const std::string& s) {
    return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n'));
}

auto message_from(const std::string& id) {
    return [id](const json& e) { return e["type"] == "message.received" && e["from"] == id; };
}

}  // namespace

TEST_CASE("juice notify --dry-run: a burst of messages is one notification naming the sender", "[notify]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    REQUIRE(make_buddies(a, b));

    // A wide window, so a slow machine still delivers the whole burst within it.
    Process notify(JUICE_CLI_PATH,
                   {"--api-socket", a.socket().string(), "notify", "--dry-run", "--window", "1500",
                    "--min-interval", "1000"},
                   dir.path() / "notify.log");
    REQUIRE(wait_until([&] { return notify.log().find("juice notify: dry run") != std::string::npos; }, 10s));

    EventWatcher ea(a, {"message.received"});
    for (int i = 1; i <= 5; ++i)
        b.call("messages.send", {{"to", a.id()}, {"text", "burst " + std::to_string(i)}});
    for (int i = 1; i <= 5; ++i) REQUIRE(ea.wait_for(message_from(b.id()), 10s));

    REQUIRE(wait_until([&] { return !notification_lines(notify).empty(); }, 10s));
    auto lines = notification_lines(notify);
    INFO(notify.log());
    REQUIRE(lines.size() == 1);
    CHECK_THAT(lines[0], Contains("bob: 5 new messages — burst 5"));

    // juiced going away ends it cleanly, with a message.
    REQUIRE(a.stop() == 0);
    CHECK(notify.wait(10s) == 0);
    CHECK_THAT(notify.log(), Contains("juice notify: juiced closed the connection"));
    CHECK(notification_lines(notify).size() == 1);
}

TEST_CASE("juice notify without a notification service or juiced exits with a clear message", "[notify]") {
    TempDir dir;
    PrivateBus bus(dir.path());
    INFO(bus.error);
    REQUIRE_FALSE(bus.address().empty());
    const std::string no_juiced = (dir.path() / "no-juiced.sock").string();

    // A session bus, but nothing owns org.freedesktop.Notifications on it.
    Process no_service(JUICE_CLI_PATH, {"--api-socket", no_juiced, "notify"}, dir.path() / "no-service.log",
                       {{"DBUS_SESSION_BUS_ADDRESS", bus.address()}});
    CHECK(no_service.wait(20s) == 4);
    std::string log = no_service.log();
    INFO(log);
    CHECK_THAT(log,
               Contains("juice notify: no desktop notification service is running (is a notification daemon "
                        "started in your session?"));
    CHECK_THAT(log, Contains("DBUS_SESSION_BUS_ADDRESS=" + bus.address()));
    CHECK(line_count(log) == 1);  // that one message: no GLib warnings, no crash report

    // No session bus at all.
    Process no_bus(JUICE_CLI_PATH, {"--api-socket", no_juiced, "notify"}, dir.path() / "no-bus.log",
                   {{"DBUS_SESSION_BUS_ADDRESS", "unix:path=" + (dir.path() / "nothing-here").string()}});
    CHECK(no_bus.wait(20s) == 4);
    log = no_bus.log();
    CHECK_THAT(
        log,
        Contains(
            "juice notify: no desktop notification service is running: cannot reach the D-Bus session bus"));
    CHECK(line_count(log) == 1);

    // No juiced: the same error as every other subcommand.
    Process dry(JUICE_CLI_PATH, {"--api-socket", no_juiced, "notify", "--dry-run"}, dir.path() / "dry.log");
    Process id(JUICE_CLI_PATH, {"--api-socket", no_juiced, "id"}, dir.path() / "id.log");
    CHECK(dry.wait(20s) == 3);
    CHECK(id.wait(20s) == 3);
    CHECK_THAT(dry.log(), Contains("error: cannot reach juiced"));
    CHECK(dry.log() == id.log());
}

TEST_CASE("juice notify shows messages through a D-Bus notification service and survives losing it",
          "[notify]") {
    TempDir dir;
    PrivateBus bus(dir.path());
    INFO(bus.error);
    REQUIRE_FALSE(bus.address().empty());
    auto server = std::make_unique<FakeNotificationServer>(bus.address(),
                                                           std::vector<std::string>{"body", "body-markup"});
    INFO(server->error());
    REQUIRE(server->ready());

    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    REQUIRE(make_buddies(a, b));

    Process notify(
        JUICE_CLI_PATH,
        {"--api-socket", a.socket().string(), "notify", "--window", "100", "--min-interval", "100"},
        dir.path() / "notify.log", {{"DBUS_SESSION_BUS_ADDRESS", bus.address()}});
    REQUIRE(wait_until(
        [&] {
            return notify.log().find("showing notifications through juice-test-server") !=
                       std::string::npos ||
                   !notify.running();
        },
        10s));
    INFO(notify.log());
    REQUIRE(notify.running());
    CHECK(server->info_calls() >= 1);

    // A message from bob: his name as the summary, the text escaped for a
    // server that reads markup.
    b.call("messages.send", {{"to", a.id()}, {"text", "<b>hi</b> & bye"}});
    REQUIRE(wait_until([&] { return server->received().size() >= 1; }, 10s));
    auto first = server->received().at(0);
    CHECK(first.summary == "bob");
    CHECK(first.body == "&lt;b&gt;hi&lt;/b&gt; &amp; bye");
    CHECK(first.app_name == "juice");
    CHECK(first.app_icon == "mail-message-new");
    CHECK(first.category == "im.received");
    CHECK(first.urgency == 1);
    CHECK(first.replaces_id == 0);

    // The next one from the same conversation replaces that bubble.
    b.call("messages.send", {{"to", a.id()}, {"text", "second"}});
    REQUIRE(wait_until([&] { return server->received().size() >= 2; }, 10s));
    auto second = server->received().at(1);
    CHECK(second.summary == "bob");
    CHECK(second.body == "second");
    CHECK(second.replaces_id == first.id);

    // The service goes away: one warning, and juice notify keeps running.
    server.reset();
    b.call("messages.send", {{"to", a.id()}, {"text", "anyone there?"}});
    REQUIRE(wait_until(
        [&] { return notify.log().find("warning: could not show a notification") != std::string::npos; },
        10s));
    CHECK(notify.running());

    // A new service takes the name: notifications are shown again.
    server = std::make_unique<FakeNotificationServer>(bus.address(), std::vector<std::string>{"body"}, 100);
    REQUIRE(server->ready());
    b.call("messages.send", {{"to", a.id()}, {"text", "welcome back"}});
    REQUIRE(wait_until(
        [&] {
            auto got = server->received();
            return std::any_of(got.begin(), got.end(),
                               [](const auto& r) { return r.body == "welcome back"; });
        },
        10s));
    // "bob", or "bob: 2 new messages" when the message sent while the service
    // was gone was still held (the warning can come from the reply to
    // "second", lost when the old service closed).
    CHECK_THAT(server->received().back().summary, Catch::StartsWith("bob"));
    REQUIRE(wait_until(
        [&] { return notify.log().find("notifications are shown again") != std::string::npos; }, 5s));

    // SIGTERM stops it cleanly.
    notify.signal(SIGTERM);
    CHECK(notify.wait(10s) == 0);
    CHECK_THAT(notify.log(), Contains("juice notify: stopped"));
}
