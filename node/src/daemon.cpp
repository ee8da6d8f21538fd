// The daemon core: contacts, presence, links and messages, wired to the DHT
// node and the local API. Everything here runs on the one loop thread.
//
// Link tie-break: of two contacts, the one with the lower user id dials; the
// other only listens. So there is never a duplicate link in the normal case;
// if a second link to the same peer does come up (the peer restarted before
// our keepalive noticed), the newer one replaces the older.
#include "juice/node/daemon.hpp"

#include "calls.hpp"
#include "ice/ice.hpp"
#include "ice/nat_probe.hpp"
#include "juice/crypto/contact_uri.hpp"
#include "juice/dht/node.hpp"
#include "juice/node/api.hpp"
#include "juice/node/frame.hpp"
#include "juice/node/inbox.hpp"
#include "juice/node/metrics.hpp"
#include "juice/node/store.hpp"
#include "link.hpp"
#include "node_common.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <asio.hpp>

#include <cstring>
#include <future>
#include <map>
#include <random>
#include <set>

namespace juice::node {

using json = nlohmann::json;
using api::Reply;
using api::RpcError;
using namespace std::chrono;

namespace {

std::int64_t now_ms() {
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

constexpr std::size_t k_max_incoming_handshakes = 64;
constexpr std::size_t k_max_pending_requests = 1000;  // strangers' requests waiting for an answer
constexpr auto k_typing_timeout = seconds(10);
constexpr std::size_t k_max_acks_per_bundle = 1500;
// An ICE attempt's failed state is final only after this long (see ice_start).
constexpr std::chrono::seconds k_ice_settle{12};
constexpr std::size_t k_max_ice_sessions = 32;  // ICE attempts answered at once
// A link's outgoing queue: sending the outbox pauses above the high-water
// mark and resumes (from the 1 s tick) once the queue is below the low one,
// so a big outbox or a slow peer never holds more than this in memory.
constexpr std::size_t k_link_high_water = 8u << 20;
constexpr std::size_t k_link_low_water = 1u << 20;

bool is_status(const std::string& s) {
    return s == "online" || s == "away" || s == "busy" || s == "invisible";
}

// Local interface addresses a contact may dial, most useful first:
// global/private addresses before loopback (loopback only helps a contact on
// the same machine, and the TLS id check makes a wrong guess harmless).
std::vector<dht::Candidate> host_candidates(std::uint16_t port) {
    std::vector<dht::Candidate> out, loop;
    ifaddrs* ifs = nullptr;
    if (getifaddrs(&ifs) != 0) return {{"127.0.0.1", port, "host"}};
    for (auto* i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || !(i->ifa_flags & IFF_UP)) continue;
        char buf[INET6_ADDRSTRLEN] = {};
        if (i->ifa_addr->sa_family == AF_INET) {
            inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            auto* a6 = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
            if (IN6_IS_ADDR_LINKLOCAL(&a6->sin6_addr)) continue;  // needs a scope id: useless to others
            inet_ntop(AF_INET6, &a6->sin6_addr, buf, sizeof buf);
        } else {
            continue;
        }
        dht::Candidate c{buf, port, "host"};
        ((i->ifa_flags & IFF_LOOPBACK) ? loop : out).push_back(c);
    }
    freeifaddrs(ifs);
    // Keep records small: at most 8 non-loopback addresses.
    if (out.size() > 8) out.resize(8);
    for (auto& c : loop)
        if (c.ip == "127.0.0.1") out.push_back(c);
    return out;
}

}  // namespace

struct Peer {
    ContactRecord contact;
    std::uint64_t watch = 0;
    bool dormant = false;                    // the watch's listen sleeps (Config::presence_dormant_after)
    steady_clock::time_point awake_since{};  // watch started or woken, or last seen live
    steady_clock::time_point next_poll{};    // dormant: when to get the key once
    bool knocked = false;                    // we knocked since their record went live
    // The ICE attempt in progress (docs/NAT.md), and the last failure.
    struct IceAttempt {
        MessageId id;
        bool dialer = false;
        std::shared_ptr<ice::Session> session;
        std::unique_ptr<asio::steady_timer> deadline;
        steady_clock::time_point started;
        bool linking = false;
        std::optional<ice::Description> offer;  // answerer: the dialer's, until our answer is stored
        bool answered = false;                  // dialer: the answer came
    };
    std::unique_ptr<IceAttempt> ice;
    std::string link_error;                     // why the last attempt failed ("" after a link)
    steady_clock::time_point offers_since{};    // ICE offers from them: window start
    int offers = 0;                             // ... and count in it (rate limit)
    std::optional<dht::PresenceRecord> record;  // newest valid DHT record
    bool record_live = false;                   // online per the DHT, not superseded by a bye
    std::shared_ptr<Link> link;                 // open link
    bool connecting = false;                    // our TCP connect is in flight
    std::shared_ptr<Link> dialing;              // our outgoing TLS handshake in progress
    std::string link_status, link_note;         // what the peer said over the link
    std::vector<std::string> link_caps;
    std::unique_ptr<asio::steady_timer> retry;
    milliseconds backoff{0};
    // Offline delivery through the peer's DHT inbox.
    std::unique_ptr<asio::steady_timer> inbox_flush;  // queued messages -> inbox, debounced
    std::unique_ptr<asio::steady_timer> ack_flush;    // acks and receipts -> inbox, batched
    std::vector<MessageId> inbox_acks, inbox_receipts;
    bool key_lookup = false;
    std::int64_t outbox_paused_at = -1;  // >= 0: the outbox flush stopped after this seq (queue full)
    // Their typing state (expires by itself).
    bool typing = false;
    std::unique_ptr<asio::steady_timer> typing_timer;

    bool online() const { return link || (record_live && record && record->status != "offline"); }
    std::string status() const {
        if (link) return link_status.empty() ? "online" : link_status;
        if (record_live && record) return record->status;
        return "offline";
    }
    std::string note() const {
        if (link) return link_note;
        return record_live && record ? record->note : std::string{};
    }
    std::vector<std::string> caps() const {
        if (link) return link_caps;
        return record ? record->caps : std::vector<std::string>{};
    }
};

struct Daemon::Impl {
    Config cfg;
    crypto::Identity identity;
    UserId self;
    asio::io_context io{1};
    asio::signal_set signals{io, SIGINT, SIGTERM};
    asio::ip::tcp::acceptor acceptor{io};
    asio::steady_timer state_timer{io};
    std::unique_ptr<Store> store;
    std::unique_ptr<dht::DhtNode> dht;
    std::unique_ptr<api::ApiServer> api;
    std::unique_ptr<ice::Runtime> ice_rt;  // before calls and peers: their sessions go first
    std::unique_ptr<CallManager> calls;
    std::vector<std::string> caps;  // what we announce: "text", and "voice" unless --no-voice
    std::map<UserId, Peer> peers;
    std::set<std::shared_ptr<Link>> incoming;  // accepted, handshake not done
    std::string name, status = "online", note, device_id;
    std::uint16_t link_port = 0;
    steady_clock::time_point started = steady_clock::now();
    // node.nat: one check at a time; callers meanwhile wait for its answer.
    struct NatCheck {
        std::vector<Reply> waiting;
        std::future<void> probe;  // the RFC 5780 tests (blocking, on their own thread)
        std::shared_ptr<ice::Session> gather;
        std::unique_ptr<asio::steady_timer> timer;
        std::optional<ice::NatProbe> probed;
        std::optional<ice::Description> gathered;
        bool gather_done = false;
    };
    std::unique_ptr<NatCheck> nat_check;
    std::string last_dht_state;
    steady_clock::time_point next_refresh = steady_clock::time_point::max();  // of the presence record
    bool stopping = false;
    RateMeter dht_rates;
    std::unique_ptr<MetricsServer> metrics;
    int lock_fd = -1;  // flock on data_dir/juiced.lock, held for the daemon's life
    std::vector<std::shared_ptr<Link>> closing_links;  // byes in flight at shutdown
    steady_clock::time_point shutdown_deadline;
    asio::steady_timer shutdown_timer{io};
    asio::steady_timer inbox_timer{io};
    asio::steady_timer accept_retry{io};
    BundleAssembler assembler;
    std::map<UserId, Frame> pending_control;  // requests/answers waiting for the peer's key
    std::set<UserId> answered_declined;       // declined again this run (once per id)
    std::int64_t last_ts = 0;                 // newest timestamp given to an outgoing message
    std::int64_t last_presence_ts = 0;        // newest timestamp of a presence record we published
    unsigned sweep_count = 0;                 // watch_dht_state ticks (sweep_watches every 5th)
    bool send_receipts = true, send_typing = true;
    // Group commit: store writes of one round of loop handlers share one
    // transaction; what depends on them being durable runs after the commit.
    std::optional<Store::Transaction> batch;
    std::vector<std::function<void(bool committed)>> after_commit;

    Impl(Config c, crypto::Identity id) : cfg(std::move(c)), identity(std::move(id)), self(identity.id()) {}

    // ---- start-up -------------------------------------------------------

    Result<void> start() {
        if (auto r = lock_data_dir(); !r) return r;
        auto st = Store::open(cfg.data_dir / "juice.db", cfg.sync);
        if (!st) return st.error();
        store = std::move(*st);
        if (auto r = load_settings(); !r) return r;
        if (auto r = start_listener(); !r) return r;
        if (auto r = start_calls(); !r) return r;

        api::ApiServer::Options aopt;
        aopt.socket_path = cfg.api_socket.empty() ? api::default_socket_path() : cfg.api_socket;
        api = std::make_unique<api::ApiServer>(io, aopt);
        register_methods();
        if (auto r = api->start(); !r) return r;

        dht::DhtNode::Options dopt;
        dopt.port = cfg.dht_port;
        dopt.network = cfg.network;
        dopt.bootstrap = cfg.bootstrap;
        if (dopt.bootstrap.empty() && cfg.network == 0) dopt.bootstrap.push_back(k_default_bootstrap);
        dopt.lan_discovery = cfg.lan_discovery;
        dopt.node_cache = cfg.data_dir / "dht-nodes.bin";
        dopt.max_packets_per_ip = cfg.max_packets_per_ip;
        dopt.post = [this](std::function<void()> f) { asio::post(io, std::move(f)); };
        dopt.on_key = [this](const UserId& id, const Bytes& der) { on_key(id, der); };
        dht = std::make_unique<dht::DhtNode>(std::move(dopt));
        if (auto r = dht->start(&identity); !r) return r;

        auto contacts = store->list_contacts();
        if (!contacts) return contacts.error();
        for (auto& c : *contacts) {
            if (!c.pubkey.empty()) dht->remember_key(c.id, c.pubkey);
            add_peer(c);
        }
        dht->watch_inbox([this](const UserId& from, Bytes payload, dht::SealKind kind) {
            if (kind == dht::SealKind::signal)
                on_signal(from, payload);
            else
                on_inbox_item(from, payload);
        });
        schedule_inbox_refresh();

        if (cfg.metrics_port) {
            metrics = std::make_unique<MetricsServer>(io, [this] { return daemon_metrics(); });
            if (auto r = metrics->start(cfg.metrics_bind, cfg.metrics_port); !r) return r;
            spdlog::info("metrics at http://{}:{}/metrics", cfg.metrics_bind, metrics->port());
        }

        publish_presence();
        watch_dht_state();
        signals.async_wait([this](std::error_code ec, int sig) {
            if (ec) return;
            spdlog::info("signal {}: shutting down", sig);
            begin_shutdown();
        });
        spdlog::info("juiced {} up: id {} links on tcp port {}, dht on udp port {}, api at {}", k_version,
                     self.hex(), link_port, dht->info().port, aopt.socket_path.string());
        return {};
    }

    // One daemon per data directory: two would share the database and the
    // identity's presence record. The lock goes away with the process, so a
    // crash never leaves a stale lock behind.
    Result<void> lock_data_dir() {
        auto fd = node::lock_data_dir(cfg.data_dir, "juiced.lock", "juiced");
        if (!fd) return fd.error();
        lock_fd = *fd;
        return {};
    }

