// BootstrapNode: a DhtNode without identity behind the local API and an
// optional metrics endpoint. See bootstrap.hpp.
#include "juice/node/bootstrap.hpp"

#include "juice/dht/node.hpp"
#include "juice/node/api.hpp"
#include "juice/node/daemon.hpp"
#include "juice/node/metrics.hpp"
#include "node_common.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <asio.hpp>

#include <unistd.h>

#include <fstream>
#include <random>

namespace juice::node {

using namespace std::chrono;
using json = nlohmann::json;

namespace {

// The node id file: 40 hex digits. A missing or damaged file gets a new id
// (and a warning for the damaged case); an id is not worth refusing to start.
Bytes load_or_create_node_id(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::string hex;
    if (in >> hex) {
        if (auto b = from_hex(hex); b && b->size() == 20) return *b;
        spdlog::warn("{} does not hold a 40-hex node id; making a new one", path.string());
    }
    Bytes id(20);
    std::random_device rd;
    for (auto& b : id) b = static_cast<std::uint8_t>(rd());
    auto tmp = path;
    tmp += ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << to_hex(id) << "\n";
        if (!out) {
            spdlog::warn("cannot write {}: the node id will change at the next start", tmp.string());
            return id;
        }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) spdlog::warn("cannot write {}: {}", path.string(), ec.message());
    return id;
}

}  // namespace

std::filesystem::path default_bootstrap_socket_path() {
    return api::default_socket_path().parent_path() / "bootstrap.sock";
}

struct BootstrapNode::Impl {
    BootstrapConfig cfg;
    asio::io_context io;
    asio::signal_set signals{io, SIGINT, SIGTERM};
    asio::steady_timer tick_timer{io};
    std::unique_ptr<api::ApiServer> api;
    std::unique_ptr<dht::DhtNode> dht;
    std::unique_ptr<MetricsServer> metrics;
    RateMeter rates;
    steady_clock::time_point started = steady_clock::now();
    steady_clock::time_point last_stats_log = started;
    std::string last_state;
    int lock_fd = -1;
    bool stopping = false;

    explicit Impl(BootstrapConfig c) : cfg(std::move(c)) {}
    ~Impl() {
        if (lock_fd >= 0) ::close(lock_fd);
    }

    Result<void> start() {
        auto fd = lock_data_dir(cfg.data_dir, "bootstrap.lock", "bootstrap node");
        if (!fd) return fd.error();
        lock_fd = *fd;

        api::ApiServer::Options aopt;
        aopt.socket_path = cfg.api_socket.empty() ? default_bootstrap_socket_path() : cfg.api_socket;
        api = std::make_unique<api::ApiServer>(io, aopt);
        register_methods();
        if (auto r = api->start(); !r) return r;

        dht::DhtNode::Options dopt;
        dopt.port = cfg.dht_port;
        dopt.network = cfg.network;
        dopt.bootstrap = cfg.bootstrap;
        dopt.lan_discovery = cfg.lan_discovery;
        dopt.node_cache = cfg.data_dir / "bootstrap-nodes.bin";
        dopt.node_id = load_or_create_node_id(cfg.data_dir / "bootstrap-node-id");
        dopt.stable_listens = true;
        dopt.max_packets_per_ip = cfg.max_packets_per_ip;
        dopt.max_requests_per_s = cfg.max_requests_per_s;
        dopt.max_peer_requests_per_s = cfg.max_peer_requests_per_s;
        dopt.post = [this](std::function<void()> f) { asio::post(io, std::move(f)); };
        dht = std::make_unique<dht::DhtNode>(std::move(dopt));
        if (auto r = dht->start(nullptr); !r) return r;

        if (cfg.metrics_port) {
            metrics = std::make_unique<MetricsServer>(io, [this] { return all_metrics(); });
            if (auto r = metrics->start(cfg.metrics_bind, cfg.metrics_port); !r) return r;
        }

        signals.async_wait([this](std::error_code ec, int sig) {
            if (ec) return;
            spdlog::info("signal {}: shutting down", sig);
            begin_shutdown();
        });
        tick();
        auto i = dht->info();
        spdlog::info("juiced {} bootstrap node up: node id {}, dht on udp port {}, network {}, api at {}{}",
                     k_version, i.node_id, i.port, cfg.network, aopt.socket_path.string(),
                     metrics
                         ? fmt::format(", metrics at http://{}:{}/metrics", cfg.metrics_bind, metrics->port())
                         : std::string());
        if (cfg.bootstrap.empty())
            spdlog::info(
                "no --bootstrap given: waiting for nodes to join through us (or from the saved routing "
                "table)");
        return {};
    }

