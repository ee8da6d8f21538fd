// DhtNode on top of OpenDHT 2.4.12's DhtRunner.
//
// Threads involved:
//   - the caller's loop: every public method, and every user callback (through
//     Options::post);
//   - OpenDHT's DHT thread: runs the routing/storage logic and calls our
//     listen/put/status callbacks *while holding DhtRunner's internal mutex*.
//     Those callbacks only copy what they got and post it; calling any
//     synchronous DhtRunner getter from there would deadlock;
//   - the UDP receive thread of the inner socket: runs Options::packet_filter.
// Callbacks given to OpenDHT capture shared_ptrs to small state objects, never
// `this`, so a late callback can never touch a destroyed DhtNode.
#include "juice/dht/node.hpp"

#include "put_guard.hpp"
#include "rate_limit.hpp"
#include "traffic_kind.hpp"

#include "node_cache.hpp"
#include "sealed_internal.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <opendht/dhtrunner.h>
#include <opendht/log_enable.h>
#include <opendht/network_utils.h>
#include <opendht/securedht.h>
#include <opendht/value.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <unordered_set>
#include <utility>
#include <vector>

namespace juice::dht {

namespace {

namespace odht = ::dht;
namespace fs = std::filesystem;

using PacketFilter = std::function<bool(std::span<const std::uint8_t>, const std::string&)>;

// Datagrams and UDP payload bytes through the DHT socket (DhtInfo).
struct Traffic {
    std::atomic<std::uint64_t> packets_in{0}, bytes_in{0};
    std::atomic<std::uint64_t> packets_out{0}, bytes_out{0};
    std::atomic<std::uint64_t> rate_limited{0};
    std::unique_ptr<TrafficKinds> kinds;  // set before start with Options::classify_traffic
};

// The raw address bytes of `a` (the rate limiter's key).
std::string_view ip_bytes(const odht::SockAddr& a) {
    if (a.getFamily() == AF_INET) {
        const auto& in = a.getIPv4().sin_addr;
        return {reinterpret_cast<const char*>(&in), sizeof in};
    }
    if (a.getFamily() == AF_INET6) {
        const auto& in6 = a.getIPv6().sin6_addr;
        return {reinterpret_cast<const char*>(&in6), sizeof in6};
    }
    return {};
}

std::shared_ptr<spdlog::logger> dht_logger() {
    if (auto l = spdlog::get("dht")) return l;
    auto def = spdlog::default_logger();
    auto l = std::make_shared<spdlog::logger>("dht", def->sinks().begin(), def->sinks().end());
    l->set_level(def->level());
    try {
        spdlog::register_logger(l);
    } catch (const std::exception&) {
        if (auto existing = spdlog::get("dht")) return existing;  // registered concurrently
    }
    return l;
}

// OpenDHT's own log lines go to our "dht" logger only when JUICE_DHT_LOG=1:
// they are verbose and mostly about routing-table churn.
std::shared_ptr<odht::Logger> make_opendht_logger(std::shared_ptr<spdlog::logger> log) {
    const char* env = std::getenv("JUICE_DHT_LOG");
    if (!env || std::string_view(env) != "1") return {};
    // Asking for OpenDHT's logs means wanting its debug lines too.
    if (log->level() > spdlog::level::debug) log->set_level(spdlog::level::debug);
    auto method = [log](spdlog::level::level_enum level) {
        return odht::LogMethod([log, level](char const* fmt, va_list args) {
            char buf[1024];
            std::vsnprintf(buf, sizeof buf, fmt, args);
            log->log(level, "[opendht] {}", buf);
        });
    };
    return std::make_shared<odht::Logger>(method(spdlog::level::err), method(spdlog::level::warn),
                                          method(spdlog::level::debug));
}

// The UDP socket OpenDHT reads from, given to it through
// DhtRunner::Context::sock. It wraps OpenDHT's own UdpSocket (which binds and
// runs the receive thread) and stands between that thread and OpenDHT's
// parser: every datagram first goes through `filter`.
//
// HOOK FOR HOSTILE INPUT: OpenDHT 2.4.12 can be crashed by a single crafted
// packet (an unsigned put reusing the id of a stored signed value: the edit
// policy in securedht.cpp dereferences the new value's null owner). The fix
// belongs in Options::packet_filter (or a filter installed here by default):
// it sees the raw bytes and sender before OpenDHT parses anything, runs on the
// socket's receive thread, and drops a packet by returning false.
class FilteredSocket final : public odht::net::DatagramSocket {
public:
    // `fake_ipv6`: report IPv6 as available even though no IPv6 socket could
    // be bound. OpenDHT 2.4.12's listen() returns 0 (silently fails) unless
    // both families run; with this, a host without IPv6 still gets working
    // listens over IPv4 (IPv6 sends just fail with EAFNOSUPPORT).
    FilteredSocket(std::unique_ptr<odht::net::UdpSocket> inner, PacketFilter filter, bool fake_ipv6,
                   std::shared_ptr<Traffic> traffic, std::uint32_t max_packets_per_ip)
        : m_filter(std::move(filter)),
          m_fake_ipv6(fake_ipv6),
          m_traffic(std::move(traffic)),
          m_limiter(max_packets_per_ip),
          m_inner(std::move(inner)) {
        m_inner->setOnReceive(
            [this](odht::net::PacketList&& pkts) { return on_inner_receive(std::move(pkts)); });
    }
    ~FilteredSocket() override {
        // Join the receive thread before our members (used by its callback) go.
        m_inner->stop();
        m_inner.reset();
    }