    Result<void> load_settings() {
        auto n = store->get_setting("name");
        if (!n) return n.error();
        name = n->value_or(cfg.default_name.empty() ? identity.certificate_name() : cfg.default_name);
        if (!n->has_value())
            if (auto r = store->set_setting("name", name); !r) return r;
        auto d = store->get_setting("device_id");
        if (!d) return d.error();
        if (d->has_value()) {
            device_id = **d;
        } else {
            device_id = to_hex(MessageId::random().bytes).substr(0, 16);
            if (auto r = store->set_setting("device_id", device_id); !r) return r;
        }
        auto s = store->get_setting("status");
        if (s && s->has_value() && is_status(**s)) status = **s;
        auto m = store->get_setting("note");
        if (m && m->has_value()) note = **m;
        auto rr = store->get_setting("read_receipts");
        if (rr && rr->has_value()) send_receipts = **rr != "0";
        auto ty = store->get_setting("typing");
        if (ty && ty->has_value()) send_typing = **ty != "0";
        auto ts = store->max_outgoing_ts();
        if (!ts) return ts.error();
        last_ts = *ts;
        return {};
    }

    Result<void> start_calls() {
        caps = {"text"};
        if (cfg.voice) caps.push_back("voice");
        if (cfg.ice) {
            ice_rt = std::make_unique<ice::Runtime>();
            caps.push_back("ice");
        }
        if (cfg.audio != "auto" && cfg.audio != "pulse" && cfg.audio != "null")
            return make_error(std::errc::invalid_argument, "--audio must be auto, pulse or null");
        if (!cfg.media_announce.empty() && !parse_media_address(cfg.media_announce))
            return make_error(std::errc::invalid_argument,
                              "--media-announce must be IP:PORT (or [IPv6]:PORT): " + cfg.media_announce);
        CallManager::Host host;
        host.link_to = [this](const UserId& id) -> std::shared_ptr<Link> {
            auto it = peers.find(id);
            if (it == peers.end() || it->second.contact.state != ContactState::mutual) return nullptr;
            return it->second.link && it->second.link->is_open() ? it->second.link : nullptr;
        };
        host.caps_of = [this](const UserId& id) {
            auto it = peers.find(id);
            return it == peers.end() ? std::vector<std::string>{} : it->second.caps();
        };
        host.publish = [this](json ev) { publish(std::move(ev)); };
        if (ice_rt)
            host.ice_session = [this](bool controlling, ice::Session::Events ev) {
                auto c = ice_config(controlling);
                c.reliable = false;  // datagrams: RTP
                return ice::Session::create(*ice_rt, io.get_executor(), std::move(c), std::move(ev));
            };
        calls = std::make_unique<CallManager>(io, cfg, std::move(host));
        return {};
    }

    Result<void> start_listener() {
        std::error_code ec;
        asio::ip::tcp::endpoint ep;
        if (!cfg.link_bind.empty()) {
            auto addr = asio::ip::make_address(cfg.link_bind, ec);
            if (ec)
                return make_error(std::errc::invalid_argument,
                                  "--link-bind: not an IP address: " + cfg.link_bind);
            ep = asio::ip::tcp::endpoint(addr, cfg.link_port);
            acceptor.open(ep.protocol(), ec);
        } else {
            // Dual-stack when the host has IPv6, else IPv4 only.
            ep = asio::ip::tcp::endpoint(asio::ip::tcp::v6(), cfg.link_port);
            acceptor.open(ep.protocol(), ec);
            if (!ec) acceptor.set_option(asio::ip::v6_only(false), ec);
            if (ec) {
                acceptor.close(ec);
                ep = asio::ip::tcp::endpoint(asio::ip::tcp::v4(), cfg.link_port);
                acceptor.open(ep.protocol(), ec);
            }
        }
        if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
        if (!ec) acceptor.bind(ep, ec);
        if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
        if (ec)
            return make_error(std::errc::address_in_use,
                              "cannot listen for links on tcp port " + std::to_string(cfg.link_port) + ": " +
                                  ec.message() + " (choose another with --link-port)");
        link_port = acceptor.local_endpoint().port();
        accept_next();
        return {};
    }

    // ---- links ------------------------------------------------------------

    LinkTimeouts timeouts() const {
        LinkTimeouts t;
        t.keepalive_interval = cfg.keepalive_interval;
        t.keepalive_timeout = cfg.keepalive_timeout;
        return t;
    }

    bool accepts(const UserId& id) const {
        auto it = peers.find(id);
        return it != peers.end() && it->second.contact.state != ContactState::blocked &&
               it->second.contact.state != ContactState::pending_in;
    }

    void accept_next() {
        acceptor.async_accept([this](std::error_code ec, asio::ip::tcp::socket sock) {
            if (ec == asio::error::operation_aborted || stopping) return;
            if (ec) {
                // E.g. out of file descriptors: retrying at once would spin
                // the loop. Say so, and try again in a moment.
                spdlog::warn("link: accepting a connection failed: {}; retrying in 100 ms", ec.message());
                accept_retry.expires_after(milliseconds(100));
                accept_retry.async_wait([this](std::error_code e) {
                    if (!e && !stopping) accept_next();
                });
                return;
            }
            {
                if (incoming.size() >= k_max_incoming_handshakes) {
                    spdlog::warn("link: {} handshakes in progress, refusing a connection", incoming.size());
                } else {
                    auto link = std::make_shared<Link>(
                        io.get_executor(), std::make_shared<TcpStream>(std::move(sock)),
                        crypto::TlsEngine::Role::server, identity, std::nullopt,
                        [this](const UserId& id) { return accepts(id); }, timeouts(), link_callbacks());
                    incoming.insert(link);
                    link->start();
                }
            }
            accept_next();
        });
    }

    Link::Callbacks link_callbacks() {
        Link::Callbacks cb;
        cb.make_hello = [this] {
            return HelloFrame{1, name, caps, wire_status(), status == "invisible" ? "" : note};
        };
        cb.on_open = [this](Link& l) { on_link_open(l); };
        cb.on_frame = [this](Link& l, Frame&& f) { on_frame(l, std::move(f)); };
        cb.on_closed = [this](Link& l, const std::string& why) { on_link_closed(l, why); };
        return cb;
    }

    bool we_dial(const UserId& peer) const { return self < peer; }

    void maybe_dial(Peer& p) {
        if (stopping || p.link || p.connecting || p.dialing || !we_dial(p.contact.id)) return;
        if (p.contact.state == ContactState::blocked || p.contact.state == ContactState::pending_in) return;
        if (!p.record_live || !p.record || p.record->status == "offline") return;
        const bool ice_peer =
            ice_rt && std::find(p.record->caps.begin(), p.record->caps.end(), "ice") != p.record->caps.end();
        if (p.record->addrs.empty() && !ice_peer) return;
        if (p.retry) return;  // a retry is scheduled; it will dial
        dial(p);
    }

    // One outgoing connection attempt: the peer's candidates, tried in order.
    struct DialAttempt {
        UserId peer;
        std::vector<dht::Candidate> cands;
        std::size_t next = 0;
        asio::ip::tcp::socket sock;
        asio::steady_timer timer;
    };

    void dial(Peer& p) {
        if (ice_rt && !p.ice && p.record &&
            std::find(p.record->caps.begin(), p.record->caps.end(), "ice") != p.record->caps.end())
            return ice_dial(p);
        tcp_dial(p);
    }

    void tcp_dial(Peer& p) {
        if (p.record->addrs.empty())
            return dial_failed(p, p.link_error.empty() ? "no address" : p.link_error);
        auto at = std::make_shared<DialAttempt>(
            DialAttempt{p.contact.id, p.record->addrs, 0, asio::ip::tcp::socket(io), asio::steady_timer(io)});
        spdlog::debug("dialling {} ({} candidates)", p.contact.id.hex().substr(0, 8), at->cands.size());
        p.connecting = true;
        try_candidate(at);
    }

    void try_candidate(const std::shared_ptr<DialAttempt>& at) {
        auto it = peers.find(at->peer);
        if (it == peers.end()) return;  // removed meanwhile
        Peer& p = it->second;
        if (stopping || p.link) {
            p.connecting = false;
            return;
        }
        if (at->next >= at->cands.size()) {
            p.connecting = false;
            return dial_failed(p, "no candidate address answered");
        }
        const auto& c = at->cands[at->next++];
        std::error_code ec;
        auto addr = asio::ip::make_address(c.ip, ec);
        if (ec) return try_candidate(at);
        at->sock.close(ec);
        at->timer.expires_after(cfg.dial_timeout);
        at->timer.async_wait([at](std::error_code e) {
            if (!e) at->sock.close(e);
        });
        at->sock.async_connect(asio::ip::tcp::endpoint(addr, c.port), [this, at](std::error_code e) {
            at->timer.cancel();
            if (e) return try_candidate(at);
            auto pit = peers.find(at->peer);
            if (pit == peers.end()) return;
            pit->second.connecting = false;
            if (stopping || pit->second.link) return;
            auto link = std::make_shared<Link>(
                io.get_executor(), std::make_shared<TcpStream>(std::move(at->sock)),
                crypto::TlsEngine::Role::client, identity, at->peer, nullptr, timeouts(), link_callbacks());
            pit->second.dialing = link;
            link->start();
        });
    }

    void dial_failed(Peer& p, const std::string& why) {
        spdlog::debug("dial {} failed: {}", p.contact.id.hex().substr(0, 8), why);
        schedule_retry(p);
    }

    void schedule_retry(Peer& p) {
        if (stopping || !we_dial(p.contact.id)) return;
        p.backoff = std::min(cfg.reconnect_max, std::max(cfg.reconnect_min, p.backoff * 2));
        // +-20% jitter so that many peers do not retry in step.
        static thread_local std::minstd_rand rng{std::random_device{}()};
        auto jitter = std::uniform_int_distribution<long>(-p.backoff.count() / 5, p.backoff.count() / 5)(rng);
        p.retry = std::make_unique<asio::steady_timer>(io, p.backoff + milliseconds(jitter));
        UserId id = p.contact.id;
        p.retry->async_wait([this, id](std::error_code ec) {
            if (ec) return;
            auto it = peers.find(id);
            if (it == peers.end()) return;
            it->second.retry.reset();
            maybe_dial(it->second);
        });
    }

    void on_link_open(Link& l) {
        std::shared_ptr<Link> link = l.shared_from_this();
        incoming.erase(link);
        auto it = peers.find(l.peer());
        if (it == peers.end() || stopping) return l.close("not a contact");
        Peer& p = it->second;
        if (p.dialing == link) p.dialing.reset();
        if (p.link && p.link != link) {
            auto old = std::move(p.link);
            p.link.reset();
            old->close("replaced by a newer link");
        }
        p.link = link;
        p.backoff = milliseconds(0);
        p.retry.reset();
        wake(p, "a link");
        p.link_error.clear();
        std::int64_t setup_ms = -1;
        if (p.ice) {
            setup_ms = duration_cast<milliseconds>(steady_clock::now() - p.ice->started).count();
            p.ice->deadline.reset();
            p.ice.reset();  // the Link's stream keeps the session
        }
        spdlog::info("link up with {} ({}, {})", p.contact.id.hex().substr(0, 8),
                     l.outgoing() ? "outgoing" : "incoming", l.remote_endpoint());
        // Both sides must list each other for a link to form at all, so the
        // relation is mutual now.
        if (p.contact.state == ContactState::pending_out) make_mutual(p);
        apply_hello(p, l.peer_hello());
        {
            const auto path = l.path();
            json ev{{"type", "link"},    {"id", p.contact.id.hex()}, {"up", true},
                    {"path", path.kind}, {"local", path.local},      {"remote", path.remote}};
            if (!path.relay.empty()) ev["relay"] = path.relay;
            if (setup_ms >= 0) ev["setup_ms"] = setup_ms;
            publish(ev);
        }
        publish_peer_presence(p);
        touch_last_seen(p);
        // The link supersedes what waits in its inbox for acks and answers:
        // the peer resends what it has not seen acked, and we ack it here.
        p.inbox_flush.reset();
        p.ack_flush.reset();
        batch_open();
        (void)store->remove_inbox_kind(p.contact.id, InboxKind::acks);
        (void)store->remove_inbox_kind(p.contact.id, InboxKind::control);
        pending_control.erase(p.contact.id);
        for (const auto& id : p.inbox_acks) link->send(AckFrame{id});
        p.inbox_acks.clear();
        send_receipts_over_link(p, p.inbox_receipts);
        p.inbox_receipts.clear();
        flush_outbox(p);
    }

