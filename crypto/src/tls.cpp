// Sans-I/O TLS 1.3 over GnuTLS. GnuTLS is given in-memory transport
// callbacks: pull reads from m_in (EAGAIN when it is empty), push appends to
// m_out. Every public call then runs GnuTLS until it wants more input.
//
// Trust: no CA chain. The verify callback computes the key id of the peer's
// certificate and applies the contact check; GnuTLS's TLS 1.3 handshake then
// checks CertificateVerify against that same certificate, so a peer that
// completes the handshake holds the key whose id we checked.
#include "juice/crypto/tls.hpp"

#include "juice/crypto/errors.hpp"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace juice::crypto {

namespace {

constexpr const char* k_priority = "NORMAL:-VERS-ALL:+VERS-TLS1.3";
// Bounds the loops over non-fatal GnuTLS results (warning alerts and the
// like) so that a peer cannot keep us spinning inside one call.
constexpr int k_max_nonfatal_in_a_row = 64;
constexpr std::size_t k_max_export_bytes = 1024;

}  // namespace

struct TlsEngine::Impl {
    Role role;
    Identity self;
    std::optional<UserId> expected_peer;
    std::function<bool(const UserId&)> accept_peer;

    gnutls_certificate_credentials_t cred = nullptr;
    gnutls_session_t session = nullptr;

    Bytes in;
    std::size_t in_pos = 0;
    Bytes out;
    Bytes plain;

    State state = State::handshaking;
    bool started = false;
    std::optional<UserId> peer;     // set by the verify callback
    bool authenticated = false;     // the handshake completed with `peer`
    std::optional<Error> rejected;  // set by the verify callback when it refuses the peer
    Error error;                    // valid when state == failed

    Impl(Role r, const Identity& id, std::optional<UserId> expected,
         std::function<bool(const UserId&)> accept)
        : role(r), self(id), expected_peer(expected), accept_peer(std::move(accept)) {}

    ~Impl() {
        if (session) gnutls_deinit(session);
        if (cred) gnutls_certificate_free_credentials(cred);
    }

    Result<void> setup() {
        if (role == Role::client && !expected_peer)
            return make_error(errc::tls_error, "a TLS client needs the id of the contact it dials");
        if (role == Role::server && !accept_peer)
            return make_error(errc::tls_error, "a TLS server needs an accept_peer check");

        int err = gnutls_certificate_allocate_credentials(&cred);
        if (err < 0) return gnutls_failure("cannot allocate TLS credentials", err);
        auto crt = static_cast<gnutls_x509_crt_t>(self.gnutls_certificate());
        auto key = static_cast<gnutls_x509_privkey_t>(self.gnutls_privkey());
        if ((err = gnutls_certificate_set_x509_key(cred, &crt, 1, key)) < 0)
            return gnutls_failure("cannot use the identity for TLS", err);

        // No tickets: resumption would skip the certificate exchange that our
        // trust model rests on, and tickets are extra records we do not need.
        unsigned flags =
            (role == Role::client ? GNUTLS_CLIENT : GNUTLS_SERVER) | GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS;
        if ((err = gnutls_init(&session, flags)) < 0)
            return gnutls_failure("cannot create a TLS session", err);
        const char* err_pos = nullptr;
        if ((err = gnutls_priority_set_direct(session, k_priority, &err_pos)) < 0)
            return gnutls_failure("cannot set the TLS priorities", err);
        if ((err = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, cred)) < 0)
            return gnutls_failure("cannot set the TLS credentials", err);
        if (role == Role::server) gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
        gnutls_handshake_set_timeout(session, 0);  // the caller owns time

