// DhtNode against a real network: two (or three) DhtNodes and a stock
// dhtnode bootstrap on loopback, on a private network id.
//
// These read like the protocol: A publishes, B (watching A) sees it; a record
// at A's key that A did not sign is never shown; an older record never
// replaces a newer one; a stock OpenDHT node can read A's record.
#include "harness.hpp"
#include "juice/crypto/identity.hpp"
#include "juice/dht/node.hpp"
#include "juice/dht/sealed.hpp"

// Only to play the attacker (a raw OpenDHT node writing at A's key).
#include <opendht/dhtrunner.h>
#include <opendht/infohash.h>

#include <catch2/catch.hpp>

#include <csignal>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

using namespace juice;
using namespace juice::dht;
using namespace juice::test;
using namespace std::chrono_literals;

namespace {

// A tiny event loop standing in for the daemon's: DhtNode posts callbacks here.
class LoopThread {
public:
    LoopThread() : m_thread([this] { run(); }) {}
    ~LoopThread() {
        {
            std::lock_guard lk(m_mtx);
            m_quit = true;
        }
        m_cv.notify_all();
        m_thread.join();
    }
    DhtNode::Post poster() {
        return [this](std::function<void()> fn) {
            {
                std::lock_guard lk(m_mtx);
                m_queue.push_back(std::move(fn));
            }
            m_cv.notify_all();
        };
    }

private:
    void run() {
        std::unique_lock lk(m_mtx);
        for (;;) {
            m_cv.wait(lk, [&] { return m_quit || !m_queue.empty(); });
            if (m_quit) return;  // drop what is left: it may refer to a finished test's locals
            auto fn = std::move(m_queue.front());
            m_queue.pop_front();
            lk.unlock();
            fn();
            lk.lock();
        }
    }
    std::mutex m_mtx;
    std::condition_variable m_cv;
    std::deque<std::function<void()>> m_queue;
    bool m_quit = false;
    std::thread m_thread;
};

// What a watch delivered, readable from the test thread.
struct Seen {
    std::mutex mtx;
    std::vector<PresenceRecord> records;
    std::vector<std::chrono::steady_clock::time_point> at;
    int expired = 0;

    auto on_record() {
        return [this](const PresenceRecord& r) {
            std::lock_guard lk(mtx);
            records.push_back(r);
            at.push_back(std::chrono::steady_clock::now());
        };
    }
    auto on_expired() {
        return [this] {
            std::lock_guard lk(mtx);
            ++expired;
        };
    }
    std::optional<std::size_t> find(const std::function<bool(const PresenceRecord&)>& pred) {
        std::lock_guard lk(mtx);
        for (std::size_t i = 0; i < records.size(); ++i)
            if (pred(records[i])) return i;
        return std::nullopt;
    }
    bool wait_for(const std::function<bool(const PresenceRecord&)>& pred, std::chrono::milliseconds timeout) {
        return wait_until([&] { return find(pred).has_value(); }, timeout);
    }
    std::vector<PresenceRecord> snapshot() {
        std::lock_guard lk(mtx);
        return records;
    }
};

const crypto::Identity& identity(int which) {
    // Generated once per test run: 2048-bit keys keep the suite fast.
    static std::vector<crypto::Identity> ids = [] {
        std::vector<crypto::Identity> v;
        for (const char* name : {"alice", "bob", "carol"}) {
            auto id = crypto::Identity::generate(2048, name);
            if (!id) throw std::runtime_error("identity generation failed: " + id.error().what());
            v.push_back(*id);
        }
        return v;
    }();
    return ids.at(static_cast<std::size_t>(which));
}

DhtNode::Options options(const DhtBootstrap& boot, LoopThread& loop) {
    DhtNode::Options o;
    o.network = boot.network();
    o.bootstrap = {boot.address()};
    o.lan_discovery = false;
    o.post = loop.poster();
    return o;
}

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

PresenceRecord record(const std::string& status, std::int64_t ts, const std::string& note = {}) {
    PresenceRecord r;
    r.name = "Alice";
    r.status = status;
    r.note = note;
    r.caps = {"text", "voice"};
    r.device = "test-device";
    r.addrs = {{"127.0.0.1", 40000, "host"}};
    r.ts = ts;
    return r;
}

bool wait_connected(DhtNode& n) {
    return wait_until([&] { return n.info().state == "connected"; }, 10s);
}

// Alice's and Bob's nodes on a private network, both connected.
struct AliceAndBob {
    TempDir dir;
    DhtBootstrap boot{random_network_id(), dir.path()};
    LoopThread loop;
    const crypto::Identity& alice = identity(0);
    const crypto::Identity& bob = identity(1);
    DhtNode a{options(boot, loop)};
    DhtNode b{options(boot, loop)};
    bool start() {
        return a.start(&alice).ok() && b.start(&bob).ok() && wait_connected(a) && wait_connected(b);
    }
};

}  // namespace