    int sendTo(const odht::SockAddr& dest, const std::uint8_t* data, std::size_t size,
               bool replied) override {
        int err = m_inner->sendTo(dest, data, size, replied);
        if (err == 0) {
            m_traffic->packets_out.fetch_add(1, std::memory_order_relaxed);
            m_traffic->bytes_out.fetch_add(size, std::memory_order_relaxed);
            if (m_traffic->kinds)
                m_traffic->kinds->record(TrafficKinds::Dir::out, std::span<const std::uint8_t>(data, size),
                                         dest.toString());
        }
        return err;
    }
    bool hasIPv4() const override { return m_inner->hasIPv4(); }
    bool hasIPv6() const override { return m_fake_ipv6 || m_inner->hasIPv6(); }
    const odht::SockAddr& getBoundRef(sa_family_t family = AF_UNSPEC) const override {
        return m_inner->getBoundRef(family);
    }
    void stop() override { m_inner->stop(); }

private:
    // Runs on the inner socket's receive thread, the only thread that touches
    // this object's recycle list (onReceived/getNewPacket), as in UdpSocket.
    odht::net::PacketList on_inner_receive(odht::net::PacketList&& pkts) {
        odht::net::PacketList dropped;
        const auto now = PeerRateLimiter::Clock::now();
        for (const auto& p : pkts) {
            m_traffic->packets_in.fetch_add(1, std::memory_order_relaxed);
            m_traffic->bytes_in.fetch_add(p.data.size(), std::memory_order_relaxed);
            if (m_traffic->kinds) m_traffic->kinds->record(TrafficKinds::Dir::in, p.data, p.from.toString());
        }
        for (auto it = pkts.begin(); it != pkts.end();) {
            bool keep = m_limiter.allow(ip_bytes(it->from), now);
            if (!keep) m_traffic->rate_limited.fetch_add(1, std::memory_order_relaxed);
            if (keep && m_filter) {
                try {
                    keep = m_filter(std::span<const std::uint8_t>(it->data.data(), it->data.size()),
                                    it->from.toString());
                } catch (const std::exception& e) {
                    keep = false;
                    dht_logger()->warn("packet filter threw ({}); dropping packet", e.what());
                }
            }
            auto next = std::next(it);
            if (!keep) {
                it->data.clear();
                dropped.splice(dropped.end(), pkts, it);
            }
            it = next;
        }
        const std::size_t passed = pkts.size();
        if (passed) onReceived(std::move(pkts));
        // Hand the inner socket as many empty packets as it just gave away, so
        // neither recycle list grows without bound.
        for (std::size_t i = 0; i < passed; ++i) dropped.splice(dropped.end(), getNewPacket());
        return dropped;
    }

    PacketFilter m_filter;
    bool m_fake_ipv6;
    std::shared_ptr<Traffic> m_traffic;
    PeerRateLimiter m_limiter;  // receive thread only
    std::unique_ptr<odht::net::UdpSocket> m_inner;
};

// A one-shot flag a callback on another thread sets and a caller waits for.
struct Waiter {
    std::mutex mtx;
    std::condition_variable cv;
    bool done = false;
    bool ok = false;
    void set(bool result) {
        {
            std::lock_guard lk(mtx);
            done = true;
            ok = result;
        }
        cv.notify_all();
    }
    // Returns true if set() was called within `timeout`.
    bool wait_for(std::chrono::milliseconds timeout) {
        std::unique_lock lk(mtx);
        return cv.wait_for(lk, timeout, [&] { return done; });
    }
};

struct StatusState {
    std::atomic<odht::NodeStatus> v4{odht::NodeStatus::Disconnected};
    std::atomic<odht::NodeStatus> v6{odht::NodeStatus::Disconnected};
};

// One watch's delivery state. Touched on the loop (through posted closures)
// and by unwatch; a mutex keeps it correct even if a caller's post runs
// closures on another thread.
struct WatchState {
    std::mutex mtx;
    bool active = true;
    bool delivered = false;       // something was delivered
    std::int64_t newest_ts = 0;   // newest ts delivered
    odht::Value::Id last_id = 0;  // value id of the last delivered record
    bool expired = false;         // that value expired since it was delivered
    std::function<void(const PresenceRecord&)> on_record;
    std::function<void()> on_expired;

    void deliver(odht::Value::Id id, const PresenceRecord& rec) {
        std::function<void(const PresenceRecord&)> cb;
        {
            std::lock_guard lk(mtx);
            if (!active) return;
            // Replay rule: never go back in time. The same record may come
            // back after it expired (e.g. a network split healed); that is not
            // a replay of something older, so it is delivered again.
            if (delivered && !(rec.ts > newest_ts || (rec.ts == newest_ts && expired))) {
                dht_logger()->debug("dropping stale presence record (ts {} <= {})", rec.ts, newest_ts);
                return;
            }
            delivered = true;
            newest_ts = rec.ts;
            last_id = id;
            expired = false;
            cb = on_record;
        }
        if (cb) cb(rec);
    }

    void value_expired(odht::Value::Id id) {
        std::function<void()> cb;
        {
            std::lock_guard lk(mtx);
            if (!active || !delivered || expired || id != last_id) return;
            expired = true;
            cb = on_expired;
        }
        if (cb) cb();
    }
};

// The value ids of our presence records. Every publish uses a fresh id
// (why: see publish_presence), so the announce of the record it replaces
// must be cancelled, or OpenDHT would keep re-announcing it. Cancelling is
// done from the put callbacks (DHT thread), only for puts whose callback has
// already run: OpenDHT 2.4.12's Search::cancelPut drops a pending put's
// callback without calling it (the runner would then count the op as ongoing
// forever and never confirm a shutdown).
struct PresencePuts {
    std::mutex mtx;
    odht::Value::Id current = 0;           // id of the newest record
    bool current_done = false;             // its put callback ran
    std::vector<odht::Value::Id> settled;  // replaced ids whose callback ran: cancel once `current` is stored