    json info_json() {
        auto i = dht->info();
        return {{"version", k_version},
                {"mode", "bootstrap"},
                {"node_id", i.node_id},
                {"dht", dht_json(i, rates.rates())},
                {"uptime_s", duration_cast<seconds>(steady_clock::now() - started).count()},
                {"api_clients", api->client_count()},
                {"rss_bytes", process_rss_bytes()},
                {"limits",
                 {{"max_packets_per_ip", cfg.max_packets_per_ip},
                  {"max_requests_per_s", cfg.max_requests_per_s},
                  {"max_peer_requests_per_s", cfg.max_peer_requests_per_s}}}};
    }

    std::vector<Metric> all_metrics() {
        auto m = dht_metrics(dht->info(), duration<double>(steady_clock::now() - started).count());
        m.push_back({"juice_bootstrap_node", "1: this process is a bootstrap node", Metric::Type::gauge, 1});
        return m;
    }

    void register_methods() {
        api->add_method("node.info", [this](const json&, api::Reply r) { r.result(info_json()); });
        api->add_method("daemon.shutdown", [this](const json&, api::Reply r) {
            r.result(json::object());
            asio::post(io, [this] { begin_shutdown(); });
        });
    }

    void tick() {
        tick_timer.expires_after(seconds(1));
        tick_timer.async_wait([this](std::error_code ec) {
            if (ec || stopping) return;
            auto now = steady_clock::now();
            auto i = dht->info();
            rates.sample(i, now);
            if (i.state != last_state) {
                spdlog::info("dht: {} ({} nodes)", i.state, i.nodes);
                last_state = i.state;
                api->publish({{"type", "node.state"}, {"dht", dht_json(i, rates.rates())}});
            }
            if (cfg.stats_log_interval.count() > 0 && now - last_stats_log >= cfg.stats_log_interval) {
                last_stats_log = now;
                auto r = rates.rates();
                spdlog::info(
                    "stats: {} nodes (~{} in the network), {} values stored ({} KiB), in {:.0f} pkt/s "
                    "{:.1f} KiB/s, out {:.0f} pkt/s {:.1f} KiB/s, {} rate-limited, {} crash puts "
                    "refused, {} MiB",
                    i.nodes, i.network_size_estimate, i.stored_values, i.stored_bytes / 1024, r.packets_in,
                    r.bytes_in / 1024, r.packets_out, r.bytes_out / 1024, i.packets_rate_limited,
                    i.puts_refused, process_rss_bytes() >> 20);
            }
            tick();
        });
    }

    void begin_shutdown() {
        if (stopping) return;
        stopping = true;
        std::error_code ec;
        signals.cancel(ec);
        tick_timer.cancel();
        if (metrics) metrics->stop();
        // No record to publish: stop saves the routing table and leaves.
        dht->stop(std::nullopt, milliseconds(200));
        api->stop();
        io.stop();
    }
};

BootstrapNode::BootstrapNode(BootstrapConfig config) : m_impl(std::make_unique<Impl>(std::move(config))) {}

BootstrapNode::~BootstrapNode() {
    if (m_impl->dht && m_impl->dht->running()) m_impl->dht->stop(std::nullopt, milliseconds(200));
}

Result<void> BootstrapNode::start() {
    return m_impl->start();
}

void BootstrapNode::run() {
    m_impl->io.run();
    spdlog::info("bootstrap node stopped");
}

void BootstrapNode::request_shutdown() {
    asio::post(m_impl->io, [impl = m_impl.get()] { impl->begin_shutdown(); });
}

}  // namespace juice::node