TEST_CASE("dht node: a watcher sees publish, update and the offline record", "[dht][integration]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    LoopThread loop;
    const auto& alice = identity(0);
    const auto& bob = identity(1);
    // Declared before the nodes: callbacks refer to them until the nodes stop.
    Seen seen;
    std::atomic<int> done_ok{-1};

    DhtNode a(options(boot, loop));
    auto o = options(boot, loop);
    o.node_cache = dir.path() / "b-nodes.msgpack";
    DhtNode b(std::move(o));

    auto before = a.info();
    CHECK(before.state == "disconnected");
    CHECK(before.port == 0);
    REQUIRE(a.start(&alice).ok());
    REQUIRE(b.start(&bob).ok());
    auto early = a.info();
    std::printf("[dht] info right after start: state=%s nodes=%zu port=%u public='%s'\n", early.state.c_str(),
                early.nodes, early.port, early.public_addr.c_str());
    CHECK(early.port != 0);
    CHECK(early.network == boot.network());

    REQUIRE(wait_connected(a));
    REQUIRE(wait_connected(b));
    auto info = a.info();
    std::printf("[dht] info when connected: state=%s nodes=%zu port=%u public='%s'\n", info.state.c_str(),
                info.nodes, info.port, info.public_addr.c_str());
    CHECK(info.nodes >= 1);

    b.watch_presence(alice.id(), seen.on_record(), seen.on_expired());

    // 1. online
    auto t1 = now_ms();
    auto published = std::chrono::steady_clock::now();
    a.publish_presence(record("online", t1), [&](bool ok) { done_ok = ok ? 1 : 0; });
    REQUIRE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t1; }, 10s));
    {
        auto i = *seen.find([&](const PresenceRecord& r) { return r.ts == t1; });
        std::lock_guard lk(seen.mtx);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(seen.at[i] - published).count();
        std::printf("[dht] publish -> watcher callback (first record): %lld ms\n",
                    static_cast<long long>(ms));
        CHECK(seen.records[i] == record("online", t1));
    }
    CHECK(wait_until([&] { return done_ok != -1; }, 10s));
    CHECK(done_ok == 1);

    // 2. away, with a note
    auto t2 = t1 + 1;
    published = std::chrono::steady_clock::now();
    a.publish_presence(record("away", t2, "lunch"));
    REQUIRE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t2; }, 10s));
    {
        auto i = *seen.find([&](const PresenceRecord& r) { return r.ts == t2; });
        std::lock_guard lk(seen.mtx);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(seen.at[i] - published).count();
        std::printf("[dht] publish -> watcher callback (update): %lld ms\n", static_cast<long long>(ms));
        CHECK(seen.records[i].status == "away");
        CHECK(seen.records[i].note == "lunch");
    }

    // 3. clean shutdown: offline
    auto t3 = t2 + 1;
    auto stop_start = std::chrono::steady_clock::now();
    a.stop(record("offline", t3));
    auto stop_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - stop_start)
            .count();
    std::printf("[dht] stop(final record) took %lld ms\n", static_cast<long long>(stop_ms));
    CHECK_FALSE(a.running());
    REQUIRE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t3 && r.status == "offline"; }, 10s));
    a.stop();  // twice is fine

    // Records arrived in order, none twice.
    auto all = seen.snapshot();
    REQUIRE(all.size() == 3);
    CHECK(all[0].ts == t1);
    CHECK(all[1].ts == t2);
    CHECK(all[2].ts == t3);

    b.stop();
    REQUIRE(std::filesystem::exists(dir.path() / "b-nodes.msgpack"));

    // The node cache alone (no bootstrap list) is enough to rejoin.
    auto co = options(boot, loop);
    co.bootstrap.clear();
    co.node_cache = dir.path() / "b-nodes.msgpack";
    DhtNode c(std::move(co));
    REQUIRE(c.start(&bob).ok());
    CHECK(wait_connected(c));
}

