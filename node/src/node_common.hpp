// What the user daemon and the bootstrap node share: the data directory
// lock, and what a node reports about its DHT side (the `dht` object of
// node.info, the Prometheus metrics, per-second rates over the last seconds).
#pragma once

#include "juice/dht/node.hpp"
#include "juice/node/metrics.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <deque>
#include <filesystem>

namespace juice::node {

// Rates of the DHT socket's counters over a sliding window of samples
// (sample() about once a second; the window is the last `window` samples).
class RateMeter {
public:
    explicit RateMeter(std::size_t window = 10) : m_window(window) {}
    void sample(const dht::DhtInfo& info, std::chrono::steady_clock::time_point now);
    struct Rates {
        double packets_in = 0, packets_out = 0, bytes_in = 0, bytes_out = 0;  // per second
    };
    Rates rates() const;

private:
    struct Sample {
        std::chrono::steady_clock::time_point t;
        std::uint64_t pin, pout, bin, bout;
    };
    std::size_t m_window;
    std::deque<Sample> m_samples;
};

// Takes an exclusive lock on `dir`/`lock_name` (creating `dir`), held until
// the returned fd is closed or the process ends (a crash leaves no stale
// lock). `who` names the program in the error ("juiced", "the bootstrap node").
Result<int> lock_data_dir(const std::filesystem::path& dir, const std::string& lock_name,
                          const std::string& who);

// Resident memory of this process, bytes (0 if unknown).
std::uint64_t process_rss_bytes();

nlohmann::json dht_json(const dht::DhtInfo& info, const RateMeter::Rates& rates);

// juice_* metrics for `info`, plus uptime and memory.
std::vector<Metric> dht_metrics(const dht::DhtInfo& info, double uptime_s);

}  // namespace juice::node