    // Loop: `id` becomes the current record.
    void begin(odht::Value::Id id) {
        std::lock_guard lk(mtx);
        if (current && current_done) settled.push_back(current);
        current = id;
        current_done = false;
    }
    // DHT thread: the put of `id` completed. Returns the ids to cancel now.
    std::vector<odht::Value::Id> done(odht::Value::Id id) {
        std::lock_guard lk(mtx);
        if (id != current) return {id};  // replaced while it was in flight
        current_done = true;
        return std::exchange(settled, {});
    }
};

struct WatchEntry {
    UserId user;
    odht::InfoHash key;
    std::shared_ptr<WatchState> state;
    std::optional<std::shared_future<std::size_t>> token;  // set while listening on a running runner
    bool dormant = false;                                  // no listen (set_dormant)
};

bool is_inbox_type(std::uint16_t type) {
    return type == k_inbox_type_id || type == k_signal_type_id;
}

void post_safe(const DhtNode::Post& post, std::function<void()> fn) {
    try {
        post(std::move(fn));
    } catch (const std::exception& e) {
        dht_logger()->error("posting a DHT event to the loop failed: {}", e.what());
    }
}

// "host:port", "[v6]:port", "host" (default port 4222).
std::optional<std::pair<std::string, std::string>> parse_host_port(const std::string& s) {
    std::string host, port;
    if (!s.empty() && s.front() == '[') {
        auto close = s.find(']');
        if (close == std::string::npos) return std::nullopt;
        host = s.substr(1, close - 1);
        if (close + 1 < s.size()) {
            if (s[close + 1] != ':') return std::nullopt;
            port = s.substr(close + 2);
        }
    } else {
        auto colon = s.find(':');
        if (colon != std::string::npos && s.find(':', colon + 1) == std::string::npos) {
            host = s.substr(0, colon);
            port = s.substr(colon + 1);
        } else {
            host = s;  // no port, or a bare IPv6 address
        }
    }
    if (host.empty()) return std::nullopt;
    if (port.empty()) port = std::to_string(odht::net::DHT_DEFAULT_PORT);
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    auto n = std::stoul(port);
    if (n == 0 || n > 65535) return std::nullopt;
    return std::make_pair(host, port);
}

using detail::k_max_cache_file;

std::vector<odht::NodeExport> load_node_cache(const fs::path& path) {
    std::error_code ec;
    if (path.empty() || !fs::exists(path, ec)) return {};
    auto size = fs::file_size(path, ec);
    if (ec || size == 0 || size > k_max_cache_file) {
        dht_logger()->warn("ignoring node cache {}: unreadable or too large", path.string());
        return {};
    }
    std::string data(size, '\0');
    try {
        std::ifstream in(path, std::ios::binary);
        if (!in.read(data.data(), static_cast<std::streamsize>(size))) return {};
    } catch (const std::exception& e) {
        dht_logger()->warn("ignoring node cache {}: {}", path.string(), e.what());
        return {};
    }
    auto nodes =
        detail::parse_node_cache(std::span(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()));
    if (!nodes) {
        dht_logger()->warn("ignoring corrupt node cache {}: {}", path.string(), nodes.error().message);
        return {};
    }
    return std::move(*nodes);
}

void save_node_cache(const fs::path& path, std::vector<odht::NodeExport> nodes) {
    if (path.empty()) return;
    try {
        const auto count = std::min(nodes.size(), detail::k_max_cached_nodes);
        const auto buf = detail::encode_node_cache(std::move(nodes));
        std::error_code ec;
        if (path.has_parent_path()) fs::create_directories(path.parent_path(), ec);
        auto tmp = path;
        tmp += ".tmp";
        {
            std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
            out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
            out.flush();
            if (!out) throw std::runtime_error("write failed");
        }
        fs::rename(tmp, path);  // atomic replace: a crash never leaves half a cache
        dht_logger()->debug("saved {} nodes to {}", count, path.string());
    } catch (const std::exception& e) {
        dht_logger()->warn("could not save node cache {}: {}", path.string(), e.what());
    }
}

// The textual IP of an address (v4 or v6), without the port.
std::string format_ip(const odht::SockAddr& a) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (a.getFamily() == AF_INET) {
        inet_ntop(AF_INET, &a.getIPv4().sin_addr, buf, sizeof buf);
    } else if (a.getFamily() == AF_INET6) {
        inet_ntop(AF_INET6, &a.getIPv6().sin6_addr, buf, sizeof buf);
    } else {
        return {};
    }
    return buf;
}

bool owned_by(const odht::Value& v, const UserId& user) {
    if (!v.owner || !v.isSigned()) return false;
    const auto& owner = v.owner->getId();
    return owner.size() == user.bytes.size() &&
           std::memcmp(owner.data(), user.bytes.data(), owner.size()) == 0;
}

UserId user_id_of(const odht::InfoHash& h) {
    UserId u;
    std::memcpy(u.bytes.data(), h.data(), u.bytes.size());
    return u;
}

odht::InfoHash info_hash_of(const UserId& u) {
    odht::InfoHash h;
    std::memcpy(h.data(), u.bytes.data(), u.bytes.size());
    return h;
}

// Public keys of other users, learned from what they signed. Shared with the
// DHT thread (listen callbacks), hence the mutex. Bounded: strangers can make
// us learn keys (by writing to our inbox), so the oldest entries go first.
class KeyCache {
public:
    using Key = std::shared_ptr<const odht::crypto::PublicKey>;
    static constexpr std::size_t k_max_keys = 4096;

    // Returns true if the key was not known before.
    bool put(const UserId& user, Key key) {
        if (!key) return false;
        std::lock_guard lk(m_mtx);
        auto [it, fresh] = m_keys.try_emplace(user, std::move(key));
        if (!fresh) return false;
        m_order.push_back(user);
        if (m_order.size() > k_max_keys) {
            m_keys.erase(m_order.front());
            m_order.pop_front();
        }
        return true;
    }
    Key get(const UserId& user) const {
        std::lock_guard lk(m_mtx);
        auto it = m_keys.find(user);
        return it == m_keys.end() ? Key{} : it->second;
    }

private:
    mutable std::mutex m_mtx;
    std::map<UserId, Key> m_keys;
    std::deque<UserId> m_order;
};

Bytes der_of(const odht::crypto::PublicKey& key) {
    odht::Blob b;
    key.pack(b);
    return Bytes(b.begin(), b.end());
}

// Learns `key` for its owner and tells the daemon when it is new.
void learn_key(const std::shared_ptr<KeyCache>& cache, const DhtNode::Post& post,
               const std::function<void(const UserId&, const Bytes&)>& on_key, KeyCache::Key key) {
    if (!key) return;
    auto user = user_id_of(key->getId());
    if (!cache->put(user, key) || !on_key) return;
    post_safe(post, [on_key, user, der = der_of(*key)] { on_key(user, der); });
}

// Our inbox: values waiting to be opened, and which values were already
// handled (a re-put or a re-announce must not be decrypted again).
//
// Opening a value costs an RSA private-key operation, and anyone can write to
// an inbox. So values wait in a bounded queue (k_max_queue_bytes; beyond it
// a value is dropped *unseen*, so the next get of the inbox brings it back),
// and at most k_opens_per_second are opened, k_opens_per_round at a time on
// the loop so that other work interleaves.
struct InboxState {
    struct Pending {
        odht::Value::Id id;
        odht::Blob data;
        std::uint64_t fp;
        std::uint16_t type;  // k_inbox_type_id or k_signal_type_id
    };
    static constexpr std::size_t k_max_seen = 16384;
    static constexpr std::size_t k_max_queue_bytes = 8u << 20;
    static constexpr std::size_t k_opens_per_round = 8;
    static constexpr std::size_t k_opens_per_second = 200;

    std::mutex mtx;
    bool active = true;
    DhtNode::InboxItem on_item;
    std::unordered_set<std::uint64_t> seen;
    std::deque<std::uint64_t> order;
    std::deque<Pending> queue;
    std::size_t queued_bytes = 0;
    bool round_posted = false;
    std::uint64_t dropped = 0;
    std::size_t opened_this_second = 0;
    std::chrono::steady_clock::time_point second_start{};

    static std::uint64_t fingerprint(odht::Value::Id id, const odht::Blob& data) {
        return std::hash<std::string_view>{}(
                   std::string_view(reinterpret_cast<const char*>(data.data()), data.size())) ^
               (id * 0x9e3779b97f4a7c15ULL);
    }