    void on_link_closed(Link& l, const std::string& why) {
        auto link = l.shared_from_this();
        if (incoming.erase(link)) {
            // Closed before the handshake finished: a refused key, a
            // stranger, garbage, or a timeout. Say so: it is what a user
            // debugging "my buddy cannot reach me" looks for.
            spdlog::warn("refused an incoming link from {}: {}", l.remote_endpoint(), why);
            return;
        }
        auto it = peers.find(l.peer());
        if (it == peers.end()) return;
        Peer& p = it->second;
        if (p.dialing == link) {
            p.dialing.reset();
            if (!p.link) dial_failed(p, why);
            return;
        }
        if (p.link != link) return;
        p.link.reset();
        spdlog::info("link down with {}: {}", p.contact.id.hex().substr(0, 8), why);
        if (calls) calls->on_link_down(p.contact.id);
        touch_last_seen(p);
        set_peer_typing(p, false);
        publish({{"type", "link"}, {"id", p.contact.id.hex()}, {"up", false}, {"reason", why}});
        publish_peer_presence(p);
        if (!stopping) {
            p.backoff = milliseconds(0);
            if (p.record_live) schedule_retry(p);
            // What was sent over the link but not acked now goes through the inbox.
            schedule_inbox_flush(p);
        }
    }

    void apply_hello(Peer& p, const HelloFrame& h) {
        p.link_status = h.status == "invisible" ? "online" : h.status;
        p.link_note = h.note;
        p.link_caps = h.caps;
        if (p.contact.name.empty() && !h.name.empty()) {
            p.contact.name = h.name;
            (void)store->put_contact(p.contact);
        }
    }

    std::string wire_status() const { return status == "invisible" ? "online" : status; }

    void on_frame(Link& l, Frame&& f) {
        auto it = peers.find(l.peer());
        if (it == peers.end()) return l.close("not a contact");
        Peer& p = it->second;
        std::visit(
            [&](auto&& fr) {
                using T = std::decay_t<decltype(fr)>;
                if constexpr (std::is_same_v<T, HelloFrame>) {
                    apply_hello(p, fr);  // a repeated hello updates what we know
                    publish_peer_presence(p);
                } else if constexpr (std::is_same_v<T, PresenceFrame>) {
                    p.link_status = fr.status == "invisible" ? "online" : fr.status;
                    p.link_note = fr.note;
                    publish_peer_presence(p);
                } else if constexpr (std::is_same_v<T, MessageFrame>) {
                    receive_message(p, fr, l.shared_from_this());
                } else if constexpr (std::is_same_v<T, AckFrame>) {
                    on_ack(p, fr.id);
                } else if constexpr (std::is_same_v<T, ReceiptFrame>) {
                    on_receipt(p, fr.ids);
                } else if constexpr (std::is_same_v<T, TypingFrame>) {
                    set_peer_typing(p, fr.typing);
                } else if constexpr (std::is_same_v<T, CallFrame>) {
                    if (p.contact.state == ContactState::mutual) calls->on_frame(p.contact.id, l, fr);
                } else if constexpr (std::is_same_v<T, ByeFrame>) {
                    // The peer is going away on purpose: show it offline now,
                    // and do not redial until it publishes a newer record.
                    p.record_live = false;
                    l.close("bye: " + (fr.reason.empty() ? std::string("shutdown") : fr.reason));
                } else {
                    // KeepaliveFrame is handled in Link; UnknownFrame is skipped;
                    // requests and answers only travel through the inbox.
                }
            },
            f);
    }

    // ---- group commit -------------------------------------------------------

    // Opens the write batch if none is open. Every store write until the
    // batch commits (right after the current round of handlers) shares one
    // transaction: one commit for a burst of messages instead of one each.
    void batch_open() {
        if (batch) return;
        batch.emplace(*store);
        asio::post(io, [this] { commit_batch(); });
    }

    // Runs `fn(committed)` once the current batch is durable (or failed).
    void on_commit(std::function<void(bool committed)> fn) {
        batch_open();
        after_commit.push_back(std::move(fn));
    }

    void commit_batch() {
        if (!batch) return;
        auto r = batch->commit();
        batch.reset();
        if (!r) spdlog::error("store: {}", r.error().what());
        auto callbacks = std::move(after_commit);
        after_commit.clear();
        for (auto& cb : callbacks) cb(r.ok());
    }

    // ---- messages ---------------------------------------------------------

    // Outgoing timestamps never go backwards, so a conversation's order (by
    // the sender's clock) is the order in which we sent, even if the clock
    // was set back.
    std::int64_t next_ts() {
        last_ts = std::max(now_ms(), last_ts + 1);
        return last_ts;
    }

    // A message from `p`, over a link (`via`) or through our inbox. Stored,
    // then acked once durable; shown once however often it arrives.
    void receive_message(Peer& p, const MessageFrame& fr, std::shared_ptr<Link> via) {
        MessageRecord m;
        m.id = fr.id;
        m.from = p.contact.id;
        m.to = self;
        m.text = fr.text;
        m.ts = fr.ts;
        m.state = MessageState::delivered;
        m.outgoing = false;
        batch_open();
        auto added = store->add_message(m);
        if (!added) {
            // Not stored, so not acked: the sender keeps it and resends.
            spdlog::error("cannot store a message from {}: {}", p.contact.id.hex().substr(0, 8),
                          added.error().what());
            return;
        }
        on_commit([this, m = std::move(m), fresh = *added, via = std::move(via)](bool ok) {
            if (!ok) return;
            auto it = peers.find(m.from);
            if (via && via->is_open())
                via->send(AckFrame{m.id});
            else if (it != peers.end())
                ack_later(it->second, m.id);
            if (!fresh) return;
            if (it != peers.end()) set_peer_typing(it->second, false);
            publish({{"type", "message.received"},
                     {"msg_id", m.id.hex()},
                     {"from", m.from.hex()},
                     {"text", m.text},
                     {"ts", m.ts},
                     {"seq", m.seq}});
        });
    }

    void on_ack(Peer& p, const MessageId& id) {
        auto m = store->get_message(id);
        // A peer may only acknowledge messages that were sent to it.
        if (!m || !m->has_value() || !(*m)->outgoing || (*m)->to != p.contact.id) return;
        advance(id, p.contact.id, MessageState::delivered);
        if (auto bundle = (*m)->inbox) {
            // The last message of an inbox bundle delivered: stop putting it.
            on_commit([this, bundle](bool ok) {
                auto left = store->bundle_pending(bundle);
                if (ok && left && *left == 0) (void)store->remove_inbox_bundle(bundle);
            });
        }
    }

    void on_receipt(Peer& p, const std::vector<MessageId>& ids) {
        for (const auto& id : ids) {
            auto m = store->get_message(id);
            if (!m || !m->has_value() || !(*m)->outgoing || (*m)->to != p.contact.id) continue;
            advance(id, p.contact.id, MessageState::read);
        }
    }

    // Moves one of our messages forward and says so once it is durable.
    void advance(const MessageId& id, const UserId& to, MessageState state) {
        batch_open();
        auto changed = store->advance_message(id, state);
        if (!changed) return spdlog::error("store: {}", changed.error().what());
        if (*changed)
            on_commit([this, id, to, state](bool ok) {
                if (ok) emit_message_state(id, to, state);
            });
    }

    void emit_message_state(const MessageId& id, const UserId& to, MessageState s) {
        publish({{"type", "message.state"}, {"msg_id", id.hex()}, {"to", to.hex()}, {"state", to_string(s)}});
    }

    void send_over_link(Peer& p, const MessageRecord& m) {
        p.link->send(MessageFrame{m.id, m.ts, m.text});
        if (m.state == MessageState::queued) advance(m.id, m.to, MessageState::sent);
    }

    // Sends what waits for `p` over its link, oldest first, from after
    // `after_seq`; pauses when the link's queue is full (see k_link_high_water).
    void flush_outbox(Peer& p, std::int64_t after_seq = -1) {
        p.outbox_paused_at = -1;
        auto pending = store->undelivered_to(p.contact.id);
        if (!pending) return spdlog::error("store: {}", pending.error().what());
        for (auto& m : *pending) {
            if (!p.link) break;
            if (m.seq <= after_seq) continue;
            if (p.link->queued_bytes() > k_link_high_water) {
                p.outbox_paused_at = m.seq - 1;
                spdlog::debug("outbox to {}: link queue full, pausing", p.contact.id.hex().substr(0, 8));
                break;
            }
            send_over_link(p, m);
        }
    }

    void resume_outboxes() {
        for (auto& [id, p] : peers)
            if (p.link && p.outbox_paused_at >= 0 && p.link->queued_bytes() < k_link_low_water)
                flush_outbox(p, p.outbox_paused_at);
    }

    // Acks a message that came through our inbox: over the link if one is
    // up, else batched into the sender's inbox.
    void ack_later(Peer& p, const MessageId& id) {
        if (p.link) return p.link->send(AckFrame{id});
        p.inbox_acks.push_back(id);
        schedule_ack_flush(p);
    }

    void send_receipts_over_link(Peer& p, const std::vector<MessageId>& ids) {
        for (std::size_t i = 0; i < ids.size() && p.link; i += k_max_receipt_ids) {
            auto end = std::min(ids.size(), i + k_max_receipt_ids);
            p.link->send(ReceiptFrame{std::vector<MessageId>(ids.begin() + i, ids.begin() + end)});
        }
    }

    void set_peer_typing(Peer& p, bool typing) {
        if (typing) {
            // Expires by itself unless the peer repeats it.
            if (!p.typing_timer) p.typing_timer = std::make_unique<asio::steady_timer>(io);
            p.typing_timer->expires_after(k_typing_timeout);
            UserId id = p.contact.id;
            p.typing_timer->async_wait([this, id](std::error_code ec) {
                if (ec) return;
                auto it = peers.find(id);
                if (it != peers.end()) set_peer_typing(it->second, false);
            });
        } else if (p.typing_timer) {
            p.typing_timer->cancel();
        }
        if (p.typing == typing) return;
        p.typing = typing;
        publish({{"type", "typing"}, {"from", p.contact.id.hex()}, {"typing", typing}});
    }

    // ---- the DHT inbox ------------------------------------------------------

    // Seals `frames` for `to` as one bundle, records its values (they are
    // re-put until `kind`'s rule says stop) and puts them once the record is
    // durable; `stored` runs when a DHT node confirmed every value. Returns
    // the bundle id, 0 if the key is unknown or sealing failed.
    std::uint64_t send_bundle(const UserId& to, InboxKind kind, const std::vector<Frame>& frames,
                              std::function<void()> stored = {}) {
        if (frames.empty() || !dht->knows_key(to)) return 0;
        static thread_local std::mt19937_64 rng{std::random_device{}()};
        std::uint64_t bundle = std::uniform_int_distribution<std::uint64_t>(1)(rng);
        auto chunks = make_bundle(bundle, frames);
        if (chunks.empty()) {
            spdlog::error("inbox: {} frames for {} do not fit a bundle", frames.size(),
                          to.hex().substr(0, 8));
            return 0;
        }
        std::vector<InboxValueRecord> values;
        for (const auto& c : chunks) {
            auto sealed = dht->seal_inbox(to, encode_inbox_chunk(c));
            if (!sealed) {
                spdlog::warn("inbox: {}", sealed.error().what());
                return 0;
            }
            values.push_back({sealed->id, to, bundle, kind, now_ms(), std::move(sealed->data)});
        }
        batch_open();
        for (const auto& v : values)
            if (auto r = store->add_inbox_value(v); !r) {
                spdlog::error("store: {}", r.error().what());
                return 0;
            }
        on_commit([this, values = std::move(values), stored = std::move(stored)](bool ok) {
            if (!ok) return;
            auto left = std::make_shared<std::size_t>(values.size());
            for (const auto& v : values)
                put_value(v, [left, stored](bool put) {
                    if (put && *left > 0 && --*left == 0 && stored) stored();
                });
        });
        return bundle;
    }

    // A DHT node holds a bundle of messages: they are "sent".
    void bundle_stored(std::uint64_t bundle, const UserId& to) {
        if (!bundle) return;
        batch_open();
        auto ids = store->mark_bundle_sent(bundle);
        if (!ids) return spdlog::error("store: {}", ids.error().what());
        on_commit([this, ids = std::move(*ids), to](bool ok) {
            if (ok)
                for (const auto& id : ids) emit_message_state(id, to, MessageState::sent);
        });
    }

