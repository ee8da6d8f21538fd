#include "ice.hpp"

#include <nice/agent.h>
#include <spdlog/spdlog.h>
#include <asio/post.hpp>

#include <pthread.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <set>
#include <thread>

namespace juice::node::ice {

const char* to_string(State s) {
    switch (s) {
        case State::gathering:
            return "gathering";
        case State::connecting:
            return "connecting";
        case State::connected:
            return "connected";
        case State::ready:
            return "ready";
        case State::failed:
            return "failed";
        case State::closed:
            return "closed";
    }
    return "?";
}

// ---------------------------------------------------------------- runtime

namespace {
// The receiver of a closing agent (see Core::shutdown).
void drop_recv(NiceAgent*, guint, guint, guint, gchar*, gpointer) {}
}  // namespace

struct Runtime::Impl {
    GMainContext* ctx = nullptr;
    GMainLoop* loop = nullptr;
    std::thread thread;
    std::mutex mtx;
    std::deque<std::function<void()>> queue;  // FIFO of invokes
    // GLib thread only:
    std::set<NiceAgent*> agents;  // open agents (closed ones leave on close_async)
    int closing = 0;              // close_async calls not yet answered
    bool quitting = false;

    static gboolean drain(gpointer data) {
        auto* self = static_cast<Impl*>(data);
        for (;;) {
            std::function<void()> fn;
            {
                std::lock_guard lk(self->mtx);
                if (self->queue.empty()) break;
                fn = std::move(self->queue.front());
                self->queue.pop_front();
            }
            fn();
        }
        return G_SOURCE_REMOVE;
    }

