// The juice model: N real DhtNodes in this process (see sim.hpp).
//
// Each simulated user is a juice::dht::DhtNode with its own RSA identity and
// UDP port on 127.0.0.1, joining through one real `juiced --bootstrap-node`. Users publish signed presence
// records and watch their buddies' keys exactly as juiced does. Everything the report times is measured on
// this machine's clocks: a publish is timed from the call to publish_presence to the watcher's callback on
// the loop thread.
#include "harness.hpp"
#include "juice/dht/node.hpp"
#include "sim.hpp"

#include <spdlog/spdlog.h>
#include <sys/select.h>
#include <asio.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace juice::sim {

namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using dht::DhtNode;
using dht::PresenceRecord;

// The loop DhtNode delivers its callbacks on (the daemon's event loop in
// juiced): one asio thread for all simulated users.
class Loop {
public:
    Loop() : m_work(asio::make_work_guard(m_io)), m_thread([this] { m_io.run(); }) {}
    ~Loop() {
        m_work.reset();
        m_io.stop();
        m_thread.join();
    }
    DhtNode::Post poster() {
        return [this](std::function<void()> fn) { asio::post(m_io, std::move(fn)); };
    }

private:
    asio::io_context m_io;
    asio::executor_work_guard<asio::io_context::executor_type> m_work;
    std::thread m_thread;
};

struct Counters {
    std::uint64_t packets_in = 0, bytes_in = 0, packets_out = 0, bytes_out = 0;
    std::map<std::string, dht::KindCount> kinds;
    double good_nodes = 0, searches = 0, stored_values = 0;  // at the snapshot
};

class World {
public:
    World(std::vector<crypto::Identity> ids, std::vector<std::vector<int>> buddies, std::string bootstrap,
          std::uint64_t network, bool stable_listens, std::chrono::seconds republish)
        : m_stable(stable_listens),
          m_republish(republish.count() > 0 ? clk::duration(republish) : clk::duration::max() / 2),
          m_ids(std::move(ids)),
          m_buddies(std::move(buddies)),
          m_bootstrap(std::move(bootstrap)),
          m_network(network),
          m_users(m_ids.size()) {}

    ~World() {
        // Stop every node (no final record) before the loop they post to goes.
        std::vector<std::future<void>> stops;
        for (auto& u : m_users)
            if (u.node)
                stops.push_back(std::async(std::launch::async, [&u] { u.node->stop(std::nullopt, 0ms); }));
        for (auto& f : stops) f.get();
    }

    int size() const { return static_cast<int>(m_ids.size()); }
    const std::vector<int>& buddies_of(int i) const { return m_buddies[static_cast<std::size_t>(i)]; }
    bool online(int i) const { return m_users[static_cast<std::size_t>(i)].online.load(); }

    // Starts user i's node and publishes its "online" record (timed as
    // phase `phase`); with `watch`, it also watches all its buddies.
    bool start(int i, bool watch, const std::string& phase) {
        auto& u = m_users[static_cast<std::size_t>(i)];
        std::lock_guard ulk(u.mtx);
        DhtNode::Options o;
        o.network = m_network;
        o.bootstrap = {m_bootstrap};
        o.lan_discovery = false;
        // All on 127.0.0.1, one port each: OpenDHT 2.4.12 rewrites a
        // loopback address learnt from a peer to that peer's own address
        // (NetworkEngine::deserializeNodes), so users bound to 127.x.y.z
        // other than the bootstrap's address could never reach each other.
        // Then every user shares one IP, and a per-IP request limit would
        // act as a limit on the whole network: none here.
        o.bind4 = "127.0.0.1";
        o.max_peer_requests_per_s = -1;
        o.post = m_loop.poster();
        o.classify_traffic = true;
        o.stable_listens = m_stable;
        u.node = std::make_unique<DhtNode>(std::move(o));
        u.started = clk::now();
        u.next_republish = u.started + m_republish;
        auto res = u.node->start(&m_ids[static_cast<std::size_t>(i)]);
        if (!res) {
            std::fprintf(stderr, "sim: user %d did not start: %s\n", i, res.error().what().c_str());
            u.node.reset();
            return false;
        }
        u.online = true;
        publish(i, "online", phase);
        if (watch) watch_buddies(i);
        return true;
    }

    void watch_buddies(int i) {
        auto& u = m_users[static_cast<std::size_t>(i)];
        std::lock_guard ulk(u.mtx);
        const auto t0 = clk::now();
        for (int b : buddies_of(i)) {
            {
                std::lock_guard lk(m_mtx);
                // A lookup is timed only for a buddy already online with a record out.
                if (m_users[static_cast<std::size_t>(b)].online && m_last_pub.count(b))
                    m_lookups[{i, b}] = t0;
            }
            auto token =
                u.node->watch_presence(m_ids[static_cast<std::size_t>(b)].id(),
                                       [this, i, b](const PresenceRecord& r) { on_record(i, b, r); });
            std::lock_guard lk(m_mtx);
            m_watches[{i, b}] = Watch{token, t0, false, false, {}};
        }
        u.watching = true;
    }