    // Puts one inbox value. A failed put (no node answered: the DHT is still
    // connecting, or we are offline) is retried twice, 2 s then 8 s later;
    // after that the periodic refresh takes over.
    void put_value(const InboxValueRecord& v, std::function<void(bool ok)> done = {}, int attempt = 0) {
        if (stopping) return;
        auto retry = [this, v, done, attempt](bool ok) {
            if (ok || attempt >= 2 || stopping) {
                if (done) done(ok);
                return;
            }
            auto timer = std::make_shared<asio::steady_timer>(io, seconds(attempt == 0 ? 2 : 8));
            timer->async_wait([this, timer, v, done, attempt](std::error_code ec) {
                if (!ec) put_value(v, done, attempt + 1);
            });
        };
        put_value_once(v, std::move(retry));
    }

    void put_value_once(const InboxValueRecord& v, std::function<void(bool ok)> done) {
        static constexpr const char* kinds[] = {"messages", "control", "acks", "receipts"};
        const char* kind = kinds[static_cast<int>(v.kind)];
        dht->put_inbox(v.peer, dht::SealedValue{v.value_id, v.data}, [peer = v.peer, kind, done](bool ok) {
            if (done) done(ok);
            if (ok)
                spdlog::debug("inbox: stored a {} value for {}", kind, peer.hex().substr(0, 8));
            else
                spdlog::debug("inbox: no DHT node stored a {} value for {} yet", kind,
                              peer.hex().substr(0, 8));
        });
    }

    // True if `p`'s key is known; else starts a lookup that calls `again`.
    bool have_key(Peer& p, std::function<void(Peer&)> again) {
        if (dht->knows_key(p.contact.id)) return true;
        if (p.key_lookup) return false;
        p.key_lookup = true;
        UserId id = p.contact.id;
        dht->find_key(id, [this, id, again = std::move(again)](bool found) {
            auto it = peers.find(id);
            if (it == peers.end()) return;
            it->second.key_lookup = false;
            if (found) again(it->second);
            // Else: their presence record or the next refresh brings the key.
        });
        return false;
    }

    void schedule_inbox_flush(Peer& p) {
        if (stopping || p.link || p.inbox_flush) return;
        auto delay = p.online() ? cfg.inbox_delay_online : cfg.inbox_delay_offline;
        p.inbox_flush = std::make_unique<asio::steady_timer>(io, delay);
        UserId id = p.contact.id;
        p.inbox_flush->async_wait([this, id](std::error_code ec) {
            if (ec) return;
            auto it = peers.find(id);
            if (it == peers.end()) return;
            it->second.inbox_flush.reset();
            flush_inbox(it->second);
        });
    }

    // Puts what waits for `p` and is not in its inbox yet into its inbox.
    void flush_inbox(Peer& p) {
        if (stopping || p.link) return;
        if (p.contact.state == ContactState::blocked || p.contact.state == ContactState::pending_in) return;
        auto pending = store->undelivered_to(p.contact.id);
        if (!pending) return spdlog::error("store: {}", pending.error().what());
        std::erase_if(*pending, [](const MessageRecord& m) { return m.inbox != 0; });
        if (pending->empty()) return;
        if (!have_key(p, [this](Peer& q) { flush_inbox(q); })) return;
        std::vector<Frame> frames;
        std::vector<const MessageRecord*> in_bundle;
        std::size_t size = 0;
        auto emit = [&] {
            // "sent" once a DHT node holds the bundle.
            auto bundle_id = std::make_shared<std::uint64_t>(0);
            auto bundle =
                send_bundle(p.contact.id, InboxKind::messages, frames,
                            [this, bundle_id, to = p.contact.id] { bundle_stored(*bundle_id, to); });
            *bundle_id = bundle;
            if (bundle)
                for (const auto* m : in_bundle) (void)store->set_message_inbox(m->id, bundle);
            frames.clear();
            in_bundle.clear();
            size = 0;
        };
        for (const auto& m : *pending) {
            std::size_t sz = m.text.size() + 64;  // frame overhead, generously
            if (!frames.empty() && size + sz > k_max_chunk_data) emit();
            frames.push_back(MessageFrame{m.id, m.ts, m.text});
            in_bundle.push_back(&m);
            size += sz;
        }
        emit();
        spdlog::debug("inbox: {} messages for {} put in its inbox", pending->size(),
                      p.contact.id.hex().substr(0, 8));
    }

    void schedule_ack_flush(Peer& p) {
        if (stopping || p.ack_flush) return;
        p.ack_flush = std::make_unique<asio::steady_timer>(io, cfg.inbox_ack_delay);
        UserId id = p.contact.id;
        p.ack_flush->async_wait([this, id](std::error_code ec) {
            if (ec) return;
            auto it = peers.find(id);
            if (it == peers.end()) return;
            it->second.ack_flush.reset();
            flush_acks(it->second);
        });
    }

    void flush_acks(Peer& p) {
        if (p.link) {
            for (const auto& id : p.inbox_acks) p.link->send(AckFrame{id});
            send_receipts_over_link(p, p.inbox_receipts);
            p.inbox_acks.clear();
            p.inbox_receipts.clear();
            return;
        }
        if (!have_key(p, [this](Peer& q) { flush_acks(q); })) return;
        for (std::size_t i = 0; i < p.inbox_acks.size(); i += k_max_acks_per_bundle) {
            auto end = std::min(p.inbox_acks.size(), i + k_max_acks_per_bundle);
            std::vector<Frame> frames;
            for (auto j = i; j < end; ++j) frames.push_back(AckFrame{p.inbox_acks[j]});
            send_bundle(p.contact.id, InboxKind::acks, frames);
        }
        std::vector<Frame> receipts;
        for (std::size_t i = 0; i < p.inbox_receipts.size(); i += k_max_receipt_ids) {
            auto end = std::min(p.inbox_receipts.size(), i + k_max_receipt_ids);
            receipts.push_back(ReceiptFrame{
                std::vector<MessageId>(p.inbox_receipts.begin() + i, p.inbox_receipts.begin() + end)});
        }
        if (!receipts.empty()) send_bundle(p.contact.id, InboxKind::receipts, receipts);
        p.inbox_acks.clear();
        p.inbox_receipts.clear();
    }

    // A contact request or an answer: replaces what we said before to `to`
    // (only the newest matters). Waits for the key if it is unknown.
    void send_control(const UserId& to, Frame frame) {
        if (!dht->knows_key(to)) {
            pending_control[to] = std::move(frame);
            dht->find_key(to, [this, to](bool found) {
                auto it = pending_control.find(to);
                if (!found || it == pending_control.end()) return;
                auto f = std::move(it->second);
                pending_control.erase(it);
                send_control(to, std::move(f));
            });
            return;
        }
        pending_control.erase(to);
        batch_open();
        (void)store->remove_inbox_kind(to, InboxKind::control);
        send_bundle(to, InboxKind::control, {std::move(frame)});
    }

    void send_request(Peer& p) {
        send_control(p.contact.id, RequestFrame{name, p.contact.request, p.contact.request_ts});
    }

    // Re-puts every inbox value still needed, drops the rest, and retries
    // what could not be sealed yet (a key that was unknown).
    void refresh_inbox() {
        if (stopping) return;
        dht->refetch_inbox();
        auto values = store->inbox_values();
        if (!values) return spdlog::error("store: {}", values.error().what());
        const auto now = now_ms();
        const auto retention = duration_cast<milliseconds>(cfg.inbox_retention).count();
        const auto receipt_retention = duration_cast<milliseconds>(cfg.receipt_retention).count();
        std::set<std::uint64_t> dead;
        std::set<UserId> requested;  // peers with a stored request
        for (const auto& v : *values) {
            if (dead.count(v.bundle)) continue;
            bool keep = true;
            auto it = peers.find(v.peer);
            switch (v.kind) {
                case InboxKind::messages: {
                    auto left = store->bundle_pending(v.bundle);
                    keep = now - v.created < retention && (!left || *left > 0);
                    break;
                }
                case InboxKind::control:
                    if (it != peers.end() && it->second.contact.state == ContactState::pending_out) {
                        keep = now - v.created < retention;
                        requested.insert(v.peer);
                    } else {
                        keep = now - v.created < receipt_retention;
                    }
                    break;
                case InboxKind::acks:
                case InboxKind::receipts:
                    keep = now - v.created < receipt_retention;
                    break;
            }
            if (!keep) {
                dead.insert(v.bundle);
                continue;
            }
            if (v.kind == InboxKind::messages)
                put_value(v, [this, bundle = v.bundle, to = v.peer](bool ok) {
                    if (ok) bundle_stored(bundle, to);
                });
            else
                put_value(v);
        }
        if (!dead.empty()) {
            batch_open();
            for (auto b : dead) (void)store->remove_inbox_bundle(b);
            spdlog::debug("inbox: stopped putting {} bundles", dead.size());
        }
        for (auto& [id, p] : peers) {
            if (p.link) continue;
            if (p.contact.state == ContactState::pending_out && !requested.count(id) &&
                now - p.contact.request_ts < retention)
                send_request(p);
            flush_inbox(p);
        }
        spdlog::debug("inbox: refreshed {} values", values->size());
    }

    void schedule_inbox_refresh() {
        inbox_timer.expires_after(cfg.inbox_refresh);
        inbox_timer.async_wait([this](std::error_code ec) {
            if (ec || stopping) return;
            refresh_inbox();
            schedule_inbox_refresh();
        });
    }

    void on_key(const UserId& id, const Bytes& der) {
        auto it = peers.find(id);
        if (it == peers.end()) return;
        Peer& p = it->second;
        if (p.contact.pubkey != der) {
            p.contact.pubkey = der;
            if (auto r = store->put_contact(p.contact); !r) spdlog::error("store: {}", r.error().what());
        }
        if (!p.link) flush_inbox(p);
    }

    void on_inbox_item(const UserId& from, const Bytes& payload) {
        if (stopping || from == self) return;
        auto chunk = decode_inbox_chunk(payload);
        if (!chunk)
            return spdlog::debug("inbox: a value from {}: {}", from.hex().substr(0, 8), chunk.error().what());
        auto bytes = assembler.add(from, std::move(*chunk), steady_clock::now());
        if (!bytes) return;
        auto frames = decode_bundle(*bytes);
        if (!frames)
            return spdlog::debug("inbox: a bundle from {}: {}", from.hex().substr(0, 8),
                                 frames.error().what());
        spdlog::debug("inbox: {} frames from {}", frames->size(), from.hex().substr(0, 8));
        for (const auto& f : *frames) on_inbox_frame(from, f);
    }

    void on_inbox_frame(const UserId& from, const Frame& f) {
        if (auto* r = std::get_if<RequestFrame>(&f)) return on_request(from, *r);
        if (auto* a = std::get_if<AnswerFrame>(&f)) return on_answer(from, *a);
        auto it = peers.find(from);
        if (it == peers.end()) return;  // not a contact: nothing else is accepted
        Peer& p = it->second;
        if (p.contact.state == ContactState::blocked || p.contact.state == ContactState::pending_in) return;
        if (auto* m = std::get_if<MessageFrame>(&f)) {
            // Only someone who lists us writes to us: they accepted.
            if (p.contact.state == ContactState::pending_out) make_mutual(p);
            receive_message(p, *m, nullptr);
        } else if (auto* ack = std::get_if<AckFrame>(&f)) {
            on_ack(p, ack->id);
        } else if (auto* rc = std::get_if<ReceiptFrame>(&f)) {
            on_receipt(p, rc->ids);
        }
    }

    // ---- contact requests ---------------------------------------------------

    void make_mutual(Peer& p) {
        if (p.contact.state == ContactState::mutual) return;
        p.contact.state = ContactState::mutual;
        p.contact.request.clear();
        if (auto r = store->put_contact(p.contact); !r) spdlog::error("store: {}", r.error().what());
        batch_open();
        (void)store->remove_inbox_kind(p.contact.id, InboxKind::control);
        pending_control.erase(p.contact.id);
        if (!p.watch) start_watch(p);
        publish({{"type", "contact.state"}, {"id", p.contact.id.hex()}, {"state", "mutual"}});
    }

