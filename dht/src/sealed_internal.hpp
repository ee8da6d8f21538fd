// OpenDHT-typed core of sealed.hpp, shared by DhtNode's inbox watch (which
// also needs the sender's key object) and InboxOpener. dht/ only.
#pragma once

#include <opendht/crypto.h>
#include <opendht/value.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace juice::dht::detail {

// The inner value if `sealed` opens with `key` (see sealed.hpp for the
// checks), else nullptr with the reason in `why` (if given). Never throws.
// `type`: the inner value's type must be this one (the outer value's).
std::shared_ptr<::dht::Value> open_sealed_value(const ::dht::crypto::PrivateKey& key, std::uint64_t id,
                                                std::span<const std::uint8_t> sealed, std::string* why,
                                                std::uint16_t type);

}  // namespace juice::dht::detail
