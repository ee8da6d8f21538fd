// Error codes of the crypto module.
#pragma once

#include <system_error>

namespace juice::crypto {

enum class errc {
    not_found = 1,        // no identity in the data directory
    wrong_passphrase,     // the key file decrypts to garbage with this passphrase
    passphrase_required,  // the key is encrypted and no passphrase was given
    corrupt_key,          // the key or certificate file cannot be parsed
    key_mismatch,         // certificate and key do not belong together
    io_error,             // reading or writing a file failed
    generate_failed,      // key or certificate generation failed
    bad_uri,              // a contact URI does not parse
    bad_checksum,         // a contact URI parses but its checksum is wrong (a typo)
    tls_error,            // the TLS layer failed (handshake, record, alert)
    peer_rejected,        // the peer's key is not the one expected / not allowed
};

const std::error_category& error_category() noexcept;
inline std::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

}  // namespace juice::crypto

template <>
struct std::is_error_code_enum<juice::crypto::errc> : std::true_type {};