    void on_request(const UserId& from, const RequestFrame& r) {
        auto it = peers.find(from);
        if (it != peers.end()) {
            Peer& p = it->second;
            switch (p.contact.state) {
                case ContactState::blocked:
                    return;  // no answer, nothing stored
                case ContactState::pending_in:
                    // The same request again (it is re-put until answered),
                    // or a newer one: merged into the one waiting.
                    if (r.ts > p.contact.request_ts) {
                        p.contact.request = r.message;
                        p.contact.request_ts = r.ts;
                        (void)store->put_contact(p.contact);
                    }
                    return;
                case ContactState::pending_out:
                    // Both asked: that is a yes from both sides.
                    spdlog::info("{} asked for us while we asked for them: mutual", from.hex().substr(0, 8));
                    make_mutual(p);
                    p.contact.request_ts = r.ts;
                    (void)store->put_contact(p.contact);
                    send_control(from, AnswerFrame{true});
                    publish_presence();
                    return;
                case ContactState::mutual:
                    // They lost us (re-added us?): say yes again, once per request.
                    if (r.ts > p.contact.request_ts) {
                        p.contact.request_ts = r.ts;
                        (void)store->put_contact(p.contact);
                        send_control(from, AnswerFrame{true});
                    }
                    return;
            }
            return;
        }
        auto declined = store->declined_until(from);
        if (declined && declined->has_value() && r.ts <= **declined) {
            // A request we declined, still being re-put: say no once per run.
            if (answered_declined.insert(from).second) send_control(from, AnswerFrame{false});
            return;
        }
        std::size_t waiting = 0;
        for (auto& [id, p] : peers) waiting += p.contact.state == ContactState::pending_in;
        if (waiting >= k_max_pending_requests) {
            spdlog::warn("contact request from {} dropped: {} requests already wait for an answer",
                         from.hex().substr(0, 8), waiting);
            return;
        }
        ContactRecord c;
        c.id = from;
        c.name = r.name;
        c.state = ContactState::pending_in;
        c.added = now_ms();
        c.request = r.message;
        c.request_ts = r.ts;
        if (auto s = store->put_contact(c); !s) return spdlog::error("store: {}", s.error().what());
        add_peer(c);
        spdlog::info("contact request from {} ({})", from.hex().substr(0, 8), r.name);
        publish({{"type", "contact.request"}, {"id", from.hex()}, {"name", r.name}, {"message", r.message}});
        publish({{"type", "contact.state"}, {"id", from.hex()}, {"state", "pending_in"}});
    }

    void on_answer(const UserId& from, const AnswerFrame& a) {
        auto it = peers.find(from);
        if (it == peers.end() || it->second.contact.state != ContactState::pending_out) return;
        if (a.accept) {
            spdlog::info("{} accepted our contact request", from.hex().substr(0, 8));
            make_mutual(it->second);
            maybe_dial(it->second);
        } else {
            spdlog::info("{} declined our contact request", from.hex().substr(0, 8));
            drop_peer(from, "rejected");
        }
    }

    void accept_request(Peer& p) {
        spdlog::info("accepted the contact request of {}", p.contact.id.hex().substr(0, 8));
        make_mutual(p);
        send_control(p.contact.id, AnswerFrame{true});
        // Our newer record lets them dial us at once.
        publish_presence();
    }

    // Forgets a contact: link, watch, what we keep putting into its inbox.
    // The message history stays.
    // (`id` by value: callers pass the id of the peer this erases.)
    void drop_peer(UserId id, const std::string& state) {
        auto it = peers.find(id);
        if (it == peers.end()) return;
        Peer& p = it->second;
        if (auto s = store->remove_contact(id); !s) spdlog::error("store: {}", s.error().what());
        batch_open();
        for (auto k : {InboxKind::messages, InboxKind::control, InboxKind::acks, InboxKind::receipts})
            (void)store->remove_inbox_kind(id, k);
        pending_control.erase(id);
        calls->on_link_down(id);
        if (p.watch) dht->unwatch(p.watch);
        auto link = std::move(p.link);
        auto dialing = std::move(p.dialing);
        peers.erase(it);
        if (link) {
            link->send(ByeFrame{"removed"});
            link->close("contact removed");
        }
        if (dialing) dialing->close("contact removed");
        publish({{"type", "contact.state"}, {"id", id.hex()}, {"state", state}});
    }

    // ---- presence ---------------------------------------------------------

    dht::PresenceRecord own_record(const std::string& st) {
        dht::PresenceRecord r;
        r.name = name;
        r.status = st == "invisible" ? "offline" : st;
        r.note = (st == "invisible" || st == "offline") ? "" : note;
        r.caps = caps;
        r.device = device_id;
        // Strictly increasing: watchers drop a record not newer than the last
        // one (replays), so two updates within one millisecond must differ.
        last_presence_ts = std::max(now_ms(), last_presence_ts + 1);
        r.ts = last_presence_ts;
        if (st != "invisible" && st != "offline") {
            std::error_code ec;
            auto bound =
                cfg.link_bind.empty() ? asio::ip::address() : asio::ip::make_address(cfg.link_bind, ec);
            if (!cfg.link_bind.empty() && !bound.is_unspecified()) {
                r.addrs.push_back({bound.to_string(), link_port, "host"});
            } else {
                r.addrs = host_candidates(link_port);
                // OpenDHT reports the bare IP other nodes see (no port).
                auto pub = dht->info().public_addr;
                if (!pub.empty()) r.addrs.push_back({pub, link_port, "public"});
            }
            if (r.addrs.size() > 16) r.addrs.resize(16);
        }
        return r;
    }

    void publish_presence() {
        next_refresh = steady_clock::now() + cfg.presence_refresh;
        dht->publish_presence(own_record(status), [this](bool ok) {
            if (ok) return;
            spdlog::warn("presence: no DHT node stored our record yet (retrying in 30 s)");
            next_refresh = std::min(next_refresh, steady_clock::now() + seconds(30));
        });
    }

    // Tracks a contact. Its presence is watched once the relation is (or is
    // asked to be) mutual: never for a blocked id or a request not accepted.
    void add_peer(const ContactRecord& c) {
        auto [it, fresh] = peers.try_emplace(c.id);
        it->second.contact = c;
        if (!fresh) return;
        if (c.state == ContactState::pending_out || c.state == ContactState::mutual) start_watch(it->second);
    }

    void start_watch(Peer& p) {
        UserId id = p.contact.id;
        p.watch = dht->watch_presence(
            id, [this, id](const dht::PresenceRecord& r) { on_record(id, r); },
            [this, id] { on_record_expired(id); });
        p.dormant = false;
        p.awake_since = steady_clock::now();
    }

    // ---- links through ICE (docs/NAT.md) ----------------------------------

    ice::SessionConfig ice_config(bool controlling) const {
        ice::SessionConfig c;
        c.controlling = controlling;
        if (!cfg.link_bind.empty()) c.local_addresses = {cfg.link_bind};
        auto split = [](const std::string& hp) -> std::optional<ice::Server> {
            auto ep = parse_ip_port(hp);  // juiced refused bad ones at start
            if (!ep) return std::nullopt;
            return ice::Server{ep->ip, ep->port};
        };
        if (!cfg.stun.empty()) c.stun = split(cfg.stun);
        if (!cfg.turn.empty())
            if (auto t = split(cfg.turn)) c.turn = ice::TurnServer{*t, cfg.turn_user, cfg.turn_password};
        c.public_ip = dht->info().public_addr;  // a server-reflexive guess without STUN
        return c;
    }

    // ---- node.nat: what kind of NAT, and who can reach us ------------------

    void start_nat_check(Reply r) {
        if (nat_check) {
            nat_check->waiting.push_back(std::move(r));
            return;
        }
        nat_check = std::make_unique<NatCheck>();
        nat_check->waiting.push_back(std::move(r));
        std::vector<ice::Server> servers;
        for (const auto* hp : {&cfg.stun, &cfg.turn})
            if (auto ep = parse_ip_port(*hp)) servers.push_back({ep->ip, ep->port});
        nat_check->probe = std::async(std::launch::async, [this, servers, bind = cfg.link_bind] {
            auto res = ice::probe_nat(bind, servers);
            asio::post(io, [this, res = std::move(res)]() mutable {
                if (!nat_check) return;
                nat_check->probed = std::move(res);
                finish_nat_check();
            });
        });
        // What an ICE attempt would gather now: host, server-reflexive and
        // relayed candidates (the TURN allocation is the real test of --turn).
        if (ice_rt) {
            ice::Session::Events ev;
            ev.on_gathered = [this](ice::Description d) {
                if (!nat_check) return;
                nat_check->gathered = std::move(d);
                nat_check->gather_done = true;
                finish_nat_check();
            };
            auto c = ice_config(true);
            c.reliable = false;
            nat_check->gather = ice::Session::create(*ice_rt, io.get_executor(), std::move(c), std::move(ev));
            nat_check->timer = std::make_unique<asio::steady_timer>(io, 8s);
            nat_check->timer->async_wait([this](std::error_code ec) {
                if (ec || !nat_check) return;
                nat_check->gather_done = true;  // TURN never answered
                finish_nat_check();
            });
        } else {
            nat_check->gather_done = true;
        }
    }

    void finish_nat_check() {
        auto& n = *nat_check;
        if (!n.probed || !n.gather_done) return;
        if (n.gather) n.gather->close();
        const auto& pr = *n.probed;
        json tests = json::array();
        for (const auto& t : pr.tests) tests.push_back({{"server", t.server}, {"mapped", t.mapped}});
        json probe{{"local", pr.local},
                   {"tests", tests},
                   {"other_address", pr.other_address},
                   {"mapping", pr.mapping},
                   {"error", pr.error}};
        if (pr.port_preserved) probe["port_preserved"] = *pr.port_preserved;
        const std::string pub = dht->info().public_addr;
        std::string nat = pr.mapping == "none"                   ? "none"
                          : pr.mapping == "endpoint-independent" ? "cone"
                          : pr.mapping == "unknown"              ? "unknown"
                                                                 : "symmetric";
        json cands = json::array();
        std::string relay;
        if (n.gathered)
            for (const auto& c : n.gathered->candidates) {
                cands.push_back({{"type", c.type}, {"address", c.ip + ":" + std::to_string(c.port)}});
                if (c.type == "relay" && relay.empty()) relay = c.ip + ":" + std::to_string(c.port);
            }
        json turn{{"configured", !cfg.turn.empty()}, {"ok", !relay.empty()}};
        if (!relay.empty()) turn["relay"] = relay;
        // The contacts' links, as they stand.
        json links{{"direct", 0}, {"relayed", 0}, {"tcp", 0}, {"failed", 0}};
        auto bump = [&](const char* k) { links[k] = links[k].get<int>() + 1; };
        for (const auto& [id, p] : peers) {
            if (p.link) {
                const auto k = p.link->path().kind;
                bump(k == "relay" ? "relayed" : k == "tcp" ? "tcp" : "direct");
            } else if (!p.link_error.empty()) {
                bump("failed");
            }
        }
        std::vector<std::string> advice;
        std::string reach;
        const bool turn_ok = !relay.empty();
        if (!cfg.ice) {
            reach = "ICE is off: contacts behind a NAT reach you only if your link port " +
                    std::to_string(link_port) + " is forwarded to you";
            advice.push_back("start juiced with --ice on to link through NATs");
        } else if (nat == "none") {
            reach = "you have a public address: contacts can link to you directly";
        } else if (nat == "cone") {
            reach =
                "contacts with a public address or a cone NAT link to you directly; one behind a "
                "symmetric NAT needs a TURN relay";
        } else if (nat == "symmetric") {
            reach =
                "direct links only with contacts that have a public address; everyone else needs a TURN "
                "relay";
        } else {
            reach = pub.empty()
                        ? "unknown: no STUN answer and the DHT has not reported your public address yet"
                        : "behind a NAT of unknown kind (public IP " + pub +
                              "): direct links work if it keeps your ports";
        }
        if (cfg.ice && nat != "none") {
            if (cfg.turn.empty())
                advice.push_back(
                    "configure a TURN server (--turn, --turn-user, --turn-password-file) so that "
                    "contacts behind symmetric NATs can still link");
            else if (!turn_ok)
                advice.push_back("the TURN server " + cfg.turn +
                                 " gave no relay: check its address, --turn-user and the password file");
        }
        if (cfg.ice && cfg.stun.empty() && cfg.turn.empty())
            advice.push_back("configure a STUN server (--stun IP:PORT) to learn your NAT's kind");
        json out{{"ice", cfg.ice}, {"public_ip", pub},      {"nat", nat},
                 {"probe", probe}, {"candidates", cands},   {"turn", turn},
                 {"links", links}, {"reachability", reach}, {"advice", advice}};
        auto waiting = std::move(n.waiting);
        nat_check.reset();  // the probe's thread has finished: it posted the result
        for (auto& r : waiting) r.result(out);
    }

