// Link frames: decode_frame_body on the whole input, with the round-trip
// property (what decodes re-encodes and decodes to the same frame), and
// FrameDecoder on the input as a byte stream cut into uneven pieces.
#include "fuzz.hpp"
#include "juice/node/frame.hpp"

using namespace juice;
using namespace juice::node;

namespace {

void check_round_trip(const Frame& frame) {
    if (std::holds_alternative<UnknownFrame>(frame)) {
        JUICE_FUZZ_CHECK(encode_frame(frame).empty());
        return;
    }
    auto wire = encode_frame(frame);
    // Decoding enforces the encoder's limits, so a decoded frame must encode.
    JUICE_FUZZ_CHECK(wire.size() > 4);
    const std::size_t n =
        (std::size_t(wire[0]) << 24) | (std::size_t(wire[1]) << 16) | (std::size_t(wire[2]) << 8) | wire[3];
    JUICE_FUZZ_CHECK(n == wire.size() - 4);
    auto again = decode_frame_body(std::span(wire).subspan(4));
    JUICE_FUZZ_CHECK(again.ok());
    JUICE_FUZZ_CHECK(*again == frame);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto input = fuzz::bytes(data, size);

    if (auto frame = decode_frame_body(input); frame) check_round_trip(*frame);

    // The same bytes as a stream; piece sizes come from the input itself so
    // the fuzzer can explore frames split anywhere.
    FrameDecoder dec;
    std::size_t pos = 0, step = size ? 1 + data[0] % 7 : 1;
    bool failed = false;
    while (pos < size && !failed) {
        auto n = std::min(step, size - pos);
        dec.feed(input.subspan(pos, n));
        pos += n;
        step = 1 + (step * 31 + n) % 97;
        while (auto r = dec.next()) {
            if (!r->ok()) {
                failed = true;
                // After an error the stream stays failed.
                dec.feed(input.first(std::min<std::size_t>(size, 8)));
                auto again = dec.next();
                JUICE_FUZZ_CHECK(again && !again->ok());
                break;
            }
            check_round_trip(**r);
        }
    }
    return 0;
}
