// juice_ice: ICE sessions (libnice) for links and calls through NATs.
//
// The only code that sees libnice or GLib is ice.cpp; this header has
// neither. A Runtime owns one GLib thread ("juice-ice") where every NiceAgent
// is created, used and released. A Session is used from the daemon's loop
// thread: its calls hop to the GLib thread, and its events are posted back
// to the loop's executor, so daemon state is only ever touched on the loop.
// See docs/NAT.md for the whole design.
#pragma once

#include "../transport.hpp"
#include "juice/node/frame.hpp"
#include "juice/node/media/session.hpp"

#include <asio/any_io_executor.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace juice::node::ice {

struct Candidate {
    std::string foundation;
    std::uint32_t priority = 0;
    std::string type;  // "host" | "srflx" | "prflx" | "relay"
    std::string ip;
    std::uint16_t port = 0;
    std::string raddr;  // related address (srflx/relay), may be empty
    std::uint16_t rport = 0;
    bool operator==(const Candidate&) const = default;
};

// One side's ICE parameters, as carried in an offer or answer.
struct Description {
    std::string ufrag, pwd;
    std::vector<Candidate> candidates;
    bool complete = true;  // gathering finished
};

// The same, as frames carry it (at most k_max_ice_candidates; related
// addresses stay local).
IceParams to_params(const Description& d);
Description from_params(const IceParams& p);

struct Server {
    std::string ip;  // numeric; names are resolved by the caller
    std::uint16_t port = 0;
};

struct TurnServer {
    Server addr;
    std::string user, password;
};

struct SessionConfig {
    bool controlling = false;  // the dialer controls (and is the TLS client)
    bool reliable = true;      // pseudo-TCP byte stream (links); false: datagrams (calls)
    // Host candidates only on these addresses; empty: every interface but
    // loopback (libnice's default).
    std::vector<std::string> local_addresses;
    std::optional<Server> stun;
    std::optional<TurnServer> turn;
    std::uint16_t port_min = 0, port_max = 0;  // 0: any
    // Our public IPv4 address as the DHT's nodes report it (no port). When
    // no STUN answer gave a server-reflexive candidate, each IPv4 host
    // candidate is offered at this address with its own port too: that is
    // where a port-preserving NAT (most home routers) maps it.
    std::string public_ip;
};

enum class State { gathering, connecting, connected, ready, failed, closed };
const char* to_string(State s);

class Runtime {
public:
    Runtime();
    ~Runtime();  // closes every agent still open (at most ~1 s), then joins
    Runtime(const Runtime&) = delete;
    Runtime& operator=(const Runtime&) = delete;

    // Runs `fn` on the GLib thread, in call order.
    void invoke(std::function<void()> fn);

    struct Impl;
    Impl& impl() { return *m; }

private:
    std::unique_ptr<Impl> m;
};

class Session {
public:
    // All called on the loop; none after close().
    struct Events {
        std::function<void(Description)> on_gathered;  // our description, once
        std::function<void(State)> on_state;
        std::function<void(const LinkPath&)> on_selected;  // a pair was chosen (again)
        std::function<void()> on_writable;                 // reliable: the stream takes bytes
        std::function<void(std::span<const std::uint8_t>)> on_bytes;
    };

    static std::shared_ptr<Session> create(Runtime& rt, asio::any_io_executor loop, SessionConfig cfg,
                                           Events ev);
    ~Session();

    // Replaces the handlers (loop thread). Bytes received while no on_bytes
    // was set are delivered to the new one.
    void set_events(Events ev);
    void set_remote(const Description& remote);
    // Reliable: queued into pseudo-TCP; datagram: one packet.
    void send(std::span<const std::uint8_t> bytes);
    std::size_t queued_bytes() const;
    State state() const { return m_state; }
    const std::optional<LinkPath>& selected() const { return m_selected; }
    // Releases the agent (and its TURN allocation); no event after this.
    void close();
    // Like close(), once what is queued has been sent (plus a second for
    // pseudo-TCP to deliver it).
    void close_after_flush();

    struct Core;

private:
    explicit Session(std::shared_ptr<Core> core) : m_core(std::move(core)) {}
    void deliver_bytes(Bytes bytes);
    void on_state(State st);
    friend class IcePort;

    std::shared_ptr<Core> m_core;
    Events m_ev;
    Bytes m_early;  // received before anyone listened
    State m_state = State::gathering;
    std::optional<LinkPath> m_selected;
    bool m_closed = false;
};

// The Link's transport over a connected, reliable Session.
class IceStream final : public ByteStream {
public:
    explicit IceStream(std::shared_ptr<Session> session);
    ~IceStream() override;

    void start(Handlers h) override;
    void write(std::span<const std::uint8_t> bytes) override;
    void close_after_flush() override;
    void close() override;
    std::size_t queued_bytes() const override { return m_session->queued_bytes(); }

    std::string remote_endpoint() const override;
    const asio::ip::address& remote_address() const override { return m_remote; }
    const asio::ip::address& local_address() const override { return m_local; }
    LinkPath path() const override { return m_session->selected().value_or(LinkPath{"ice", "", "", ""}); }

private:
    std::shared_ptr<Session> m_session;
    asio::ip::address m_remote, m_local;
    bool m_closed = false;
};

// A call's datagram path over a datagram (reliable = false) Session: what the
// media thread sends goes straight to the GLib thread, and what arrives goes
// straight to the media session, without the daemon loop in between.
class IcePort final : public media::DatagramPort {
public:
    explicit IcePort(std::shared_ptr<Session> session) : m_session(std::move(session)) {}
    ~IcePort() override { stop(); }
    void start(std::function<void(std::span<const std::uint8_t>)> deliver) override;
    void send(std::span<const std::uint8_t> datagram) override;
    void stop() override;

private:
    std::shared_ptr<Session> m_session;
    std::atomic<bool> m_stopped{false};
};

}  // namespace juice::node::ice
