// Inbox bundles: the input is a run of records, each a 2-byte big-endian
// length and that many bytes. Each record goes through decode_inbox_chunk
// (round trip checked) and into a BundleAssembler; a completed bundle goes
// through decode_bundle. The whole input is also decoded as a bundle.
#include "fuzz.hpp"
#include "juice/node/inbox.hpp"

using namespace juice;
using namespace juice::node;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto input = fuzz::bytes(data, size);

    if (auto frames = decode_bundle(input); frames) JUICE_FUZZ_CHECK(!frames->empty());

    BundleAssembler assembler;
    auto now = BundleAssembler::Clock::time_point{} + std::chrono::hours(1);
    UserId users[2];
    users[1].bytes[0] = 1;
    std::size_t pos = 0;
    while (pos + 2 <= size) {
        std::size_t len = (std::size_t(data[pos]) << 8) | data[pos + 1];
        pos += 2;
        len = std::min(len, size - pos);
        auto record = input.subspan(pos, len);
        pos += len;

        auto chunk = decode_inbox_chunk(record);
        if (!chunk) continue;
        JUICE_FUZZ_CHECK(chunk->count >= 1 && chunk->count <= k_max_bundle_chunks);
        JUICE_FUZZ_CHECK(chunk->index < chunk->count);
        auto again = decode_inbox_chunk(encode_inbox_chunk(*chunk));
        JUICE_FUZZ_CHECK(again.ok() && *again == *chunk);

        // The low bits of the bundle id pick the sender and how much time passes.
        const auto& from = users[chunk->bundle & 1];
        now += std::chrono::minutes((chunk->bundle >> 1) & 15);
        if (auto bundle = assembler.add(from, std::move(*chunk), now)) {
            if (auto frames = decode_bundle(*bundle); frames) JUICE_FUZZ_CHECK(!frames->empty());
        }
        JUICE_FUZZ_CHECK(assembler.partial() <= BundleAssembler::k_max_partial);
    }
    return 0;
}
