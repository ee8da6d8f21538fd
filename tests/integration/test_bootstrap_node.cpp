// `juiced --bootstrap-node`: a real bootstrap node process, real user
// daemons and real stock dhtnodes on loopback.
#include "harness.hpp"
#include "juice/crypto/identity.hpp"

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <regex>

using namespace juice::test;
using json = nlohmann::json;

namespace {

// One HTTP request on a fresh TCP connection to 127.0.0.1:port; the whole
// answer ("" if the connection failed).
std::string http_exchange(int port, const std::string& request) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return {};
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string out;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) {
        (void)!::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
        char buf[4096];
        for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
            out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
}

// The value of a sample line "name value" in Prometheus text; -1 if absent.
double metric(const std::string& text, const std::string& name) {
    std::smatch m;
    if (std::regex_search(text, m, std::regex("\n" + name + " ([0-9.eE+-]+)\n"))) return std::stod(m[1]);
    return -1;
}

std::size_t dht_nodes(JuicedBootstrap& b) {
    return b.call("node.info")["dht"]["nodes"].get<std::size_t>();
}

std::string boot_summary(JuicedBootstrap& b) {
    return b.call("node.info")["dht"].dump();
}

}  // namespace

TEST_CASE("bootstrap node: no identity, stats over the API and HTTP, routing table kept across restarts",
          "[bootstrap]") {
    TempDir dir;
    auto net = random_network_id();
    int metrics_port = free_tcp_port();
    JuicedBootstrap boot(dir.path() / "boot", net, "", {"--metrics-port", std::to_string(metrics_port)});
    REQUIRE(boot.start());
    CHECK_FALSE(juice::crypto::Identity::exists(boot.data_dir()));

    auto info = boot.call("node.info");
    CHECK(info["mode"] == "bootstrap");
    const std::string node_id = info["node_id"];
    CHECK(node_id.size() == 40);
    CHECK(info["dht"]["port"] == boot.port());
    CHECK(info["limits"]["max_packets_per_ip"] == 200);
    // User features are not there, and the error says how to find out what is.
    auto c = juice::node::api::ApiClient::connect(boot.socket(), 2s);
    REQUIRE(c);
    auto r = c->call("contacts.list", json::object(), 5s);
    REQUIRE(r);
    REQUIRE(r->error);
    CHECK(r->error->message.find("api.methods") != std::string::npos);

    // Two users who know only the bootstrap node find each other.
    int user_metrics_port = free_tcp_port();
    Juiced a("alice", dir.path(), boot.address(), net, {"--metrics-port", std::to_string(user_metrics_port)});
    Juiced b("bob", dir.path(), boot.address(), net);
    REQUIRE(a.start());
    REQUIRE(b.start());
    befriend(a, b);
    CHECK(wait_until([&] { return dht_nodes(boot) >= 2; }, 20s, 100ms));
    // A user's daemon serves metrics too, with its contacts and links.
    {
        auto user_page = http_exchange(user_metrics_port, "GET /metrics HTTP/1.0\r\n\r\n");
        INFO(user_page);
        CHECK(metric(user_page, "juice_contacts") == 1);
        CHECK(metric(user_page, "juice_links") == 1);
        CHECK(metric(user_page, "juice_bootstrap_node") == -1);
        CHECK(a.call("node.info")["mode"] == "user");
    }
    // It stores their presence records (3 nodes: every value is on all).
    CHECK(wait_until([&] { return boot.call("node.info")["dht"]["stored_values"].get<int>() >= 2; }, 20s,
                     100ms));
    info = boot.call("node.info");
    CHECK(info["dht"]["packets_in"].get<long>() > 0);
    CHECK(info["dht"]["bytes_out"].get<long>() > 0);
    CHECK(info["rss_bytes"].get<long>() > 1000000);
    // Rates come from one-second samples.
    CHECK(wait_until([&] { return boot.call("node.info")["dht"]["packets_in_per_s"].get<double>() > 0; }, 15s,
                     200ms));

    // Prometheus text on the loopback port.
    auto page = http_exchange(metrics_port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    INFO(page);
    CHECK(page.rfind("HTTP/1.0 200 OK\r\n", 0) == 0);
    CHECK(page.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
    CHECK(metric(page, "juice_dht_nodes") >= 2);
    CHECK(metric(page, "juice_bootstrap_node") == 1);
    CHECK(metric(page, "juice_dht_packets_received_total") > 0);
    CHECK(http_exchange(metrics_port, "GET /nope HTTP/1.1\r\n\r\n").rfind("HTTP/1.0 404", 0) == 0);
    CHECK(http_exchange(metrics_port, "DELETE /metrics HTTP/1.1\r\n\r\n").rfind("HTTP/1.0 405", 0) == 0);
    CHECK(http_exchange(metrics_port, "garbage\r\n\r\n").rfind("HTTP/1.0 400", 0) == 0);
    CHECK(http_exchange(metrics_port, std::string(20000, 'A')).rfind("HTTP/1.0 431", 0) == 0);
    CHECK(boot.running());

    // The CLI shows the same stats.
    {
        Process p(JUICE_CLI_PATH, {"--api-socket", boot.socket().string(), "stats"},
                  dir.path() / "stats.log");
        CHECK(p.wait(10s) == 0);
        auto out = p.log();
        INFO(out);
        CHECK(out.find("bootstrap node") != std::string::npos);
        CHECK(std::regex_search(out, std::regex("routing: +[0-9]+ good nodes")));
        CHECK(out.find("rate-limited") != std::string::npos);
    }

    // SIGTERM: clean exit, routing table saved.
    CHECK(boot.stop() == 0);
    auto cache = boot.data_dir() / "bootstrap-nodes.bin";
    REQUIRE(std::filesystem::exists(cache));
    CHECK(std::filesystem::file_size(cache) > 0);

    // Restarted with no --bootstrap at all, it finds the users again from the
    // saved table, under the same node id.
    REQUIRE(boot.start());
    CHECK(boot.call("node.info")["node_id"] == node_id);
    CHECK(wait_until([&] { return dht_nodes(boot) >= 2; }, 30s, 200ms));
    CHECK(boot.log().find("cached nodes") != std::string::npos);
    CHECK(boot.stop() == 0);
}

TEST_CASE("bootstrap node: interoperates with stock dhtnode both ways", "[bootstrap]") {
    TempDir dir;
    auto net = random_network_id();
    // juice bootstrap node first; a stock dhtnode joins through it; a second
    // juice bootstrap node joins through the stock one.
    JuicedBootstrap jb1(dir.path() / "jb1", net);
    REQUIRE(jb1.start());
    DhtBootstrap stock(net, dir.path(), {"-b", jb1.address()});
    JuicedBootstrap jb2(dir.path() / "jb2", net, stock.address());
    REQUIRE(jb2.start());
    CHECK(wait_until([&] { return dht_nodes(jb1) >= 1 && dht_nodes(jb2) >= 1; }, 20s, 100ms));

    // Alice knows only the stock node, Bob only the second juice node: they
    // still meet, and talk.
    Juiced a("alice", dir.path(), stock.address(), net);
    Juiced b("bob", dir.path(), jb2.address(), net);
    REQUIRE(a.start());
    REQUIRE(b.start());
    befriend(a, b);
    auto sent = a.call("messages.send", {{"to", b.id()}, {"text", "across stock and juice nodes"}});
    CHECK(wait_until(
        [&] {
            auto h = b.call("messages.history", {{"with", a.id()}});
            return h.is_array() && !h.empty() && h.back()["text"] == "across stock and juice nodes";
        },
        20s, 100ms));
    // Routing flowed both ways: each juice bootstrap node learned of nodes it
    // was never told about (jb1 was given none, jb2 only the stock node).
    CHECK(wait_until([&] { return dht_nodes(jb1) >= 3 && dht_nodes(jb2) >= 3; }, 30s, 200ms));
    INFO("jb1 " << boot_summary(jb1) << " jb2 " << boot_summary(jb2));
    CHECK(dht_nodes(jb1) >= 3);
    CHECK(jb1.stop() == 0);
    CHECK(jb2.stop() == 0);
}

TEST_CASE("bootstrap node: a flood from one address is rate-limited before parsing", "[bootstrap]") {
    TempDir dir;
    auto net = random_network_id();
    JuicedBootstrap boot(dir.path() / "boot", net, "", {"--rate-limit-ip", "50"});
    REQUIRE(boot.start());
    CHECK(boot.call("node.info")["limits"]["max_packets_per_ip"] == 50);

    auto dht_stat = [&](const char* name) {
        return boot.call("node.info")["dht"][name].get<std::uint64_t>();
    };
    const auto in_before = dht_stat("packets_in");
    const auto t0 = std::chrono::steady_clock::now();

    // 3000 datagrams of junk as fast as the socket takes them (the kernel may
    // drop some when the socket's buffer is full: count what arrived).
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<std::uint16_t>(boot.port()));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string junk(200, 'x');
    for (int i = 0; i < 3000; ++i)
        (void)!::sendto(fd, junk.data(), junk.size(), 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    ::close(fd);

    // Wait until the receive thread has seen all of it (the count stops moving).
    std::uint64_t in_now = 0, in_last = ~0ULL;
    CHECK(wait_until(
        [&] {
            in_now = dht_stat("packets_in");
            bool still = in_now == in_last && in_now > in_before;
            in_last = in_now;
            return still;
        },
        15s, 300ms));
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto arrived = in_now - in_before;
    const auto limited = dht_stat("packets_rate_limited");
    INFO("arrived " << arrived << ", rate-limited " << limited << ", over " << secs << " s");
    CHECK(arrived > 500);
    // At 50/s with a burst of 100, everything past the burst and the refill
    // was dropped before OpenDHT saw it.
    CHECK(static_cast<double>(limited) >= static_cast<double>(arrived) - 100 - 50 * secs - 5);
    CHECK(boot.running());

    // The bucket refills: a user from the same address joins afterwards.
    Juiced a("alice", dir.path(), boot.address(), net);
    Juiced b("bob", dir.path(), boot.address(), net);
    REQUIRE(a.start());
    REQUIRE(b.start());
    befriend(a, b);
    CHECK(boot.stop() == 0);
}