TEST_CASE("dht node: a record at A's key signed by someone else is never delivered", "[dht][integration]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    LoopThread loop;
    const auto& alice = identity(0);
    const auto& bob = identity(1);
    const auto& carol = identity(2);
    Seen seen, seen2;
    std::atomic<int> signed_done{-1}, unsigned_done{-1};
    std::atomic<bool> published{false};

    DhtNode a(options(boot, loop));
    DhtNode b(options(boot, loop));
    REQUIRE(a.start(&alice).ok());
    REQUIRE(b.start(&bob).ok());
    REQUIRE(wait_connected(a));
    REQUIRE(wait_connected(b));

    // Carol runs a raw OpenDHT node and writes forged records at Alice's key:
    // one signed with her own key, one unsigned; both would win on ts.
    ::dht::crypto::Identity cid;
    {
        auto key = carol.private_key_pem();
        auto crt = carol.certificate_pem();
        cid.first = std::make_shared<::dht::crypto::PrivateKey>(::dht::Blob(key.begin(), key.end()), "");
        cid.second = std::make_shared<::dht::crypto::Certificate>(::dht::Blob(crt.begin(), crt.end()));
    }
    ::dht::DhtRunner c;
    c.run(0, cid, true, boot.network());
    c.bootstrap("127.0.0.1", std::to_string(boot.port()));
    auto alice_key = ::dht::InfoHash::get(presence_key_name(alice.id()));

    auto forged = record("busy", now_ms() + 1'000'000, "forged");
    forged.name = "mallory";
    c.putSigned(alice_key, ::dht::Value(k_presence_type_id, encode_presence(forged)),
                [&](bool ok) { signed_done = ok; });
    c.put(alice_key, ::dht::Value(k_presence_type_id, encode_presence(forged)),
          [&](bool ok) { unsigned_done = ok; });
    REQUIRE(wait_until([&] { return signed_done != -1 && unsigned_done != -1; }, 10s));
    CHECK(signed_done == 1);  // stored: the network itself does not know who owns a key
    CHECK(unsigned_done == 1);

    // Alice publishes; Bob watches after the forgeries are stored, so they are
    // among the values the listen gets first.
    auto t = now_ms();
    a.publish_presence(record("online", t), [&](bool ok) { published = ok; });
    REQUIRE(wait_until([&] { return published.load(); }, 10s));

    b.watch_presence(alice.id(), seen.on_record(), seen.on_expired());
    REQUIRE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t; }, 10s));
    // A second, later watch, to give forged values a second chance to show up.
    b.watch_presence(alice.id(), seen2.on_record(), seen2.on_expired());
    REQUIRE(seen2.wait_for([&](const PresenceRecord& r) { return r.ts == t; }, 10s));

    for (auto* s : {&seen, &seen2}) {
        auto all = s->snapshot();
        CHECK(all.size() == 1);
        for (const auto& r : all) CHECK(r.name != "mallory");
    }
    c.join();
}

