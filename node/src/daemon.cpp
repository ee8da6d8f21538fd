// The daemon core: contacts, presence, links and messages, wired to the DHT
// node and the local API. Everything here runs on the one loop thread.
//
// Link tie-break: of two contacts, the one with the lower user id dials; the
// other only listens. So there is never a duplicate link in the normal case;
// if a second link to the same peer does come up (the peer restarted before
// our keepalive noticed), the newer one replaces the older.
#include "juice/node/daemon.hpp"

#include "juice/crypto/contact_uri.hpp"
#include "juice/dht/node.hpp"
#include "juice/node/api.hpp"
#include "juice/node/frame.hpp"
#include "juice/node/store.hpp"
#include "link.hpp"

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
const std::vector<std::string> k_caps{"text"};

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
    std::optional<dht::PresenceRecord> record;  // newest valid DHT record
    bool record_live = false;                   // online per the DHT, not superseded by a bye
    std::shared_ptr<Link> link;                 // open link
    bool connecting = false;                    // our TCP connect is in flight
    std::shared_ptr<Link> dialing;              // our outgoing TLS handshake in progress
    std::string link_status, link_note;         // what the peer said over the link
    std::vector<std::string> link_caps;
    std::unique_ptr<asio::steady_timer> retry;
    milliseconds backoff{0};

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
    std::map<UserId, Peer> peers;
    std::set<std::shared_ptr<Link>> incoming;  // accepted, handshake not done
    std::string name, status = "online", note, device_id;
    std::uint16_t link_port = 0;
    steady_clock::time_point started = steady_clock::now();
    std::string last_dht_state;
    unsigned state_ticks = 0;
    static constexpr unsigned k_republish_ticks = 120;  // seconds between fresh records
    bool stopping = false;
    int lock_fd = -1;  // flock on data_dir/juiced.lock, held for the daemon's life
    std::vector<std::shared_ptr<Link>> closing_links;  // byes in flight at shutdown
    steady_clock::time_point shutdown_deadline;
    asio::steady_timer shutdown_timer{io};

    Impl(Config c, crypto::Identity id) : cfg(std::move(c)), identity(std::move(id)), self(identity.id()) {}

    // ---- start-up -------------------------------------------------------

    Result<void> start() {
        if (auto r = lock_data_dir(); !r) return r;
        auto st = Store::open(cfg.data_dir / "juice.db", cfg.sync);
        if (!st) return st.error();
        store = std::move(*st);
        if (auto r = load_settings(); !r) return r;
        if (auto r = start_listener(); !r) return r;

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
        dopt.post = [this](std::function<void()> f) { asio::post(io, std::move(f)); };
        dht = std::make_unique<dht::DhtNode>(std::move(dopt));
        if (auto r = dht->start(&identity); !r) return r;

        auto contacts = store->list_contacts();
        if (!contacts) return contacts.error();
        for (auto& c : *contacts) add_peer(c);

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
        std::error_code ec;
        std::filesystem::create_directories(cfg.data_dir, ec);
        auto path = cfg.data_dir / "juiced.lock";
        lock_fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (lock_fd < 0)
            return make_error(std::errc::io_error,
                              "cannot open " + path.string() + ": " + std::strerror(errno));
        if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
            char pid[32] = {};
            (void)!::pread(lock_fd, pid, sizeof pid - 1, 0);
            return make_error(std::errc::resource_unavailable_try_again,
                              "another juiced (pid " + std::string(pid) + ") is already using " +
                                  cfg.data_dir.string() + "; stop it first, or use another --data-dir");
        }
        auto me = std::to_string(::getpid());
        (void)!::ftruncate(lock_fd, 0);
        (void)!::pwrite(lock_fd, me.data(), me.size(), 0);
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
            if (!ec) {
                if (incoming.size() >= k_max_incoming_handshakes) {
                    spdlog::warn("link: {} handshakes in progress, refusing a connection", incoming.size());
                } else {
                    auto link = std::make_shared<Link>(
                        std::move(sock), crypto::TlsEngine::Role::server, identity, std::nullopt,
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
            return HelloFrame{1, name, k_caps, wire_status(), status == "invisible" ? "" : note};
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
        if (!p.record_live || !p.record || p.record->status == "offline" || p.record->addrs.empty()) return;
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
            auto link = std::make_shared<Link>(std::move(at->sock), crypto::TlsEngine::Role::client, identity,
                                               at->peer, nullptr, timeouts(), link_callbacks());
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
        spdlog::info("link up with {} ({}, {})", p.contact.id.hex().substr(0, 8),
                     l.outgoing() ? "outgoing" : "incoming", l.remote_endpoint());
        // Both sides must list each other for a link to form at all, so the
        // relation is mutual now.
        if (p.contact.state == ContactState::pending_out) {
            p.contact.state = ContactState::mutual;
            if (auto r = store->put_contact(p.contact); !r) spdlog::error("store: {}", r.error().what());
            publish({{"type", "contact.state"}, {"id", p.contact.id.hex()}, {"state", "mutual"}});
        }
        apply_hello(p, l.peer_hello());
        publish({{"type", "link"}, {"id", p.contact.id.hex()}, {"up", true}});
        publish_peer_presence(p);
        touch_last_seen(p);
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
        touch_last_seen(p);
        publish({{"type", "link"}, {"id", p.contact.id.hex()}, {"up", false}, {"reason", why}});
        publish_peer_presence(p);
        if (!stopping) {
            p.backoff = milliseconds(0);
            if (p.record_live) schedule_retry(p);
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
                    on_message(p, l, fr);
                } else if constexpr (std::is_same_v<T, AckFrame>) {
                    on_ack(p, fr.id);
                } else if constexpr (std::is_same_v<T, ByeFrame>) {
                    // The peer is going away on purpose: show it offline now,
                    // and do not redial until it publishes a newer record.
                    p.record_live = false;
                    l.close("bye: " + (fr.reason.empty() ? std::string("shutdown") : fr.reason));
                } else {
                    // KeepaliveFrame is handled in Link; UnknownFrame is skipped.
                }
            },
            f);
    }

    // ---- messages ---------------------------------------------------------

    void on_message(Peer& p, Link& l, const MessageFrame& fr) {
        MessageRecord m;
        m.id = fr.id;
        m.from = p.contact.id;
        m.to = self;
        m.text = fr.text;
        m.ts = fr.ts;
        m.state = MessageState::delivered;
        m.outgoing = false;
        auto added = store->add_message(m);
        if (!added) {
            // Not stored, so not acked: the sender keeps it and resends.
            spdlog::error("cannot store a message from {}: {}", p.contact.id.hex().substr(0, 8),
                          added.error().what());
            return;
        }
        l.send(AckFrame{fr.id});
        if (*added)
            publish({{"type", "message.received"},
                     {"msg_id", m.id.hex()},
                     {"from", m.from.hex()},
                     {"text", m.text},
                     {"ts", m.ts},
                     {"seq", m.seq}});
    }

    void on_ack(Peer& p, const MessageId& id) {
        auto m = store->get_message(id);
        // A peer may only acknowledge messages that were sent to it.
        if (!m || !m->has_value() || !(*m)->outgoing || (*m)->to != p.contact.id) return;
        auto changed = store->advance_message(id, MessageState::delivered);
        if (changed && *changed) emit_message_state(id, p.contact.id, MessageState::delivered);
    }

    void emit_message_state(const MessageId& id, const UserId& to, MessageState s) {
        publish({{"type", "message.state"}, {"msg_id", id.hex()}, {"to", to.hex()}, {"state", to_string(s)}});
    }

    void send_over_link(Peer& p, const MessageRecord& m) {
        p.link->send(MessageFrame{m.id, m.ts, m.text});
        if (m.state == MessageState::queued) {
            auto changed = store->advance_message(m.id, MessageState::sent);
            if (changed && *changed) emit_message_state(m.id, m.to, MessageState::sent);
        }
    }

    void flush_outbox(Peer& p) {
        auto pending = store->undelivered_to(p.contact.id);
        if (!pending) return spdlog::error("store: {}", pending.error().what());
        for (auto& m : *pending) {
            if (!p.link) break;
            send_over_link(p, m);
        }
    }

    // ---- presence ---------------------------------------------------------

    dht::PresenceRecord own_record(const std::string& st) const {
        dht::PresenceRecord r;
        r.name = name;
        r.status = st == "invisible" ? "offline" : st;
        r.note = (st == "invisible" || st == "offline") ? "" : note;
        r.caps = k_caps;
        r.device = device_id;
        r.ts = now_ms();
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
        dht->publish_presence(own_record(status), [](bool ok) {
            if (!ok) spdlog::warn("presence: no DHT node stored our record yet (will retry on refresh)");
        });
    }

    void add_peer(const ContactRecord& c) {
        auto [it, fresh] = peers.try_emplace(c.id);
        it->second.contact = c;
        if (!fresh || c.state == ContactState::blocked) return;
        UserId id = c.id;
        it->second.watch = dht->watch_presence(
            id, [this, id](const dht::PresenceRecord& r) { on_record(id, r); },
            [this, id] { on_record_expired(id); });
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
        if (p.record_live) touch_last_seen(p);
        publish_peer_presence(p);
        if (p.record_live) {
            // Fresh news: retry at once instead of waiting out a backoff.
            p.retry.reset();
            p.backoff = milliseconds(0);
            maybe_dial(p);
        }
    }

    void on_record_expired(const UserId& id) {
        auto it = peers.find(id);
        if (it == peers.end()) return;
        it->second.record_live = false;
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

    json dht_json() const {
        auto i = dht->info();
        return {{"state", i.state},
                {"nodes", i.nodes},
                {"network", i.network},
                {"port", i.port},
                {"public_addr", i.public_addr}};
    }

    void watch_dht_state() {
        state_timer.expires_after(seconds(1));
        state_timer.async_wait([this](std::error_code ec) {
            if (ec || stopping) return;
            // Anyone may re-announce our last signed record, so a crashed
            // daemon's "online" could outlive it; a fresh timestamp every
            // couple of minutes lets watchers tell a live record from a
            // stale one (and re-announces it ourselves).
            if (++state_ticks % k_republish_ticks == 0) publish_presence();
            auto info = dht->info();
            if (info.state != last_dht_state) {
                bool first_connect = last_dht_state != "connected" && info.state == "connected";
                last_dht_state = info.state;
                publish({{"type", "node.state"}, {"dht", dht_json()}});
                // Now that other nodes know us, republish so the record
                // carries the public address they see.
                if (first_connect) publish_presence();
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
                {"last_seen", p.contact.last_seen}};
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
                                     {"remote", p.link->remote_endpoint()}});
            r.result({{"version", k_version},
                      {"id", self.hex()},
                      {"dht", dht_json()},
                      {"link_port", link_port},
                      {"uptime_s", duration_cast<seconds>(steady_clock::now() - started).count()},
                      {"api_clients", api->client_count()},
                      {"contacts", peers.size()},
                      {"links", links}});
        });

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
            for (auto& [id, p] : peers)
                if (p.link) p.link->send(PresenceFrame{wire_status(), status == "invisible" ? "" : note});
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
            auto it = peers.find(parsed->id);
            if (it != peers.end()) {
                if (!given.empty() && given != it->second.contact.name) {
                    it->second.contact.name = given;
                    if (auto s = store->put_contact(it->second.contact); !s)
                        return r.error(storage_error(s.error()));
                }
                return r.result({{"id", parsed->id.hex()}, {"state", to_string(it->second.contact.state)}});
            }
            ContactRecord c;
            c.id = parsed->id;
            c.name = given.empty() ? parsed->name : given;
            c.state = ContactState::pending_out;
            c.added = now_ms();
            if (auto s = store->put_contact(c); !s) return r.error(storage_error(s.error()));
            add_peer(c);
            // A newer record of ours wakes a contact that already listed us
            // and is backing off its dial attempts: it dials at once.
            publish_presence();
            publish({{"type", "contact.state"}, {"id", c.id.hex()}, {"state", to_string(c.state)}});
            r.result({{"id", c.id.hex()}, {"state", to_string(c.state)}});
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
            UserId id = p->contact.id;
            if (auto s = store->remove_contact(id); !s) return r.error(storage_error(s.error()));
            if (p->watch) dht->unwatch(p->watch);
            auto link = std::move(p->link);
            auto dialing = std::move(p->dialing);
            peers.erase(id);
            if (link) {
                link->send(ByeFrame{"removed"});
                link->close("contact removed");
            }
            if (dialing) dialing->close("contact removed");
            publish({{"type", "contact.state"}, {"id", id.hex()}, {"state", "removed"}});
            r.result(json::object());
        });

        api->add_method("messages.send", [this](const json& params, Reply r) {
            Peer* p = require_contact(params, "to", r);
            if (!p) return;
            if (p->contact.state == ContactState::blocked)
                return r.error(RpcError::app("blocked", "you blocked this contact; unblock it first"));
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
            m.ts = now_ms();
            m.outgoing = true;
            auto added = store->add_message(m);
            if (!added) return r.error(storage_error(added.error()));
            r.result({{"msg_id", m.id.hex()}, {"ts", m.ts}, {"seq", m.seq}});
            if (p->link) send_over_link(*p, m);
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

        api->add_method("daemon.shutdown", [this](const json&, Reply r) {
            r.result(json::object());
            // Let the reply go out before the API closes.
            asio::post(io, [this] { begin_shutdown(); });
        });
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
        std::vector<std::shared_ptr<Link>> closing;
        for (auto& [id, p] : peers) {
            p.retry.reset();
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
        if (dht) dht->stop(own_record("offline"));
        if (api) api->stop();
        io.stop();
    }
};

Daemon::Daemon(Config config, crypto::Identity identity)
    : m_impl(std::make_unique<Impl>(std::move(config), std::move(identity))) {}

Daemon::~Daemon() {
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
