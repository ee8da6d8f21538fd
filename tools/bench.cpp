// juice-bench: measures the foundation's latencies on loopback with real
// daemons and a real dhtnode bootstrap, and prints JSON on stdout (progress
// on stderr). A benchmark measures; it asserts nothing.
//
//   presence_link   presence.set on A -> presence event at B, A and B linked
//   presence_dht    the same through the DHT only (B watches A, no link)
//   cold_start      juiced start with an existing identity -> link up with an
//                   online contact (seen by the contact)
//   message_rtt     messages.send -> delivered event, one at a time
//   idle_rss        RSS of an idle daemon with N contacts
#include "harness.hpp"
#include "juice/crypto/ids.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <thread>

using namespace juice::test;
using json = nlohmann::json;
using clk = std::chrono::steady_clock;

namespace {

double ms_since(clk::time_point t0) {
    return std::chrono::duration<double, std::milli>(clk::now() - t0).count();
}

json summary(std::vector<double> v) {
    if (v.empty()) return {{"n", 0}};
    std::sort(v.begin(), v.end());
    auto pct = [&](double p) {
        return v[std::min(v.size() - 1, static_cast<std::size_t>(p * (v.size() - 1) + 0.5))];
    };
    double sum = 0;
    for (double x : v) sum += x;
    return {{"n", v.size()},       {"p50_ms", pct(0.5)}, {"p95_ms", pct(0.95)},
            {"p99_ms", pct(0.99)}, {"max_ms", v.back()}, {"mean_ms", sum / v.size()}};
}

long rss_kib(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

void progress(const std::string& s) {
    std::cerr << "bench: " << s << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"juice-bench: latency and footprint of juiced on loopback (JSON on stdout)"};
    int presence_n = 200, message_n = 1000, cold_n = 5, contacts_n = 100;
    std::string sync = "normal";
    app.add_option("--presence", presence_n, "presence updates per path")->capture_default_str();
    app.add_option("--messages", message_n, "messages for the round trip")->capture_default_str();
    app.add_option("--cold-starts", cold_n, "cold starts to time")->capture_default_str();
    app.add_option("--contacts", contacts_n, "contacts of the idle daemon")->capture_default_str();
    app.add_option("--sync", sync, "juiced --sync mode")
        ->check(CLI::IsMember({"full", "normal"}))
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    json out{{"tool", "juice-bench"}, {"sync", sync}};
    try {
        TempDir dir;
        DhtBootstrap boot(random_network_id(), dir.path());
        std::vector<std::string> args{"--sync", sync, "--log-level", "warn"};
        Juiced a("alice", dir.path(), boot, args), b("bob", dir.path(), boot, args),
            s("sam", dir.path(), boot, args);
        if (!a.start() || !b.start() || !s.start()) throw std::runtime_error(a.error + b.error + s.error);
        EventWatcher eb(b);
        a.call("contacts.add", {{"id", b.id()}});
        b.call("contacts.add", {{"id", a.id()}});
        if (!eb.wait_for([&](const json& e) { return e["type"] == "link" && e["up"] == true; }, 30s))
            throw std::runtime_error("alice and bob did not link");

        // Presence over the link.
        auto presence_run = [&](Juiced& from, EventWatcher& at, int n) {
            std::vector<double> lat;
            for (int i = 0; i < n; ++i) {
                std::string st = i % 2 ? "away" : "busy", note = "n" + std::to_string(i);
                auto t0 = clk::now();
                from.call("presence.set", {{"status", st}, {"note", note}});
                auto ev = at.wait_for(
                    [&](const json& e) {
                        return e["type"] == "presence" && e["id"] == from.id() && e["status"] == st &&
                               e["note"] == note;
                    },
                    10s);
                if (ev) lat.push_back(ms_since(t0));
            }
            return lat;
        };
        progress("presence over a link");
        out["presence_link"] = summary(presence_run(a, eb, presence_n));

        // Presence through the DHT: sam watches alice, but alice does not
        // list sam, so they never link and sam only hears the DHT.
        EventWatcher es(s, {"presence"});
        s.call("contacts.add", {{"id", a.id()}});
        es.wait_for([&](const json& e) { return e["id"] == a.id(); }, 10s);
        progress("presence through the DHT");
        auto dht_lat = presence_run(a, es, presence_n);
        out["presence_dht"] = summary(dht_lat);
        out["presence_dht"]["lost"] = presence_n - static_cast<int>(dht_lat.size());

        // Message round trip.
        progress("message round trips");
        EventWatcher ea(a, {"message.state"});
        std::vector<double> rtt;
        for (int i = 0; i < message_n; ++i) {
            auto t0 = clk::now();
            auto r =
                a.call("messages.send", {{"to", b.id()}, {"text", "bench message " + std::to_string(i)}});
            auto ev = ea.wait_for(
                [&](const json& e) { return e["msg_id"] == r["msg_id"] && e["state"] == "delivered"; }, 10s);
            if (ev) rtt.push_back(ms_since(t0));
        }
        out["message_rtt"] = summary(rtt);

        // Cold start: bob restarts; alice sees the link come up.
        progress("cold starts");
        std::vector<double> cold;
        for (int i = 0; i < cold_n; ++i) {
            b.stop();
            EventWatcher ea2(a, {"link"});
            auto t0 = clk::now();
            if (!b.start()) throw std::runtime_error(b.error);
            auto ev = ea2.wait_for([&](const json& e) { return e["id"] == b.id() && e["up"] == true; }, 30s);
            if (ev) cold.push_back(ms_since(t0));
        }
        out["cold_start"] = summary(cold);

        // Idle RSS with many contacts (random ids: each costs a DHT listen).
        progress("idle daemon with " + std::to_string(contacts_n) + " contacts");
        Juiced idle("idle", dir.path(), boot, args);
        if (!idle.start()) throw std::runtime_error(idle.error);
        long rss0 = rss_kib(idle.pid());
        for (int i = 0; i < contacts_n; ++i)
            idle.call("contacts.add", {{"id", juice::UserId::random().hex()}});
        std::this_thread::sleep_for(10s);  // a benchmark's settle time: listens up, timers idle
        out["idle_rss"] = {
            {"contacts", contacts_n}, {"rss_kib_empty", rss0}, {"rss_kib", rss_kib(idle.pid())}};
        idle.stop();
        a.stop();
        b.stop();
        s.stop();
    } catch (const std::exception& e) {
        std::cerr << "juice-bench: " << e.what() << "\n";
        out["error"] = e.what();
        std::cout << out.dump(2) << std::endl;
        return 1;
    }
    std::cout << out.dump(2) << std::endl;
    return 0;
}