    void maybe_quit() {
        if (quitting && closing == 0) g_main_loop_quit(loop);
    }
};

Runtime::Runtime() : m(std::make_unique<Impl>()) {
    m->ctx = g_main_context_new();
    m->loop = g_main_loop_new(m->ctx, FALSE);
    m->thread = std::thread([impl = m.get()] {
        pthread_setname_np(pthread_self(), "juice-ice");
        g_main_context_push_thread_default(impl->ctx);
        g_main_loop_run(impl->loop);
        // Agents nobody closed: release them here, on their thread.
        for (auto* a : impl->agents) g_object_unref(a);
        impl->agents.clear();
        while (g_main_context_iteration(impl->ctx, FALSE)) {
        }
        g_main_context_pop_thread_default(impl->ctx);
    });
}

Runtime::~Runtime() {
    invoke([impl = m.get()] {
        impl->quitting = true;
        // Close what is still open (frees TURN allocations), but give the
        // servers at most a second to answer.
        for (auto* a : std::set<NiceAgent*>(impl->agents)) {
            impl->agents.erase(a);
            nice_agent_attach_recv(a, 1, 1, impl->ctx, &drop_recv, nullptr);  // each agent has stream 1
            ++impl->closing;
            nice_agent_close_async(
                a,
                [](GObject* src, GAsyncResult*, gpointer data) {
                    auto* rti = static_cast<Impl*>(data);
                    g_object_unref(src);
                    --rti->closing;
                    rti->maybe_quit();
                },
                impl);
        }
        GSource* t = g_timeout_source_new(1000);
        g_source_set_callback(
            t,
            [](gpointer data) -> gboolean {
                g_main_loop_quit(static_cast<Impl*>(data)->loop);
                return G_SOURCE_REMOVE;
            },
            impl, nullptr);
        g_source_attach(t, impl->ctx);
        g_source_unref(t);
        impl->maybe_quit();
    });
    m->thread.join();
    g_main_loop_unref(m->loop);
    g_main_context_unref(m->ctx);
}

void Runtime::invoke(std::function<void()> fn) {
    bool wake;
    {
        std::lock_guard lk(m->mtx);
        wake = m->queue.empty();
        m->queue.push_back(std::move(fn));
    }
    if (wake) g_main_context_invoke(m->ctx, &Impl::drain, m.get());
}

// ---------------------------------------------------------------- descriptions

IceParams to_params(const Description& d) {
    IceParams p{d.ufrag, d.pwd, {}};
    for (const auto& c : d.candidates) {
        if (p.candidates.size() >= k_max_ice_candidates) break;
        p.candidates.push_back({c.foundation, c.priority, c.type, c.ip, c.port});
    }
    return p;
}

Description from_params(const IceParams& p) {
    Description d{p.ufrag, p.pwd, {}, true};
    for (const auto& c : p.candidates)
        d.candidates.push_back({c.foundation, c.priority, c.type, c.ip, c.port, "", 0});
    return d;
}

// ---------------------------------------------------------------- session core

namespace {

std::string addr_string(const NiceAddress& a) {
    char buf[NICE_ADDRESS_STRING_LEN] = {};
    nice_address_to_string(&a, buf);
    return buf;
}

const char* type_name(NiceCandidateType t) {
    switch (t) {
        case NICE_CANDIDATE_TYPE_HOST:
            return "host";
        case NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE:
            return "srflx";
        case NICE_CANDIDATE_TYPE_PEER_REFLEXIVE:
            return "prflx";
        case NICE_CANDIDATE_TYPE_RELAYED:
            return "relay";
    }
    return "host";
}

std::optional<NiceCandidateType> type_of(const std::string& s) {
    if (s == "host") return NICE_CANDIDATE_TYPE_HOST;
    if (s == "srflx") return NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE;
    if (s == "prflx") return NICE_CANDIDATE_TYPE_PEER_REFLEXIVE;
    if (s == "relay") return NICE_CANDIDATE_TYPE_RELAYED;
    return std::nullopt;
}

State state_of(guint s) {
    switch (s) {
        case NICE_COMPONENT_STATE_DISCONNECTED:
        case NICE_COMPONENT_STATE_GATHERING:
            return State::gathering;
        case NICE_COMPONENT_STATE_CONNECTING:
            return State::connecting;
        case NICE_COMPONENT_STATE_CONNECTED:
            return State::connected;
        case NICE_COMPONENT_STATE_READY:
            return State::ready;
        default:
            return State::failed;
    }
}

std::string endpoint(const NiceAddress& a) {
    return addr_string(a) + ":" + std::to_string(nice_address_get_port(&a));
}

}  // namespace

struct Session::Core : std::enable_shared_from_this<Session::Core> {
    Runtime::Impl* rt = nullptr;
    Runtime* runtime = nullptr;
    asio::any_io_executor loop;
    std::weak_ptr<Session> owner;  // loop thread only
    SessionConfig cfg;
    std::atomic<std::size_t> queued{0};
    // GLib thread only:
    NiceAgent* agent = nullptr;
    guint sid = 0;
    Bytes out;  // waiting for pseudo-TCP room
    bool closed = false;
    bool close_when_flushed = false;
    bool gathered = false;
    std::function<void(std::span<const std::uint8_t>)> direct;  // IcePort's receiver

    template <class F>
    void to_loop(F fn) {
        asio::post(loop, [weak = owner, fn = std::move(fn)]() mutable {
            if (auto s = weak.lock(); s && !s->m_closed) fn(*s);
        });
    }