    void send_signal(const UserId& to, const Frame& f, std::function<void(bool)> done = {}) {
        auto sealed = dht->seal_inbox(to, encode_frame(f), dht::SealKind::signal);
        if (!sealed) {
            spdlog::debug("ice: no signal for {}: {}", to.hex().substr(0, 8), sealed.error().what());
            if (done) done(false);
            return;
        }
        dht->put_inbox(to, *sealed, [done](bool ok) {
            if (done) done(ok);
        });
    }

    static IceFrame ice_frame(const MessageId& id, IceFrame::Op op, const ice::Description& d) {
        auto p = ice::to_params(d);
        return IceFrame{id, op, now_ms(), std::move(p.ufrag), std::move(p.pwd), std::move(p.candidates), ""};
    }

    static ice::Description ice_description(const IceFrame& f) {
        return ice::from_params(IceParams{f.ufrag, f.pwd, f.candidates});
    }

    // Starts a session for `p`'s attempt; its events find the peer by id and
    // ignore everything once the attempt is gone or replaced.
    void ice_start(Peer& p, bool dialer, const MessageId& id) {
        auto a = std::make_unique<Peer::IceAttempt>();
        a->id = id;
        a->dialer = dialer;
        a->started = steady_clock::now();
        a->deadline = std::make_unique<asio::steady_timer>(io, cfg.ice_timeout);
        UserId peer = p.contact.id;
        auto current = [this, peer, id]() -> Peer* {
            auto it = peers.find(peer);
            if (it == peers.end() || !it->second.ice || it->second.ice->id != id) return nullptr;
            return &it->second;
        };
        a->deadline->async_wait([this, current](std::error_code ec) {
            if (ec) return;
            if (Peer* q = current())
                ice_failed(*q, q->ice->session && q->ice->session->selected() ? "tls_failed" : "no_answer");
        });
        ice::Session::Events ev;
        ev.on_gathered = [this, current, dialer](ice::Description d) {
            Peer* q = current();
            if (!q) return;
            if (d.candidates.empty()) return ice_failed(*q, "no_candidates");
            UserId to = q->contact.id;
            MessageId aid = q->ice->id;
            std::string kinds;
            for (const auto& c : d.candidates)
                kinds += " " + c.type + " " + c.ip + ":" + std::to_string(c.port);
            spdlog::debug("ice: {} for {}:{}", dialer ? "offer" : "answer", to.hex().substr(0, 8), kinds);
            send_signal(to, ice_frame(aid, dialer ? IceFrame::Op::offer : IceFrame::Op::answer, d),
                        [this, current, dialer](bool ok) {
                            Peer* r = current();
                            if (!r) return;
                            if (!ok) return ice_failed(*r, "signal_failed");
                            // The answerer checks only once its answer is stored:
                            // checks sent before the dialer has it die at the
                            // dialer's TURN relay (no permission yet), and
                            // libnice drops the relay of a failed component.
                            if (!dialer && r->ice->offer) r->ice->session->set_remote(*r->ice->offer);
                        });
        };
        ev.on_state = [this, current](ice::State st) {
            if (st != ice::State::failed) return;
            Peer* q = current();
            if (!q) return;
            // Early failures are normal: the answerer checks before the
            // dialer has its answer (a TURN relay drops those checks: no
            // permission yet), and its pairs fail; the dialer's checks then
            // revive them. So a failed state only counts once the attempt is
            // k_ice_settle old and still failed.
            const auto age = steady_clock::now() - q->ice->started;
            const auto wait =
                age >= k_ice_settle ? milliseconds(0) : duration_cast<milliseconds>(k_ice_settle - age);
            auto t = std::make_shared<asio::steady_timer>(io, wait);
            t->async_wait([this, t, current](std::error_code ec) {
                Peer* r = current();
                if (ec || !r || r->ice->session->state() != ice::State::failed) return;
                ice_failed(*r, cfg.turn.empty() ? "no_path" : "checks_failed");
            });
        };
        ev.on_writable = [this, current] {
            Peer* q = current();
            if (!q || q->ice->linking || !q->ice->session->selected()) return;
            ice_link(*q);
        };
        a->session = ice::Session::create(*ice_rt, io.get_executor(), ice_config(dialer), std::move(ev));
        p.ice = std::move(a);
    }

    void ice_dial(Peer& p) {
        if (!have_key(p, [this](Peer& q) { maybe_dial(q); })) return;
        p.connecting = true;
        spdlog::debug("ice: dialling {}", p.contact.id.hex().substr(0, 8));
        ice_start(p, true, MessageId::random());
    }

    // The path works: run the TLS link over it, with the usual checks (the
    // answerer takes only the peer that sent the offer).
    void ice_link(Peer& p) {
        auto& a = *p.ice;
        a.linking = true;
        auto stream = std::make_shared<ice::IceStream>(a.session);
        UserId peer = p.contact.id;
        const auto ms = duration_cast<milliseconds>(steady_clock::now() - a.started).count();
        spdlog::info("ice: {} path to {} after {} ms ({} -> {})", a.session->selected()->kind,
                     peer.hex().substr(0, 8), ms, a.session->selected()->local,
                     a.session->selected()->remote);
        if (a.dialer) {
            auto link = std::make_shared<Link>(io.get_executor(), stream, crypto::TlsEngine::Role::client,
                                               identity, peer, nullptr, timeouts(), link_callbacks());
            p.connecting = false;
            p.dialing = link;
            link->start();
        } else {
            auto link = std::make_shared<Link>(
                io.get_executor(), stream, crypto::TlsEngine::Role::server, identity, std::nullopt,
                [this, peer](const UserId& id) { return id == peer && accepts(id); }, timeouts(),
                link_callbacks());
            incoming.insert(link);
            link->start();
        }
    }

    void ice_failed(Peer& p, const std::string& why) {
        if (!p.ice) return;
        const bool dialer = p.ice->dialer;
        spdlog::info("ice: no link with {}: {}", p.contact.id.hex().substr(0, 8), why);
        p.ice.reset();  // closes the session
        p.link_error = why;
        publish({{"type", "link.failed"}, {"id", p.contact.id.hex()}, {"reason", why}});
        if (!dialer) return;
        p.connecting = false;
        // The record's TCP candidates may still work (same LAN, public host).
        if (p.record && !p.record->addrs.empty() && !stopping) {
            p.connecting = true;
            return tcp_dial(p);
        }
        dial_failed(p, why);
    }

    void on_ice_frame(Peer& p, const IceFrame& f) {
        if (!ice_rt) return;  // ICE off: offers are ignored (the peer falls back to TCP)
        if (std::llabs(now_ms() - f.ts) > 120000) return spdlog::debug("ice: a stale signal dropped");
        switch (f.op) {
            case IceFrame::Op::offer: {
                // Only the dialer offers; a contact that may link with us.
                if (we_dial(p.contact.id)) return;
                if (!accepts(p.contact.id))  // no agent, no candidates for a stranger
                    return spdlog::info("ice: refused an offer from {}: not an accepted contact",
                                        p.contact.id.hex().substr(0, 8));
                if (p.ice && p.ice->id == f.attempt) return;  // a repeat
                // Each offer costs an agent (and a TURN allocation): at most
                // 5 per contact in 10 s, and k_max_ice_sessions at once.
                const auto now = steady_clock::now();
                if (now - p.offers_since > seconds(10)) {
                    p.offers_since = now;
                    p.offers = 0;
                }
                if (++p.offers > 5)
                    return spdlog::warn("ice: too many offers from {}; ignored",
                                        p.contact.id.hex().substr(0, 8));
                std::size_t sessions = 0;
                for (const auto& [id, q] : peers) sessions += q.ice ? 1 : 0;
                if (!p.ice && sessions >= k_max_ice_sessions)
                    return spdlog::warn("ice: {} attempts in progress, an offer from {} waits for its retry",
                                        sessions, p.contact.id.hex().substr(0, 8));
                p.ice.reset();
                ice_start(p, false, f.attempt);
                p.ice->offer = ice_description(f);  // applied once our answer is out
                return;
            }
            case IceFrame::Op::answer:
                if (p.ice && p.ice->dialer && p.ice->id == f.attempt && !p.ice->answered) {
                    p.ice->answered = true;
                    p.ice->session->set_remote(ice_description(f));
                }
                return;
            case IceFrame::Op::end:
                if (p.ice && p.ice->id == f.attempt) ice_failed(p, "refused: " + f.reason);
                return;
        }
    }

    // ---- dormant watches and knocks --------------------------------------

    void wake(Peer& p, const char* why) {
        p.awake_since = steady_clock::now();
        if (!p.watch || !p.dormant) return;
        p.dormant = false;
        dht->set_dormant(p.watch, false);
        spdlog::debug("presence: watching {} again ({})", p.contact.id.hex().substr(0, 8), why);
    }

    // Every few seconds: contacts silent for presence_dormant_after stop
    // listening; dormant ones are polled now and then.
    void sweep_watches() {
        if (cfg.presence_dormant_after.count() <= 0) return;
        const auto now = steady_clock::now();
        static thread_local std::mt19937_64 rng{std::random_device{}()};
        for (auto& [id, p] : peers) {
            if (!p.watch) continue;
            if (p.online() || p.connecting || p.dialing) p.awake_since = now;
            if (!p.dormant) {
                if (now - p.awake_since < cfg.presence_dormant_after) continue;
                p.dormant = true;
                dht->set_dormant(p.watch, true);
                // Spread the polls: a restart must not poll everyone at once.
                const auto span = std::max<std::int64_t>(1, cfg.presence_poll.count());
                p.next_poll = now + seconds(std::uniform_int_distribution<std::int64_t>(span / 2, span)(rng));
                spdlog::debug("presence: {} has been offline for a while; its watch sleeps",
                              id.hex().substr(0, 8));
            } else if (cfg.presence_poll.count() > 0 && now >= p.next_poll) {
                const auto span = cfg.presence_poll.count();
                p.next_poll = now + seconds(std::uniform_int_distribution<std::int64_t>(span * 9 / 10,
                                                                                        span * 11 / 10)(rng));
                dht->poll(p.watch);
            }
        }
    }

    // A live contact we have no link with may have put its watch on us to
    // sleep: a short-lived signal in its inbox wakes it. Invisible users
    // knock nobody.
    void maybe_knock(Peer& p) {
        if (p.knocked || p.link || status == "invisible" || status == "offline") return;
        if (p.contact.state != ContactState::mutual) return;
        if (!have_key(p, [this](Peer& q) { maybe_knock(q); })) return;
        auto sealed = dht->seal_inbox(p.contact.id, encode_frame(PresenceFrame{wire_status(), ""}),
                                      dht::SealKind::signal);
        if (!sealed)
            return spdlog::debug("presence: no knock for {}: {}", p.contact.id.hex().substr(0, 8),
                                 sealed.error().what());
        p.knocked = true;
        dht->put_inbox(p.contact.id, *sealed, [id = p.contact.id](bool ok) {
            spdlog::debug("presence: knock for {} {}", id.hex().substr(0, 8), ok ? "stored" : "not stored");
        });
    }

    void on_signal(const UserId& from, const Bytes& payload) {
        if (stopping || from == self) return;
        auto it = peers.find(from);
        if (it == peers.end()) return;  // strangers' signals are dropped
        Peer& p = it->second;
        if (p.contact.state != ContactState::mutual && p.contact.state != ContactState::pending_out)
            return spdlog::info("refused a signal from {}: not an accepted contact", from.hex());
        FrameDecoder dec;
        dec.feed(payload);
        auto f = dec.next();
        if (!f || !*f) return spdlog::debug("presence: a bad signal from {}", from.hex().substr(0, 8));
        if (std::holds_alternative<PresenceFrame>(f->value())) {
            wake(p, "it knocked");
            // It knocks because it has no link with us: if ours still looks
            // open, the process at its other end may be gone (a restart;
            // over ICE no reset tells us). A live peer answers the ping.
            if (p.link && p.link->is_open()) p.link->check_alive(3s);
        }
        if (auto* ice = std::get_if<IceFrame>(&f->value())) {
            wake(p, "an ice signal");
            on_ice_frame(p, *ice);
        }
    }

