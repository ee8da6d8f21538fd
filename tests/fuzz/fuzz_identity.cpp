// Identity key files: Identity::from_pem (the parsing half of load()).
// Input: key bytes, a NUL, certificate bytes, and optionally a NUL and a
// passphrase (PEM never holds a NUL byte).
#include "fuzz.hpp"
#include "juice/crypto/identity.hpp"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <string>

using namespace juice;

namespace {

// An encrypted key's PBKDF2 iteration count is in the (user's own) file, and
// GnuTLS honours any count: a mutated count of millions only makes the
// fuzzer slow, it finds nothing. Such inputs are skipped.
bool too_slow(const std::string& key) {
    if (key.find("ENCRYPTED") == std::string::npos) return false;
    gnutls_datum_t d{reinterpret_cast<unsigned char*>(const_cast<char*>(key.data())),
                     static_cast<unsigned>(key.size())};
    unsigned schema = 0, cipher = 0, iter = 0;
    char salt[64];
    unsigned salt_size = sizeof salt;
    char* oid = nullptr;
    int err = gnutls_pkcs8_info(&d, GNUTLS_X509_FMT_PEM, &schema, &cipher, salt, &salt_size, &iter, &oid);
    gnutls_free(oid);
    return err >= 0 && iter > 20000;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto input = fuzz::text(data, size);
    auto cut = input.find('\0');
    if (cut == std::string_view::npos) return 0;
    std::string key(input.substr(0, cut));
    auto rest = input.substr(cut + 1);
    std::optional<std::string> passphrase;
    if (auto cut2 = rest.find('\0'); cut2 != std::string_view::npos) {
        passphrase = std::string(rest.substr(cut2 + 1));
        rest = rest.substr(0, cut2);
    }
    std::string crt(rest);
    if (passphrase && !passphrase->empty() && too_slow(key)) return 0;

    auto id = crypto::Identity::from_pem(key, crt, passphrase);
    if (!id) {
        JUICE_FUZZ_CHECK(!id.error().message.empty());
        fuzz::note(id.error().message);
        return 0;
    }
    // A loaded identity is usable: its id matches its certificate.
    auto cert_id = crypto::user_id_of_certificate(id->certificate_der());
    JUICE_FUZZ_CHECK(cert_id.ok() && *cert_id == id->id());
    JUICE_FUZZ_CHECK(!id->private_key_pem().empty());
    fuzz::note("loaded");
    return 0;
}