TEST_CASE("dht node: an older record never replaces a newer one", "[dht][integration]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    LoopThread loop;
    const auto& alice = identity(0);
    const auto& bob = identity(1);

    // Two DhtNodes with Alice's key (a restarted or second device): each uses
    // its own value id, so an old record of one is still a validly signed
    // value at the key when the other publishes. Only ts decides.
    Seen seen, late;
    std::atomic<bool> old_done{false};
    DhtNode a1(options(boot, loop));
    DhtNode a2(options(boot, loop));
    DhtNode b(options(boot, loop));
    REQUIRE(a1.start(&alice).ok());
    REQUIRE(a2.start(&alice).ok());
    REQUIRE(b.start(&bob).ok());
    REQUIRE(wait_connected(a1));
    REQUIRE(wait_connected(a2));
    REQUIRE(wait_connected(b));

    b.watch_presence(alice.id(), seen.on_record(), seen.on_expired());

    auto t = now_ms();
    a1.publish_presence(record("online", t));
    REQUIRE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t; }, 10s));

    a2.publish_presence(record("busy", t - 60'000, "old"), [&](bool) { old_done = true; });
    REQUIRE(wait_until([&] { return old_done.load(); }, 10s));

    a2.publish_presence(record("away", t + 5));
    REQUIRE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t + 5; }, 10s));

    auto all = seen.snapshot();
    REQUIRE(all.size() == 2);  // the older record was never delivered
    CHECK(all[0].ts == t);
    CHECK(all[1].ts == t + 5);

    // A new watch sees all three values at once and still reports only the
    // newest... or, depending on arrival order, older ones first; never an
    // older one after a newer one.
    b.watch_presence(alice.id(), late.on_record(), late.on_expired());
    REQUIRE(late.wait_for([&](const PresenceRecord& r) { return r.ts == t + 5; }, 10s));
    auto l = late.snapshot();
    for (std::size_t i = 1; i < l.size(); ++i) CHECK(l[i].ts > l[i - 1].ts);
    CHECK(l.back().ts == t + 5);
}

TEST_CASE("dht node: a stock dhtnode reads the presence record", "[dht][integration]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    LoopThread loop;
    const auto& alice = identity(0);
    std::atomic<int> done{-1};

    DhtNode a(options(boot, loop));
    REQUIRE(a.start(&alice).ok());
    REQUIRE(wait_connected(a));
    auto rec = record("online", now_ms());
    a.publish_presence(rec, [&](bool ok) { done = ok; });
    REQUIRE(wait_until([&] { return done != -1; }, 10s));
    REQUIRE(done == 1);

    auto key = ::dht::InfoHash::get(presence_key_name(alice.id())).toString();
    auto data = encode_presence(rec);
    auto hex = to_hex(data);
    boot.process().write_stdin("g " + key + "\n");
    bool found = wait_until([&] { return boot.process().log().find(hex) != std::string::npos; }, 10s);
    if (!found) WARN(boot.process().log());
    CHECK(found);
    CHECK(boot.process().log().find("signed") != std::string::npos);
}

TEST_CASE("dht node: every datagram goes through the packet filter", "[dht][integration]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    LoopThread loop;
    std::mutex mtx;
    std::size_t packets = 0;
    std::string last_from;

    auto o = options(boot, loop);
    o.packet_filter = [&](std::span<const std::uint8_t> data, const std::string& from) {
        std::lock_guard lk(mtx);
        ++packets;
        last_from = from;
        return !data.empty();
    };
    DhtNode a(std::move(o));
    REQUIRE(a.start(nullptr).ok());  // bootstrap mode: no identity
    REQUIRE(wait_connected(a));
    {
        std::lock_guard lk(mtx);
        CHECK(packets > 0);
        CHECK(last_from == boot.address());
    }

    // A filter that drops everything keeps the node from ever hearing back.
    auto o2 = options(boot, loop);
    o2.packet_filter = [](std::span<const std::uint8_t>, const std::string&) { return false; };
    DhtNode deaf(std::move(o2));
    REQUIRE(deaf.start(nullptr).ok());
    CHECK_FALSE(wait_until([&] { return deaf.info().state == "connected"; }, 2s));
    CHECK(deaf.info().nodes == 0);
    std::printf("[dht] info of a node that never hears back: state=%s\n", deaf.info().state.c_str());

    // Publishing without an identity fails cleanly.
    std::atomic<int> done{-1};
    a.publish_presence(record("online", now_ms()), [&](bool ok) { done = ok; });
    CHECK(wait_until([&] { return done != -1; }, 2s));
    CHECK(done == 0);
    a.stop();
    deaf.stop();
}

TEST_CASE("dht node: start fails cleanly on a busy port", "[dht][integration]") {
    LoopThread loop;
    DhtNode::Options o;
    o.lan_discovery = false;
    o.post = loop.poster();
    DhtNode a(o);
    REQUIRE(a.start(nullptr).ok());
    o.port = a.info().port;
    DhtNode b(o);
    auto r = b.start(nullptr);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == make_error_code(errc::start_failed));
    CHECK(r.error().what().find(std::to_string(o.port)) != std::string::npos);
    CHECK_FALSE(b.running());
}

