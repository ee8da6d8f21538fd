// DHT presence records: decode_presence, and what decodes must re-encode and
// decode to the same record.
#include "fuzz.hpp"
#include "juice/dht/presence.hpp"

using namespace juice;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto record = dht::decode_presence(fuzz::bytes(data, size));
    if (!record) return 0;
    auto wire = dht::encode_presence(*record);
    auto again = dht::decode_presence(wire);
    JUICE_FUZZ_CHECK(again.ok());
    JUICE_FUZZ_CHECK(*again == *record);
    return 0;
}
