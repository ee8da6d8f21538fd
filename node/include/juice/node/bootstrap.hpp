// BootstrapNode: `juiced --bootstrap-node`. A DHT node meant to stay up so
// that new juice nodes can find the network: no identity, no contacts, no
// messages, only routing and storage, with the same put guard every juice
// node has (a stock 2.4.12 dhtnode dies from one crafted packet), plus:
//   - a routing table persisted across restarts (<data dir>/bootstrap-nodes.bin)
//     and a node id kept across restarts (<data dir>/bootstrap-node-id);
//   - OpenDHT's stable-node behaviour (public_stable);
//   - a per-IP packet rate limit before OpenDHT parses anything, on top of
//     OpenDHT's own request limits;
//   - operator stats over the local API (node.info, `juice stats`) and, when
//     asked, as Prometheus text on a loopback HTTP port.
//
// Threading: run() runs the asio loop on the calling thread, like Daemon.
#pragma once

#include "juice/crypto/result.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace juice::node {

struct BootstrapConfig {
    std::filesystem::path data_dir;            // routing table, node id, lock
    std::filesystem::path api_socket;          // "" = default_bootstrap_socket_path()
    std::uint16_t dht_port = 4222;             // UDP; the port others are told to bootstrap from
    std::uint64_t network = 0;                 // OpenDHT network id
    std::vector<std::string> bootstrap;        // nodes to join through ("host:port"); may be empty
    bool lan_discovery = false;                // a server has no LAN peers worth finding
    std::uint32_t max_packets_per_ip = 200;    // datagrams/s per source IP; 0 = no limit
    std::int64_t max_requests_per_s = 0;       // OpenDHT's global request limit (0 = its default, 8192)
    std::int64_t max_peer_requests_per_s = 0;  // OpenDHT's per-IP request limit (0 = its default, 1024)
    std::uint16_t metrics_port = 0;            // 0 = no HTTP metrics
    std::string metrics_bind = "127.0.0.1";
    std::chrono::seconds stats_log_interval{300};  // a one-line summary in the log
};

// $XDG_RUNTIME_DIR/juice/bootstrap.sock (or /tmp/juice-<uid>/bootstrap.sock),
// so that a bootstrap node and a user's juiced can run side by side.
std::filesystem::path default_bootstrap_socket_path();

class BootstrapNode {
public:
    explicit BootstrapNode(BootstrapConfig config);
    ~BootstrapNode();

    // Locks the data dir, starts the API server, the DHT node and (if asked)
    // the metrics endpoint. Errors are user-readable.
    Result<void> start();
    // Runs until SIGINT/SIGTERM, daemon.shutdown or request_shutdown(); saves
    // the routing table on the way out.
    void run();
    void request_shutdown();  // thread-safe

    struct Impl;

private:
    std::unique_ptr<Impl> m_impl;
};

}  // namespace juice::node