// OpenDHT 2.4.12 dies when a put carries a value without an owner that reuses
// the id of a signed value the node stores, if the stored value's type is one
// SecureDht registered (the default type 0, and every type a node registers:
// juice's presence and inbox types on juice nodes). See
// dht/src/put_guard.hpp. This reproduces it against a stock dhtnode and shows
// a juice node survive it, for a type-0 value and for a presence record.
TEST_CASE("dht node: the unsigned-put crash kills a stock dhtnode, not a juice node",
          "[dht][integration][attack]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    LoopThread loop;
    const auto& alice = identity(0);
    const auto& carol = identity(2);
    DhtNode a(options(boot, loop));
    REQUIRE(a.start(&alice).ok());
    REQUIRE(wait_connected(a));
    std::atomic<bool> published{false};
    a.publish_presence(record("online", now_ms()), [&](bool ok) { published = ok; });
    REQUIRE(wait_until([&] { return published.load(); }, 10s));

    // The attacker: plain OpenDHT nodes with a key of their own. (A node
    // whose put was dropped looks dead to its sender, so each attack below
    // comes from a fresh one.)
    ::dht::crypto::Identity cid;
    {
        auto k = carol.private_key_pem();
        auto c = carol.certificate_pem();
        cid.first = std::make_shared<::dht::crypto::PrivateKey>(::dht::Blob(k.begin(), k.end()), "");
        cid.second = std::make_shared<::dht::crypto::Certificate>(::dht::Blob(c.begin(), c.end()));
    }
    auto attacker = [&](const std::vector<int>& ports) {
        auto r = std::make_unique<::dht::DhtRunner>();
        r->run(0, cid, true, boot.network());
        for (int p : ports) r->bootstrap("127.0.0.1", std::to_string(p));
        bool known = wait_until(
            [&] {
                return r->getNodesStats(AF_INET).good_nodes + r->getNodesStats(AF_INET6).good_nodes >=
                       ports.size();
            },
            10s);
        REQUIRE(known);
        return r;
    };
    auto wait_put = [](auto&& start) {
        std::atomic<int> done{-1};
        start([&](bool ok) { done = ok; });
        return wait_until([&] { return done != -1; }, 10s) && done == 1;
    };

    // 1. A signed type-0 value, stored by every node (stock ones included),
    //    then an unsigned value with its id: the stock dhtnode segfaults.
    auto mallory = attacker({boot.port(), a.info().port});
    auto key = ::dht::InfoHash::get("juice-test:crash");
    auto value = std::make_shared<::dht::Value>(::dht::Blob{'o', 'k'});
    REQUIRE(wait_put([&](auto cb) { mallory->putSigned(key, value, cb); }));
    REQUIRE(boot.process().running());
    wait_put([&](auto cb) {
        mallory->put(key, ::dht::Value(0, ::dht::Blob{'b', 'o', 'o', 'm'}, value->id), cb);
    });
    REQUIRE(wait_until([&] { return !boot.process().running(); }, 15s));
    CHECK(boot.process().wait(1s) == 128 + SIGSEGV);
    // The juice node dropped that packet at its socket and carries on.
    REQUIRE(wait_until([&] { return a.info().puts_refused > 0; }, 10s));
    CHECK(a.running());
    auto refused = a.info().puts_refused;
    mallory->join();

    // 2. Against the juice node's own presence record (a type only juice
    //    nodes register): read its id, put an unsigned value with that id.
    auto mallory2 = attacker({a.info().port});
    auto presence_key = ::dht::InfoHash::get(presence_key_name(alice.id()));
    std::uint64_t presence_id = 0;
    REQUIRE(wait_until(
        [&] {
            for (const auto& v : mallory2->get(presence_key).get())
                if (v && v->isSigned()) presence_id = v->id;
            return presence_id != 0;
        },
        10s));
    wait_put([&](auto cb) {
        mallory2->put(presence_key,
                      ::dht::Value(k_presence_type_id, ::dht::Blob{'b', 'o', 'o', 'm'}, presence_id), cb);
    });
    REQUIRE(wait_until([&] { return a.info().puts_refused > refused; }, 10s));
    CHECK(a.running());
    std::atomic<bool> again{false};
    a.publish_presence(record("away", now_ms()), [&](bool) { again = true; });
    CHECK(wait_until([&] { return again.load(); }, 10s));
    std::printf("[dht] stock dhtnode died (SIGSEGV); juice node refused %llu crash packet(s) and runs on\n",
                static_cast<unsigned long long>(a.info().puts_refused));
    mallory2->join();
    a.stop();
}

