// Link: one direct, mutually authenticated TLS connection to a contact,
// carrying length-prefixed msgpack frames (frame.hpp).
//
// Owned by the daemon's loop thread; all callbacks run there. A Link is
// created for an accepted or dialled ByteStream (a TCP socket, or an ICE
// session's stream), performs the TLS handshake
// through crypto::TlsEngine (which checks the peer's key id), sends our
// hello, and is open once the peer's hello arrives. (In TLS 1.3 a client sees
// the handshake finish before the server has checked the client's
// certificate, so only the peer's first frame proves it accepted us.) It
// closes itself on a TLS failure, a frame error, a missing hello, a handshake
// timeout, or a keepalive timeout, and calls on_closed exactly once.
#pragma once

#include "juice/crypto/tls.hpp"
#include "juice/node/frame.hpp"
#include "transport.hpp"

#include <asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace juice::node {

struct LinkTimeouts {
    std::chrono::milliseconds handshake{10000};
    std::chrono::milliseconds keepalive_interval{15000};  // ping when idle this long
    std::chrono::milliseconds keepalive_timeout{45000};   // close when silent this long
};

class Link : public std::enable_shared_from_this<Link> {
public:
    struct Callbacks {
        std::function<HelloFrame()> make_hello;  // ours, sent once TLS is up
        std::function<void(Link&)> on_open;      // peer's hello arrived: peer_hello() set
        std::function<void(Link&, Frame&&)> on_frame;
        std::function<void(Link&, const std::string& reason)> on_closed;  // once
    };

    Link(asio::any_io_executor ex, std::shared_ptr<ByteStream> stream, crypto::TlsEngine::Role role,
         const crypto::Identity& self, std::optional<UserId> expected_peer,
         std::function<bool(const UserId&)> accept_peer, LinkTimeouts timeouts, Callbacks callbacks);
    ~Link();

    void start();
    // Queues a frame; ignored unless open.
    void send(const Frame& frame);
    // Closes the link now (after flushing what is queued, best effort) and
    // calls on_closed with `reason`.
    void close(const std::string& reason);

    bool is_open() const { return m_open && !m_closed; }
    const HelloFrame& peer_hello() const { return m_peer_hello; }
    bool outgoing() const { return m_role == crypto::TlsEngine::Role::client; }
    const UserId& peer() const { return m_peer; }
    std::string remote_endpoint() const { return m_stream->remote_endpoint(); }
    // The peer's and our address on this connection (unspecified if unknown).
    const asio::ip::address& remote_address() const { return m_stream->remote_address(); }
    const asio::ip::address& local_address() const { return m_stream->local_address(); }
    LinkPath path() const { return m_stream->path(); }
    // RFC 5705 keying material bound to this TLS session (call keys).
    Result<Bytes> export_keying_material(std::string_view label, std::size_t length,
                                         std::span<const std::uint8_t> context) const;
    std::chrono::steady_clock::time_point opened_at() const { return m_opened_at; }
    std::int64_t opened_unix_ms() const { return m_opened_unix_ms; }
    std::size_t queued_bytes() const { return m_stream->queued_bytes(); }
    // Pings the peer; unless something arrives within `within`, the link
    // fails ("no answer to a liveness check"). For a peer that says it has
    // no link with us (it restarted, say) while ours still looks open: over
    // ICE nothing like a TCP reset tells us the old process is gone.
    void check_alive(std::chrono::milliseconds within);

private:
    void on_read(std::span<const std::uint8_t> bytes);
    void flush();
    void write_frame(const Frame& frame);
    void fail(const std::string& reason);
    void arm_keepalive();
    std::unique_ptr<asio::steady_timer> m_check;  // check_alive's deadline

    std::shared_ptr<ByteStream> m_stream;
    crypto::TlsEngine m_tls;
    crypto::TlsEngine::Role m_role;
    FrameDecoder m_decoder;
    LinkTimeouts m_timeouts;
    Callbacks m_cb;
    asio::steady_timer m_timer;
    bool m_secure = false;  // TLS handshake done (our side)
    bool m_open = false;    // peer's hello received
    HelloFrame m_peer_hello;
    bool m_closed = false;
    UserId m_peer;
    std::chrono::steady_clock::time_point m_last_rx;
    std::chrono::steady_clock::time_point m_opened_at;
    std::int64_t m_opened_unix_ms = 0;
};

}  // namespace juice::node