    // juiced's dormant watches (Config::presence_dormant_after, docs/DESIGN.md):
    // a buddy with no live record for `after` is no longer listened to, and
    // is polled (one get) every `poll`. 0 s: always listen. Only the
    // `buddies` scenario turns it on: its buddies never come online, so no
    // knock (which would wake a watch) is ever due.
    void set_dormancy(std::chrono::seconds after, std::chrono::seconds poll) {
        m_dormant_after = after;
        m_poll = poll;
    }

    // Called every second (Republisher): puts watches to sleep and polls.
    void sweep_dormant() {
        if (m_dormant_after.count() <= 0) return;
        const auto now = clk::now();
        std::vector<std::pair<std::pair<int, int>, Watch>> todo;
        {
            std::lock_guard lk(m_mtx);
            for (auto& [key, w] : m_watches) {
                if (w.live) w.live_or_woken = now;  // juiced keeps a live contact awake
                if (!w.dormant && now - w.live_or_woken >= m_dormant_after) todo.push_back({key, w});
                if (w.dormant && m_poll.count() > 0 && now >= w.next_poll) todo.push_back({key, w});
            }
        }
        for (auto& [key, w] : todo) {
            auto& u = m_users[static_cast<std::size_t>(key.first)];
            std::unique_lock ulk(u.mtx, std::try_to_lock);
            if (!ulk || !u.online || !u.node) continue;
            if (!w.dormant) {
                u.node->set_dormant(w.token, true);
                w.dormant = true;
                w.next_poll = now + m_poll;
            } else {
                u.node->poll(w.token);
                w.next_poll = now + m_poll;
            }
            std::lock_guard lk(m_mtx);
            if (auto it = m_watches.find(key); it != m_watches.end() && it->second.token == w.token) {
                it->second.dormant = w.dormant;
                it->second.next_poll = w.next_poll;
            }
        }
    }

    // Publishes a record with status `status`; its delivery to each buddy
    // that watches now is timed under `phase`.
    void publish(int i, const std::string& status, const std::string& phase) {
        auto& u = m_users[static_cast<std::size_t>(i)];
        std::lock_guard ulk(u.mtx);
        u.status = status;
        auto rec = record(i, status);
        register_pub(i, rec.ts, phase);
        u.node->publish_presence(rec);
    }

    // What juiced does every --presence-refresh (1800 s): a fresh record with
    // the same status. Publishes those that are due (timed under
    // "republish"); users busy in another thread wait for the next call.
    void republish_due() {
        const auto now = clk::now();
        for (int i = 0; i < size(); ++i) {
            auto& u = m_users[static_cast<std::size_t>(i)];
            std::unique_lock ulk(u.mtx, std::try_to_lock);
            if (!ulk || !u.online || !u.node || u.next_republish > now) continue;
            u.next_republish += m_republish;
            publish(i, u.status, "republish");
        }
    }

    // Stops user i cleanly: its "offline" record goes out (timed under
    // `phase`) and the node leaves. Blocks up to ~2 s.
    void leave(int i, const std::string& phase) {
        auto& u = m_users[static_cast<std::size_t>(i)];
        std::lock_guard ulk(u.mtx);
        auto rec = record(i, "offline");
        register_pub(i, rec.ts, phase);
        u.online = false;
        u.watching = false;
        u.node->stop(rec);
    }

    // Waits until every user in `who` is connected to the DHT (or timeout);
    // returns each one's time from start to connected (ms; -1 = never).
    std::vector<double> wait_connected(const std::vector<int>& who, std::chrono::seconds timeout) {
        std::vector<double> out(who.size(), -1);
        const auto deadline = clk::now() + timeout;
        std::size_t left = who.size();
        while (left && clk::now() < deadline) {
            for (std::size_t k = 0; k < who.size(); ++k) {
                if (out[k] >= 0) continue;
                auto& u = m_users[static_cast<std::size_t>(who[k])];
                std::lock_guard ulk(u.mtx);
                if (u.node && u.node->info().state == "connected") {
                    out[k] = ms_between(u.started, clk::now());
                    --left;
                }
            }
            std::this_thread::sleep_for(100ms);
        }
        return out;
    }

    // Traffic counters of every online user now.
    std::map<int, Counters> snapshot() {
        std::map<int, Counters> out;
        for (int i = 0; i < size(); ++i) {
            auto& u = m_users[static_cast<std::size_t>(i)];
            std::lock_guard ulk(u.mtx);
            if (!u.online || !u.node) continue;
            auto inf = u.node->info();
            out[i] = {inf.packets_in,
                      inf.bytes_in,
                      inf.packets_out,
                      inf.bytes_out,
                      std::move(inf.traffic_by_kind),
                      static_cast<double>(inf.nodes),
                      static_cast<double>(inf.searches),
                      static_cast<double>(inf.stored_values)};
        }
        return out;
    }