// Every watcher of a user must get each of that user's updates. With 16
// nodes each key is stored by about half of them, so most watchers store the
// keys they watch and some only listen through other nodes. The latter used
// to get a user's first record and none of its updates (about 1 pair in 6,
// the same pairs every round): OpenDHT 2.4.12's listen keeps a cache per
// storing node that takes a value whose id it already holds for a refresh,
// whatever its seq (src/value_cache.h, ValueCache::addValues), and publish
// edited one value in place. Now every publish uses a fresh value id.
TEST_CASE("every watcher of a user gets each update", "[dht][integration][watchers]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    LoopThread loop;
    const int n = 16, k_watch = 3;
    std::vector<crypto::Identity> ids;
    for (int i = 0; i < n; ++i) {
        auto id = crypto::Identity::generate(2048, "w" + std::to_string(i));
        REQUIRE(id);
        ids.push_back(std::move(*id));
    }
    std::vector<std::unique_ptr<DhtNode>> nodes;
    for (int i = 0; i < n; ++i) {
        nodes.push_back(std::make_unique<DhtNode>(options(boot, loop)));
        REQUIRE(nodes.back()->start(&ids[i]));
    }
    REQUIRE(wait_until(
        [&] {
            for (auto& x : nodes)
                if (x->info().state != "connected") return false;
            return true;
        },
        20s));
    std::mutex mtx;
    std::map<std::pair<int, std::int64_t>, std::set<int>> seen;  // (publisher, ts) -> watchers
    auto keyhex = [&](int i) {
        auto h = ::dht::InfoHash::get(presence_key_name(ids[i].id()));
        return to_hex(std::span<const std::uint8_t>(h.data(), 20));
    };
    for (int i = 0; i < n; ++i) {
        PresenceRecord r;
        r.name = "w";
        r.ts = now_ms();
        nodes[i]->publish_presence(r);
    }
    std::this_thread::sleep_for(2s);
    for (int w = 0; w < n; ++w)
        for (int k = 1; k <= k_watch; ++k) {
            int p = (w + k) % n;
            nodes[w]->watch_presence(ids[p].id(), [&, p, w](const PresenceRecord& r) {
                std::lock_guard lk(mtx);
                seen[{p, r.ts}].insert(w);
            });
        }
    std::this_thread::sleep_for(3s);
    for (int round = 0; round < 3; ++round) {
        std::vector<std::int64_t> ts(n);
        for (int i = 0; i < n; ++i) {
            PresenceRecord r;
            r.name = "w";
            r.status = round % 2 ? "online" : "away";
            r.ts = ts[i] = now_ms();
            nodes[i]->publish_presence(r);
            std::this_thread::sleep_for(50ms);
        }
        std::this_thread::sleep_for(3s);
        std::lock_guard lk(mtx);
        int delivered = 0;
        for (int i = 0; i < n; ++i)
            for (int k = 1; k <= k_watch; ++k) {
                int w = (i - k + n) % n;
                if (seen[{i, ts[i]}].count(w))
                    ++delivered;
                else
                    WARN("round " << round << ": watcher " << w << " missed the update of " << i << " key "
                                  << keyhex(i) << " watcher port " << nodes[w]->info().port
                                  << " publisher port " << nodes[i]->info().port);
            }
        CHECK(delivered == n * k_watch);
    }
}

