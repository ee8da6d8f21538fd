// A user's identity: an RSA key pair plus a self-signed X.509 certificate,
// the same material OpenDHT's crypto::Identity holds, handled with GnuTLS
// only (this layer must not include OpenDHT).
//
// On disk (data directory, files mode 0600, directory 0700):
//   identity.key  PKCS#8 PEM, encrypted with PBES2/AES-256 under the
//                 passphrase, or unencrypted when created with no passphrase
//   identity.crt  X.509 PEM, self-signed, CN = display name at creation
// Writes are atomic (temp file + rename) and never replace an existing key.
//
// Thread safety: an Identity is immutable after creation/loading and may be
// read from any thread.
#pragma once

#include "juice/crypto/ids.hpp"
#include "juice/crypto/result.hpp"

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace juice::crypto {

class Identity {
public:
    // Generates a new RSA key of `bits` bits (2048..8192) and a self-signed
    // certificate valid for 10 years with CN = name. Blocks: 4096 bits takes
    // seconds. `progress`, if set, is called about every 250 ms from another
    // thread with the elapsed time, so a caller can show that work goes on.
    static Result<Identity> generate(
        unsigned bits, const std::string& name,
        const std::function<void(std::chrono::milliseconds elapsed)>& progress = {});

    // Loads identity.key / identity.crt from `dir`. `passphrase` nullopt means
    // "none given": an encrypted key then fails with passphrase_required.
    // Errors: not_found, passphrase_required, wrong_passphrase, corrupt_key,
    // key_mismatch, io_error. Never modifies the files.
    static Result<Identity> load(const std::filesystem::path& dir,
                                 const std::optional<std::string>& passphrase);

    // The parsing half of load(): a PKCS#8 PEM key (encrypted or not, or a
    // PKCS#1 "RSA PRIVATE KEY") and an X.509 PEM certificate, already read.
    // The paths only name the files in error messages. Same errors as load()
    // except not_found and io_error; never throws (fuzzed: tests/fuzz).
    static Result<Identity> from_pem(const std::string& key_pem, const std::string& crt_pem,
                                     const std::optional<std::string>& passphrase,
                                     const std::filesystem::path& key_path = "identity.key",
                                     const std::filesystem::path& crt_path = "identity.crt");

    // True if `dir` holds an identity.key (whether or not it is loadable).
    static bool exists(const std::filesystem::path& dir);

    // Writes the two files into `dir` (created 0700 if missing). An empty or
    // nullopt passphrase stores the key unencrypted. Fails with io_error if an
    // identity.key already exists: a key is never overwritten.
    Result<void> save(const std::filesystem::path& dir, const std::optional<std::string>& passphrase) const;

    UserId id() const;
    std::string certificate_pem() const;
    Bytes certificate_der() const;
    // Unencrypted PKCS#8 PEM of the private key, for handing to OpenDHT in
    // memory. Never write this to disk.
    std::string private_key_pem() const;
    // The CN of the certificate (the display name at creation time).
    std::string certificate_name() const;

    // Opaque GnuTLS handles, for the TLS engine (gnutls_x509_privkey_t,
    // gnutls_x509_crt_t). Valid as long as this Identity (or a copy) lives.
    void* gnutls_privkey() const;
    void* gnutls_certificate() const;

    struct Impl;  // shared, immutable

private:
    explicit Identity(std::shared_ptr<const Impl> impl) : m_impl(std::move(impl)) {}
    std::shared_ptr<const Impl> m_impl;
};

// The user id (SHA-1 key id of the public key) of a DER or PEM certificate.
Result<UserId> user_id_of_certificate(const Bytes& cert_der);

}  // namespace juice::crypto
