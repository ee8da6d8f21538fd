// Identity: RSA key + self-signed certificate with GnuTLS only.
//
// The user id must equal OpenDHT 2.4.12's PublicKey::getId(), which is
// gnutls_pubkey_get_key_id(pk, 0 /* SHA-1 */) over the public key: the SHA-1 of
// the DER SubjectPublicKeyInfo. We compute it the same way from the
// certificate's public key (tests/unit/test_identity.cpp checks it against
// OpenDHT itself).
#include "juice/crypto/identity.hpp"

#include "juice/crypto/errors.hpp"

#include <fcntl.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <system_error>
#include <thread>

namespace juice::crypto {

namespace fs = std::filesystem;

namespace {

constexpr const char* k_key_file = "identity.key";
constexpr const char* k_crt_file = "identity.crt";
// Identity files are a few KiB; anything far bigger is not ours.
constexpr std::uintmax_t k_max_file_size = 1024 * 1024;
constexpr std::size_t k_max_name_bytes = 64;                                        // RFC 5280 ub-common-name
constexpr std::time_t k_validity_seconds = 10LL * 365 * 24 * 3600 + 2 * 24 * 3600;  // 10 years + leap days

std::string gnutls_text(int err) {
    return gnutls_strerror(err);
}

Error gnutls_error(errc e, const std::string& what, int err) {
    return make_error(e, what + " (" + gnutls_text(err) + ")");
}

// RAII wrappers for the few GnuTLS handle types used here.
struct Datum {
    gnutls_datum_t d{nullptr, 0};
    ~Datum() { gnutls_free(d.data); }
    std::string str() const { return std::string(reinterpret_cast<const char*>(d.data), d.size); }
    Bytes bytes() const { return Bytes(d.data, d.data + d.size); }
};

struct PubKey {
    gnutls_pubkey_t k = nullptr;
    PubKey() { gnutls_pubkey_init(&k); }
    ~PubKey() { gnutls_pubkey_deinit(k); }
};

gnutls_datum_t as_datum(const std::string& s) {
    return {reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())), static_cast<unsigned>(s.size())};
}
gnutls_datum_t as_datum(const Bytes& b) {
    return {const_cast<unsigned char*>(b.data()), static_cast<unsigned>(b.size())};
}

Result<UserId> key_id_of_crt(gnutls_x509_crt_t crt) {
    PubKey pub;
    if (!pub.k) return make_error(errc::corrupt_key, "out of memory");
    if (int err = gnutls_pubkey_import_x509(pub.k, crt, 0); err < 0)
        return gnutls_error(errc::corrupt_key, "the certificate's public key cannot be read", err);
    UserId id;
    std::size_t size = id.bytes.size();
    if (int err = gnutls_pubkey_get_key_id(pub.k, GNUTLS_KEYID_USE_SHA1, id.bytes.data(), &size); err < 0)
        return gnutls_error(errc::corrupt_key, "the certificate's key id cannot be computed", err);
    if (size != id.bytes.size())
        return make_error(errc::corrupt_key, "the certificate's key id has a bad size");
    return id;
}

std::string cn_of_crt(gnutls_x509_crt_t crt) {
    std::string cn(256, '\0');
    std::size_t size = cn.size();
    if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn.data(), &size) < 0)
        return {};
    cn.resize(size);
    return cn;
}

}  // namespace

struct Identity::Impl {
    gnutls_x509_privkey_t key = nullptr;
    gnutls_x509_crt_t crt = nullptr;
    UserId id;
    std::string name;
    std::string crt_pem;
    Bytes crt_der;

    Impl() = default;
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;
    ~Impl() {
        if (crt) gnutls_x509_crt_deinit(crt);
        if (key) gnutls_x509_privkey_deinit(key);
    }

    // Takes ownership of key and crt (already stored in *this); fills the
    // cached fields and checks that the two belong together.
    Result<void> finish() {
        if (gnutls_x509_privkey_get_pk_algorithm(key) != GNUTLS_PK_RSA)
            return make_error(errc::corrupt_key, "the identity key is not an RSA key");
        auto crt_id = key_id_of_crt(crt);
        if (!crt_id) return crt_id.error();
        UserId key_id;
        std::size_t size = key_id.bytes.size();
        if (int err = gnutls_x509_privkey_get_key_id(key, GNUTLS_KEYID_USE_SHA1, key_id.bytes.data(), &size);
            err < 0 || size != key_id.bytes.size())
            return make_error(errc::corrupt_key, "the identity key's id cannot be computed");
        if (key_id != *crt_id)
            return make_error(errc::key_mismatch, "the certificate (key id " + crt_id->hex() +
                                                      ") does not belong to the identity key (key id " +
                                                      key_id.hex() + ")");
        id = *crt_id;
        name = cn_of_crt(crt);
        Datum pem, der;
        if (int err = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &pem.d); err < 0)
            return gnutls_error(errc::corrupt_key, "the certificate cannot be exported", err);
        if (int err = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der.d); err < 0)
            return gnutls_error(errc::corrupt_key, "the certificate cannot be exported", err);
        crt_pem = pem.str();
        crt_der = der.bytes();
        return {};
    }
};