        gnutls_session_set_ptr(session, this);
        gnutls_transport_set_ptr(session, this);
        gnutls_transport_set_push_function(session, &Impl::push);
        gnutls_transport_set_pull_function(session, &Impl::pull);
        gnutls_transport_set_pull_timeout_function(session, &Impl::pull_timeout);
        gnutls_session_set_verify_function(session, &Impl::verify);
        return {};
    }

    static Error gnutls_failure(const std::string& what, int err) {
        return make_error(errc::tls_error, what + ": " + gnutls_strerror(err));
    }

    // ---- transport callbacks ----

    static ssize_t push(gnutls_transport_ptr_t ptr, const void* data, std::size_t size) {
        auto* self = static_cast<Impl*>(ptr);
        auto* p = static_cast<const std::uint8_t*>(data);
        self->out.insert(self->out.end(), p, p + size);
        return static_cast<ssize_t>(size);
    }

    static ssize_t pull(gnutls_transport_ptr_t ptr, void* data, std::size_t size) {
        auto* self = static_cast<Impl*>(ptr);
        std::size_t avail = self->in.size() - self->in_pos;
        if (avail == 0) {
            gnutls_transport_set_errno(self->session, EAGAIN);
            return -1;
        }
        std::size_t n = std::min(avail, size);
        std::memcpy(data, self->in.data() + self->in_pos, n);
        self->in_pos += n;
        return static_cast<ssize_t>(n);
    }

    static int pull_timeout(gnutls_transport_ptr_t ptr, unsigned int) {
        auto* self = static_cast<Impl*>(ptr);
        if (self->in.size() > self->in_pos) return 1;
        gnutls_transport_set_errno(self->session, EAGAIN);
        return -1;
    }

    // Returns 0 to accept the peer's certificate, an error to abort the
    // handshake (GnuTLS then fails it with GNUTLS_E_CERTIFICATE_ERROR).
    static int verify(gnutls_session_t session) {
        auto* self = static_cast<Impl*>(gnutls_session_get_ptr(session));
        auto id = peer_key_id(session);
        if (!id) {
            self->rejected =
                make_error(errc::peer_rejected, "the peer sent no usable certificate: " + id.error().message);
            return GNUTLS_E_CERTIFICATE_ERROR;
        }
        if (self->role == Role::client) {
            if (*id != *self->expected_peer) {
                self->rejected = make_error(errc::peer_rejected, "the peer's key id " + id->hex() +
                                                                     " is not the contact we dialled (" +
                                                                     self->expected_peer->hex() + ")");
                return GNUTLS_E_CERTIFICATE_ERROR;
            }
        } else {
            bool ok = false;
            try {
                ok = self->accept_peer(*id);
            } catch (...) {
                ok = false;
            }
            if (!ok) {
                self->rejected = make_error(errc::peer_rejected,
                                            "the peer's key id " + id->hex() + " is not an accepted contact");
                return GNUTLS_E_CERTIFICATE_ERROR;
            }
        }
        self->peer = *id;
        return 0;
    }

    static Result<UserId> peer_key_id(gnutls_session_t session) {
        unsigned n = 0;
        const gnutls_datum_t* certs = gnutls_certificate_get_peers(session, &n);
        if (!certs || n == 0) return make_error(errc::peer_rejected, "no certificate");
        return user_id_of_certificate(Bytes(certs[0].data, certs[0].data + certs[0].size));
    }

    // ---- state machine ----

    void fail(Error e) {
        state = State::failed;
        error = std::move(e);
        peer.reset();
    }

    // A fatal GnuTLS result: tell the peer (an alert, queued in `out`) unless
    // the peer is the one who ended it, and remember why.
    void fail_with(int err, const char* during) {
        if (err == GNUTLS_E_FATAL_ALERT_RECEIVED) {
            auto alert = gnutls_alert_get(session);
            const char* name = gnutls_alert_get_name(alert);
            std::string text = std::string("the peer aborted the connection ") + during + ": " +
                               (name ? name : "unknown alert");
            // The peer refusing our certificate is a rejection, not a TLS bug.
            if (alert == GNUTLS_A_BAD_CERTIFICATE || alert == GNUTLS_A_CERTIFICATE_UNKNOWN ||
                alert == GNUTLS_A_ACCESS_DENIED || alert == GNUTLS_A_UNSUPPORTED_CERTIFICATE)
                fail(make_error(errc::peer_rejected, text + " (it does not accept our identity)"));
            else
                fail(make_error(errc::tls_error, text));
            return;
        }
        gnutls_alert_send_appropriate(session, err);
        if (rejected)
            fail(*rejected);
        else
            fail(make_error(errc::tls_error,
                            std::string("TLS failed ") + during + ": " + gnutls_strerror(err)));
    }

    void pump() {
        int nonfatal = 0;
        while (state == State::handshaking) {
            int r = gnutls_handshake(session);
            if (r == GNUTLS_E_SUCCESS) {
                if (!peer) {
                    // The verify callback always runs in TLS 1.3; be safe anyway.
                    fail(make_error(errc::peer_rejected, "the peer was not authenticated"));
                    gnutls_alert_send(session, GNUTLS_AL_FATAL, GNUTLS_A_ACCESS_DENIED);
                    return;
                }
                state = State::open;
                authenticated = true;
                break;
            }
            if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) return;
            if (gnutls_error_is_fatal(r) || ++nonfatal > k_max_nonfatal_in_a_row) {
                fail_with(r, "during the handshake");
                return;
            }
        }
        if (state != State::open) return;
        std::uint8_t buf[16384];
        nonfatal = 0;
        for (;;) {
            ssize_t r = gnutls_record_recv(session, buf, sizeof buf);
            if (r > 0) {
                plain.insert(plain.end(), buf, buf + r);
                nonfatal = 0;
                continue;
            }
            if (r == 0) {  // close_notify from the peer: answer it, we are done
                gnutls_bye(session, GNUTLS_SHUT_WR);
                state = State::closed;
                return;
            }
            if (r == GNUTLS_E_AGAIN) return;
            if (r == GNUTLS_E_INTERRUPTED) continue;
            // Key updates are handled inside GnuTLS; renegotiation does not
            // exist in TLS 1.3. Other non-fatal results (warning alerts) are
            // skipped, a bounded number of times.
            if (gnutls_error_is_fatal(static_cast<int>(r)) || ++nonfatal > k_max_nonfatal_in_a_row) {
                fail_with(static_cast<int>(r), "while receiving");
                return;
            }
        }
    }

    void compact_input() {
        if (in_pos == 0) return;
        in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(in_pos));
        in_pos = 0;
    }
};

