#include "juice/crypto/errors.hpp"

#include <string>

namespace juice::crypto {
namespace {

class CryptoCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "juice.crypto"; }

    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
            case errc::not_found:
                return "no identity found in the data directory: create one first";
            case errc::wrong_passphrase:
                return "the passphrase is wrong: the identity key cannot be decrypted with it";
            case errc::passphrase_required:
                return "the identity key is encrypted: a passphrase is required";
            case errc::corrupt_key:
                return "the identity key or certificate file is damaged and cannot be read";
            case errc::key_mismatch:
                return "the identity certificate does not belong to the identity key";
            case errc::io_error:
                return "reading or writing an identity file failed";
            case errc::generate_failed:
                return "generating the identity key or certificate failed";
            case errc::bad_uri:
                return "this is not a valid juice contact (expected juice:<40 hex digits>?...)";
            case errc::bad_checksum:
                return "the contact's checksum does not match: check the id for a typo";
            case errc::tls_error:
                return "the encrypted connection failed";
            case errc::peer_rejected:
                return "the peer is not the contact we expected or is not allowed";
        }
        return "unknown crypto error " + std::to_string(ev);
    }
};

}  // namespace

const std::error_category& error_category() noexcept {
    static const CryptoCategory category;
    return category;
}

}  // namespace juice::crypto
