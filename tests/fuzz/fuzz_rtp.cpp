// RTP/RTCP (node/include/juice/node/media/rtp.hpp): the whole input goes to
// parse_rtp, is_rtcp and parse_rtcp, as a datagram would.
//   - a parsed RTP packet's payload lies inside the input, and build_rtp of
//     its header and payload parses back to the same header and payload;
//   - every parsed RTCP report (at most 31 blocks, cumulative lost within 24
//     bits) builds and parses back to exactly itself;
// then the input, cut into 10-byte (seq, timestamp, arrival) records, drives
// ReceiverStats, whose report blocks must stay in range.
#include "fuzz.hpp"
#include "juice/node/media/rtp.hpp"

#include <algorithm>
#include <cmath>
#include <string>

using namespace juice;
using namespace juice::node::media;

namespace {

std::uint32_t get32(const std::uint8_t* p) {
    return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

void check_rtp(std::span<const std::uint8_t> input) {
    auto packet = parse_rtp(input);
    if (!packet) {
        fuzz::note("rtp: " + packet.error().message);
        return;
    }
    fuzz::note("rtp: ok");
    const auto& p = *packet;
    JUICE_FUZZ_CHECK(p.header.payload_type <= 127);
    JUICE_FUZZ_CHECK(p.payload.data() >= input.data() + 12);
    JUICE_FUZZ_CHECK(p.payload.data() + p.payload.size() <= input.data() + input.size());

    auto wire = build_rtp(p.header, p.payload);
    JUICE_FUZZ_CHECK(wire.size() == 12 + p.payload.size());
    auto again = parse_rtp(wire);
    JUICE_FUZZ_CHECK(again.ok());
    JUICE_FUZZ_CHECK(again->header == p.header);
    JUICE_FUZZ_CHECK(
        std::equal(again->payload.begin(), again->payload.end(), p.payload.begin(), p.payload.end()));
}

void check_rtcp(std::span<const std::uint8_t> input) {
    auto reports = parse_rtcp(input);
    if (!reports) {
        fuzz::note("rtcp: " + reports.error().message);
        return;
    }
    fuzz::note("rtcp: " + std::to_string(reports->size()) + " reports");
    JUICE_FUZZ_CHECK(!input.empty());
    for (const auto& r : *reports) {
        // What the wire can carry, so the round trip must be exact.
        JUICE_FUZZ_CHECK(r.blocks.size() <= 31);
        for (const auto& b : r.blocks)
            JUICE_FUZZ_CHECK(b.cumulative_lost >= -0x800000 && b.cumulative_lost <= 0x7fffff);
        auto wire = build_rtcp(r);
        JUICE_FUZZ_CHECK(wire.size() == 8 + (r.sender ? 20 : 0) + 24 * r.blocks.size());
        JUICE_FUZZ_CHECK(is_rtcp(wire));
        auto again = parse_rtcp(wire);
        JUICE_FUZZ_CHECK(again.ok());
        JUICE_FUZZ_CHECK(again->size() == 1);
        JUICE_FUZZ_CHECK(again->front() == r);
    }
}

void check_stats(std::span<const std::uint8_t> input) {
    ReceiverStats stats;
    std::uint64_t fed = 0;
    for (std::size_t off = 0; off + 10 <= input.size(); off += 10) {
        const std::uint8_t* p = input.data() + off;
        const auto seq = static_cast<std::uint16_t>(p[0] << 8 | p[1]);
        stats.on_packet(seq, get32(p + 2), get32(p + 6));
        ++fed;
        JUICE_FUZZ_CHECK(stats.received() <= fed);
        JUICE_FUZZ_CHECK(std::isfinite(stats.jitter()) && stats.jitter() >= 0 &&
                         stats.jitter() < 2147483648.0);
        // A report every few packets, chosen by the input.
        if (p[9] % 5 == 0) {
            auto b = stats.make_block(1, 2, 3);
            JUICE_FUZZ_CHECK(b.ssrc == 1 && b.lsr == 2 && b.dlsr == 3);
            JUICE_FUZZ_CHECK(b.highest_seq == stats.extended_max());
            JUICE_FUZZ_CHECK(b.cumulative_lost >= -0x800000 && b.cumulative_lost <= 0x7fffff);
            const std::int64_t lost = stats.lost();
            if (lost >= -0x800000 && lost <= 0x7fffff) JUICE_FUZZ_CHECK(b.cumulative_lost == lost);
        }
    }
    JUICE_FUZZ_CHECK(stats.started() == (fed > 0));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto input = fuzz::bytes(data, size);
    const bool rtcp = is_rtcp(input);
    JUICE_FUZZ_CHECK(rtcp == (size >= 2 && data[1] >= 192 && data[1] <= 223));
    check_rtp(input);
    check_rtcp(input);
    check_stats(input);
    return 0;
}
