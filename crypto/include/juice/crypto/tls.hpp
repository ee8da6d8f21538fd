// A sans-I/O TLS 1.3 endpoint over GnuTLS: bytes in, bytes out. The caller
// moves ciphertext between the engine and its socket; the engine never does
// I/O itself, so unit tests can wire two engines back to back in memory.
//
// Both sides present their identity's certificate (mutual authentication).
// Certificates are self-signed, so trust is not a CA chain: it is the peer's
// key id. TLS 1.3's CertificateVerify proves the peer holds the private key of
// the certificate it sent, so the key id of that certificate is who we talk
// to. The check:
//   client: the peer's id must equal `expected_peer` (the contact it dialled)
//   server: `accept_peer(id)` must return true (known contact)
// A failed check ends the handshake with errc::peer_rejected and an alert.
//
// Thread safety: none; one engine is used by one thread.
#pragma once

#include "juice/crypto/identity.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <span>

namespace juice::crypto {

class TlsEngine {
public:
    enum class Role { client, server };
    enum class State { handshaking, open, closed, failed };

    // Client: expected_peer must be set. Server: accept_peer must be set.
    TlsEngine(Role role, const Identity& self, std::optional<UserId> expected_peer,
              std::function<bool(const UserId&)> accept_peer = {});
    ~TlsEngine();
    TlsEngine(const TlsEngine&) = delete;
    TlsEngine& operator=(const TlsEngine&) = delete;

    // Starts the handshake (the client produces its ClientHello here).
    Result<void> start();

    // Ciphertext received from the socket. Advances the handshake and
    // decrypts records; plaintext becomes available through take_plaintext().
    // Returns an error once the connection failed (state() == failed); the
    // error says why (peer_rejected, tls_error with GnuTLS's text).
    Result<void> feed(std::span<const std::uint8_t> ciphertext);

    // Queues application data for encryption. Only valid in state open.
    Result<void> write(std::span<const std::uint8_t> plaintext);

    // Sends a close_notify; the state becomes closed.
    void close();

    // Drains the ciphertext the engine wants sent (may be empty).
    Bytes take_output();
    // Drains the decrypted application data received so far (may be empty).
    Bytes take_plaintext();

    State state() const;
    // The authenticated peer id; set once the handshake succeeded.
    std::optional<UserId> peer_id() const;
    // RFC 5705 keying material exporter (for SRTP keys); only in state open.
    // A non-empty `context` (e.g. a call id) gives keys unique to it; with
    // TLS 1.3 an empty context and no context export the same value.
    Result<Bytes> export_keying_material(std::string_view label, std::size_t length,
                                         std::span<const std::uint8_t> context = {}) const;

    struct Impl;

private:
    std::unique_ptr<Impl> m_impl;
};

}  // namespace juice::crypto
