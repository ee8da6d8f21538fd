// Opening sealed inbox values: the receiving half of DhtNode::seal_inbox,
// without a DHT. DhtNode's inbox watch uses the same code (src/sealed.cpp);
// this public form exists so tests and the fuzzer (tests/fuzz) can drive it
// with a fixed identity.
//
// A sealed value is OpenDHT's Value::encrypt output: an RSA-encrypted AES key
// plus an AES-GCM box holding a msgpack Value that is signed by the sender and
// names the recipient. It opens only if it decrypts with our key, names us as
// recipient, carries a valid signature, has type k_inbox_type_id and an owner.
#pragma once

#include "juice/crypto/identity.hpp"
#include "juice/crypto/ids.hpp"
#include "juice/crypto/result.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

namespace juice::dht {

// Sealed values over this size are never opened (OpenDHT's value cap).
inline constexpr std::size_t k_max_sealed_value = 64 * 1024;

struct OpenedInboxValue {
    UserId from;    // the signer (the sender)
    Bytes payload;  // what the sender sealed
};

class InboxOpener {
public:
    // Loads `identity`'s private key for decryption. Errors: start_failed
    // (OpenDHT could not read the key). Blocks for a key parse (cheap).
    static Result<InboxOpener> create(const crypto::Identity& identity);

    // Opens one sealed value (`id` is its OpenDHT value id). nullopt, with the
    // reason in `why` if given, for anything that does not open. Never throws;
    // CPU-bound (one RSA decryption and one signature check). Any thread.
    std::optional<OpenedInboxValue> open(std::uint64_t id, std::span<const std::uint8_t> sealed,
                                         std::string* why = nullptr) const;

    struct Impl;

private:
    explicit InboxOpener(std::shared_ptr<const Impl> impl) : m_impl(std::move(impl)) {}
    std::shared_ptr<const Impl> m_impl;
};

}  // namespace juice::dht