    void on_record(const UserId& id, const dht::PresenceRecord& r) {
        auto it = peers.find(id);
        if (it == peers.end()) return;
        Peer& p = it->second;
        p.record = r;
        p.record_live = r.status != "offline";
        if (p.contact.name.empty() && !r.name.empty()) {
            p.contact.name = r.name;
            (void)store->put_contact(p.contact);
        }
        if (p.record_live) {
            touch_last_seen(p);
            wake(p, "a live record");  // a poll found them: follow them again
            maybe_knock(p);
        } else {
            p.knocked = false;  // knock again when they come back
        }
        publish_peer_presence(p);
        if (p.record_live) {
            // Fresh news: retry at once instead of waiting out a backoff.
            p.retry.reset();
            p.backoff = milliseconds(0);
            // An offer still unanswered may have been dropped (e.g. they had
            // not accepted us yet; accepting republishes their record): offer
            // again rather than wait out the attempt.
            if (p.ice && p.ice->dialer && !p.ice->answered && !p.ice->linking) {
                p.ice.reset();
                p.connecting = false;
            }
            maybe_dial(p);
        }
    }

    void on_record_expired(const UserId& id) {
        auto it = peers.find(id);
        if (it == peers.end()) return;
        it->second.record_live = false;
        it->second.knocked = false;
        publish_peer_presence(it->second);
    }

    void touch_last_seen(Peer& p) {
        p.contact.last_seen = now_ms();
        (void)store->set_last_seen(p.contact.id, p.contact.last_seen);
    }

    void publish_peer_presence(const Peer& p) {
        publish({{"type", "presence"},
                 {"id", p.contact.id.hex()},
                 {"status", p.status()},
                 {"note", p.note()},
                 {"caps", p.caps()},
                 {"online", p.online()}});
    }

    json dht_json() const { return node::dht_json(dht->info(), dht_rates.rates()); }

    std::vector<Metric> daemon_metrics() const {
        auto m = dht_metrics(dht->info(), duration<double>(steady_clock::now() - started).count());
        std::size_t linked = 0;
        for (const auto& [id, p] : peers) linked += p.link ? 1 : 0;
        m.push_back({"juice_contacts", "contacts (each one DHT listen)", Metric::Type::gauge,
                     static_cast<double>(peers.size())});
        m.push_back(
            {"juice_links", "contacts linked right now", Metric::Type::gauge, static_cast<double>(linked)});
        m.push_back({"juice_api_clients", "connected API clients", Metric::Type::gauge,
                     static_cast<double>(api->client_count())});
        return m;
    }

    void watch_dht_state() {
        state_timer.expires_after(seconds(1));
        state_timer.async_wait([this](std::error_code ec) {
            if (ec || stopping) return;
            // Anyone may re-announce our last signed record, so a crashed
            // daemon's "online" could outlive it; a fresh timestamp now and
            // then (cfg.presence_refresh, 30 min) dates the record. Not
            // more often: each fresh record costs every watching buddy the
            // whole record from each storing node (docs/SCALE.md).
            if (steady_clock::now() >= next_refresh) publish_presence();
            if (++sweep_count % 5 == 0) sweep_watches();
            dht->tick();
            dht_rates.sample(dht->info(), steady_clock::now());
            calls->tick();
            resume_outboxes();
            auto info = dht->info();
            if (info.state != last_dht_state) {
                bool first_connect = last_dht_state != "connected" && info.state == "connected";
                last_dht_state = info.state;
                spdlog::debug("dht: {} ({} nodes)", info.state, info.nodes);
                publish({{"type", "node.state"}, {"dht", dht_json()}});
                // Now that other nodes know us, republish so the record
                // carries the public address they see.
                if (first_connect) {
                    publish_presence();
                    // Re-put what waits in contacts' inboxes (we may have been
                    // down for longer than stock nodes keep it).
                    refresh_inbox();
                    // Back after an outage: contacts may have put their
                    // watch on us to sleep meanwhile. Knock the live ones
                    // again (and the rest when their records arrive).
                    for (auto& [id, p] : peers) {
                        p.knocked = false;
                        if (p.record_live) maybe_knock(p);
                    }
                }
            }
            watch_dht_state();
        });
    }

    void publish(json event) {
        if (api) api->publish(event);
    }

    // ---- API --------------------------------------------------------------

    static std::optional<UserId> param_id(const json& params, const char* key) {
        auto it = params.find(key);
        if (it == params.end() || !it->is_string()) return std::nullopt;
        return UserId::from_hex(it->get<std::string>());
    }

    static std::optional<std::string> param_string(const json& params, const char* key) {
        auto it = params.find(key);
        if (it == params.end() || !it->is_string()) return std::nullopt;
        return it->get<std::string>();
    }

    Peer* require_contact(const json& params, const char* key, const Reply& reply) {
        auto id = param_id(params, key);
        if (!id) {
            reply.error(RpcError::invalid_params(std::string("'") + key + "' must be a 40-hex user id"));
            return nullptr;
        }
        auto it = peers.find(*id);
        if (it == peers.end()) {
            reply.error(RpcError::app("unknown_contact", id->hex() + " is not in your contacts"));
            return nullptr;
        }
        return &it->second;
    }

    json contact_json(const Peer& p) const {
        return {{"id", p.contact.id.hex()},
                {"name", p.contact.name},
                {"state", to_string(p.contact.state)},
                {"status", p.status()},
                {"note", p.note()},
                {"caps", p.caps()},
                {"online", p.online()},
                {"linked", static_cast<bool>(p.link)},
                {"watch", !p.watch    ? "none"
                          : p.dormant ? "dormant"
                                      : "listening"},
                {"link_path", p.link ? p.link->path().kind : std::string()},
                {"link_error", p.link_error},
                {"last_seen", p.contact.last_seen},
                {"message", p.contact.state == ContactState::pending_in ? p.contact.request : std::string()}};
    }

    static json message_json(const MessageRecord& m) {
        return {{"msg_id", m.id.hex()}, {"from", m.from.hex()},        {"to", m.to.hex()}, {"text", m.text},
                {"ts", m.ts},           {"state", to_string(m.state)}, {"seq", m.seq}};
    }

    static RpcError storage_error(const Error& e) {
        return RpcError::app("storage_failed", "the message store failed: " + e.what());
    }