// ---- generation -------------------------------------------------------------

namespace {

// Calls `progress` every ~250 ms on a helper thread until destroyed.
class ProgressTicker {
public:
    explicit ProgressTicker(const std::function<void(std::chrono::milliseconds)>& progress) {
        if (!progress) return;
        auto start = std::chrono::steady_clock::now();
        m_thread = std::thread([this, progress, start] {
            std::unique_lock lock(m_mutex);
            while (!m_cv.wait_for(lock, std::chrono::milliseconds(250), [this] { return m_done; })) {
                lock.unlock();
                try {
                    progress(std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - start));
                } catch (...) {
                    // A failing progress display must not kill key generation.
                }
                lock.lock();
            }
        });
    }
    ~ProgressTicker() {
        if (!m_thread.joinable()) return;
        {
            std::lock_guard lock(m_mutex);
            m_done = true;
        }
        m_cv.notify_all();
        m_thread.join();
    }
    ProgressTicker(const ProgressTicker&) = delete;
    ProgressTicker& operator=(const ProgressTicker&) = delete;

private:
    std::mutex m_mutex;
    std::condition_variable m_cv;
    bool m_done = false;
    std::thread m_thread;
};

}  // namespace

Result<Identity> Identity::generate(unsigned bits, const std::string& name,
                                    const std::function<void(std::chrono::milliseconds elapsed)>& progress) {
    if (bits < 2048 || bits > 8192)
        return make_error(errc::generate_failed,
                          "the key size must be between 2048 and 8192 bits, not " + std::to_string(bits));
    if (name.size() > k_max_name_bytes)
        return make_error(errc::generate_failed, "the name is too long (at most 64 bytes)");

    auto impl = std::make_shared<Impl>();
    if (int err = gnutls_x509_privkey_init(&impl->key); err < 0)
        return gnutls_error(errc::generate_failed, "cannot create a key", err);
    {
        ProgressTicker ticker(progress);
        if (int err = gnutls_x509_privkey_generate(impl->key, GNUTLS_PK_RSA, bits, 0); err < 0)
            return gnutls_error(errc::generate_failed, "RSA key generation failed", err);
    }

    auto fail = [](const char* what, int err) { return gnutls_error(errc::generate_failed, what, err); };
    if (int err = gnutls_x509_crt_init(&impl->crt); err < 0) return fail("cannot create a certificate", err);
    gnutls_x509_crt_t crt = impl->crt;

    std::uint8_t serial[16];
    random_bytes(serial);
    serial[0] &= 0x7f;  // a positive INTEGER
    serial[0] |= 0x01;  // and no leading zero byte

    // Self-signed and marked as a CA, like OpenDHT's generated identities, so
    // the same certificate can sign others (e.g. device certificates).
    auto now = std::time(nullptr);
    int err = 0;
    if ((err = gnutls_x509_crt_set_version(crt, 3)) < 0) return fail("certificate version", err);
    if ((err = gnutls_x509_crt_set_key(crt, impl->key)) < 0) return fail("certificate key", err);
    if ((err = gnutls_x509_crt_set_serial(crt, serial, sizeof serial)) < 0)
        return fail("certificate serial", err);
    if ((err = gnutls_x509_crt_set_activation_time(crt, now)) < 0) return fail("certificate validity", err);
    if ((err = gnutls_x509_crt_set_expiration_time(crt, now + k_validity_seconds)) < 0)
        return fail("certificate validity", err);
    if (!name.empty() &&
        (err = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, name.data(),
                                             static_cast<unsigned>(name.size()))) < 0)
        return fail("certificate name", err);
    if ((err = gnutls_x509_crt_set_basic_constraints(crt, 1, -1)) < 0)
        return fail("certificate CA flag", err);
    if ((err = gnutls_x509_crt_set_key_usage(
             crt, GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN)) < 0)
        return fail("certificate key usage", err);
    {
        std::uint8_t key_id[64];
        std::size_t size = sizeof key_id;
        if ((err = gnutls_x509_privkey_get_key_id(impl->key, GNUTLS_KEYID_USE_SHA1, key_id, &size)) < 0)
            return fail("certificate key id", err);
        if ((err = gnutls_x509_crt_set_subject_key_id(crt, key_id, size)) < 0)
            return fail("certificate key id", err);
    }
    if ((err = gnutls_x509_crt_sign2(crt, crt, impl->key, GNUTLS_DIG_SHA256, 0)) < 0)
        return fail("signing the certificate", err);

    if (auto r = impl->finish(); !r) return make_error(errc::generate_failed, r.error().message);
    return Identity(std::move(impl));
}