    void start() {  // GLib thread
        auto flags = cfg.reliable ? NICE_AGENT_OPTION_RELIABLE : NICE_AGENT_OPTION_NONE;
        agent = nice_agent_new_full(rt->ctx, NICE_COMPATIBILITY_RFC5245, flags);
        rt->agents.insert(agent);
        // 5 check retransmissions (0.5 s doubling: ~15 s) instead of 3
        // (~3.5 s): the two sides start checking seconds apart when the offer
        // and answer cross a large DHT.
        g_object_set(agent, "controlling-mode", cfg.controlling ? TRUE : FALSE, "upnp", FALSE, "ice-tcp",
                     FALSE, "stun-max-retransmissions", guint(5), nullptr);
        if (cfg.stun)
            g_object_set(agent, "stun-server", cfg.stun->ip.c_str(), "stun-server-port",
                         guint(cfg.stun->port), nullptr);
        for (const auto& a : cfg.local_addresses) {
            NiceAddress na;
            nice_address_init(&na);
            if (nice_address_set_from_string(&na, a.c_str())) nice_agent_add_local_address(agent, &na);
        }
        sid = nice_agent_add_stream(agent, 1);
        if (cfg.port_min || cfg.port_max)
            nice_agent_set_port_range(agent, sid, 1, cfg.port_min, cfg.port_max);
        if (cfg.turn)
            nice_agent_set_relay_info(agent, sid, 1, cfg.turn->addr.ip.c_str(), cfg.turn->addr.port,
                                      cfg.turn->user.c_str(), cfg.turn->password.c_str(),
                                      NICE_RELAY_TYPE_TURN_UDP);
        g_signal_connect(agent, "candidate-gathering-done", G_CALLBACK(&Core::on_gathering_done), this);
        g_signal_connect(agent, "component-state-changed", G_CALLBACK(&Core::on_state_changed), this);
        g_signal_connect(agent, "new-selected-pair-full", G_CALLBACK(&Core::on_selected_pair), this);
        g_signal_connect(agent, "reliable-transport-writable", G_CALLBACK(&Core::on_writable), this);
        nice_agent_attach_recv(agent, sid, 1, rt->ctx, &Core::on_recv, this);
        if (!nice_agent_gather_candidates(agent, sid)) {
            to_loop([](Session& s) { s.on_state(State::failed); });
        }
    }

    Description local_description() {  // GLib thread
        Description d;
        gchar *ufrag = nullptr, *pwd = nullptr;
        if (nice_agent_get_local_credentials(agent, sid, &ufrag, &pwd)) {
            d.ufrag = ufrag;
            d.pwd = pwd;
        }
        g_free(ufrag);
        g_free(pwd);
        GSList* cands = nice_agent_get_local_candidates(agent, sid, 1);
        for (GSList* i = cands; i; i = i->next) {
            auto* c = static_cast<NiceCandidate*>(i->data);
            if (c->transport != NICE_CANDIDATE_TRANSPORT_UDP) continue;
            Candidate cand;
            cand.foundation = c->foundation;
            cand.priority = c->priority;
            cand.type = type_name(c->type);
            cand.ip = addr_string(c->addr);
            cand.port = static_cast<std::uint16_t>(nice_address_get_port(&c->addr));
            if (c->type != NICE_CANDIDATE_TYPE_HOST) {
                cand.raddr = addr_string(c->base_addr);
                cand.rport = static_cast<std::uint16_t>(nice_address_get_port(&c->base_addr));
            }
            d.candidates.push_back(std::move(cand));
        }
        g_slist_free_full(cands, reinterpret_cast<GDestroyNotify>(&nice_candidate_free));
        d.complete = gathered;
        add_predicted(d);
        return d;
    }

    // The DHT-reported public IP with each IPv4 host candidate's port, as a
    // server-reflexive candidate, unless STUN or TURN gave one already.
    void add_predicted(Description& d) const {
        NiceAddress pub;
        nice_address_init(&pub);
        if (cfg.public_ip.empty() || !nice_address_set_from_string(&pub, cfg.public_ip.c_str()) ||
            nice_address_ip_version(&pub) != 4 || nice_address_is_private(&pub))
            return;
        for (const auto& c : d.candidates)
            if (c.type == "srflx" || c.ip == cfg.public_ip) return;
        std::vector<Candidate> extra;
        for (const auto& c : d.candidates) {
            if (c.type != "host" || c.ip.find(':') != std::string::npos) continue;
            Candidate p;
            p.foundation = "p" + c.foundation;
            // RFC 8445 5.1.2.1: type preference 100 for server-reflexive,
            // the host candidate's local preference and component.
            p.priority = (100u << 24) | (c.priority & 0xffffffu);
            p.type = "srflx";
            p.ip = cfg.public_ip;
            p.port = c.port;
            p.raddr = c.ip;
            p.rport = c.port;
            extra.push_back(std::move(p));
        }
        d.candidates.insert(d.candidates.end(), extra.begin(), extra.end());
    }

