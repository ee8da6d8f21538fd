// juice-sim: shared pieces of the scale simulation (docs/SCALE.md).
//
// Two models run in the same harness so their per-user cost can be compared
// on the same machine in the same run:
//   dht        N real juice DHT nodes (juice::dht::DhtNode: real OpenDHT,
//              real signed presence publish and watch) on 127.0.0.1 in this
//              process, one UDP port each, joining through a real
//              `juiced --bootstrap-node`.
//   broadcast  the classic design: one relay forwards every presence ping
//              and message to every user over UDP; clients filter.
// A benchmark measures; nothing here asserts. Results are JSON on stdout,
// progress on stderr.
#pragma once

#include "juice/crypto/identity.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace juice::sim {

using clk = std::chrono::steady_clock;

inline double ms_between(clk::time_point a, clk::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

// Loads `count` RSA identities of `bits` bits from `dir` (one folder each,
// unencrypted), generating the missing ones on every core with progress on
// stderr. Throws std::runtime_error when a key can be neither loaded nor
// made (the simulation cannot go on without its users).
std::vector<crypto::Identity> identity_pool(const std::filesystem::path& dir, int count, unsigned bits);

// The default key cache: $XDG_CACHE_HOME/juice-sim, else ~/.cache/juice-sim,
// else /tmp/juice-sim-cache.
std::filesystem::path default_key_cache();

// A random, nearly regular buddy graph over `pool` users: each gets up to
// `degree` buddies, buddyship is mutual, and each list is sorted.
std::vector<std::vector<int>> buddy_graph(int pool, int degree, std::mt19937_64& rng);

// The i-th simulated host's IPv4 address: 127.<net>.<hi>.<lo>, never .0 or
// .255 in the last byte (the broadcast model's clients).
std::string host_address(int net, int i);

// A summary of a sample: n, mean, p50, p90, p99, max (same unit as the input).
// With set_raw_samples(true) it also carries the sample itself ("samples"),
// so that reports of several processes can be merged (merge_reports).
nlohmann::json summarize(std::vector<double> v);
void set_raw_samples(bool on);

// Merges reports of the same scenario run by several processes over one
// network: samples are pooled and summarized again, counts added, other
// numbers averaged, delivered shares recomputed.
nlohmann::json merge_reports(const std::vector<nlohmann::json>& parts);

// This process's resident memory (KiB) and CPU time (user + system, s).
long self_rss_kib();
double self_cpu_seconds();

// Run subcommands; each returns the JSON report.
struct DhtConfig {
    int nodes = 100;           // online at the start
    int buddies = 10;          // per user (a random, nearly regular graph)
    double login_rate = 40;    // initial nodes started per second
    int settle_s = 30;         // after login, before measuring memory
    int watch_spread_s = 20;   // users start watching their buddies within this
    int update_spread_s = 20;  // every node publishes an update within this
    int idle_s = 300;          // idle traffic window (>= one 4m50s refresh cycle)
    int online = 0;            // "a buddy comes online": fresh users (0 = 5% of nodes)
    double churn = 0.3;        // share of nodes that leave, and as many join
    int churn_spread_s = 120;
    int churn_window_s = 180;  // traffic window from the churn's start
    int mass_login = 0;        // nodes started within mass_login_s (0 = 10% of nodes)
    int mass_login_s = 5;
    int grace_s = 10;  // wait for late events after each phase
    unsigned key_bits = 2048;
    std::filesystem::path key_cache;
    std::uint64_t seed = 0;      // 0 = random (printed)
    bool samples = false;        // include raw latency samples (for CDF plots)
    bool stable_listens = true;  // DhtNode::Options::stable_listens
    int republish_s = 1800;      // a fresh record this often, as juiced --presence-refresh (0 = never)
    // Processes to spread the users over (0 = one per k_users_per_process).
    // OpenDHT 2.4.12's UdpSocket waits with select(), so no socket of a
    // process may have a descriptor >= FD_SETSIZE (1024): with ~4 per user,
    // a process holds a few hundred users at most.
    int procs = 0;
    // Set for the processes of a group (run by the first): join this
    // bootstrap node on this network instead of starting one, use keys
    // from key_offset on, and give every phase its full time so that all
    // processes go through the phases together.
    std::string join;
    std::uint64_t network = 0;
    int key_offset = 0;
    bool fixed_phases = false;
};
inline constexpr int k_users_per_process = 150;
nlohmann::json run_dht(const DhtConfig& cfg);

// Idle traffic against the number of (offline) buddies: a background of
// `nodes` users with 10 buddies each, plus one probe user per entry of
// `probe_buddies` watching that many users who never come online.
struct BuddiesConfig {
    int nodes = 100;
    std::vector<int> probe_buddies{0, 10, 25, 50, 100};
    int settle_s = -1;  // -1: 60, or dormant_after_s + 30
    int idle_s = 300;
    unsigned key_bits = 2048;
    std::filesystem::path key_cache;
    std::uint64_t seed = 0;
    bool stable_listens = true;
    int republish_s = 1800;
    int dormant_after_s = 600;  // as juiced --presence-dormant-after (0 = always listen)
    int poll_s = 7200;          // as juiced --presence-poll
};
nlohmann::json run_buddies(const BuddiesConfig& cfg);

struct BroadcastConfig {
    int nodes = 100;
    int buddies = 10;
    double ping_interval_s = 60;  // each user's "I'm still here"
    double messages_per_min = 0.1;
    int window_s = 120;
    std::uint64_t seed = 0;
};
nlohmann::json run_broadcast(const BroadcastConfig& cfg);

}  // namespace juice::sim