// ---- loading ----------------------------------------------------------------

namespace {

enum class ReadStatus { ok, missing, failed, too_big };

ReadStatus read_file(const fs::path& path, std::string& out, std::string& why) {
    std::error_code ec;
    auto st = fs::status(path, ec);
    if (ec || !fs::exists(st)) {
        if (ec && ec != std::errc::no_such_file_or_directory) {
            why = ec.message();
            return ReadStatus::failed;
        }
        return ReadStatus::missing;
    }
    if (!fs::is_regular_file(st)) {
        why = "not a regular file";
        return ReadStatus::failed;
    }
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        why = std::strerror(errno);
        return errno == ENOENT ? ReadStatus::missing : ReadStatus::failed;
    }
    out.clear();
    char buf[8192];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            why = std::strerror(errno);
            ::close(fd);
            return ReadStatus::failed;
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > k_max_file_size) {
            ::close(fd);
            return ReadStatus::too_big;
        }
    }
    ::close(fd);
    return ReadStatus::ok;
}

bool contains(const std::string& s, const char* needle) {
    return s.find(needle) != std::string::npos;
}

Result<void> import_key(gnutls_x509_privkey_t key, const std::string& text, const fs::path& path,
                        const std::optional<std::string>& passphrase) {
    const std::string where = " (" + path.string() + ")";
    auto datum = as_datum(text);
    if (contains(text, "-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
        if (!passphrase || passphrase->empty())
            return make_error(errc::passphrase_required,
                              "the identity key is encrypted: a passphrase is required" + where);
        int err = gnutls_x509_privkey_import_pkcs8(key, &datum, GNUTLS_X509_FMT_PEM, passphrase->c_str(), 0);
        if (err >= 0) return {};
        // Without a MAC, a wrong passphrase and a damaged ciphertext look the
        // same; a damaged *envelope* (bad base64, truncated file, bad
        // structure) is told apart by parsing the envelope alone.
        unsigned schema = 0, cipher = 0, iter = 0;
        char salt[64];
        unsigned salt_size = sizeof salt;
        char* oid = nullptr;
        int info =
            gnutls_pkcs8_info(&datum, GNUTLS_X509_FMT_PEM, &schema, &cipher, salt, &salt_size, &iter, &oid);
        gnutls_free(oid);
        if (info < 0)
            return gnutls_error(errc::corrupt_key, "the identity key file is damaged" + where, info);
        if (err == GNUTLS_E_DECRYPTION_FAILED || err == GNUTLS_E_ASN1_DER_ERROR ||
            err == GNUTLS_E_ASN1_TAG_ERROR || err == GNUTLS_E_ASN1_DER_OVERFLOW ||
            err == GNUTLS_E_ASN1_GENERIC_ERROR || err == GNUTLS_E_ASN1_ELEMENT_NOT_FOUND ||
            err == GNUTLS_E_ASN1_VALUE_NOT_FOUND || err == GNUTLS_E_ASN1_TYPE_ANY_ERROR ||
            err == GNUTLS_E_PK_INVALID_PRIVKEY || err == GNUTLS_E_PK_INVALID_PUBKEY_PARAMS)
            return make_error(errc::wrong_passphrase,
                              "the passphrase is wrong: the identity key cannot be decrypted with it");
        return gnutls_error(errc::corrupt_key, "the identity key cannot be read" + where, err);
    }
    int err = 0;
    if (contains(text, "-----BEGIN PRIVATE KEY-----"))
        err = gnutls_x509_privkey_import_pkcs8(key, &datum, GNUTLS_X509_FMT_PEM, nullptr, GNUTLS_PKCS_PLAIN);
    else if (contains(text, "-----BEGIN RSA PRIVATE KEY-----"))
        err = gnutls_x509_privkey_import(key, &datum, GNUTLS_X509_FMT_PEM);
    else
        return make_error(errc::corrupt_key,
                          "the identity key file is damaged: it holds no PEM private key" + where);
    if (err < 0) return gnutls_error(errc::corrupt_key, "the identity key file is damaged" + where, err);
    return {};
}

}  // namespace