    // Per-user traffic rates between two snapshots, over users in both.
    static json rates(const std::map<int, Counters>& a, const std::map<int, Counters>& b, double seconds,
                      const std::set<int>* only = nullptr) {
        std::vector<double> bin, bout, pin, pout, total, nodes, searches, stored;
        std::map<std::string, double> kind_bytes, kind_packets;  // summed over users, per minute
        for (const auto& [i, c1] : b) {
            auto it = a.find(i);
            if (it == a.end() || (only && !only->count(i))) continue;
            const auto& c0 = it->second;
            const double per_min = 60.0 / seconds;
            for (const auto& [kind, k1] : c1.kinds) {
                dht::KindCount k0;
                if (auto f = c0.kinds.find(kind); f != c0.kinds.end()) k0 = f->second;
                kind_bytes[kind] +=
                    static_cast<double>(k1.bytes_in - k0.bytes_in + k1.bytes_out - k0.bytes_out) * per_min;
                kind_packets[kind] +=
                    static_cast<double>(k1.packets_in - k0.packets_in + k1.packets_out - k0.packets_out) *
                    per_min;
            }
            bin.push_back(static_cast<double>(c1.bytes_in - c0.bytes_in) * per_min);
            bout.push_back(static_cast<double>(c1.bytes_out - c0.bytes_out) * per_min);
            pin.push_back(static_cast<double>(c1.packets_in - c0.packets_in) * per_min);
            pout.push_back(static_cast<double>(c1.packets_out - c0.packets_out) * per_min);
            total.push_back(bin.back() + bout.back());
            nodes.push_back(c1.good_nodes);
            searches.push_back(c1.searches);
            stored.push_back(c1.stored_values);
        }
        json kinds = json::object();
        const double users = std::max<double>(1, static_cast<double>(total.size()));
        for (const auto& [kind, bytes] : kind_bytes)
            kinds[kind] = {{"bytes_per_min", bytes / users}, {"packets_per_min", kind_packets[kind] / users}};
        return {{"users", total.size()},
                {"window_s", seconds},
                {"mean_by_kind", kinds},
                {"routing_table_good_nodes", summarize(nodes)},
                {"searches", summarize(searches)},
                {"values_stored_for_others", summarize(stored)},
                {"bytes_per_min_total", summarize(total)},
                {"bytes_in_per_min", summarize(bin)},
                {"bytes_out_per_min", summarize(bout)},
                {"packets_in_per_min", summarize(pin)},
                {"packets_out_per_min", summarize(pout)}};
    }

    // The delivery report of every publish timed under `phase`: latency
    // (publish -> buddy's callback) of each delivered (watcher, record)
    // pair, and how many pairs were expected. A watcher that left since
    // does not count.
    json phase_report(const std::string& phase, bool with_samples) {
        std::lock_guard lk(m_mtx);
        std::vector<double> lat;
        std::size_t expected = 0, delivered = 0;
        json missed = json::array();
        for (const auto& [key, p] : m_pubs) {
            if (p.phase != phase) continue;
            for (int w : p.expected) {
                if (!m_users[static_cast<std::size_t>(w)].online) continue;
                ++expected;
                auto it = p.got.find(w);
                if (it != p.got.end()) {
                    ++delivered;
                    lat.push_back(it->second);
                } else if (missed.size() < 10) {
                    missed.push_back({{"publisher", key.first}, {"watcher", w}});
                }
            }
        }
        json out{{"expected_pairs", expected},
                 {"delivered_pairs", delivered},
                 {"delivered_share",
                  expected ? static_cast<double>(delivered) / static_cast<double>(expected) : 1.0},
                 {"latency_ms", summarize(lat)},
                 {"missed_examples", missed}};
        if (with_samples) out["samples_ms"] = lat;
        return out;
    }

    // Lookup latency samples (watch -> first record of an online buddy)
    // taken since the last call.
    std::vector<double> take_lookups() {
        std::lock_guard lk(m_mtx);
        auto v = std::move(m_lookup_samples);
        m_lookup_samples.clear();
        m_lookups.clear();  // a lookup still pending now is a miss
        return v;
    }

    std::size_t lookups_pending() {
        std::lock_guard lk(m_mtx);
        return m_lookups.size();
    }

    // Pairs of `phase` not yet delivered to a watcher still online.
    std::size_t pending(const std::string& phase) {
        std::lock_guard lk(m_mtx);
        std::size_t n = 0;
        for (const auto& [key, p] : m_pubs)
            if (p.phase == phase)
                for (int w : p.expected)
                    if (m_users[static_cast<std::size_t>(w)].online && !p.got.count(w)) ++n;
        return n;
    }

private:
    struct User {
        // DhtNode's methods are for one thread at a time; the driver, the
        // churn threads and the republisher take this first. Recursive:
        // start() publishes and watches.
        std::recursive_mutex mtx;
        std::string status = "online";
        clk::time_point next_republish = clk::time_point::max();
        std::unique_ptr<DhtNode> node;
        std::atomic<bool> online{false};
        std::atomic<bool> watching{false};
        clk::time_point started;
    };
    struct Pub {
        std::string phase;
        clk::time_point at;
        std::set<int> expected;     // watchers at publish time
        std::map<int, double> got;  // watcher -> latency ms
    };

    PresenceRecord record(int i, const std::string& status) {
        PresenceRecord r;
        r.name = "sim" + std::to_string(i);
        r.status = status;
        r.caps = {"text", "voice"};
        r.device = "sim-device-" + std::to_string(i);
        r.addrs = {{"127.0.0.1", static_cast<std::uint16_t>(40000 + i % 20000), "host"}};
        r.ts = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
        std::lock_guard lk(m_mtx);
        auto& last = m_last_ts[i];
        if (r.ts <= last) r.ts = last + 1;  // (user, ts) names a record
        last = r.ts;
        return r;
    }

