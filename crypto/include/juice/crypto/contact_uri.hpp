// Contact URIs: the shareable form of a user id.
//
//   juice:<40 hex id>?name=<percent-encoded name>&c=<4 hex checksum>
//
// The checksum is the first 2 bytes of SHA-256 over the 20 raw id bytes, so a
// mistyped id is caught before it becomes a contact. `name` is optional
// (at most 64 bytes of UTF-8 after decoding). A bare 40-hex id is accepted by
// parse_contact() too. Parsing never throws.
#pragma once

#include "juice/crypto/ids.hpp"
#include "juice/crypto/result.hpp"

#include <string>
#include <string_view>

namespace juice::crypto {

struct ContactUri {
    UserId id;
    std::string name;  // may be empty
    bool operator==(const ContactUri&) const = default;
};

std::string format_contact_uri(const ContactUri& uri);

// Accepts "juice:..." URIs (checksum required and checked) and bare 40-hex
// ids. Errors: bad_uri (with a message saying what is wrong), bad_checksum.
Result<ContactUri> parse_contact(std::string_view text);

}  // namespace juice::crypto