    // DHT thread. Returns true if a round of opening should be posted.
    bool offer(odht::Value::Id id, const odht::Blob& data, std::uint16_t type) {
        auto fp = fingerprint(id, data) ^ type;
        std::lock_guard lk(mtx);
        if (!active || seen.count(fp)) return false;
        if (queued_bytes + data.size() > k_max_queue_bytes) {
            ++dropped;
            return false;
        }
        seen.insert(fp);
        order.push_back(fp);
        if (order.size() > k_max_seen) {
            seen.erase(order.front());
            order.pop_front();
        }
        // Signals jump the queue: an ICE offer or a knock is stale in
        // seconds, a backlog of mail is not.
        if (type == k_signal_type_id)
            queue.push_front({id, data, fp, type});
        else
            queue.push_back({id, data, fp, type});
        queued_bytes += data.size();
        if (round_posted) return false;
        round_posted = true;
        return true;
    }

    // Loop: the next values to open within the rate limit; `more` tells
    // whether to post another round now (false: wait for the next tick).
    std::vector<Pending> take(bool& more) {
        std::lock_guard lk(mtx);
        auto now = std::chrono::steady_clock::now();
        if (now - second_start >= std::chrono::seconds(1)) {
            second_start = now;
            opened_this_second = 0;
        }
        std::vector<Pending> out;
        while (!queue.empty() && out.size() < k_opens_per_round && opened_this_second < k_opens_per_second) {
            queued_bytes -= queue.front().data.size();
            out.push_back(std::move(queue.front()));
            queue.pop_front();
            ++opened_this_second;
        }
        more = !queue.empty() && opened_this_second < k_opens_per_second;
        round_posted = more;
        return out;
    }
};

}  // namespace

struct DhtNode::Impl {
    Options opts;
    std::shared_ptr<spdlog::logger> log = dht_logger();
    std::unique_ptr<odht::DhtRunner> runner;
    std::shared_ptr<StatusState> status = std::make_shared<StatusState>();
    std::atomic<bool> running{false};
    bool has_identity = false;
    std::optional<UserId> self;
    std::shared_ptr<PresencePuts> presence_puts = std::make_shared<PresencePuts>();
    std::uint16_t port = 0;
    std::uint64_t next_token = 1;
    std::map<std::uint64_t, WatchEntry> watches;
    std::shared_ptr<const odht::crypto::PrivateKey> private_key;
    std::shared_ptr<KeyCache> keys = std::make_shared<KeyCache>();
    std::shared_ptr<InboxState> inbox;
    std::optional<std::shared_future<std::size_t>> inbox_token;
    std::shared_ptr<std::function<void()>> inbox_round;  // opens queued values (loop)
    std::function<bool(const std::vector<std::shared_ptr<odht::Value>>&, bool)> inbox_cb;
    std::shared_ptr<PutGuard> guard = std::make_shared<PutGuard>();
    std::shared_ptr<Traffic> traffic = std::make_shared<Traffic>();

    Result<void> start(const crypto::Identity* identity);
    // `run_threw` tells a failure of DhtRunner::run (e.g. LAN discovery could
    // not start) from a bind failure.
    Result<void> run_runner(const odht::crypto::Identity& id, bool lan, bool& run_threw);
    void listen(WatchEntry& w);
    // The presence watch's value callback and filter (listen and poll).
    using ValuesCb = std::function<bool(const std::vector<std::shared_ptr<odht::Value>>&, bool expired)>;
    std::pair<ValuesCb, odht::Value::Filter> presence_callback(const WatchEntry& w);
    void listen_inbox();
    // A fresh value id for a record of ours at `key`, protected by the put
    // guard (our own records are stored locally without a packet).
    odht::Value::Id fresh_presence_id(const odht::InfoHash& key);
    void stop(std::optional<PresenceRecord> final_record, std::chrono::milliseconds timeout);
};