    void register_pub(int i, std::int64_t ts, const std::string& phase) {
        Pub p{phase, clk::now(), {}, {}};
        for (int b : buddies_of(i))
            if (m_users[static_cast<std::size_t>(b)].watching) p.expected.insert(b);
        std::lock_guard lk(m_mtx);
        m_pubs[{i, ts}] = std::move(p);
        m_last_pub[i] = ts;
    }

    // Loop thread.
    void on_record(int watcher, int publisher, const PresenceRecord& r) {
        const auto now = clk::now();
        std::lock_guard lk(m_mtx);
        if (auto it = m_lookups.find({watcher, publisher}); it != m_lookups.end()) {
            m_lookup_samples.push_back(ms_between(it->second, now));
            m_lookups.erase(it);
        }
        if (auto w = m_watches.find({watcher, publisher}); w != m_watches.end()) {
            w->second.live = r.status != "offline";
            if (w->second.live) w->second.live_or_woken = now;
        }
        auto it = m_pubs.find({publisher, r.ts});
        if (it == m_pubs.end()) return;
        auto& p = it->second;
        if (p.expected.count(watcher) && !p.got.count(watcher)) p.got[watcher] = ms_between(p.at, now);
    }

    bool m_stable;
    clk::duration m_republish;
    std::vector<crypto::Identity> m_ids;
    std::vector<std::vector<int>> m_buddies;
    std::string m_bootstrap;
    std::uint64_t m_network;
    Loop m_loop;
    std::vector<User> m_users;

    std::mutex m_mtx;  // guards what follows (loop thread vs driver)
    std::map<std::pair<int, std::int64_t>, Pub> m_pubs;
    std::map<int, std::int64_t> m_last_ts, m_last_pub;
    std::map<std::pair<int, int>, clk::time_point> m_lookups;
    struct Watch {
        std::uint64_t token = 0;
        clk::time_point live_or_woken;  // watch started, or a live record seen
        bool live = false;              // the newest record seen is not "offline"
        bool dormant = false;
        clk::time_point next_poll;
    };
    std::map<std::pair<int, int>, Watch> m_watches;  // (watcher, buddy)
    std::chrono::seconds m_dormant_after{0}, m_poll{0};
    std::vector<double> m_lookup_samples;
};

// Calls World::republish_due every second on its own thread while alive.
class Republisher {
public:
    explicit Republisher(World& w)
        : m_thread([this, &w] {
              std::unique_lock lk(m_mtx);
              while (!m_cv.wait_for(lk, 1s, [this] { return m_stop; })) {
                  lk.unlock();
                  w.republish_due();
                  w.sweep_dormant();
                  lk.lock();
              }
          }) {}
    ~Republisher() {
        {
            std::lock_guard lk(m_mtx);
            m_stop = true;
        }
        m_cv.notify_all();
        m_thread.join();
    }

private:
    std::mutex m_mtx;
    std::condition_variable m_cv;
    bool m_stop = false;
    std::thread m_thread;
};

// Waits until `pending()` is 0 or `grace` has passed; with `full`, always
// the whole grace (processes of a group keep in step).
template <typename F>
void settle(F pending, std::chrono::seconds grace, bool full = false) {
    const auto deadline = clk::now() + grace;
    while (clk::now() < deadline && (full || pending() > 0)) std::this_thread::sleep_for(200ms);
}

void say(const char* fmt, auto... args) {
    std::fprintf(stderr, "sim: ");
    std::fprintf(stderr, fmt, args...);
    std::fprintf(stderr, "\n");
}

// Runs `fn(k)` for k in [0, count) spread evenly over `seconds`.
template <typename F>
void spread(int count, double seconds, F fn) {
    const auto t0 = clk::now();
    for (int k = 0; k < count; ++k) {
        auto due = t0 + std::chrono::duration_cast<clk::duration>(
                            std::chrono::duration<double>(seconds * k / count));
        std::this_thread::sleep_until(due);
        fn(k);
    }
}

// Users a run needs keys for: those online at first, those that come
// online, churn's joiners and the mass login.
int pool_size(const DhtConfig& cfg) {
    const int n = cfg.nodes;
    return n + (cfg.online ? cfg.online : std::max(1, n / 20)) + static_cast<int>(n * cfg.churn + 0.5) +
           (cfg.mass_login ? cfg.mass_login : std::max(1, n / 10));
}

std::uint64_t pick_seed(std::uint64_t seed) {
    return seed ? seed : std::random_device{}() * 0x9E3779B97F4A7C15ULL + std::random_device{}();
}

// A real `juiced --bootstrap-node` for the simulated users to join through.
std::unique_ptr<test::JuicedBootstrap> start_bootstrap(const std::filesystem::path& dir,
                                                       std::uint64_t network) {
    auto boot = std::make_unique<test::JuicedBootstrap>(dir / "bootstrap", network);
    boot->log_level = "warn";
    // Every simulated user has the IP 127.0.0.1 (see World::start): no per-IP limits.
    boot->extra_args = {"--rate-limit-ip", "0", "--max-peer-requests", "-1"};
    if (!boot->start()) throw std::runtime_error("the bootstrap node did not start: " + boot->log());
    return boot;
}

