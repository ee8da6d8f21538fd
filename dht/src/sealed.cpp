#include "juice/dht/sealed.hpp"

#include "juice/dht/node.hpp"
#include "juice/dht/presence.hpp"
#include "sealed_internal.hpp"

#include <cstring>

namespace juice::dht {

namespace odht = ::dht;

namespace detail {

std::shared_ptr<odht::Value> open_sealed_value(const odht::crypto::PrivateKey& key, std::uint64_t id,
                                               std::span<const std::uint8_t> sealed, std::string* why,
                                               std::uint16_t type) {
    auto fail = [why](const char* reason) -> std::shared_ptr<odht::Value> {
        if (why) *why = reason;
        return nullptr;
    };
    if (sealed.empty() || sealed.size() > k_max_sealed_value) return fail("empty or over 64 KiB");
    std::shared_ptr<odht::Value> inner;
    try {
        odht::Value v;
        v.id = id;
        v.cypher.assign(sealed.begin(), sealed.end());
        inner = v.decrypt(key);  // checks recipient and signature
    } catch (const std::exception& e) {
        if (why) *why = std::string("it does not open: ") + e.what();
        return nullptr;
    }
    if (!inner || inner->type != type || !inner->owner) return fail("a value of another type");
    return inner;
}

}  // namespace detail

struct InboxOpener::Impl {
    std::shared_ptr<const odht::crypto::PrivateKey> key;
};

Result<InboxOpener> InboxOpener::create(const crypto::Identity& identity) {
    try {
        auto pem = identity.private_key_pem();
        auto impl = std::make_shared<Impl>();
        impl->key = std::make_shared<odht::crypto::PrivateKey>(odht::Blob(pem.begin(), pem.end()), "");
        return InboxOpener(std::move(impl));
    } catch (const std::exception& e) {
        return make_error(errc::start_failed,
                          std::string("the identity key could not be loaded: ") + e.what());
    }
}

std::optional<OpenedInboxValue> InboxOpener::open(std::uint64_t id, std::span<const std::uint8_t> sealed,
                                                  std::string* why) const {
    auto inner = detail::open_sealed_value(*m_impl->key, id, sealed, why, k_inbox_type_id);
    if (!inner) return std::nullopt;
    OpenedInboxValue out;
    const auto& owner = inner->owner->getId();
    std::memcpy(out.from.bytes.data(), owner.data(), out.from.bytes.size());
    out.payload.assign(inner->data.begin(), inner->data.end());
    return out;
}

}  // namespace juice::dht
