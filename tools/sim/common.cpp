#include "sim.hpp"

#include "harness.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

namespace juice::sim {

namespace fs = std::filesystem;

fs::path default_key_cache() {
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return fs::path(x) / "juice-sim";
    if (const char* h = std::getenv("HOME"); h && *h) return fs::path(h) / ".cache" / "juice-sim";
    return "/tmp/juice-sim-cache";
}

std::vector<crypto::Identity> identity_pool(const fs::path& dir, int count, unsigned bits) {
    const fs::path root = dir / ("rsa" + std::to_string(bits));
    std::vector<std::optional<crypto::Identity>> slots(static_cast<std::size_t>(count));
    std::atomic<int> next{0}, made{0};
    std::mutex err_mtx;
    std::string error;
    auto worker = [&] {
        for (int i; (i = next.fetch_add(1)) < count;) {
            const auto d = root / std::to_string(i);
            if (crypto::Identity::exists(d)) {
                if (auto id = crypto::Identity::load(d, std::nullopt)) {
                    slots[static_cast<std::size_t>(i)] = std::move(*id);
                    continue;
                }
                // A damaged cache entry (e.g. an interrupted run): make it again.
                std::error_code ec;
                fs::remove_all(d, ec);
            }
            auto id = crypto::Identity::generate(bits, "sim" + std::to_string(i));
            if (id) {
                // Another run may have written it meanwhile; either key is fine.
                (void)id->save(d, std::nullopt);
                slots[static_cast<std::size_t>(i)] = std::move(*id);
                int m = ++made;
                if (m % 50 == 0) std::fprintf(stderr, "sim: generated %d keys (%u bits)\n", m, bits);
            } else {
                std::lock_guard lk(err_mtx);
                error = id.error().what();
            }
        }
    };
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < std::max(1u, std::thread::hardware_concurrency()); ++t)
        threads.emplace_back(worker);
    for (auto& t : threads) t.join();
    if (!error.empty()) throw std::runtime_error("could not make a simulated user's key: " + error);
    if (made) std::fprintf(stderr, "sim: generated %d new keys into %s\n", made.load(), root.c_str());
    std::vector<crypto::Identity> out;
    out.reserve(slots.size());
    for (auto& s : slots) out.push_back(std::move(*s));
    return out;
}

// A random, nearly regular buddy graph over `pool` users: each gets up to
// `degree` buddies, and buddyship is mutual (as contacts are in juice).
std::vector<std::vector<int>> buddy_graph(int pool, int degree, std::mt19937_64& rng) {
    std::vector<std::set<int>> adj(static_cast<std::size_t>(pool));
    std::uniform_int_distribution<int> pick(0, pool - 1);
    for (int i = 0; i < pool; ++i) {
        for (int tries = 0; static_cast<int>(adj[i].size()) < degree && tries < degree * 20; ++tries) {
            int j = pick(rng);
            if (j == i || adj[j].size() >= static_cast<std::size_t>(degree) || adj[i].count(j)) continue;
            adj[i].insert(j);
            adj[j].insert(i);
        }
    }
    std::vector<std::vector<int>> out;
    for (auto& s : adj) out.emplace_back(s.begin(), s.end());
    return out;
}

std::string host_address(int net, int i) {
    return "127." + std::to_string(net) + "." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 2);
}

namespace {
bool g_raw = false;
}

void set_raw_samples(bool on) {
    g_raw = on;
}

nlohmann::json summarize(std::vector<double> v) {
    if (v.empty())
        return g_raw ? nlohmann::json{{"n", 0}, {"samples", nlohmann::json::array()}}
                     : nlohmann::json{{"n", 0}};
    std::sort(v.begin(), v.end());
    auto pct = [&](double p) { return test::percentile(v, p); };
    double sum = 0;
    for (double x : v) sum += x;
    nlohmann::json out{{"n", v.size()},    {"mean", sum / static_cast<double>(v.size())},
                       {"p50", pct(0.5)},  {"p90", pct(0.9)},
                       {"p99", pct(0.99)}, {"max", v.back()}};
    if (g_raw) out["samples"] = v;
    return out;
}

nlohmann::json merge_reports(const std::vector<nlohmann::json>& parts) {
    using nlohmann::json;
    if (parts.empty()) return nullptr;
    const json& first = parts.front();
    if (first.is_object()) {
        if (first.contains("samples") && first.contains("n")) {
            std::vector<double> all;
            for (const auto& p : parts)
                if (p.contains("samples"))
                    for (const auto& x : p["samples"]) all.push_back(x.get<double>());
            return summarize(std::move(all));
        }
        json out = json::object();
        std::set<std::string> keys;
        for (const auto& p : parts)
            if (p.is_object())
                for (const auto& [k, v] : p.items()) keys.insert(k);
        // Numbers that add up over processes; every other number is averaged.
        static const std::set<std::string> counts{
            "expected_pairs", "delivered_pairs",       "users", "left", "joined", "not_connected", "nodes",
            "users_in_pool",  "cpu_share_of_one_core", "cpu_s"};
        for (const auto& k : keys) {
            std::vector<json> sub;
            for (const auto& p : parts)
                if (p.is_object() && p.contains(k)) sub.push_back(p[k]);
            if (counts.count(k) && sub.front().is_number()) {
                double sum = 0;
                for (const auto& x : sub) sum += x.get<double>();
                out[k] = sum;
            } else {
                out[k] = merge_reports(sub);
            }
        }
        if (out.contains("expected_pairs") && out.contains("delivered_pairs")) {
            const double e = out["expected_pairs"].get<double>();
            out["delivered_share"] = e > 0 ? out["delivered_pairs"].get<double>() / e : 1.0;
        }
        return out;
    }
    if (first.is_array()) {
        json out = json::array();
        for (const auto& p : parts)
            if (p.is_array())
                for (const auto& x : p) out.push_back(x);
        return out;
    }
    if (first.is_number() && !first.is_boolean()) {
        double sum = 0;
        int n = 0;
        for (const auto& p : parts)
            if (p.is_number()) {
                sum += p.get<double>();
                ++n;
            }
        return n ? json(sum / n) : first;
    }
    return first;
}

long self_rss_kib() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

double self_cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto s = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    return s(ru.ru_utime) + s(ru.ru_stime);
}

}  // namespace juice::sim