json bootstrap_stats(test::JuicedBootstrap& boot) {
    try {
        auto info = boot.call("node.info");
        return info.contains("dht") ? info["dht"] : info;
    } catch (const std::exception& e) {
        return {{"error", e.what()}};
    }
}

}  // namespace

namespace {
json run_group(const DhtConfig& cfg, int procs);
}

json run_dht(const DhtConfig& cfg) {
    const int procs = cfg.procs ? cfg.procs : (cfg.nodes + k_users_per_process - 1) / k_users_per_process;
    if (cfg.join.empty() && procs > 1) return run_group(cfg, procs);
    const std::uint64_t seed = pick_seed(cfg.seed);
    std::mt19937_64 rng(seed);
    const int n = cfg.nodes;
    const int n_online = cfg.online ? cfg.online : std::max(1, n / 20);
    const int n_churn = static_cast<int>(n * cfg.churn + 0.5);
    const int n_mass = cfg.mass_login ? cfg.mass_login : std::max(1, n / 10);
    const int pool = pool_size(cfg);
    say("seed %llu; %d users online of %d, %d buddies each", static_cast<unsigned long long>(seed), n, pool,
        cfg.buddies);

    auto ids = identity_pool(cfg.key_cache.empty() ? default_key_cache() : cfg.key_cache,
                             cfg.key_offset + pool, cfg.key_bits);
    ids.erase(ids.begin(), ids.begin() + cfg.key_offset);
    std::shuffle(ids.begin(), ids.end(), rng);  // a different user set each seed
    auto graph = buddy_graph(pool, cfg.buddies, rng);
    double mean_degree = 0;
    for (auto& b : graph) mean_degree += static_cast<double>(b.size());
    mean_degree /= pool;

    test::TempDir dir;
    std::unique_ptr<test::JuicedBootstrap> boot;
    auto network = cfg.network;
    std::string bootstrap = cfg.join;
    if (bootstrap.empty()) {
        network = test::random_network_id();
        boot = start_bootstrap(dir.path(), network);
        bootstrap = boot->address();
    }
    const double rss_base = static_cast<double>(self_rss_kib());
    World world(std::move(ids), std::move(graph), bootstrap, network, cfg.stable_listens,
                std::chrono::seconds(cfg.republish_s));
    Republisher republisher(world);

    json report{{"model", "juice-dht"},
                {"config",
                 {{"nodes", n},
                  {"buddies", cfg.buddies},
                  {"mean_buddies", mean_degree},
                  {"users_in_pool", pool},
                  {"key_bits", cfg.key_bits},
                  {"seed", seed},
                  {"login_rate_per_s", cfg.login_rate},
                  {"idle_s", cfg.idle_s},
                  {"stable_listens", cfg.stable_listens},
                  {"republish_s", cfg.republish_s},
                  {"cores", std::thread::hardware_concurrency()}}}};

    // 1. Login: the first n users start at login_rate per second, without
    //    watches yet (memory per node is read before the watches go on).
    say("login: starting %d users at %.0f/s", n, cfg.login_rate);
    std::vector<int> first(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) first[static_cast<std::size_t>(i)] = i;
    const auto login_t0 = clk::now();
    const double login_cpu0 = self_cpu_seconds();
    spread(n, n / cfg.login_rate, [&](int k) { world.start(k, false, "login"); });
    auto connect = world.wait_connected(first, 60s);
    if (cfg.fixed_phases)
        std::this_thread::sleep_until(login_t0 +
                                      std::chrono::seconds(n / static_cast<int>(cfg.login_rate) + 20));
    int never = static_cast<int>(std::count(connect.begin(), connect.end(), -1.0));
    std::erase(connect, -1.0);
    report["login"] = {{"connect_ms", summarize(connect)},
                       {"not_connected", never},
                       {"duration_s", ms_between(login_t0, clk::now()) / 1000},
                       {"cpu_s", self_cpu_seconds() - login_cpu0}};
    say("login: %d connected, %d not; settling %d s", n - never, never, cfg.settle_s);
    std::this_thread::sleep_for(std::chrono::seconds(cfg.settle_s));
    const double rss_nodes = static_cast<double>(self_rss_kib());

    // 2. Watches: every user watches its buddies; a lookup is the time to
    //    the first record of a buddy that is online.
    say("lookup: every user watches its buddies, within %d s", cfg.watch_spread_s);
    spread(n, cfg.watch_spread_s, [&](int k) { world.watch_buddies(k); });
    settle([&] { return world.lookups_pending(); }, std::chrono::seconds(cfg.grace_s * 3), cfg.fixed_phases);
    auto lookups = world.take_lookups();
    report["lookup"] = {{"latency_ms", summarize(lookups)}, {"missed", 0}};
    std::this_thread::sleep_for(5s);
    const double rss_watch = static_cast<double>(self_rss_kib());
    report["memory"] = {{"rss_base_kib", rss_base},
                        {"rss_nodes_kib", rss_nodes},
                        {"rss_watching_kib", rss_watch},
                        {"per_node_kib", (rss_nodes - rss_base) / n},
                        {"per_buddy_kib", (rss_watch - rss_nodes) / (n * mean_degree)},
                        {"note",
                         "one process; per buddy = the watcher's listen plus its share of the "
                         "listeners stored at other nodes"}};

    // 3. Steady-state presence: every user publishes a status change within
    //    update_spread_s.
    say("update: every user publishes a status change within %d s", cfg.update_spread_s);
    spread(n, cfg.update_spread_s, [&](int k) { world.publish(k, "away", "update"); });
    settle([&] { return world.pending("update"); }, std::chrono::seconds(cfg.grace_s), cfg.fixed_phases);
    report["update"] = world.phase_report("update", cfg.samples);

    // 4. Idle: nothing happens; what each user's node sends and receives.
    say("idle: %d s", cfg.idle_s);
    auto s0 = world.snapshot();
    const double idle_cpu0 = self_cpu_seconds();
    auto idle_t0 = clk::now();
    std::this_thread::sleep_for(std::chrono::seconds(cfg.idle_s));
    auto s1 = world.snapshot();
    const double idle_secs = ms_between(idle_t0, clk::now()) / 1000;
    report["idle"] = World::rates(s0, s1, idle_secs);
    report["idle"]["cpu_share_of_one_core"] = (self_cpu_seconds() - idle_cpu0) / idle_secs;
    if (boot) report["bootstrap_after_idle"] = bootstrap_stats(*boot);

    // 5. A buddy comes online: fresh users start (watching their buddies)
    //    one by one; their record is timed to each online buddy.
    say("online: %d users come online", n_online);
    int next = n;
    spread(n_online, 10, [&](int k) { world.start(next + k, true, "online"); });
    next += n_online;
    settle([&] { return world.pending("online"); }, std::chrono::seconds(cfg.grace_s), cfg.fixed_phases);
    report["buddy_online"] = world.phase_report("online", cfg.samples);
    report["buddy_online"]["lookup_ms"] = summarize(world.take_lookups());

    // 6. Churn: n_churn online users leave (offline record) and as many new
    //    ones join, interleaved over churn_spread_s. Traffic of the users
    //    online throughout is measured over churn_window_s.
    say("churn: %d leave and %d join over %d s", n_churn, n_churn, cfg.churn_spread_s);
    std::vector<int> online_now;
    for (int i = 0; i < next; ++i)
        if (world.online(i)) online_now.push_back(i);
    std::shuffle(online_now.begin(), online_now.end(), rng);
    std::vector<int> leavers(online_now.begin(),
                             online_now.begin() + std::min<int>(n_churn, online_now.size()));
    std::set<int> stayers(online_now.begin() + leavers.size(), online_now.end());
    auto c0 = world.snapshot();
    const auto churn_t0 = clk::now();
    std::vector<std::future<void>> stops;
    spread(2 * n_churn, cfg.churn_spread_s, [&](int k) {
        if (k % 2 == 0 && k / 2 < static_cast<int>(leavers.size())) {
            int who = leavers[static_cast<std::size_t>(k / 2)];
            stops.push_back(
                std::async(std::launch::async, [&world, who] { world.leave(who, "churn_leave"); }));
        } else if (k % 2 == 1) {
            world.start(next + k / 2, true, "churn_join");
        }
    });
    for (auto& f : stops) f.get();
    next += n_churn;
    std::this_thread::sleep_until(churn_t0 +
                                  std::chrono::seconds(std::max(cfg.churn_window_s, cfg.churn_spread_s)));
    auto c1 = world.snapshot();
    const double churn_secs = ms_between(churn_t0, clk::now()) / 1000;
    settle([&] { return world.pending("churn_join") + world.pending("churn_leave"); },
           std::chrono::seconds(cfg.grace_s), cfg.fixed_phases);
    report["churn"] = {{"left", leavers.size()},
                       {"joined", n_churn},
                       {"stayers_traffic", World::rates(c0, c1, churn_secs, &stayers)},
                       {"offline_seen", world.phase_report("churn_leave", false)},
                       {"join_seen", world.phase_report("churn_join", false)},
                       {"join_lookup_ms", summarize(world.take_lookups())}};

    // 7. Mass login: n_mass users start within mass_login_s.
    say("mass login: %d users within %d s", n_mass, cfg.mass_login_s);
    std::vector<int> mass;
    const double mass_cpu0 = self_cpu_seconds();
    const auto mass_t0 = clk::now();
    spread(n_mass, cfg.mass_login_s, [&](int k) {
        if (world.start(next + k, true, "mass_login")) mass.push_back(next + k);
    });
    auto mass_connect = world.wait_connected(mass, 60s);
    settle([&] { return world.pending("mass_login") + world.lookups_pending(); },
           std::chrono::seconds(cfg.grace_s), cfg.fixed_phases);
    std::erase(mass_connect, -1.0);
    report["mass_login"] = {{"users", mass.size()},
                            {"connect_ms", summarize(mass_connect)},
                            {"seen_by_buddies", world.phase_report("mass_login", false)},
                            {"lookup_ms", summarize(world.take_lookups())},
                            {"cpu_share_of_one_core",
                             (self_cpu_seconds() - mass_cpu0) / (ms_between(mass_t0, clk::now()) / 1000)}};
    report["republish"] = world.phase_report("republish", false);
    if (boot) report["bootstrap_at_end"] = bootstrap_stats(*boot);
    say("done");
    return report;
}

