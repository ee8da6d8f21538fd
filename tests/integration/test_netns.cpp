// Multi-host: real juiced daemons spread over network namespaces
// (tools/netns.sh: a bridge, a bootstrap namespace, 8 host namespaces), a
// juice bootstrap node in its own namespace. Needs root, so it is hidden
// from the default run: `juice_integration "[netns]"`, or configure with
// -DJUICE_NETNS_TESTS=ON to have ctest run it.
#include "harness.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <iostream>

using namespace juice::test;
using json = nlohmann::json;
using clk = std::chrono::steady_clock;

namespace {

std::string netns_script() {
#ifdef JUICE_SOURCE_DIR
    return std::string(JUICE_SOURCE_DIR) + "/tools/netns.sh";
#else
    return "tools/netns.sh";
#endif
}

// Builds the namespaces in the constructor and removes them in the
// destructor, whatever happened in between.
class Namespaces {
public:
    Namespaces(int hosts, const std::filesystem::path& log)
        : m_prefix("jt" + std::to_string(::getpid() % 10000) + "-") {
        m_env = "JUICE_NETNS_PREFIX=" + m_prefix + " ";
        run_shell(m_env + netns_script() + " down >/dev/null 2>&1");
        m_up = run_shell(m_env + netns_script() + " up " + std::to_string(hosts) + " >" + log.string() +
                         " 2>&1");
    }
    ~Namespaces() { run_shell(m_env + netns_script() + " down >/dev/null 2>&1"); }
    bool up() const { return m_up; }
    std::vector<std::string> exec(const std::string& name) const {
        return {"ip", "netns", "exec", m_prefix + name};
    }

private:
    std::string m_prefix, m_env;
    bool m_up = false;
};

double secs_since(clk::time_point t0) {
    return std::chrono::duration<double>(clk::now() - t0).count();
}

}  // namespace

TEST_CASE("netns: daemons on 8 hosts find each other through a bootstrap node, link and talk", "[.][netns]") {
    if (::geteuid() != 0) {
        WARN("not root: the multi-host test needs ip netns; skipped");
        return;
    }
    constexpr int k_hosts = 8, k_per_host = 2, k_daemons = k_hosts * k_per_host;
    TempDir dir;
    Namespaces ns(k_hosts, dir.path() / "netns.log");
    REQUIRE(ns.up());
    auto net = random_network_id();

    JuicedBootstrap boot(dir.path() / "boot", net);
    boot.wrapper = ns.exec("boot");
    boot.host = "10.77.0.1";
    REQUIRE(boot.start());

    // Two daemons per host, each knowing only the bootstrap node.
    auto t0 = clk::now();
    std::vector<std::unique_ptr<Juiced>> d;
    for (int i = 0; i < k_daemons; ++i) {
        int host = 1 + i / k_per_host;
        d.push_back(std::make_unique<Juiced>("u" + std::to_string(i), dir.path(), boot.address(), net));
        d.back()->wrapper = ns.exec("h" + std::to_string(host));
        d.back()->link_bind = "10.77.0." + std::to_string(10 + host);
        REQUIRE(d.back()->start());
    }
    const double started_s = secs_since(t0);

    // A ring across hosts: daemon i befriends daemon i+2 (the next host).
    t0 = clk::now();
    for (int i = 0; i < k_daemons; ++i) {
        INFO("befriend u" << i << " and u" << (i + k_per_host) % k_daemons);
        REQUIRE_NOTHROW(befriend(*d[i], *d[(i + k_per_host) % k_daemons], 30s));
    }
    const double linked_s = secs_since(t0);
    // Links really cross hosts: the remote end is the other namespace's address.
    for (int i = 0; i < k_daemons; ++i) {
        auto info = d[i]->call("node.info");
        REQUIRE(info["links"].is_array());
        CHECK(info["links"].size() == 2);
        for (auto& l : info["links"]) CHECK(l["remote"].get<std::string>().rfind("10.77.0.", 0) == 0);
    }

    // Everyone sends one message to the next host; all arrive.
    for (int i = 0; i < k_daemons; ++i)
        d[i]->call("messages.send", {{"to", d[(i + k_per_host) % k_daemons]->id()},
                                     {"text", "hi from u" + std::to_string(i)}});
    for (int i = 0; i < k_daemons; ++i) {
        int from = (i - k_per_host + k_daemons) % k_daemons;
        CHECK(wait_until(
            [&] {
                auto h = d[i]->call("messages.history", {{"with", d[from]->id()}});
                return h.is_array() && !h.empty() && h.back()["text"] == "hi from u" + std::to_string(from);
            },
            20s, 100ms));
    }

    // Host 3 goes away cleanly: its buddies on hosts 2 and 4 see it offline.
    auto offline = [&](Juiced& watcher, Juiced& gone) {
        return wait_until([&] { return contact_entry(watcher, gone.id())["online"] == false; }, 20s, 100ms);
    };
    const int h3a = 2 * k_per_host, h3b = h3a + 1;
    CHECK(d[h3a]->stop() == 0);
    CHECK(d[h3b]->stop() == 0);
    CHECK(offline(*d[h3a - k_per_host], *d[h3a]));
    CHECK(offline(*d[h3a + k_per_host], *d[h3a]));
    CHECK(offline(*d[h3b - k_per_host], *d[h3b]));
    CHECK(offline(*d[h3b + k_per_host], *d[h3b]));

    // The bootstrap node saw the whole network.
    auto info = boot.call("node.info");
    CHECK(info["dht"]["nodes"].get<int>() >= k_daemons / 2);

    std::cout << "netns: " << k_daemons << " daemons on " << k_hosts << " hosts up in " << started_s << " s, "
              << k_daemons << " cross-host friendships (request, accept, link) in " << linked_s
              << " s; bootstrap node knows " << info["dht"]["nodes"] << " nodes, "
              << info["dht"]["packets_in"] << " packets in\n";
    for (auto& x : d) x->stop();
    CHECK(boot.stop() == 0);
}
