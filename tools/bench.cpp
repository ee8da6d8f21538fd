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
//   throughput      pipelined messages.send A -> B, durable and acked: msgs/s
//                   from the first send to the last delivered, CPU per message
//   offline_delivery B starts -> a message waiting in its DHT inbox is in its
//                   history (the sender is offline)
//   contact_request contacts.add on A -> contact.request event at B
//   call_cpu        CPU of each daemon during a voice call in which both
//                   sides play speech (espeak-ng) from a WAV file and record
//                   the other into one, minus its CPU over as long idle
#include "audio_compare.hpp"
#include "harness.hpp"
#include "juice/crypto/ids.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

using namespace juice::test;
namespace audio = juice::test::audio;
using json = nlohmann::json;
using clk = std::chrono::steady_clock;

namespace {

double ms_since(clk::time_point t0) {
    return std::chrono::duration<double, std::milli>(clk::now() - t0).count();
}

long rss_kib(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

// CPU seconds (user + system) a process has used so far.
double cpu_seconds(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto close = stat.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream rest(stat.substr(close + 2));
    std::string field;
    double ticks = 0;
    for (int i = 3; rest >> field; ++i)
        if (i == 14 || i == 15) ticks += std::stod(field);
    return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Sends `n` messages.send requests pipelined on one raw connection (at most
// `window` unanswered) and returns when every response arrived.
void pipeline_sends(const std::filesystem::path& socket, const std::string& to, int n, int window) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket.c_str());
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        throw std::runtime_error("cannot connect to " + socket.string());
    std::atomic<int> answered{0};
    std::thread reader([&] {
        std::string buf(1 << 16, '\0');
        int errors = 0;
        while (answered < n) {
            auto got = ::read(fd, buf.data(), buf.size());
            if (got <= 0) break;
            for (ssize_t i = 0; i < got; ++i)
                if (buf[static_cast<std::size_t>(i)] == '\n') ++answered;
            if (buf.find("\"error\"") != std::string::npos) ++errors;
        }
        if (errors) std::cerr << "bench: some sends failed\n";
    });
    std::string batch;
    for (int i = 0; i < n; ++i) {
        while (i - answered.load() >= window) std::this_thread::yield();
        batch += json{{"jsonrpc", "2.0"},
                      {"id", i},
                      {"method", "messages.send"},
                      {"params", {{"to", to}, {"text", "throughput " + std::to_string(i)}}}}
                     .dump() +
                 "\n";
        if (batch.size() > 16384 || i == n - 1) {
            for (std::size_t off = 0; off < batch.size();) {
                auto w = ::write(fd, batch.data() + off, batch.size() - off);
                if (w <= 0) throw std::runtime_error("write to the API failed");
                off += static_cast<std::size_t>(w);
            }
            batch.clear();
        }
    }
    reader.join();
    ::close(fd);
    if (answered < n) throw std::runtime_error("the daemon answered only " + std::to_string(answered.load()));
}

void progress(const std::string& s) {
    std::cerr << "bench: " << s << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"juice-bench: latency and footprint of juiced on loopback (JSON on stdout)"};
    int presence_n = 200, message_n = 1000, cold_n = 5, contacts_n = 100, throughput_n = 20000, offline_n = 5,
        request_n = 20;
    int call_seconds = 20;
    std::string sync = "normal", log_level = "warn";
    bool keep = false;
    app.add_option("--presence", presence_n, "presence updates per path")->capture_default_str();
    app.add_option("--messages", message_n, "messages for the round trip")->capture_default_str();
    app.add_option("--cold-starts", cold_n, "cold starts to time")->capture_default_str();
    app.add_option("--contacts", contacts_n, "contacts of the idle daemon")->capture_default_str();
    app.add_option("--throughput", throughput_n, "messages for the throughput run")->capture_default_str();
    app.add_option("--offline", offline_n, "offline deliveries to time")->capture_default_str();
    app.add_option("--requests", request_n, "contact requests to time")->capture_default_str();
    app.add_option("--call-seconds", call_seconds, "length of the call whose CPU is measured (0: skip)")
        ->capture_default_str();
    app.add_option("--sync", sync, "juiced --sync mode")
        ->check(CLI::IsMember({"full", "normal"}))
        ->capture_default_str();
    app.add_option("--log-level", log_level, "juiced --log-level")->capture_default_str();
    app.add_flag("--keep", keep, "keep the daemons' directories and logs (prints where)");
    CLI11_PARSE(app, argc, argv);
    if (keep) setenv("JUICE_KEEP_TEST_DIRS", "1", 1);

    json out{{"tool", "juice-bench"}, {"sync", sync}};
    try {
        TempDir dir;
        DhtBootstrap boot(random_network_id(), dir.path());
        if (keep) progress("keeping " + dir.path().string());
        std::vector<std::string> args{"--sync", sync, "--log-level", log_level};
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
        out["presence_link"] = summarize_ms(presence_run(a, eb, presence_n));

        // Presence through the DHT: sam watches alice, but alice does not
        // list sam, so they never link and sam only hears the DHT.
        EventWatcher es(s, {"presence"});
        s.call("contacts.add", {{"id", a.id()}});
        es.wait_for([&](const json& e) { return e["id"] == a.id(); }, 10s);
        progress("presence through the DHT");
        auto dht_lat = presence_run(a, es, presence_n);
        out["presence_dht"] = summarize_ms(dht_lat);
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
        out["message_rtt"] = summarize_ms(rtt);

        // Throughput: pipelined sends, durable on both sides and acked.
        progress("throughput: " + std::to_string(throughput_n) + " messages");
        {
            double cpu_a0 = cpu_seconds(a.pid()), cpu_b0 = cpu_seconds(b.pid());
            auto t0 = clk::now();
            pipeline_sends(a.socket(), b.id(), throughput_n, 2000);
            double sent_ms = ms_since(t0);
            bool done = wait_until(
                [&] {
                    auto last = a.call("messages.history", {{"with", b.id()}, {"limit", 1}});
                    return !last.empty() && last[0]["state"] == "delivered";
                },
                120s);
            double total_ms = ms_since(t0);
            double cpu = cpu_seconds(a.pid()) - cpu_a0 + cpu_seconds(b.pid()) - cpu_b0;
            // Check: every message stored once on bob's side.
            std::size_t at_b = 0;
            std::optional<json> before;
            for (;;) {
                json params{{"with", a.id()}, {"limit", 1000}};
                if (before) params["before"] = *before;
                auto page = b.call("messages.history", params);
                at_b += page.size();
                if (page.size() < 1000) break;
                before = page[0]["seq"];
            }
            out["throughput"] = {
                {"messages", throughput_n},         {"all_delivered", done},
                {"stored_at_receiver_total", at_b}, {"accept_ms", sent_ms},
                {"delivered_ms", total_ms},         {"messages_per_s", throughput_n / (total_ms / 1000.0)},
                {"cpu_s_both_daemons", cpu},        {"cpu_us_per_message", cpu * 1e6 / throughput_n}};
        }

        // Offline delivery: alice writes to bob while he is down, leaves;
        // bob starts alone and finds it in his inbox.
        progress("offline delivery");
        {
            std::vector<double> lat;
            for (int i = 0; i < offline_n; ++i) {
                b.stop();
                if (!a.running() && !a.start()) throw std::runtime_error(a.error);
                EventWatcher ea3(a, {"message.state"});
                auto r = a.call("messages.send", {{"to", b.id()}, {"text", "offline " + std::to_string(i)}});
                if (!ea3.wait_for(
                        [&](const json& e) { return e["msg_id"] == r["msg_id"] && e["state"] == "sent"; },
                        20s))
                    throw std::runtime_error("the message did not reach bob's inbox");
                a.stop();
                auto t0 = clk::now();
                if (!b.start()) throw std::runtime_error(b.error);
                bool got = wait_until(
                    [&] {
                        auto last = b.call("messages.history", {{"with", a.id()}, {"limit", 1}});
                        return !last.empty() && last[0]["msg_id"] == r["msg_id"];
                    },
                    20s);
                if (got) lat.push_back(ms_since(t0));
            }
            out["offline_delivery"] = summarize_ms(lat);
            out["offline_delivery"]["what"] =
                "bob process start -> message from his DHT inbox in his history";
            if (!a.running() && !a.start()) throw std::runtime_error(a.error);
        }

        // Contact request: alice asks sam, sam declines, alice asks again...
        progress("contact requests");
        {
            std::vector<double> lat;
            int lost = 0;
            EventWatcher es2(s, {"contact.request"});
            s.call("contacts.remove", {{"id", a.id()}});
            a.call("contacts.remove", {{"id", s.id()}});  // sam asked her earlier: start over
            for (int i = 0; i < request_n; ++i) {
                auto t0 = clk::now();
                a.call("contacts.add", {{"id", s.id()}, {"message", "request " + std::to_string(i)}});
                auto ev = es2.wait_for(
                    [&](const json& e) {
                        return e["id"] == a.id() && e["message"] == "request " + std::to_string(i);
                    },
                    20s);
                if (!ev) {
                    ++lost;
                    continue;
                }
                lat.push_back(ms_since(t0));
                s.call("contacts.reject", {{"id", a.id()}});
                wait_until(
                    [&] {
                        for (auto& c : a.call("contacts.list"))
                            if (c["id"] == s.id()) return false;
                        return true;
                    },
                    10s);
            }
            out["contact_request"] = summarize_ms(lat);
            out["contact_request"]["lost"] = lost;
        }

        // CPU of a call, per daemon: each plays speech and records the other.
        if (call_seconds > 0) {
            progress("a " + std::to_string(call_seconds) + " s call: daemon CPU");
            auto speech = dir.path() / "speech.wav";
            audio::make_speech(speech,
                               "This is a voice call between two juice daemons. Each side plays this speech "
                               "and records the other, so both directions carry real audio.",
                               10);
            auto span = std::chrono::seconds(call_seconds);
            double ia = cpu_seconds(a.pid()), ib = cpu_seconds(b.pid());
            std::this_thread::sleep_for(span);
            double idle_a = cpu_seconds(a.pid()) - ia, idle_b = cpu_seconds(b.pid()) - ib;
            EventWatcher ca(a, {"call.state"}), cb(b, {"call.state"});
            auto id =
                a.call("calls.start", {{"to", b.id()},
                                       {"audio_in", speech.string()},
                                       {"audio_out", (dir.path() / "a-hears.wav").string()}})["call_id"];
            if (!cb.wait_for([](const json& e) { return e["state"] == "ringing_in"; }, 10s))
                throw std::runtime_error("the call did not ring");
            b.call("calls.accept", {{"call_id", id},
                                    {"audio_in", speech.string()},
                                    {"audio_out", (dir.path() / "b-hears.wav").string()}});
            if (!ca.wait_for([](const json& e) { return e["state"] == "active"; }, 10s))
                throw std::runtime_error("the call did not become active");
            double ca0 = cpu_seconds(a.pid()), cb0 = cpu_seconds(b.pid());
            auto t0 = clk::now();
            std::this_thread::sleep_for(span);
            double wall = std::chrono::duration<double>(clk::now() - t0).count();
            double call_a = cpu_seconds(a.pid()) - ca0, call_b = cpu_seconds(b.pid()) - cb0;
            auto stats = a.call("calls.list").at(0)["stats"];
            a.call("calls.hangup", {{"call_id", id}});
            cb.wait_for([](const json& e) { return e["state"] == "ended"; }, 10s);
            out["call_cpu"] = {{"seconds", wall},
                               {"percent_of_one_core_caller", 100 * (call_a - idle_a) / wall},
                               {"percent_of_one_core_callee", 100 * (call_b - idle_b) / wall},
                               {"idle_percent_caller", 100 * idle_a / wall},
                               {"idle_percent_callee", 100 * idle_b / wall},
                               {"packets_sent_caller", stats["packets_sent"]},
                               {"packets_received_caller", stats["packets_received"]}};
        }

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
        out["cold_start"] = summarize_ms(cold);

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