    void set_remote(const Description& r) {  // GLib thread
        if (closed) return;
        nice_agent_set_remote_credentials(agent, sid, r.ufrag.c_str(), r.pwd.c_str());
        GSList* list = nullptr;
        for (const auto& c : r.candidates) {
            auto t = type_of(c.type);
            if (!t) continue;
            NiceCandidate* nc = nice_candidate_new(*t);
            nc->transport = NICE_CANDIDATE_TRANSPORT_UDP;
            nc->stream_id = sid;
            nc->component_id = 1;
            nc->priority = c.priority;
            std::snprintf(nc->foundation, sizeof nc->foundation, "%s", c.foundation.c_str());
            if (!nice_address_set_from_string(&nc->addr, c.ip.c_str())) {
                nice_candidate_free(nc);
                continue;
            }
            nice_address_set_port(&nc->addr, c.port);
            if (!c.raddr.empty() && nice_address_set_from_string(&nc->base_addr, c.raddr.c_str()))
                nice_address_set_port(&nc->base_addr, c.rport);
            list = g_slist_append(list, nc);
        }
        const int added = list ? nice_agent_set_remote_candidates(agent, sid, 1, list) : 0;
        g_slist_free_full(list, reinterpret_cast<GDestroyNotify>(&nice_candidate_free));
        if (added <= 0) spdlog::debug("ice: no usable remote candidate");
    }

    void pump() {  // GLib thread: move `out` into the agent
        while (!closed && !out.empty()) {
            const auto len = static_cast<guint>(std::min<std::size_t>(out.size(), 65536));
            const gint n = nice_agent_send(agent, sid, 1, len, reinterpret_cast<const gchar*>(out.data()));
            if (n <= 0) break;  // pseudo-TCP is full: reliable-transport-writable resumes us
            out.erase(out.begin(), out.begin() + n);
            queued.fetch_sub(static_cast<std::size_t>(n));
        }
        if (close_when_flushed && out.empty()) {
            // What pseudo-TCP took still has to reach the wire and be acked:
            // give it a moment, then release the agent.
            close_when_flushed = false;
            auto self = shared_from_this();
            auto* keep = new std::shared_ptr<Core>(self);
            GSource* t = g_timeout_source_new(1000);
            g_source_set_callback(
                t,
                [](gpointer data) -> gboolean {
                    (*static_cast<std::shared_ptr<Core>*>(data))->shutdown();
                    return G_SOURCE_REMOVE;
                },
                keep, [](gpointer data) { delete static_cast<std::shared_ptr<Core>*>(data); });
            g_source_attach(t, rt->ctx);
            g_source_unref(t);
        }
    }

    void shutdown() {  // GLib thread
        if (closed || !agent) return;
        closed = true;
        g_signal_handlers_disconnect_by_data(agent, this);
        // Keep a receiver that drops: with none, libnice stops reading the
        // sockets, and the TURN server's answers to the deallocation sit
        // unread, so the GLib loop spins at 100% CPU until the close gives
        // up (~15 s: measured in the NAT lab, where it stalled calls).
        nice_agent_attach_recv(agent, sid, 1, rt->ctx, &drop_recv, nullptr);
        rt->agents.erase(agent);
        ++rt->closing;
        nice_agent_close_async(
            agent,
            [](GObject* src, GAsyncResult*, gpointer data) {
                auto* rti = static_cast<Runtime::Impl*>(data);
                g_object_unref(src);
                --rti->closing;
                rti->maybe_quit();
            },
            rt);
        agent = nullptr;
        queued = 0;
        out.clear();
    }