json run_buddies(const BuddiesConfig& cfg) {
    const std::uint64_t seed = pick_seed(cfg.seed);
    std::mt19937_64 rng(seed);
    int offline_total = 0;
    for (int b : cfg.probe_buddies) offline_total += b;
    const int probes = static_cast<int>(cfg.probe_buddies.size());
    const int pool = cfg.nodes + probes + offline_total;
    say("seed %llu; %d background users, %d probes watching %d offline users",
        static_cast<unsigned long long>(seed), cfg.nodes, probes, offline_total);
    auto ids = identity_pool(cfg.key_cache.empty() ? default_key_cache() : cfg.key_cache, pool, cfg.key_bits);
    std::shuffle(ids.begin(), ids.end(), rng);

    // Background users have 10 buddies among themselves; probe p (user
    // nodes + p) has the next probe_buddies[p] users after them, who never
    // start.
    auto graph = buddy_graph(cfg.nodes, std::min(10, cfg.nodes - 1), rng);
    graph.resize(static_cast<std::size_t>(pool));
    int off = cfg.nodes + probes;
    for (int p = 0; p < probes; ++p) {
        auto& g = graph[static_cast<std::size_t>(cfg.nodes + p)];
        for (int k = 0; k < cfg.probe_buddies[static_cast<std::size_t>(p)]; ++k) g.push_back(off++);
    }

    test::TempDir dir;
    const auto network = test::random_network_id();
    auto boot = start_bootstrap(dir.path(), network);
    World world(std::move(ids), std::move(graph), boot->address(), network, cfg.stable_listens,
                std::chrono::seconds(cfg.republish_s));
    world.set_dormancy(std::chrono::seconds(cfg.dormant_after_s), std::chrono::seconds(cfg.poll_s));
    Republisher republisher(world);
    std::vector<int> all;
    spread(cfg.nodes, cfg.nodes / 40.0, [&](int k) {
        world.start(k, true, "login");
        all.push_back(k);
    });
    for (int p = 0; p < probes; ++p) {
        world.start(cfg.nodes + p, true, "login");
        all.push_back(cfg.nodes + p);
    }
    world.wait_connected(all, 60s);
    const int settle = cfg.settle_s >= 0         ? cfg.settle_s
                       : cfg.dormant_after_s > 0 ? cfg.dormant_after_s + 30
                                                 : 60;
    say("settling %d s, then measuring %d s", settle, cfg.idle_s);
    std::this_thread::sleep_for(std::chrono::seconds(settle));
    auto s0 = world.snapshot();
    const auto t0 = clk::now();
    std::this_thread::sleep_for(std::chrono::seconds(cfg.idle_s));
    auto s1 = world.snapshot();
    const double secs = ms_between(t0, clk::now()) / 1000;
    json rows = json::array();
    for (int p = 0; p < probes; ++p) {
        const int i = cfg.nodes + p;
        if (!s0.count(i) || !s1.count(i)) continue;
        const auto &a = s0[i], &b = s1[i];
        const double in = static_cast<double>(b.bytes_in - a.bytes_in) / secs;
        const double out = static_cast<double>(b.bytes_out - a.bytes_out) / secs;
        const std::set<int> one{i};
        rows.push_back(
            {{"offline_buddies", cfg.probe_buddies[static_cast<std::size_t>(p)]},
             {"by_kind_per_min", World::rates(s0, s1, secs, &one)["mean_by_kind"]},
             {"bytes_in_per_s", in},
             {"bytes_out_per_s", out},
             {"bytes_per_s", in + out},
             {"packets_per_s",
              static_cast<double>(b.packets_in - a.packets_in + b.packets_out - a.packets_out) / secs}});
    }
    std::set<int> background;
    for (int i = 0; i < cfg.nodes; ++i) background.insert(i);
    return {{"model", "juice-dht"},
            {"scenario", "idle traffic against offline buddies"},
            {"config",
             {{"background_nodes", cfg.nodes},
              {"key_bits", cfg.key_bits},
              {"seed", seed},
              {"stable_listens", cfg.stable_listens},
              {"republish_s", cfg.republish_s},
              {"dormant_after_s", cfg.dormant_after_s},
              {"poll_s", cfg.poll_s},
              {"settle_s", settle},
              {"window_s", secs}}},
            {"probes", rows},
            {"background", World::rates(s0, s1, secs, &background)}};
}

}  // namespace juice::sim