bool Identity::exists(const fs::path& dir) {
    std::error_code ec;
    return fs::exists(fs::symlink_status(dir / k_key_file, ec));
}

Result<Identity> Identity::load(const fs::path& dir, const std::optional<std::string>& passphrase) {
    const auto key_path = dir / k_key_file;
    const auto crt_path = dir / k_crt_file;

    std::string key_text, crt_text, why;
    switch (read_file(key_path, key_text, why)) {
        case ReadStatus::ok:
            break;
        case ReadStatus::missing:
            return make_error(errc::not_found, "no identity in " + dir.string() + ": create one first");
        case ReadStatus::too_big:
            return make_error(errc::corrupt_key,
                              "the identity key file is too big to be a key (" + key_path.string() + ")");
        case ReadStatus::failed:
            return make_error(errc::io_error, "cannot read " + key_path.string() + ": " + why);
    }
    switch (read_file(crt_path, crt_text, why)) {
        case ReadStatus::ok:
            break;
        case ReadStatus::missing:
            return make_error(errc::corrupt_key, "the identity certificate " + crt_path.string() +
                                                     " is missing (the key is there)");
        case ReadStatus::too_big:
            return make_error(errc::corrupt_key,
                              "the identity certificate file is too big (" + crt_path.string() + ")");
        case ReadStatus::failed:
            return make_error(errc::io_error, "cannot read " + crt_path.string() + ": " + why);
    }

    return from_pem(key_text, crt_text, passphrase, key_path, crt_path);
}

Result<Identity> Identity::from_pem(const std::string& key_text, const std::string& crt_text,
                                    const std::optional<std::string>& passphrase, const fs::path& key_path,
                                    const fs::path& crt_path) {
    if (key_text.size() > k_max_file_size || crt_text.size() > k_max_file_size)
        return make_error(errc::corrupt_key, "the identity files are too big to be a key and a certificate");
    auto impl = std::make_shared<Impl>();
    if (int err = gnutls_x509_privkey_init(&impl->key); err < 0)
        return gnutls_error(errc::io_error, "cannot create a key", err);
    if (auto r = import_key(impl->key, key_text, key_path, passphrase); !r) return r.error();
    // Catches keys whose numbers are inconsistent (bit rot in a plain key).
    if (int err = gnutls_x509_privkey_verify_params(impl->key); err < 0)
        return gnutls_error(errc::corrupt_key, "the identity key is damaged (" + key_path.string() + ")",
                            err);

    if (int err = gnutls_x509_crt_init(&impl->crt); err < 0)
        return gnutls_error(errc::io_error, "cannot create a certificate", err);
    auto crt_datum = as_datum(crt_text);
    if (int err = gnutls_x509_crt_import(impl->crt, &crt_datum, GNUTLS_X509_FMT_PEM); err < 0)
        return gnutls_error(errc::corrupt_key,
                            "the identity certificate is damaged (" + crt_path.string() + ")", err);
    if (auto r = impl->finish(); !r) return r.error();

    // The certificate must be self-signed by this key (time checks off: an
    // expired certificate still names the same key).
    unsigned status = 0;
    int err = gnutls_x509_crt_verify(
        impl->crt, &impl->crt, 1,
        GNUTLS_VERIFY_DISABLE_TIME_CHECKS | GNUTLS_VERIFY_DISABLE_TRUSTED_TIME_CHECKS, &status);
    if (err < 0 || (status & GNUTLS_CERT_SIGNATURE_FAILURE))
        return make_error(errc::corrupt_key,
                          "the identity certificate's signature is invalid (" + crt_path.string() + ")");
    return Identity(std::move(impl));
}

// ---- saving -----------------------------------------------------------------