TlsEngine::TlsEngine(Role role, const Identity& self, std::optional<UserId> expected_peer,
                     std::function<bool(const UserId&)> accept_peer)
    : m_impl(std::make_unique<Impl>(role, self, expected_peer, std::move(accept_peer))) {
    if (auto r = m_impl->setup(); !r) m_impl->fail(r.error());
}

TlsEngine::~TlsEngine() = default;

Result<void> TlsEngine::start() {
    auto& s = *m_impl;
    if (s.state == State::failed) return s.error;
    if (s.started) return {};
    s.started = true;
    s.pump();
    if (s.state == State::failed) return s.error;
    return {};
}

Result<void> TlsEngine::feed(std::span<const std::uint8_t> ciphertext) {
    auto& s = *m_impl;
    if (s.state == State::failed) return s.error;
    if (s.state == State::closed) return {};  // after close_notify nothing more is read
    s.in.insert(s.in.end(), ciphertext.begin(), ciphertext.end());
    s.started = true;  // a server may be fed before start(); that starts it
    s.pump();
    s.compact_input();
    if (s.state == State::failed) return s.error;
    return {};
}

Result<void> TlsEngine::write(std::span<const std::uint8_t> plaintext) {
    auto& s = *m_impl;
    if (s.state == State::failed) return s.error;
    if (s.state != State::open)
        return make_error(errc::tls_error, s.state == State::closed
                                               ? "the connection is closed"
                                               : "the TLS handshake has not finished yet");
    const std::size_t max = std::max<std::size_t>(1, gnutls_record_get_max_size(s.session));
    std::size_t done = 0;
    int retries = 0;
    while (done < plaintext.size()) {
        std::size_t n = std::min(max, plaintext.size() - done);
        ssize_t r = gnutls_record_send(s.session, plaintext.data() + done, n);
        if (r > 0) {
            done += static_cast<std::size_t>(r);
            retries = 0;
            continue;
        }
        // push never blocks, so AGAIN is not expected; retry a little anyway.
        if ((r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) && ++retries < k_max_nonfatal_in_a_row)
            continue;
        s.fail_with(static_cast<int>(r), "while sending");
        return s.error;
    }
    return {};
}

void TlsEngine::close() {
    auto& s = *m_impl;
    if (s.state == State::failed || s.state == State::closed) return;
    if (s.state == State::open)
        gnutls_bye(s.session, GNUTLS_SHUT_WR);
    else if (s.started)
        gnutls_alert_send(s.session, GNUTLS_AL_FATAL, GNUTLS_A_USER_CANCELED);
    s.state = State::closed;
}

Bytes TlsEngine::take_output() {
    Bytes out;
    out.swap(m_impl->out);
    return out;
}

Bytes TlsEngine::take_plaintext() {
    Bytes out;
    out.swap(m_impl->plain);
    return out;
}

TlsEngine::State TlsEngine::state() const {
    return m_impl->state;
}

std::optional<UserId> TlsEngine::peer_id() const {
    if (m_impl->state == State::failed || !m_impl->authenticated) return std::nullopt;
    return m_impl->peer;
}

Result<Bytes> TlsEngine::export_keying_material(std::string_view label, std::size_t length,
                                                std::span<const std::uint8_t> context) const {
    auto& s = *m_impl;
    if (s.state != State::open)
        return make_error(errc::tls_error, "keying material needs an open TLS connection");
    if (length == 0 || length > k_max_export_bytes)
        return make_error(errc::tls_error,
                          "keying material length must be 1.." + std::to_string(k_max_export_bytes));
    Bytes out(length);
    int err = gnutls_prf_rfc5705(s.session, label.size(), label.data(), context.size(),
                                 reinterpret_cast<const char*>(context.data()), length,
                                 reinterpret_cast<char*>(out.data()));
    if (err < 0) return Impl::gnutls_failure("cannot export keying material", err);
    return out;
}

}  // namespace juice::crypto
