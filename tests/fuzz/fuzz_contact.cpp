// Contact URIs: parse_contact, and what parses must format and parse to the
// same contact.
#include "fuzz.hpp"
#include "juice/crypto/contact_uri.hpp"

using namespace juice;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto uri = crypto::parse_contact(fuzz::text(data, size));
    if (!uri) return 0;
    JUICE_FUZZ_CHECK(uri->name.size() <= 64);
    auto again = crypto::parse_contact(crypto::format_contact_uri(*uri));
    JUICE_FUZZ_CHECK(again.ok());
    JUICE_FUZZ_CHECK(*again == *uri);
    return 0;
}