    // libnice signals, on the GLib thread
    static void on_gathering_done(NiceAgent*, guint, gpointer data) {
        auto* c = static_cast<Core*>(data);
        c->gathered = true;
        c->to_loop([d = c->local_description()](Session& s) mutable {
            if (s.m_ev.on_gathered) s.m_ev.on_gathered(std::move(d));
        });
    }
    static void on_state_changed(NiceAgent*, guint, guint, guint state, gpointer data) {
        auto* c = static_cast<Core*>(data);
        c->to_loop([st = state_of(state)](Session& s) { s.on_state(st); });
    }
    static void on_selected_pair(NiceAgent*, guint, guint, NiceCandidate* l, NiceCandidate* r,
                                 gpointer data) {
        auto* c = static_cast<Core*>(data);
        LinkPath p;
        const bool relay = l->type == NICE_CANDIDATE_TYPE_RELAYED || r->type == NICE_CANDIDATE_TYPE_RELAYED;
        const bool prflx =
            l->type == NICE_CANDIDATE_TYPE_PEER_REFLEXIVE || r->type == NICE_CANDIDATE_TYPE_PEER_REFLEXIVE;
        const bool srflx = l->type == NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE ||
                           r->type == NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE;
        p.kind = relay ? "relay" : srflx ? "srflx" : prflx ? "prflx" : "host";
        p.local = endpoint(l->addr);
        p.remote = endpoint(r->addr);
        if (l->type == NICE_CANDIDATE_TYPE_RELAYED)
            p.relay = endpoint(l->addr);
        else if (r->type == NICE_CANDIDATE_TYPE_RELAYED)
            p.relay = endpoint(r->addr);
        c->to_loop([p = std::move(p)](Session& s) {
            s.m_selected = p;
            if (s.m_ev.on_selected) s.m_ev.on_selected(p);
        });
    }
    static void on_writable(NiceAgent*, guint, guint, gpointer data) {
        auto* c = static_cast<Core*>(data);
        c->pump();
        c->to_loop([](Session& s) {
            if (s.m_ev.on_writable) s.m_ev.on_writable();
        });
    }
    static void on_recv(NiceAgent*, guint, guint, guint len, gchar* buf, gpointer data) {
        auto* c = static_cast<Core*>(data);
        if (c->closed || len == 0) return;
        if (c->direct) {
            c->direct(std::span(reinterpret_cast<const std::uint8_t*>(buf), len));
            return;
        }
        Bytes b(reinterpret_cast<std::uint8_t*>(buf), reinterpret_cast<std::uint8_t*>(buf) + len);
        c->to_loop([b = std::move(b)](Session& s) mutable { s.deliver_bytes(std::move(b)); });
    }
};

// ---------------------------------------------------------------- session

std::shared_ptr<Session> Session::create(Runtime& rt, asio::any_io_executor loop, SessionConfig cfg,
                                         Events ev) {
    auto core = std::make_shared<Core>();
    core->rt = &rt.impl();
    core->runtime = &rt;
    core->loop = std::move(loop);
    core->cfg = std::move(cfg);
    std::shared_ptr<Session> s(new Session(core));
    s->m_ev = std::move(ev);
    core->owner = s;
    rt.invoke([core] { core->start(); });
    return s;
}

Session::~Session() {
    close();
}

void Session::on_state(State st) {
    m_state = st;
    if (m_ev.on_state) m_ev.on_state(st);
}

void Session::set_events(Events ev) {
    m_ev = std::move(ev);
    if (!m_early.empty() && m_ev.on_bytes) {
        Bytes b;
        b.swap(m_early);
        m_ev.on_bytes(b);
    }
}

void Session::deliver_bytes(Bytes bytes) {
    if (!m_ev.on_bytes) {
        // Bounded: pseudo-TCP's window keeps a peer from sending much more
        // before the link takes over.
        if (m_early.size() + bytes.size() <= (1u << 20))
            m_early.insert(m_early.end(), bytes.begin(), bytes.end());
        return;
    }
    auto cb = m_ev.on_bytes;  // the handler may replace m_ev
    cb(bytes);
}

void Session::set_remote(const Description& remote) {
    if (m_closed) return;
    m_core->runtime->invoke([core = m_core, remote] { core->set_remote(remote); });
}

void Session::send(std::span<const std::uint8_t> bytes) {
    if (m_closed || bytes.empty()) return;
    if (m_core->cfg.reliable) {
        m_core->queued.fetch_add(bytes.size());
        m_core->runtime->invoke([core = m_core, b = Bytes(bytes.begin(), bytes.end())]() mutable {
            if (core->closed) return;
            core->out.insert(core->out.end(), b.begin(), b.end());
            core->pump();
        });
    } else {
        m_core->runtime->invoke([core = m_core, b = Bytes(bytes.begin(), bytes.end())] {
            if (!core->closed && core->agent)
                nice_agent_send(core->agent, core->sid, 1, static_cast<guint>(b.size()),
                                reinterpret_cast<const gchar*>(b.data()));
        });
    }
}

std::size_t Session::queued_bytes() const {
    return m_core->queued.load();
}

void Session::close() {
    if (m_closed) return;
    m_closed = true;
    m_ev = {};
    m_core->runtime->invoke([core = m_core] { core->shutdown(); });
}

void Session::close_after_flush() {
    if (m_closed) return;
    m_closed = true;
    m_ev = {};
    m_core->runtime->invoke([core = m_core] {
        core->close_when_flushed = true;
        core->pump();
    });
}

// ---------------------------------------------------------------- stream

IceStream::IceStream(std::shared_ptr<Session> session) : m_session(std::move(session)) {
    if (const auto& p = m_session->selected()) {
        auto host = [](const std::string& ep) {
            auto colon = ep.rfind(':');
            std::error_code ec;
            auto a = asio::ip::make_address(ep.substr(0, colon), ec);
            return ec ? asio::ip::address{} : a;
        };
        m_remote = host(p->remote);
        m_local = host(p->local);
    }
}

IceStream::~IceStream() {
    if (!m_closed) m_session->close();
}

std::string IceStream::remote_endpoint() const {
    const auto& p = m_session->selected();
    return p ? p->remote : std::string("?");
}

void IceStream::start(Handlers h) {
    Session::Events ev;
    ev.on_bytes = std::move(h.on_bytes);
    ev.on_state = [err = std::move(h.on_error), this](State st) {
        if (st == State::failed && !m_closed) {
            m_closed = true;
            if (err) err("ice connectivity lost");
        }
    };
    m_session->set_events(std::move(ev));
}

void IceStream::write(std::span<const std::uint8_t> bytes) {
    if (!m_closed) m_session->send(bytes);
}

void IceStream::close_after_flush() {
    if (m_closed) return;
    m_closed = true;
    m_session->close_after_flush();
}

void IceStream::close() {
    if (m_closed) return;
    m_closed = true;
    m_session->close();
}

// ---------------------------------------------------------------- port

void IcePort::start(std::function<void(std::span<const std::uint8_t>)> deliver) {
    m_session->m_core->runtime->invoke(
        [core = m_session->m_core, d = std::move(deliver)]() mutable { core->direct = std::move(d); });
}

void IcePort::send(std::span<const std::uint8_t> datagram) {
    if (m_stopped || datagram.empty()) return;
    m_session->m_core->runtime->invoke(
        [core = m_session->m_core, b = Bytes(datagram.begin(), datagram.end())] {
            // -1 until a pair is selected: the datagram is dropped, as UDP would.
            if (!core->closed && core->agent)
                nice_agent_send(core->agent, core->sid, 1, static_cast<guint>(b.size()),
                                reinterpret_cast<const gchar*>(b.data()));
        });
}

void IcePort::stop() {
    if (m_stopped.exchange(true)) return;
    // Wait for the GLib thread to drop the receiver: after this, nothing
    // reaches the media session.
    std::promise<void> done;
    auto fut = done.get_future();
    m_session->m_core->runtime->invoke([core = m_session->m_core, &done] {
        core->direct = nullptr;
        done.set_value();
    });
    fut.wait();
}

}  // namespace juice::node::ice
