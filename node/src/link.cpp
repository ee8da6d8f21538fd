#include "link.hpp"

#include <spdlog/spdlog.h>

namespace juice::node {

using namespace std::chrono;

static std::int64_t unix_ms_now() {
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

Link::Link(asio::any_io_executor ex, std::shared_ptr<ByteStream> stream, crypto::TlsEngine::Role role,
           const crypto::Identity& self, std::optional<UserId> expected_peer,
           std::function<bool(const UserId&)> accept_peer, LinkTimeouts timeouts, Callbacks callbacks)
    : m_stream(std::move(stream)),
      m_tls(role, self, expected_peer, std::move(accept_peer)),
      m_role(role),
      m_timeouts(timeouts),
      m_cb(std::move(callbacks)),
      m_timer(std::move(ex)) {
    if (expected_peer) m_peer = *expected_peer;
}

// A link dropped without close() (the daemon let go of it) stops its stream;
// after close() the stream finishes sending on its own.
Link::~Link() {
    if (!m_closed) m_stream->close();
}

Result<Bytes> Link::export_keying_material(std::string_view label, std::size_t length,
                                           std::span<const std::uint8_t> context) const {
    if (!is_open()) return make_error(std::errc::not_connected, "the link is not open");
    return m_tls.export_keying_material(label, length, context);
}

void Link::start() {
    m_last_rx = steady_clock::now();
    // Until the handshake completes, the timer is the handshake deadline.
    m_timer.expires_after(m_timeouts.handshake);
    m_timer.async_wait([weak = weak_from_this()](std::error_code ec) {
        auto self = weak.lock();
        if (!ec && self && !self->m_open)
            self->fail(self->m_secure ? "no hello from the peer in time" : "tls handshake timed out");
    });
    std::weak_ptr<Link> weak = weak_from_this();
    m_stream->start({[weak](std::span<const std::uint8_t> bytes) {
                         if (auto self = weak.lock(); self && !self->m_closed) self->on_read(bytes);
                     },
                     [weak](const std::string& reason) {
                         if (auto self = weak.lock()) self->fail(reason);
                     }});
    if (auto r = m_tls.start(); !r) return fail(r.error().what());
    flush();
}

void Link::on_read(std::span<const std::uint8_t> bytes) {
    m_last_rx = steady_clock::now();
    auto fed = m_tls.feed(bytes);
    flush();
    if (!fed) return fail(fed.error().what());
    if (!m_secure && m_tls.state() == crypto::TlsEngine::State::open) {
        m_secure = true;
        m_peer = *m_tls.peer_id();
        if (m_cb.make_hello) write_frame(m_cb.make_hello());
        if (m_closed) return;
    }
    // Frames that came in the same read as the peer's close_notify (a bye,
    // typically) are handled before the close: the multi-host test caught
    // byes lost this way.
    const bool peer_closed = m_tls.state() == crypto::TlsEngine::State::closed;
    auto plain = m_tls.take_plaintext();
    if (!plain.empty()) {
        m_decoder.feed(plain);
        while (auto next = m_decoder.next()) {
            if (!*next) return fail("bad frame: " + next->error().what());
            Frame frame = std::move(next->value());
            if (!m_open) {
                auto* hello = std::get_if<HelloFrame>(&frame);
                if (!hello) return fail("the peer spoke before its hello");
                m_peer_hello = std::move(*hello);
                m_open = true;
                m_opened_at = steady_clock::now();
                m_opened_unix_ms = unix_ms_now();
                m_timer.cancel();
                arm_keepalive();
                if (m_cb.on_open) m_cb.on_open(*this);
                if (m_closed) return;
                continue;
            }
            if (auto* ka = std::get_if<KeepaliveFrame>(&frame)) {
                if (!ka->reply) send(KeepaliveFrame{true});
                continue;
            }
            if (m_cb.on_frame) m_cb.on_frame(*this, std::move(frame));
            if (m_closed) return;
        }
    }
    if (peer_closed) return fail("peer closed the tls session");
}

void Link::send(const Frame& frame) {
    if (is_open()) write_frame(frame);
}

void Link::write_frame(const Frame& frame) {
    auto bytes = encode_frame(frame);
    if (bytes.empty()) return;
    if (auto r = m_tls.write(bytes); !r) return fail(r.error().what());
    flush();
}

void Link::flush() {
    auto out = m_tls.take_output();
    if (!out.empty()) m_stream->write(out);
}

void Link::arm_keepalive() {
    m_timer.expires_after(m_timeouts.keepalive_interval / 3);
    m_timer.async_wait([weak = weak_from_this()](std::error_code ec) {
        auto self = weak.lock();
        if (ec || !self || self->m_closed) return;
        auto silent = steady_clock::now() - self->m_last_rx;
        if (silent >= self->m_timeouts.keepalive_timeout) return self->fail("keepalive timeout");
        if (silent >= self->m_timeouts.keepalive_interval) self->send(KeepaliveFrame{false});
        self->arm_keepalive();
    });
}

void Link::check_alive(std::chrono::milliseconds within) {
    if (!is_open() || m_check) return;  // one check at a time
    const auto asked = steady_clock::now();
    send(KeepaliveFrame{false});
    m_check = std::make_unique<asio::steady_timer>(m_timer.get_executor(), within);
    m_check->async_wait([weak = weak_from_this(), asked](std::error_code ec) {
        auto self = weak.lock();
        if (ec || !self || self->m_closed) return;
        self->m_check.reset();
        if (self->m_last_rx < asked) self->fail("no answer to a liveness check");
    });
}

void Link::fail(const std::string& reason) {
    if (m_closed) return;
    m_closed = true;
    m_timer.cancel();
    m_stream->close();
    spdlog::debug("link {} {}: closed: {}", m_peer.hex().substr(0, 8), m_stream->remote_endpoint(), reason);
    if (m_cb.on_closed) {
        auto cb = std::move(m_cb.on_closed);
        m_cb = {};
        cb(*this, reason);
    }
}

void Link::close(const std::string& reason) {
    if (m_closed) return;
    if (m_open) m_tls.close();
    // Flush the close_notify (and anything queued) before the socket closes.
    m_closed = true;
    m_timer.cancel();
    flush();
    m_stream->close_after_flush();
    if (m_cb.on_closed) {
        auto cb = std::move(m_cb.on_closed);
        m_cb = {};
        cb(*this, reason);
    }
}

}  // namespace juice::node