TEST_CASE("dht node: a dormant watch stops listening; a poll or waking it brings the record",
          "[dht][integration]") {
    Seen seen;  // before the nodes: their callbacks refer to it until they stop
    AliceAndBob n;
    REQUIRE(n.start());
    auto [a, b, alice] = std::tie(n.a, n.b, n.alice);  // references

    auto token = b.watch_presence(alice.id(), seen.on_record(), seen.on_expired());
    CHECK_FALSE(b.dormant(token));
    auto t1 = now_ms();
    a.publish_presence(record("online", t1));
    REQUIRE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t1; }, 10s));

    // Dormant: a new record is not delivered (no listen any more)...
    b.set_dormant(token, true);
    CHECK(b.dormant(token));
    const auto searches_before = b.info().searches;
    auto t2 = t1 + 1;
    a.publish_presence(record("away", t2));
    CHECK_FALSE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t2; }, 3s));
    // ...until a poll gets the key once.
    b.poll(token);
    REQUIRE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t2; }, 10s));
    CHECK(b.dormant(token));
    INFO("searches before " << searches_before << ", after " << b.info().searches);

    // Another record while dormant; waking delivers it at once (the get
    // beside the listen), and later ones arrive through the listen.
    auto t3 = t2 + 1;
    a.publish_presence(record("busy", t3));
    CHECK_FALSE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t3; }, 2s));
    b.set_dormant(token, false);
    CHECK_FALSE(b.dormant(token));
    REQUIRE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t3; }, 10s));
    auto t4 = t3 + 1;
    a.publish_presence(record("online", t4));
    REQUIRE(seen.wait_for([&](const PresenceRecord& r) { return r.ts == t4; }, 10s));
    // In order, none twice.
    auto all = seen.snapshot();
    REQUIRE(all.size() == 4);
    CHECK(all[3].ts == t4);
    b.stop();
    a.stop();
}

TEST_CASE("dht node: signals reach the inbox watch as signals, and cannot pass for inbox values",
          "[dht][integration]") {
    struct Item {
        UserId from;
        Bytes payload;
        SealKind kind;
    };
    std::mutex mtx;
    std::vector<Item> items;
    AliceAndBob n;
    REQUIRE(n.start());
    auto [a, b, alice, bob] = std::tie(n.a, n.b, n.alice, n.bob);  // references
    b.watch_inbox([&](const UserId& from, Bytes payload, SealKind kind) {
        std::lock_guard lk(mtx);
        items.push_back({from, std::move(payload), kind});
    });
    // Bob's certificate goes out at start; ask until a node has it.
    REQUIRE(wait_until(
        [&] {
            auto found = std::make_shared<std::atomic<int>>(-1);  // the answer may come late
            a.find_key(bob.id(), [found](bool ok) { *found = ok ? 1 : 0; });
            wait_until([&] { return *found != -1; }, 5s);
            return a.knows_key(bob.id());
        },
        20s));

    const Bytes knock{'k', 'n', 'o', 'c', 'k'}, mail{'m', 'a', 'i', 'l'};
    auto s = a.seal_inbox(bob.id(), knock, SealKind::signal);
    REQUIRE(s);
    CHECK(s->kind == SealKind::signal);
    auto m = a.seal_inbox(bob.id(), mail);
    REQUIRE(m);
    CHECK(m->kind == SealKind::inbox);
    a.put_inbox(bob.id(), *s);
    a.put_inbox(bob.id(), *m);
    REQUIRE(wait_until(
        [&] {
            std::lock_guard lk(mtx);
            return items.size() >= 2;
        },
        10s));
    {
        std::lock_guard lk(mtx);
        for (const auto& it : items) {
            CHECK(it.from == alice.id());
            CHECK(it.kind == (it.payload == knock ? SealKind::signal : SealKind::inbox));
        }
    }

    // A signal's bytes re-put as an inbox value (or the reverse) do not
    // open: the sealed inner value names its type.
    auto replay_as_inbox = *s;
    replay_as_inbox.kind = SealKind::inbox;
    replay_as_inbox.id += 1;
    auto replay_as_signal = *m;
    replay_as_signal.kind = SealKind::signal;
    replay_as_signal.id += 1;
    a.put_inbox(bob.id(), replay_as_inbox);
    a.put_inbox(bob.id(), replay_as_signal);
    auto opener = InboxOpener::create(bob);
    REQUIRE(opener);
    std::string why;
    CHECK_FALSE(opener->open(s->id, s->data, &why));
    CHECK_THAT(why, Catch::Contains("another type"));
    CHECK(opener->open(m->id, m->data));
    // Neither replay is delivered (the puts are confirmed within this).
    CHECK_FALSE(wait_until(
        [&] {
            std::lock_guard lk(mtx);
            return items.size() > 2;
        },
        3s));
}