namespace juice::sim {
namespace {

void strip_raw(json& j, bool keep_cdf) {
    if (j.is_object()) {
        j.erase("samples");
        if (!keep_cdf) j.erase("samples_ms");
        for (auto& [k, v] : j.items()) strip_raw(v, keep_cdf);
    } else if (j.is_array()) {
        for (auto& v : j) strip_raw(v, keep_cdf);
    }
}

// Runs the scenario in `procs` processes of this program over one network
// (one bootstrap node, started here), each with its share of the users and
// of every scenario size, in step (fixed phase times), and merges their
// reports. Buddies are within a process; the DHT (routing, storage,
// listens) spans all of them.
json run_group(const DhtConfig& cfg, int procs) {
    const std::uint64_t seed = pick_seed(cfg.seed);
    const auto cache = cfg.key_cache.empty() ? default_key_cache() : cfg.key_cache;
    std::vector<DhtConfig> parts;
    int total_pool = 0;
    for (int k = 0; k < procs; ++k) {
        DhtConfig c = cfg;
        c.nodes = cfg.nodes / procs + (k < cfg.nodes % procs ? 1 : 0);
        c.online = cfg.online ? std::max(1, cfg.online / procs) : 0;
        c.mass_login = cfg.mass_login ? std::max(1, cfg.mass_login / procs) : 0;
        c.login_rate = std::max(1.0, cfg.login_rate / procs);
        c.key_offset = total_pool;
        c.seed = seed + static_cast<std::uint64_t>(k) + 1;
        total_pool += pool_size(c);
        parts.push_back(c);
    }
    say("seed %llu; %d users over %d processes (OpenDHT's select() limits a process to %d descriptors)",
        static_cast<unsigned long long>(seed), cfg.nodes, procs, FD_SETSIZE);
    (void)identity_pool(cache, total_pool, cfg.key_bits);  // make the missing keys once, here

    test::TempDir dir;
    const auto network = test::random_network_id();
    auto boot = start_bootstrap(dir.path(), network);
    std::vector<std::unique_ptr<test::Process>> children;
    for (int k = 0; k < procs; ++k) {
        const auto& c = parts[static_cast<std::size_t>(k)];
        auto num = [](auto x) { return std::to_string(x); };
        std::vector<std::string> args{"--log-level",
                                      "error",
                                      "--out",
                                      (dir.path() / ("part-" + num(k) + ".json")).string(),
                                      "dht",
                                      "--nodes",
                                      num(c.nodes),
                                      "--buddies",
                                      num(c.buddies),
                                      "--login-rate",
                                      num(c.login_rate),
                                      "--settle",
                                      num(c.settle_s),
                                      "--watch-spread",
                                      num(c.watch_spread_s),
                                      "--update-spread",
                                      num(c.update_spread_s),
                                      "--idle",
                                      num(c.idle_s),
                                      "--online",
                                      num(c.online),
                                      "--churn",
                                      num(c.churn),
                                      "--churn-spread",
                                      num(c.churn_spread_s),
                                      "--churn-window",
                                      num(c.churn_window_s),
                                      "--mass-login",
                                      num(c.mass_login),
                                      "--mass-login-s",
                                      num(c.mass_login_s),
                                      "--grace",
                                      num(c.grace_s),
                                      "--key-bits",
                                      num(c.key_bits),
                                      "--key-cache",
                                      cache.string(),
                                      "--seed",
                                      num(c.seed),
                                      "--republish",
                                      num(c.republish_s),
                                      "--procs",
                                      "1",
                                      "--join",
                                      boot->address(),
                                      "--network",
                                      num(network),
                                      "--key-offset",
                                      num(c.key_offset),
                                      "--fixed-phases",
                                      "--raw"};
        if (cfg.samples) args.push_back("--samples");
        if (!cfg.stable_listens) args.push_back("--no-stable-listens");
        children.push_back(std::make_unique<test::Process>("/proc/self/exe", args,
                                                           dir.path() / ("part-" + num(k) + ".log")));
    }
    // Progress: the first process's lines.
    std::size_t shown = 0;
    std::vector<int> codes(children.size(), -1);
    const auto deadline = clk::now() + std::chrono::hours(3);
    for (;;) {
        bool running = false;
        for (std::size_t k = 0; k < children.size(); ++k)
            if (codes[k] == -1) {
                codes[k] = children[k]->wait(0ms);
                running = running || codes[k] == -1;
            }
        auto log = children.front()->log();
        if (log.size() > shown) {
            std::fprintf(stderr, "[1/%d] %s", procs, log.substr(shown).c_str());
            shown = log.size();
        }
        if (!running || clk::now() > deadline) break;
        std::this_thread::sleep_for(1s);
    }
    std::vector<json> reports;
    for (std::size_t k = 0; k < children.size(); ++k) {
        if (codes[k] != 0)
            throw std::runtime_error("simulation process " + std::to_string(k + 1) + " failed (exit " +
                                     std::to_string(codes[k]) + "): " + children[k]->log());
        std::ifstream in(dir.path() / ("part-" + std::to_string(k) + ".json"));
        reports.push_back(json::parse(in));
    }
    json merged = merge_reports(reports);
    strip_raw(merged, cfg.samples);
    auto config = reports.front()["config"];
    config["nodes"] = cfg.nodes;
    config["users_in_pool"] = total_pool;
    config["login_rate_per_s"] = cfg.login_rate;
    config["seed"] = seed;
    config["processes"] = procs;
    merged["config"] = config;
    merged["bootstrap_at_end"] = bootstrap_stats(*boot);
    merged["model"] = "juice-dht";
    return merged;
}

}  // namespace
}  // namespace juice::sim