namespace {

Result<void> sync_dir(const fs::path& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return make_error(errc::io_error, "cannot open " + dir.string() + ": " + std::strerror(errno));
    ::fsync(fd);
    ::close(fd);
    return {};
}

// Writes `data` to a fresh temp file in `dir` (mode 0600, fsynced) and moves
// it to `name`. With no_replace, an existing target makes it fail (link(2)
// is atomic and refuses to replace).
Result<void> write_atomic(const fs::path& dir, const char* name, const std::string& data, bool no_replace) {
    std::uint8_t rnd[8];
    random_bytes(rnd);
    const fs::path tmp = dir / ("." + std::string(name) + ".tmp-" + to_hex(rnd));
    const fs::path target = dir / name;
    auto io_fail = [&](const std::string& what) {
        auto msg = what + " " + target.string() + ": " + std::strerror(errno);
        ::unlink(tmp.c_str());
        return make_error(errc::io_error, msg);
    };

    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return make_error(errc::io_error, "cannot create " + tmp.string() + ": " + std::strerror(errno));
    if (::fchmod(fd, 0600) != 0) {
        ::close(fd);
        return io_fail("cannot set the mode of");
    }
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            ::close(fd);
            return io_fail("cannot write");
        }
        done += static_cast<std::size_t>(n);
    }
    if (::fsync(fd) != 0) {
        ::close(fd);
        return io_fail("cannot sync");
    }
    if (::close(fd) != 0) return io_fail("cannot write");

    if (no_replace) {
        if (::link(tmp.c_str(), target.c_str()) != 0) {
            if (errno == EEXIST) {
                ::unlink(tmp.c_str());
                return make_error(errc::io_error, "an identity already exists in " + dir.string() +
                                                      ": refusing to overwrite its key");
            }
            return io_fail("cannot create");
        }
        ::unlink(tmp.c_str());
    } else if (::rename(tmp.c_str(), target.c_str()) != 0) {
        return io_fail("cannot replace");
    }
    return {};
}

}  // namespace

Result<void> Identity::save(const fs::path& dir, const std::optional<std::string>& passphrase) const {
    std::error_code ec;
    if (!fs::exists(dir, ec)) {
        if (dir.has_parent_path() && !dir.parent_path().empty())
            fs::create_directories(dir.parent_path(), ec);
        if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
            return make_error(errc::io_error, "cannot create " + dir.string() + ": " + std::strerror(errno));
        ::chmod(dir.c_str(), 0700);  // mkdir's mode is filtered by the umask
    } else if (!fs::is_directory(dir, ec)) {
        return make_error(errc::io_error, dir.string() + " exists and is not a directory");
    }
    if (exists(dir))
        return make_error(errc::io_error, "an identity already exists in " + dir.string() +
                                              ": refusing to overwrite its key");

    Datum key_pem;
    int err = 0;
    if (passphrase && !passphrase->empty())
        err = gnutls_x509_privkey_export2_pkcs8(m_impl->key, GNUTLS_X509_FMT_PEM, passphrase->c_str(),
                                                GNUTLS_PKCS_PBES2_AES_256, &key_pem.d);
    else
        err = gnutls_x509_privkey_export2_pkcs8(m_impl->key, GNUTLS_X509_FMT_PEM, nullptr, GNUTLS_PKCS_PLAIN,
                                                &key_pem.d);
    if (err < 0) return gnutls_error(errc::io_error, "cannot export the identity key", err);

    // The certificate first, the key last: a crash in between leaves no key,
    // which reads as "no identity" and may be written again.
    if (auto r = write_atomic(dir, k_crt_file, m_impl->crt_pem, false); !r) return r;
    if (auto r = write_atomic(dir, k_key_file, key_pem.str(), true); !r) return r;
    return sync_dir(dir);
}

// ---- accessors --------------------------------------------------------------

UserId Identity::id() const {
    return m_impl->id;
}
std::string Identity::certificate_pem() const {
    return m_impl->crt_pem;
}
Bytes Identity::certificate_der() const {
    return m_impl->crt_der;
}
std::string Identity::certificate_name() const {
    return m_impl->name;
}
void* Identity::gnutls_privkey() const {
    return m_impl->key;
}
void* Identity::gnutls_certificate() const {
    return m_impl->crt;
}

std::string Identity::private_key_pem() const {
    Datum pem;
    if (gnutls_x509_privkey_export2_pkcs8(m_impl->key, GNUTLS_X509_FMT_PEM, nullptr, GNUTLS_PKCS_PLAIN,
                                          &pem.d) < 0)
        return {};
    return pem.str();
}

Result<UserId> user_id_of_certificate(const Bytes& cert) {
    gnutls_x509_crt_t crt = nullptr;
    if (gnutls_x509_crt_init(&crt) < 0) return make_error(errc::corrupt_key, "out of memory");
    auto datum = as_datum(cert);
    int err = gnutls_x509_crt_import(crt, &datum, GNUTLS_X509_FMT_DER);
    if (err < 0) err = gnutls_x509_crt_import(crt, &datum, GNUTLS_X509_FMT_PEM);
    if (err < 0) {
        gnutls_x509_crt_deinit(crt);
        return gnutls_error(errc::corrupt_key, "this is not an X.509 certificate", err);
    }
    auto id = key_id_of_crt(crt);
    gnutls_x509_crt_deinit(crt);
    return id;
}

}  // namespace juice::crypto