Result<void> DhtNode::Impl::run_runner(const odht::crypto::Identity& id, bool lan, bool& run_threw) {
    run_threw = false;
    auto ologger = make_opendht_logger(log);

    // Bind IPv4 and IPv6 on the same port (see FilteredSocket for why IPv6 matters).
    auto make_addr = [](sa_family_t family, std::uint16_t p) {
        odht::SockAddr a;
        a.setFamily(family);
        a.setPort(p);
        return a;
    };
    odht::SockAddr addr4 = make_addr(AF_INET, opts.port);
    if (!opts.bind4.empty()) {
        in_addr in{};
        if (inet_pton(AF_INET, opts.bind4.c_str(), &in) != 1)
            return make_error(errc::start_failed, "not an IPv4 address to bind the DHT to: " + opts.bind4);
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(opts.port);
        sin.sin_addr = in;
        addr4 = odht::SockAddr(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
    }
    std::unique_ptr<odht::net::UdpSocket> udp;
    try {
        udp = std::make_unique<odht::net::UdpSocket>(addr4, make_addr(AF_INET6, opts.port), ologger);
        if (!udp->hasIPv4()) {
            return make_error(errc::start_failed, "could not bind UDP port " + std::to_string(opts.port) +
                                                      " on IPv4: is another program using it? Choose another "
                                                      "port or 0 for any.");
        }
        if (!udp->hasIPv6() && opts.port != 0) {
            // UdpSocket only retries IPv6 on another port when asked for port 0.
            log->warn("could not bind [::]:{}; using another UDP port for IPv6", opts.port);
            udp.reset();
            udp = std::make_unique<odht::net::UdpSocket>(addr4, make_addr(AF_INET6, 0), ologger);
        }
    } catch (const std::exception& e) {
        return make_error(errc::start_failed, "could not bind UDP port " + std::to_string(opts.port) + ": " +
                                                  e.what() + ". Choose another port or 0 for any.");
    }
    bool fake_ipv6 = false;
    if (!udp->hasIPv6()) {
        log->warn("IPv6 is unavailable: running the DHT over IPv4 only");
        fake_ipv6 = true;
    }
    port = udp->getBoundRef(AF_INET).getPort();
    // The put guard first (it keeps OpenDHT alive), then the caller's filter.
    PacketFilter filter = [guard = guard, user = opts.packet_filter, log = log](
                              std::span<const std::uint8_t> data, const std::string& from) {
        // (Only this thread calls inspect, so the counters tell which rule dropped it.)
        const auto crash_before = guard->dropped(), untracked_before = guard->dropped_untracked();
        if (!guard->inspect(data, from, PutGuard::Clock::now())) {
            if (auto n = guard->dropped(); n != crash_before && (n == 1 || n % 100 == 0))
                log->warn(
                    "dropped a put from {} that reuses a signed value's id without an owner (it would "
                    "crash OpenDHT 2.4.12); {} such packets so far",
                    from, n);
            if (auto n = guard->dropped_untracked(); n != untracked_before && (n == 1 || n % 100 == 0))
                log->warn(
                    "dropped a put in parts from {}: too many puts in parts in flight to check them all; "
                    "{} so far (the sender retries)",
                    from, n);
            return false;
        }
        return user ? user(data, from) : true;
    };
    auto sock = std::make_unique<FilteredSocket>(std::move(udp), std::move(filter), fake_ipv6, traffic,
                                                 opts.max_packets_per_ip);

    odht::DhtRunner::Config config;
    config.dht_config.node_config.network = opts.network;
    config.dht_config.node_config.public_stable = opts.stable_listens;
    if (opts.node_id.size() == odht::InfoHash::size())
        config.dht_config.node_config.node_id = odht::InfoHash(opts.node_id.data(), opts.node_id.size());
    config.dht_config.node_config.max_req_per_sec = opts.max_requests_per_s;
    config.dht_config.node_config.max_peer_req_per_sec = opts.max_peer_requests_per_s;
    config.dht_config.id = id;
    config.threaded = true;
    config.peer_discovery = lan;
    config.peer_publish = lan;

    odht::DhtRunner::Context ctx;
    ctx.sock = std::move(sock);
    ctx.logger = ologger;
    ctx.statusChangedCallback = [st = status](odht::NodeStatus s4, odht::NodeStatus s6) {
        // DHT thread, runner lock held: store only.
        st->v4 = s4;
        st->v6 = s6;
    };

    runner = std::make_unique<odht::DhtRunner>();
    try {
        runner->run(config, std::move(ctx));
        runner->registerType(odht::ValueType(k_presence_type_id, "juice.presence", k_presence_lifetime));
        runner->registerType(odht::ValueType(k_inbox_type_id, "juice.inbox", k_inbox_lifetime));
        runner->registerType(odht::ValueType(k_signal_type_id, "juice.signal", k_signal_lifetime));
    } catch (const std::exception& e) {
        try {
            runner->join();
        } catch (const std::exception&) {
        }
        runner.reset();
        run_threw = true;
        return make_error(errc::start_failed, std::string("could not start the DHT node: ") + e.what());
    }
    return {};
}

Result<void> DhtNode::Impl::start(const crypto::Identity* identity) {
    if (running) return {};
    if (!opts.post)
        return make_error(errc::start_failed, "DhtNode needs Options::post to deliver its callbacks");
    // (Before the socket exists: its threads read traffic->kinds unlocked.)
    if (opts.classify_traffic && !traffic->kinds) traffic->kinds = std::make_unique<TrafficKinds>();

    odht::crypto::Identity id;
    if (identity) {
        try {
            auto key_pem = identity->private_key_pem();
            auto crt_pem = identity->certificate_pem();
            id.first =
                std::make_shared<odht::crypto::PrivateKey>(odht::Blob(key_pem.begin(), key_pem.end()), "");
            id.second =
                std::make_shared<odht::crypto::Certificate>(odht::Blob(crt_pem.begin(), crt_pem.end()));
        } catch (const std::exception& e) {
            return make_error(errc::start_failed,
                              std::string("the identity could not be loaded into the DHT: ") + e.what());
        }
        self = identity->id();
        private_key = id.first;
    } else {
        self.reset();
        private_key.reset();
    }
    has_identity = identity != nullptr;
    // Before run(): the status callback may fire as soon as the DHT thread runs.
    status->v4 = odht::NodeStatus::Disconnected;
    status->v6 = odht::NodeStatus::Disconnected;

    bool run_threw = false;
    auto res = run_runner(id, opts.lan_discovery, run_threw);
    if (!res.ok() && opts.lan_discovery && run_threw) {
        log->warn("{}; retrying without LAN discovery", res.error().what());
        res = run_runner(id, false, run_threw);
    }
    if (!res.ok()) return res;

    presence_puts = std::make_shared<PresencePuts>();
    running = true;

    try {
        auto cached = load_node_cache(opts.node_cache);
        if (!cached.empty()) {
            log->info("bootstrapping from {} cached nodes", cached.size());
            // Inserted nodes are only pinged by routine maintenance (seconds
            // later); pinging them now makes a restart connect at once.
            std::vector<odht::SockAddr> addrs;
            for (const auto& n : cached) addrs.emplace_back(n.ss, n.sslen);
            runner->bootstrap(std::move(cached));
            // (The callback must not be empty: DhtRunner calls it unchecked.)
            runner->bootstrap(std::move(addrs), [log = log](bool ok) {
                log->debug("cached nodes {}", ok ? "answered" : "did not answer");
            });
        }
        for (const auto& b : opts.bootstrap) {
            auto hp = parse_host_port(b);
            if (!hp) {
                log->warn("ignoring bootstrap address '{}': expected host:port or [v6]:port", b);
                continue;
            }
            runner->bootstrap(hp->first, hp->second);
        }
        for (auto& [token, w] : watches)
            if (!w.dormant) listen(w);
        if (inbox) listen_inbox();
    } catch (const std::exception& e) {
        log->error("DHT bootstrap failed: {}", e.what());
    }
    log->info("DHT node running on UDP port {} (network {}){}", port, opts.network,
              has_identity ? "" : ", without identity");
    return {};
}

std::pair<DhtNode::Impl::ValuesCb, odht::Value::Filter> DhtNode::Impl::presence_callback(
    const WatchEntry& w) {
    auto post = opts.post;
    auto state = w.state;
    auto user = w.user;
    // Owner, signature (SecureDht verified it before calling us) and type are
    // checked here, on our side. No Where().owner(...) query: with one, a
    // listen through a stock 2.4.12 node never received the value (measured:
    // the record only arrived ~9 s later, once the publisher found us
    // directly); and a remote filter would prove nothing anyway.
    auto filter = [user](const odht::Value& v) { return v.type == k_presence_type_id && owned_by(v, user); };
    auto cb = [post, state, user, keys = keys, on_key = opts.on_key](
                  const std::vector<std::shared_ptr<odht::Value>>& values, bool expired) {
        // DHT thread, runner lock held: copy, decode, post. Never block here.
        // A key holds the user's newest record and, until they expire, the
        // ones it replaced (each record has its own value id): of the values
        // that arrive together, only the newest is worth delivering.
        std::optional<std::pair<odht::Value::Id, PresenceRecord>> newest;
        for (const auto& v : values) {
            try {
                if (!v || v->type != k_presence_type_id || !owned_by(*v, user)) continue;
                if (expired) {
                    post_safe(post, [state, id = v->id] { state->value_expired(id); });
                    continue;
                }
                learn_key(keys, post, on_key, v->owner);
                auto rec = decode_presence(v->data);
                if (!rec) {
                    dht_logger()->debug("ignoring presence value of {}: {}", user.hex(), rec.error().what());
                    continue;
                }
                if (!newest || rec->ts > newest->second.ts) newest.emplace(v->id, std::move(*rec));
            } catch (const std::exception& e) {
                dht_logger()->warn("ignoring a bad presence value: {}", e.what());
            }
        }
        if (newest)
            post_safe(post,
                      [state, id = newest->first, r = std::move(newest->second)] { state->deliver(id, r); });
        return true;
    };
    return {std::move(cb), std::move(filter)};
}

void DhtNode::Impl::listen(WatchEntry& w) {
    auto [cb, filter] = presence_callback(w);
    const auto& user = w.user;
    try {
        // A get next to the listen: OpenDHT hands a get's values over as each
        // node answers, while a listen only starts once the search is synced,
        // which waits out unreachable nodes (e.g. stale entries of the node
        // cache: ~1 s each). Duplicates are dropped by the replay rule.
        runner->get(
            w.key,
            [cb](const std::vector<std::shared_ptr<odht::Value>>& values) { return cb(values, false); },
            [](bool) {}, filter);
        w.token = runner->listen(w.key, odht::ValueCallback(std::move(cb)), std::move(filter)).share();
    } catch (const std::exception& e) {
        log->error("could not watch presence of {}: {}", user.hex(), e.what());
    }
}

void DhtNode::Impl::listen_inbox() {
    if (!self || !private_key) return;
    auto post = opts.post;
    // Decryption (an RSA private-key operation) runs on the loop, not on the
    // DHT thread, which must never be held up.
    auto process = [state = inbox, key = private_key, keys = keys, post, on_key = opts.on_key](
                       odht::Value::Id id, const odht::Blob& data, std::uint16_t type) {
        {
            std::lock_guard lk(state->mtx);
            if (!state->active) return;
        }
        std::string why;
        auto inner = detail::open_sealed_value(*key, id, data, &why, type);
        if (!inner) {
            dht_logger()->debug("ignoring an inbox value: {}", why);
            return;
        }
        learn_key(keys, post, on_key, inner->owner);
        DhtNode::InboxItem cb;
        {
            std::lock_guard lk(state->mtx);
            if (!state->active) return;
            cb = state->on_item;
        }
        if (cb)
            cb(user_id_of(inner->owner->getId()), Bytes(inner->data.begin(), inner->data.end()),
               type == k_signal_type_id ? SealKind::signal : SealKind::inbox);
    };
    // A round: open a few queued values, then yield the loop.
    auto round = std::make_shared<std::function<void()>>();
    *round = [state = inbox, process, post, weak = std::weak_ptr<std::function<void()>>(round)] {
        bool more = false;
        for (auto& p : state->take(more)) process(p.id, p.data, p.type);
        if (auto self_round = weak.lock(); more && self_round)
            post_safe(post, [self_round] { (*self_round)(); });
    };
    inbox_round = round;
    auto cb = [post, state = inbox, round](const std::vector<std::shared_ptr<odht::Value>>& values,
                                           bool expired) {
        // DHT thread, runner lock held: cheap checks, copy, post.
        if (expired) return true;
        bool start = false;
        for (const auto& v : values) {
            if (!v || !is_inbox_type(v->type) || v->data.empty() || v->data.size() > 64 * 1024) continue;
            start = state->offer(v->id, v->data, v->type) || start;
        }
        if (start) post_safe(post, [round] { (*round)(); });
        return true;
    };
    inbox_cb = cb;
    try {
        auto key = odht::InfoHash::get(inbox_key_name(*self));
        auto filter = [](const odht::Value& v) { return is_inbox_type(v.type); };
        // A get as well, for the same reason as for presence: its values
        // arrive without waiting for the search to sync (first_sight dedups).
        runner->get(
            key, [cb](const std::vector<std::shared_ptr<odht::Value>>& values) { return cb(values, false); },
            [](bool) {}, filter);
        inbox_token = runner->listen(key, odht::ValueCallback(std::move(cb)), std::move(filter)).share();
    } catch (const std::exception& e) {
        log->error("could not listen to our inbox: {}", e.what());
    }
}

void DhtNode::Impl::stop(std::optional<PresenceRecord> final_record, std::chrono::milliseconds timeout) {
    if (!running.exchange(false)) return;
    try {
        if (final_record && has_identity && self) {
            auto waiter = std::make_shared<Waiter>();
            auto key = odht::InfoHash::get(presence_key_name(*self));
            // A fresh value id, like every publish (watchers listening through
            // other nodes would not see an edit of the live record), and not
            // permanent: it simply expires. The live record's announce ends
            // with the runner, right below.
            auto value = std::make_shared<odht::Value>(k_presence_type_id, encode_presence(*final_record),
                                                       fresh_presence_id(key));
            runner->putSigned(
                key, value,
                [waiter](bool ok, const std::vector<std::shared_ptr<odht::Node>>&) { waiter->set(ok); },
                false);
            if (!waiter->wait_for(timeout))
                log->warn("final presence record not confirmed within {} ms", timeout.count());
            else if (!waiter->ok)
                log->warn("final presence record was not stored by any node");
        }
        save_node_cache(opts.node_cache, runner->exportNodes());
        auto done = std::make_shared<Waiter>();
        runner->shutdown([done] { done->set(true); });
        // The shutdown op only runs once the node is connected or disconnected;
        // do not hang on a node stuck "connecting".
        if (!done->wait_for(std::chrono::milliseconds(500)))
            log->debug("DHT shutdown not confirmed; joining");
    } catch (const std::exception& e) {
        log->warn("error while stopping the DHT node: {}", e.what());
    }
    try {
        runner->join();
    } catch (const std::exception& e) {
        log->warn("error while joining the DHT node: {}", e.what());
    }
    runner.reset();
    for (auto& [token, w] : watches) w.token.reset();
    inbox_token.reset();
    status->v4 = odht::NodeStatus::Disconnected;
    status->v6 = odht::NodeStatus::Disconnected;
    log->info("DHT node stopped");
}

DhtNode::DhtNode(Options options) : m_impl(std::make_unique<Impl>()) {
    m_impl->opts = std::move(options);
}

DhtNode::~DhtNode() {
    stop();
}

Result<void> DhtNode::start(const crypto::Identity* identity) {
    return m_impl->start(identity);
}

void DhtNode::publish_presence(const PresenceRecord& record, std::function<void(bool ok)> done) {
    auto& d = *m_impl;
    auto post = d.opts.post;
    auto report = [post, done](bool ok) {
        if (done) post_safe(post, [done, ok] { done(ok); });
    };
    if (!d.running || !d.has_identity || !d.self) {
        d.log->warn("cannot publish presence: {}", d.running ? "no identity" : "the DHT node is not running");
        report(false);
        return;
    }
    try {
        // Every record gets a fresh value id. Editing one value in place (same
        // id, seq + 1) does not reach watchers that listen through other
        // nodes: OpenDHT 2.4.12 keeps a cache per storing node on each listen
        // (src/value_cache.h, ValueCache::addValues) that takes a value whose
        // id it already holds for a mere refresh, whatever its seq, and
        // reports nothing. Only a watcher that stores the key itself saw
        // edits (through its local storage listener, which compares seq).
        // The record a publish replaces stays on the storing nodes until it
        // expires (k_presence_lifetime; stock nodes 10 min), no longer
        // re-announced; watchers keep the newest `t` (the replay rule).
        auto key = odht::InfoHash::get(presence_key_name(*d.self));
        auto id = d.fresh_presence_id(key);
        auto value = std::make_shared<odht::Value>(k_presence_type_id, encode_presence(record), id);
        auto puts = d.presence_puts;
        puts->begin(id);
        // permanent: OpenDHT re-announces it before it expires, until the
        // next publish cancels it. The callback runs on the DHT thread;
        // DhtRunner::cancelPut only queues an op (under a mutex OpenDHT never
        // holds while calling us), and the runner outlives its callbacks.
        d.runner->putSigned(
            key, value,
            [report, puts, key, id, runner = d.runner.get()](
                bool ok, const std::vector<std::shared_ptr<odht::Node>>&) {
                for (auto old : puts->done(id)) runner->cancelPut(key, old);
                report(ok);
            },
            true);
    } catch (const std::exception& e) {
        d.log->error("publishing presence failed: {}", e.what());
        report(false);
    }
}

odht::Value::Id DhtNode::Impl::fresh_presence_id(const odht::InfoHash& key) {
    // Not guessable (std::random_device): a value stored first under the id
    // of our next record could stand in its way on a storing node.
    std::random_device rd;
    auto id = std::uniform_int_distribution<odht::Value::Id>(1)(rd);
    PutGuard::Key k;
    std::memcpy(k.data(), key.data(), k.size());
    guard->protect(k, id);
    return id;
}

std::uint64_t DhtNode::watch_presence(const UserId& user,
                                      std::function<void(const PresenceRecord&)> on_record,
                                      std::function<void()> on_expired) {
    auto& d = *m_impl;
    auto token = d.next_token++;
    auto state = std::make_shared<WatchState>();
    state->on_record = std::move(on_record);
    state->on_expired = std::move(on_expired);
    auto& w = d.watches[token] = WatchEntry{user, odht::InfoHash::get(presence_key_name(user)), state, {}};
    // Before start(), the listen is issued when the node starts.
    if (d.running) d.listen(w);
    return token;
}

void DhtNode::set_dormant(std::uint64_t token, bool dormant) {
    auto& d = *m_impl;
    auto it = d.watches.find(token);
    if (it == d.watches.end() || it->second.dormant == dormant) return;
    auto& w = it->second;
    w.dormant = dormant;
    if (!d.running) return;  // start() listens to the awake ones
    if (dormant) {
        if (w.token) {
            try {
                d.runner->cancelListen(w.key, *w.token);
            } catch (const std::exception& e) {
                d.log->warn("cancelling a presence watch failed: {}", e.what());
            }
            w.token.reset();
        }
    } else {
        d.listen(w);
    }
}

bool DhtNode::dormant(std::uint64_t token) const {
    auto it = m_impl->watches.find(token);
    return it != m_impl->watches.end() && it->second.dormant;
}

void DhtNode::poll(std::uint64_t token) {
    auto& d = *m_impl;
    auto it = d.watches.find(token);
    if (it == d.watches.end() || !d.running) return;
    auto [cb, filter] = d.presence_callback(it->second);
    try {
        d.runner->get(
            it->second.key,
            [cb = std::move(cb)](const std::vector<std::shared_ptr<odht::Value>>& values) {
                return cb(values, false);
            },
            [](bool) {}, std::move(filter));
    } catch (const std::exception& e) {
        d.log->warn("polling the presence of {} failed: {}", it->second.user.hex(), e.what());
    }
}

void DhtNode::unwatch(std::uint64_t token) {
    auto& d = *m_impl;
    auto it = d.watches.find(token);
    if (it == d.watches.end()) return;
    {
        std::lock_guard lk(it->second.state->mtx);
        it->second.state->active = false;
    }
    if (d.running && it->second.token) {
        try {
            d.runner->cancelListen(it->second.key, *it->second.token);
        } catch (const std::exception& e) {
            d.log->warn("cancelling a presence watch failed: {}", e.what());
        }
    }
    d.watches.erase(it);
}

bool DhtNode::remember_key(const UserId& user, std::span<const std::uint8_t> der) {
    try {
        auto key = std::make_shared<const odht::crypto::PublicKey>(der.data(), der.size());
        if (user_id_of(key->getId()) != user) return false;
        m_impl->keys->put(user, std::move(key));
        return true;
    } catch (const std::exception& e) {
        m_impl->log->warn("ignoring a stored public key of {}: {}", user.hex(), e.what());
        return false;
    }
}

bool DhtNode::knows_key(const UserId& user) const {
    return static_cast<bool>(m_impl->keys->get(user));
}

void DhtNode::find_key(const UserId& user, std::function<void(bool found)> done) {
    auto& d = *m_impl;
    auto post = d.opts.post;
    if (d.keys->get(user)) {
        post_safe(post, [done] { done(true); });
        return;
    }
    if (!d.running) {
        post_safe(post, [done] { done(false); });
        return;
    }
    try {
        d.runner->findCertificate(
            info_hash_of(user), [post, done, user, keys = d.keys, on_key = d.opts.on_key](
                                    const std::shared_ptr<odht::crypto::Certificate>& cert) {
                // DHT thread. OpenDHT checked that the certificate's id is `user`.
                bool found = false;
                try {
                    if (cert && cert->getId() == info_hash_of(user)) {
                        learn_key(keys, post, on_key,
                                  std::make_shared<const odht::crypto::PublicKey>(cert->getPublicKey()));
                        found = true;
                    }
                } catch (const std::exception& e) {
                    dht_logger()->debug("ignoring a certificate for {}: {}", user.hex(), e.what());
                }
                post_safe(post, [done, found] { done(found); });
            });
    } catch (const std::exception& e) {
        d.log->warn("looking up the key of {} failed: {}", user.hex(), e.what());
        post_safe(post, [done] { done(false); });
    }
}

Result<SealedValue> DhtNode::seal_inbox(const UserId& to, std::span<const std::uint8_t> payload,
                                        SealKind kind) {
    auto& d = *m_impl;
    if (payload.size() > k_max_inbox_payload)
        return make_error(errc::too_large, "an inbox payload of " + std::to_string(payload.size()) +
                                               " bytes is over the limit of " +
                                               std::to_string(k_max_inbox_payload));
    if (!d.private_key) return make_error(errc::not_running, "no identity to sign inbox values with");
    auto key = d.keys->get(to);
    if (!key) return make_error(errc::no_key, "the public key of " + to.hex() + " is not known yet");
    try {
        static thread_local std::mt19937_64 rng{std::random_device{}()};
        odht::Value inner(kind == SealKind::signal ? k_signal_type_id : k_inbox_type_id,
                          odht::Blob(payload.begin(), payload.end()),
                          std::uniform_int_distribution<odht::Value::Id>(1)(rng));
        auto sealed = inner.encrypt(*d.private_key, *key);
        return SealedValue{inner.id, Bytes(sealed.cypher.begin(), sealed.cypher.end()), kind};
    } catch (const std::exception& e) {
        return make_error(errc::seal_failed, std::string("sealing an inbox value failed: ") + e.what());
    }
}

void DhtNode::put_inbox(const UserId& to, const SealedValue& value, std::function<void(bool ok)> done) {
    auto& d = *m_impl;
    auto post = d.opts.post;
    auto report = [post, done](bool ok) {
        if (done) post_safe(post, [done, ok] { done(ok); });
    };
    if (!d.running) return report(false);
    try {
        auto v =
            std::make_shared<odht::Value>(value.kind == SealKind::signal ? k_signal_type_id : k_inbox_type_id,
                                          odht::Blob(value.data.begin(), value.data.end()), value.id);
        d.runner->put(odht::InfoHash::get(inbox_key_name(to)), v,
                      [report](bool ok, const std::vector<std::shared_ptr<odht::Node>>&) { report(ok); });
    } catch (const std::exception& e) {
        d.log->error("putting an inbox value failed: {}", e.what());
        report(false);
    }
}

void DhtNode::tick() {
    auto& d = *m_impl;
    if (!d.inbox || !d.inbox_round) return;
    bool waiting = false;
    {
        std::lock_guard lk(d.inbox->mtx);
        waiting = !d.inbox->queue.empty() && !d.inbox->round_posted;
        if (waiting) d.inbox->round_posted = true;
    }
    if (waiting) (*d.inbox_round)();
}

void DhtNode::refetch_inbox() {
    auto& d = *m_impl;
    if (!d.running || !d.inbox_cb || !d.self) return;
    try {
        auto cb = d.inbox_cb;
        d.runner->get(
            odht::InfoHash::get(inbox_key_name(*d.self)),
            [cb](const std::vector<std::shared_ptr<odht::Value>>& values) { return cb(values, false); },
            [](bool) {}, [](const odht::Value& v) { return is_inbox_type(v.type); });
    } catch (const std::exception& e) {
        d.log->warn("fetching our inbox failed: {}", e.what());
    }
}

void DhtNode::watch_inbox(InboxItem on_item) {
    auto& d = *m_impl;
    if (d.inbox) {
        std::lock_guard lk(d.inbox->mtx);
        d.inbox->on_item = std::move(on_item);
        return;
    }
    d.inbox = std::make_shared<InboxState>();
    d.inbox->on_item = std::move(on_item);
    if (d.running) d.listen_inbox();
}

void DhtNode::stop(std::optional<PresenceRecord> final_record, std::chrono::milliseconds timeout) {
    m_impl->stop(std::move(final_record), timeout);
}

DhtInfo DhtNode::info() const {
    const auto& d = *m_impl;
    DhtInfo info;
    info.network = d.opts.network;
    if (!d.running) {
        info.state = "disconnected";
        return info;
    }
    info.port = d.port;
    info.puts_refused = d.guard->dropped();
    info.packets_in = d.traffic->packets_in.load(std::memory_order_relaxed);
    info.bytes_in = d.traffic->bytes_in.load(std::memory_order_relaxed);
    info.packets_out = d.traffic->packets_out.load(std::memory_order_relaxed);
    info.bytes_out = d.traffic->bytes_out.load(std::memory_order_relaxed);
    info.packets_rate_limited = d.traffic->rate_limited.load(std::memory_order_relaxed);
    if (d.traffic->kinds) info.traffic_by_kind = d.traffic->kinds->counts();
    if (d.inbox) {
        std::lock_guard lk(d.inbox->mtx);
        info.inbox_backlog = d.inbox->queue.size();
        info.inbox_dropped = d.inbox->dropped;
    }
    auto s4 = d.status->v4.load(), s6 = d.status->v6.load();
    if (s4 == odht::NodeStatus::Connected || s6 == odht::NodeStatus::Connected)
        info.state = "connected";
    else if (s4 == odht::NodeStatus::Connecting || s6 == odht::NodeStatus::Connecting)
        info.state = "connecting";
    else
        info.state = "disconnected";
    try {
        // Synchronous getters: they take the runner's lock, so they are only
        // ever called from the caller's thread, never from an OpenDHT callback.
        auto s4n = d.runner->getNodesStats(AF_INET), s6n = d.runner->getNodesStats(AF_INET6);
        info.nodes = s4n.good_nodes + s6n.good_nodes;
        info.dubious_nodes = s4n.dubious_nodes + s6n.dubious_nodes;
        info.searches = s4n.searches + s6n.searches;
        info.network_size_estimate = std::max(s4n.good_nodes ? s4n.getNetworkSizeEstimation() : 0UL,
                                              s6n.good_nodes ? s6n.getNetworkSizeEstimation() : 0UL);
        info.node_id = d.runner->getNodeId().toString();
        auto store = d.runner->getStoreSize();
        info.stored_bytes = store.first;
        info.stored_values = store.second;
        // Most-reported first. OpenDHT 2.4.12 peers report only the IP (the
        // "sa" field carries no port), so this is normally a bare IP.
        auto pub = d.runner->getPublicAddress();
        if (!pub.empty()) info.public_addr = format_ip(pub.front());
    } catch (const std::exception& e) {
        d.log->warn("reading DHT state failed: {}", e.what());
    }
    return info;
}

bool DhtNode::running() const {
    return m_impl->running;
}

}  // namespace juice::dht