    void register_methods() {
        api->add_method("identity.get", [this](const json&, Reply r) {
            r.result({{"id", self.hex()},
                      {"name", name},
                      {"contact_uri", crypto::format_contact_uri({self, name})}});
        });

        api->add_method("identity.set_name", [this](const json& params, Reply r) {
            auto n = param_string(params, "name");
            if (!n || n->empty() || n->size() > k_max_name_bytes)
                return r.error(RpcError::invalid_params("'name' must be a string of 1 to 64 bytes"));
            if (auto s = store->set_setting("name", *n); !s) return r.error(storage_error(s.error()));
            name = *n;
            publish_presence();
            r.result(json::object());
        });

        api->add_method("node.info", [this](const json&, Reply r) {
            json links = json::array();
            for (auto& [id, p] : peers)
                if (p.link)
                    links.push_back({{"id", id.hex()},
                                     {"name", p.contact.name},
                                     {"since", p.link->opened_unix_ms()},
                                     {"direction", p.link->outgoing() ? "outgoing" : "incoming"},
                                     {"remote", p.link->remote_endpoint()},
                                     {"path", p.link->path().kind},
                                     {"relay", p.link->path().relay}});
            r.result({{"version", k_version},
                      {"mode", "user"},
                      {"id", self.hex()},
                      {"rss_bytes", process_rss_bytes()},
                      {"dht", dht_json()},
                      {"link_port", link_port},
                      {"uptime_s", duration_cast<seconds>(steady_clock::now() - started).count()},
                      {"api_clients", api->client_count()},
                      {"contacts", peers.size()},
                      {"links", links}});
        });

        api->add_method("node.nat", [this](const json&, Reply r) { start_nat_check(std::move(r)); });

        api->add_method("presence.set", [this](const json& params, Reply r) {
            auto st = param_string(params, "status");
            if (!st || !is_status(*st))
                return r.error(RpcError::invalid_params("'status' must be online, away, busy or invisible"));
            std::optional<std::string> n;
            if (params.contains("note")) {
                n = param_string(params, "note");
                if (!n || n->size() > k_max_note_bytes)
                    return r.error(RpcError::invalid_params("'note' must be a string of at most 256 bytes"));
            }
            status = *st;
            if (n) note = *n;
            (void)store->set_setting("status", status);
            (void)store->set_setting("note", note);
            publish_presence();
            for (auto& [id, p] : peers) {
                if (p.link) p.link->send(PresenceFrame{wire_status(), status == "invisible" ? "" : note});
                // Back from invisible: wake the live contacts that put us to sleep.
                else if (p.record_live)
                    maybe_knock(p);
            }
            r.result(json::object());
        });

        api->add_method("contacts.add", [this](const json& params, Reply r) {
            auto text = param_string(params, "uri");
            if (!text) text = param_string(params, "id");
            if (!text)
                return r.error(RpcError::invalid_params("give 'id' (40 hex digits) or 'uri' (juice:...)"));
            auto parsed = crypto::parse_contact(*text);
            if (!parsed) return r.error(RpcError::invalid_params(parsed.error().what()));
            if (parsed->id == self) return r.error(RpcError::invalid_params("that is your own id"));
            std::string given;
            if (params.contains("name")) {
                auto n = param_string(params, "name");
                if (!n || n->size() > k_max_name_bytes)
                    return r.error(RpcError::invalid_params("'name' must be a string of at most 64 bytes"));
                given = *n;
            }
            if (params.contains("message") && !params["message"].is_string())
                return r.error(RpcError::invalid_params("'message' must be a string"));
            std::string message;
            if (params.contains("message")) {
                auto m = param_string(params, "message");
                if (!m || m->size() > k_max_request_bytes)
                    return r.error(
                        RpcError::invalid_params("'message' must be a string of at most 1024 bytes"));
                message = *m;
            }
            auto it = peers.find(parsed->id);
            if (it != peers.end()) {
                Peer& p = it->second;
                if (!given.empty() && given != p.contact.name) {
                    p.contact.name = given;
                    if (auto s = store->put_contact(p.contact); !s) return r.error(storage_error(s.error()));
                }
                if (p.contact.state == ContactState::pending_in) {
                    // Adding someone who asked for us is saying yes.
                    accept_request(p);
                } else if (p.contact.state == ContactState::blocked) {
                    // Adding a blocked id unblocks it and asks again.
                    p.contact.state = ContactState::pending_out;
                    p.contact.request = message;
                    p.contact.request_ts = now_ms();
                    if (auto s = store->put_contact(p.contact); !s) return r.error(storage_error(s.error()));
                    start_watch(p);
                    send_request(p);
                    publish_presence();
                    publish(
                        {{"type", "contact.state"}, {"id", p.contact.id.hex()}, {"state", "pending_out"}});
                }
                return r.result({{"id", parsed->id.hex()}, {"state", to_string(p.contact.state)}});
            }
            ContactRecord c;
            c.id = parsed->id;
            c.name = given.empty() ? parsed->name : given;
            c.state = ContactState::pending_out;
            c.added = now_ms();
            c.request = message;
            c.request_ts = c.added;
            if (auto s = store->put_contact(c); !s) return r.error(storage_error(s.error()));
            add_peer(c);
            send_request(peers.at(c.id));
            // A newer record of ours wakes a contact that already listed us
            // and is backing off its dial attempts: it dials at once.
            publish_presence();
            publish({{"type", "contact.state"}, {"id", c.id.hex()}, {"state", to_string(c.state)}});
            r.result({{"id", c.id.hex()}, {"state", to_string(c.state)}});
        });

        api->add_method("contacts.accept", [this](const json& params, Reply r) {
            Peer* p = require_contact(params, "id", r);
            if (!p) return;
            if (p->contact.state != ContactState::pending_in)
                return r.error(RpcError::app(
                    "no_request", "there is no contact request from " + p->contact.id.hex() + " to answer"));
            accept_request(*p);
            r.result(json::object());
        });

        api->add_method("contacts.reject", [this](const json& params, Reply r) {
            Peer* p = require_contact(params, "id", r);
            if (!p) return;
            if (p->contact.state != ContactState::pending_in)
                return r.error(RpcError::app(
                    "no_request", "there is no contact request from " + p->contact.id.hex() + " to answer"));
            UserId id = p->contact.id;
            if (auto s = store->set_declined(id, p->contact.request_ts); !s)
                return r.error(storage_error(s.error()));
            answered_declined.insert(id);
            drop_peer(id, "removed");
            send_control(id, AnswerFrame{false});
            r.result(json::object());
        });

        api->add_method("contacts.block", [this](const json& params, Reply r) {
            auto id = param_id(params, "id");
            if (!id) return r.error(RpcError::invalid_params("'id' must be a 40-hex user id"));
            if (*id == self) return r.error(RpcError::invalid_params("that is your own id"));
            auto it = peers.find(*id);
            if (it != peers.end() && it->second.contact.state == ContactState::blocked)
                return r.result(json::object());
            const bool known = it != peers.end();
            ContactRecord c;
            if (known) {
                c = it->second.contact;
                drop_peer(*id, "blocked");  // link, watch and inbox values go (and `it` with them)
            } else {
                c.id = *id;
                c.added = now_ms();
            }
            c.state = ContactState::blocked;
            c.request.clear();
            if (auto s = store->put_contact(c); !s) return r.error(storage_error(s.error()));
            add_peer(c);  // known, so its requests and links are refused; not watched
            if (!known) publish({{"type", "contact.state"}, {"id", id->hex()}, {"state", "blocked"}});
            r.result(json::object());
        });

        api->add_method("contacts.list", [this](const json&, Reply r) {
            json out = json::array();
            auto stored = store->list_contacts();  // the store's order: by name, then id
            if (!stored) return r.error(storage_error(stored.error()));
            for (auto& c : *stored) {
                auto it = peers.find(c.id);
                if (it != peers.end()) out.push_back(contact_json(it->second));
            }
            r.result(out);
        });

        api->add_method("contacts.remove", [this](const json& params, Reply r) {
            Peer* p = require_contact(params, "id", r);
            if (!p) return;
            drop_peer(p->contact.id, "removed");
            r.result(json::object());
        });

        api->add_method("messages.send", [this](const json& params, Reply r) {
            Peer* p = require_contact(params, "to", r);
            if (!p) return;
            if (p->contact.state == ContactState::blocked)
                return r.error(RpcError::app("blocked", "you blocked this contact; unblock it first"));
            if (p->contact.state == ContactState::pending_in)
                return r.error(
                    RpcError::app("no_request", "accept their contact request first (contacts.accept)"));
            auto text = param_string(params, "text");
            if (!text || text->empty())
                return r.error(RpcError::invalid_params("'text' must be a non-empty string"));
            if (text->size() > k_max_text_bytes)
                return r.error(RpcError{api::k_app_error, "a message may be at most 64 KiB", "too_large"});
            MessageRecord m;
            m.id = MessageId::random();
            m.from = self;
            m.to = p->contact.id;
            m.text = *text;
            m.ts = next_ts();
            m.outgoing = true;
            batch_open();
            auto added = store->add_message(m);
            if (!added) return r.error(storage_error(added.error()));
            // Answered, and sent, once the batch holding it is durable.
            on_commit([this, m = std::move(m), r](bool ok) {
                if (!ok)
                    return r.error(RpcError::app("storage_failed", "the message store could not commit"));
                r.result({{"msg_id", m.id.hex()}, {"ts", m.ts}, {"seq", m.seq}});
                auto it = peers.find(m.to);
                if (it == peers.end()) return;
                Peer& peer = it->second;
                if (!peer.link) return schedule_inbox_flush(peer);
                if (peer.outbox_paused_at >= 0) return;  // sent in order when the outbox resumes
                if (peer.link->queued_bytes() > k_link_high_water) {
                    peer.outbox_paused_at = m.seq - 1;
                    spdlog::debug("outbox to {}: link queue full, pausing", m.to.hex().substr(0, 8));
                    return;
                }
                send_over_link(peer, m);
            });
        });

        api->add_method("messages.history", [this](const json& params, Reply r) {
            auto with = param_id(params, "with");
            if (!with) return r.error(RpcError::invalid_params("'with' must be a 40-hex user id"));
            std::size_t limit = 50;
            if (params.contains("limit")) {
                if (!params["limit"].is_number_integer() || params["limit"].get<long long>() < 1 ||
                    params["limit"].get<long long>() > 1000)
                    return r.error(RpcError::invalid_params("'limit' must be an integer from 1 to 1000"));
                limit = params["limit"].get<std::size_t>();
            }
            std::optional<std::int64_t> before;
            if (params.contains("before")) {
                const auto& b = params["before"];
                if (b.is_number_integer()) {
                    before = b.get<std::int64_t>();
                } else if (b.is_string()) {
                    auto mid = MessageId::from_hex(b.get<std::string>());
                    auto m =
                        mid ? store->get_message(*mid) : Result<std::optional<MessageRecord>>(std::nullopt);
                    if (!m) return r.error(storage_error(m.error()));
                    if (!m->has_value())
                        return r.error(RpcError::app("unknown_message", "no message with that msg_id"));
                    before = (*m)->seq;
                } else {
                    return r.error(RpcError::invalid_params("'before' must be a seq number or a msg_id"));
                }
            }
            auto h = store->history(*with, limit, before);
            if (!h) return r.error(storage_error(h.error()));
            json out = json::array();
            for (auto& m : *h) out.push_back(message_json(m));
            r.result(out);
        });

        api->add_method("messages.mark_read", [this](const json& params, Reply r) {
            Peer* p = require_contact(params, "with", r);
            if (!p) return;
            auto up_to = params.contains("up_to") && params["up_to"].is_string()
                             ? MessageId::from_hex(params["up_to"].get<std::string>())
                             : std::nullopt;
            if (!up_to) return r.error(RpcError::invalid_params("'up_to' must be a 32-hex msg_id"));
            auto m = store->get_message(*up_to);
            if (!m) return r.error(storage_error(m.error()));
            if (!m->has_value() || (*m)->outgoing || (*m)->from != p->contact.id)
                return r.error(
                    RpcError::app("unknown_message", "no message with that msg_id from this contact"));
            batch_open();
            auto changed = store->mark_read_until(p->contact.id, (*m)->seq);
            if (!changed) return r.error(storage_error(changed.error()));
            UserId id = p->contact.id;
            on_commit([this, id, ids = std::move(*changed), r](bool ok) {
                if (!ok)
                    return r.error(RpcError::app("storage_failed", "the message store could not commit"));
                r.result({{"marked", ids.size()}});
                auto it = peers.find(id);
                if (it == peers.end() || ids.empty() || !send_receipts) return;
                Peer& peer = it->second;
                if (peer.link) return send_receipts_over_link(peer, ids);
                peer.inbox_receipts.insert(peer.inbox_receipts.end(), ids.begin(), ids.end());
                schedule_ack_flush(peer);
            });
        });

        api->add_method("typing.set", [this](const json& params, Reply r) {
            Peer* p = require_contact(params, "to", r);
            if (!p) return;
            if (!params.contains("typing") || !params["typing"].is_boolean())
                return r.error(RpcError::invalid_params("'typing' must be true or false"));
            bool sent = send_typing && p->link && p->contact.state == ContactState::mutual;
            if (sent) p->link->send(TypingFrame{params["typing"].get<bool>()});
            r.result({{"sent", sent}});
        });

        api->add_method("settings.get", [this](const json&, Reply r) {
            r.result({{"read_receipts", send_receipts}, {"typing", send_typing}});
        });

        api->add_method("settings.set", [this](const json& params, Reply r) {
            for (const char* key : {"read_receipts", "typing"})
                if (params.contains(key) && !params[key].is_boolean())
                    return r.error(
                        RpcError::invalid_params(std::string("'") + key + "' must be true or false"));
            if (params.contains("read_receipts")) send_receipts = params["read_receipts"].get<bool>();
            if (params.contains("typing")) send_typing = params["typing"].get<bool>();
            if (auto s = store->set_setting("read_receipts", send_receipts ? "1" : "0"); !s)
                return r.error(storage_error(s.error()));
            if (auto s = store->set_setting("typing", send_typing ? "1" : "0"); !s)
                return r.error(storage_error(s.error()));
            r.result({{"read_receipts", send_receipts}, {"typing", send_typing}});
        });

        register_call_methods();

        api->add_method("daemon.shutdown", [this](const json&, Reply r) {
            r.result(json::object());
            // Let the reply go out before the API closes.
            asio::post(io, [this] { begin_shutdown(); });
        });
    }

    // calls.*: thin wrappers over CallManager (calls.cpp).
    static std::optional<MessageId> param_call(const json& params, const Reply& r) {
        auto it = params.find("call_id");
        std::optional<MessageId> id;
        if (it != params.end() && it->is_string()) id = MessageId::from_hex(it->get<std::string>());
        if (!id) r.error(RpcError::invalid_params("'call_id' must be a 32-hex call id"));
        return id;
    }
    static std::optional<CallManager::AudioPaths> param_audio(const json& params, const Reply& r) {
        CallManager::AudioPaths a;
        for (auto [key, slot] : {std::pair{"audio_in", &a.in}, std::pair{"audio_out", &a.out}}) {
            auto it = params.find(key);
            if (it == params.end() || it->is_null()) continue;
            if (!it->is_string() || it->get<std::string>().empty() || it->get<std::string>().size() > 4096) {
                r.error(RpcError::invalid_params(std::string("'") + key + "' must be a WAV file path"));
                return std::nullopt;
            }
            *slot = it->get<std::string>();
        }
        return a;
    }

    void register_call_methods() {
        api->add_method("calls.start", [this](const json& params, Reply r) {
            Peer* p = require_contact(params, "to", r);
            if (!p) return;
            auto audio = param_audio(params, r);
            if (!audio) return;
            auto id = calls->start(p->contact.id, *audio);
            if (!id) return r.error(call_rpc_error(id.error()));
            r.result({{"call_id", id->hex()}});
        });
        api->add_method("calls.accept", [this](const json& params, Reply r) {
            auto id = param_call(params, r);
            if (!id) return;
            auto audio = param_audio(params, r);
            if (!audio) return;
            if (auto s = calls->accept(*id, *audio); !s) return r.error(call_rpc_error(s.error()));
            r.result(json::object());
        });
        api->add_method("calls.reject", [this](const json& params, Reply r) {
            auto id = param_call(params, r);
            if (!id) return;
            if (auto s = calls->reject(*id); !s) return r.error(call_rpc_error(s.error()));
            r.result(json::object());
        });
        api->add_method("calls.hangup", [this](const json& params, Reply r) {
            auto id = param_call(params, r);
            if (!id) return;
            if (auto s = calls->hangup(*id); !s) return r.error(call_rpc_error(s.error()));
            r.result(json::object());
        });
        api->add_method("calls.list", [this](const json&, Reply r) { r.result(calls->list()); });
    }

    // ---- shutdown ---------------------------------------------------------

    void begin_shutdown() {
        if (stopping) return;
        stopping = true;
        spdlog::info("shutting down");
        std::error_code ec;
        signals.cancel(ec);
        acceptor.close(ec);
        state_timer.cancel();
        inbox_timer.cancel();
        accept_retry.cancel();
        if (metrics) metrics->stop();
        if (calls) calls->shutdown();
        std::vector<std::shared_ptr<Link>> closing;
        for (auto& [id, p] : peers) {
            p.retry.reset();
            p.inbox_flush.reset();
            p.ack_flush.reset();
            p.typing_timer.reset();
            if (p.link) {
                p.link->send(ByeFrame{"shutdown"});
                closing.push_back(p.link);
                p.link->close("shutdown");
            }
        }
        auto handshaking = incoming;  // close() erases from `incoming`
        for (auto& l : handshaking) l->close("shutdown");
        // Give the byes up to 500 ms to leave, then leave the DHT.
        closing_links = std::move(closing);
        shutdown_deadline = steady_clock::now() + milliseconds(500);
        await_byes();
    }

    void await_byes() {
        bool flushed = true;
        for (auto& l : closing_links)
            if (l->queued_bytes() > 0) flushed = false;
        if (!flushed && steady_clock::now() < shutdown_deadline) {
            shutdown_timer.expires_after(milliseconds(10));
            shutdown_timer.async_wait([this](std::error_code) { await_byes(); });
            return;
        }
        closing_links.clear();
        finish_shutdown();
    }

    void finish_shutdown() {
        commit_batch();
        if (dht) dht->stop(own_record("offline"));
        if (api) api->stop();
        io.stop();
    }
};

Daemon::Daemon(Config config, crypto::Identity identity)
    : m_impl(std::make_unique<Impl>(std::move(config), std::move(identity))) {}

Daemon::~Daemon() {
    if (m_impl->store) m_impl->commit_batch();
    if (m_impl->dht) m_impl->dht->stop();
    if (m_impl->lock_fd >= 0) ::close(m_impl->lock_fd);
}

Result<void> Daemon::start() {
    return m_impl->start();
}

void Daemon::run() {
    m_impl->io.run();
}

void Daemon::request_shutdown() {
    asio::post(m_impl->io, [impl = m_impl.get()] { impl->begin_shutdown(); });
}

}  // namespace juice::node
