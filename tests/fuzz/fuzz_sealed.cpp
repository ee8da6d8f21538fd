// Sealed DHT inbox values: InboxOpener::open with a fixed test identity as
// the recipient (the seed corpus holds values really sealed to it). What
// opens goes on through decode_inbox_chunk, as in the daemon.
#include "fuzz.hpp"
#include "juice/dht/sealed.hpp"
#include "juice/node/inbox.hpp"
#include "test_identity.hpp"

using namespace juice;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const dht::InboxOpener opener = [] {
        auto id =
            crypto::Identity::from_pem(fuzz::k_recipient_key_pem, fuzz::k_recipient_crt_pem, std::nullopt);
        JUICE_FUZZ_CHECK(id.ok());
        auto o = dht::InboxOpener::create(*id);
        JUICE_FUZZ_CHECK(o.ok());
        return *o;
    }();
    std::string why;
    auto opened = opener.open(1, fuzz::bytes(data, size), &why);
    if (!opened) {
        JUICE_FUZZ_CHECK(!why.empty());
        fuzz::note(why);
        return 0;
    }
    auto chunk = node::decode_inbox_chunk(opened->payload);
    fuzz::note(chunk ? "opened, a chunk" : "opened, not a chunk");
    return 0;
}
