#include "juice/node/media/rtp.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

using namespace juice;
using namespace juice::node::media;

namespace {

template <class T>
rtp_errc code_of(const Result<T>& r) {
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code.category() == rtp_error_category());
    CHECK_FALSE(r.error().message.empty());
    return static_cast<rtp_errc>(r.error().code.value());
}

Bytes cat(std::initializer_list<Bytes> parts) {
    Bytes out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

Bytes payload_of(const RtpPacket& p) {
    return Bytes(p.payload.begin(), p.payload.end());
}

ReportBlock sample_block(std::uint32_t ssrc, std::int32_t lost) {
    return {ssrc, 25, lost, 0x0001000a, 32, 0x7e800000, 0x00018000};
}

// An RR (PT 201) from SSRC 0x11223344 with one block, RFC 3550 6.4.2.
const Bytes k_rr = {
    0x81, 0xc9, 0x00, 0x07,  // V=2 P=0 RC=1, PT=201, length 7 (32 bytes)
    0x11, 0x22, 0x33, 0x44,  // reporter SSRC
    0x55, 0x66, 0x77, 0x88,  // block: SSRC of source
    0x00, 0xff, 0xff, 0xfe,  // fraction 0, cumulative lost -2 (24-bit)
    0x00, 0x02, 0xff, 0xff,  // extended highest seq: 2 cycles + 65535
    0x00, 0x00, 0x01, 0x00,  // jitter 256
    0x00, 0x00, 0x00, 0x00,  // LSR: none yet
    0x00, 0x00, 0x00, 0x00,  // DLSR
};

// An SDES (PT 202) with one chunk: CNAME "alice", null-terminated to a word.
const Bytes k_sdes = {
    0x81, 0xca, 0x00, 0x03,                       // V=2 SC=1, PT=202, length 3 (16 bytes)
    0x11, 0x22, 0x33, 0x44,                       // SSRC
    0x01, 0x05, 'a',  'l',  'i', 'c', 'e', 0x00,  // CNAME, len 5, "alice", end
};

// A BYE (PT 203) for one source.
const Bytes k_bye = {0x81, 0xcb, 0x00, 0x01, 0x11, 0x22, 0x33, 0x44};

// An empty RR (RC=0) from 0x0a0b0c0d.
const Bytes k_empty_rr = {0x80, 0xc9, 0x00, 0x01, 0x0a, 0x0b, 0x0c, 0x0d};

}  // namespace

// ---- RTP -----------------------------------------------------------------------

TEST_CASE("rtp: the header matches RFC 3550 5.1 byte for byte", "[rtp]") {
    RtpHeader h{111, true, 0x1234, 0xdeadbeef, 0x01020304};
    const Bytes payload{0xaa, 0xbb, 0xcc};
    const Bytes expected{
        0x80,                    // V=2, P=0, X=0, CC=0
        0xef,                    // M=1, PT=111
        0x12, 0x34,              // sequence number
        0xde, 0xad, 0xbe, 0xef,  // timestamp
        0x01, 0x02, 0x03, 0x04,  // SSRC
        0xaa, 0xbb, 0xcc,        // payload
    };
    CHECK(build_rtp(h, payload) == expected);

    auto p = parse_rtp(expected);
    REQUIRE(p);
    CHECK(p->header == h);
    CHECK(payload_of(*p) == payload);
    CHECK(p->payload.data() == expected.data() + 12);  // a view into the buffer
}

TEST_CASE("rtp: round trips", "[rtp]") {
    const Bytes big(1500, 0x5a);
    for (const RtpHeader h :
         {RtpHeader{}, RtpHeader{111, false, 0, 0, 0}, RtpHeader{127, true, 0xffff, 0xffffffff, 0xffffffff},
          RtpHeader{0, true, 1, 960, 42}}) {
        for (const Bytes& payload : {Bytes{}, Bytes{1}, big}) {
            auto wire = build_rtp(h, payload);
            CHECK(wire.size() == 12 + payload.size());
            auto p = parse_rtp(wire);
            REQUIRE(p);
            CHECK(p->header == h);
            CHECK(payload_of(*p) == payload);
        }
    }
}

TEST_CASE("rtp: CSRCs, header extension and padding are not payload", "[rtp]") {
    const Bytes fixed{0x00, 0x6f, 0x00, 0x07, 0x00, 0x00, 0x03, 0xc0, 0xca, 0xfe, 0xba, 0xbe};
    const Bytes csrcs{0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02};  // two CSRCs
    const Bytes ext{0xbe, 0xde, 0x00, 0x01, 0x10, 0xff, 0x00, 0x00};    // RFC 8285 one-byte, 1 word
    const Bytes body{'o', 'p', 'u', 's'};
    const Bytes pad{0x00, 0x00, 0x03};  // 3 bytes of padding, count last

    auto with = [&](std::uint8_t first, std::initializer_list<Bytes> rest) {
        Bytes out = fixed;
        out[0] = first;
        for (const auto& r : rest) out.insert(out.end(), r.begin(), r.end());
        return out;
    };
    struct Case {
        Bytes packet;
        const char* what;
    };
    const Case cases[] = {
        {with(0x82, {csrcs, body}), "CC=2"},
        {with(0x90, {ext, body}), "extension"},
        {with(0xa0, {body, pad}), "padding"},
        {with(0xb2, {csrcs, ext, body, pad}), "all three"},
        {with(0x90, {Bytes{0x10, 0x00, 0x00, 0x00}, body}), "empty extension"},
        {with(0xa0, {body, Bytes{0x01}}), "padding of just the count"},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        auto p = parse_rtp(c.packet);
        REQUIRE(p);
        CHECK(payload_of(*p) == body);
        CHECK(p->header == RtpHeader{111, false, 7, 960, 0xcafebabe});
    }

    // Padding may take everything after the headers: an empty payload.
    auto only_pad = with(0xb2, {csrcs, ext, Bytes{0, 0, 0, 4}});
    auto p = parse_rtp(only_pad);
    REQUIRE(p);
    CHECK(p->payload.empty());
}

TEST_CASE("rtp: every reject path", "[rtp]") {
    const Bytes good = build_rtp(RtpHeader{111, false, 1, 2, 3}, Bytes{1, 2, 3, 4});
    auto with_first = [&](std::uint8_t first, const Bytes& tail) {
        Bytes out(12 + tail.size());
        std::copy_n(good.begin(), 12, out.begin());
        std::copy(tail.begin(), tail.end(), out.begin() + 12);
        out[0] = first;
        return out;
    };

    SECTION("shorter than the fixed header") {
        CHECK(code_of(parse_rtp(Bytes{})) == rtp_errc::truncated);
        CHECK(code_of(parse_rtp(std::span(good).first(11))) == rtp_errc::truncated);
    }
    SECTION("version other than 2") {
        for (std::uint8_t v : {0x00, 0x40, 0xc0}) {
            auto bad = good;
            bad[0] = v;
            CHECK(code_of(parse_rtp(bad)) == rtp_errc::bad_version);
        }
    }
    SECTION("CSRC list past the end") {
        CHECK(code_of(parse_rtp(with_first(0x81, {}))) == rtp_errc::truncated);
        CHECK(code_of(parse_rtp(with_first(0x8f, Bytes(14 * 4, 0)))) == rtp_errc::truncated);
        CHECK(parse_rtp(with_first(0x8f, Bytes(15 * 4, 0))));
    }
    SECTION("extension header cut off") {
        CHECK(code_of(parse_rtp(with_first(0x90, {}))) == rtp_errc::truncated);
        CHECK(code_of(parse_rtp(with_first(0x90, {0xbe, 0xde, 0x00}))) == rtp_errc::truncated);
    }
    SECTION("extension length beyond the end") {
        CHECK(code_of(parse_rtp(with_first(0x90, {0xbe, 0xde, 0x00, 0x01, 1, 2, 3}))) == rtp_errc::truncated);
        CHECK(code_of(parse_rtp(with_first(0x90, {0xbe, 0xde, 0xff, 0xff, 1, 2, 3, 4}))) ==
              rtp_errc::truncated);
        CHECK(parse_rtp(with_first(0x90, {0xbe, 0xde, 0x00, 0x01, 1, 2, 3, 4})));
    }
    SECTION("padding count of 0") {
        CHECK(code_of(parse_rtp(with_first(0xa0, {1, 2, 3, 0}))) == rtp_errc::malformed);
    }
    SECTION("padding larger than what follows the headers") {
        CHECK(code_of(parse_rtp(with_first(0xa0, {1, 2, 3, 5}))) == rtp_errc::malformed);
        // With only the fixed header, the count byte is the SSRC's last byte.
        auto bare = with_first(0xa0, {});
        bare[11] = 1;
        CHECK(code_of(parse_rtp(bare)) == rtp_errc::malformed);
        // Padding may not reach back into the extension.
        CHECK(code_of(parse_rtp(with_first(0xb0, {0xbe, 0xde, 0x00, 0x00, 9, 3}))) == rtp_errc::malformed);
    }
}

TEST_CASE("rtp: is_rtcp demultiplexes on the second byte (RFC 5761)", "[rtp]") {
    CHECK_FALSE(is_rtcp(build_rtp(RtpHeader{111, false, 1, 2, 3}, Bytes{1})));
    CHECK_FALSE(is_rtcp(build_rtp(RtpHeader{111, true, 1, 2, 3}, Bytes{1})));
    CHECK_FALSE(is_rtcp(build_rtp(RtpHeader{0, true, 1, 2, 3}, {})));
    CHECK(is_rtcp(build_rtcp(RtcpReport{1, SenderInfo{}, {}})));  // SR, 200
    CHECK(is_rtcp(build_rtcp(RtcpReport{1, std::nullopt, {}})));  // RR, 201
    CHECK(is_rtcp(k_sdes));
    CHECK(is_rtcp(k_bye));
    // The range bounds; RTP PT 64..95 with the marker set looks like RTCP,
    // which is why RFC 5761 forbids those payload types when multiplexing.
    CHECK(is_rtcp(Bytes{0x80, 192}));
    CHECK(is_rtcp(Bytes{0x80, 223}));
    CHECK_FALSE(is_rtcp(Bytes{0x80, 191}));
    CHECK_FALSE(is_rtcp(Bytes{0x80, 224}));
    CHECK_FALSE(is_rtcp(Bytes{}));
    CHECK_FALSE(is_rtcp(Bytes{0x80}));
}

// ---- RTCP ----------------------------------------------------------------------

TEST_CASE("rtcp: an SR matches RFC 3550 6.4.1 byte for byte", "[rtp]") {
    RtcpReport sr;
    sr.ssrc = 0x11223344;
    sr.sender = SenderInfo{0x83aa7e8000000001ull, 960, 10, 1600};
    sr.blocks = {ReportBlock{0x55667788, 0x19, 5, 0x0001000a, 32, 0x7e800000, 0x00018000}};
    const Bytes expected{
        0x81, 0xc8, 0x00, 0x0c,  // V=2 P=0 RC=1, PT=200, length 12 (52 bytes)
        0x11, 0x22, 0x33, 0x44,  // SSRC of sender
        0x83, 0xaa, 0x7e, 0x80,  // NTP timestamp, most significant word
        0x00, 0x00, 0x00, 0x01,  // NTP timestamp, least significant word
        0x00, 0x00, 0x03, 0xc0,  // RTP timestamp 960
        0x00, 0x00, 0x00, 0x0a,  // sender's packet count 10
        0x00, 0x00, 0x06, 0x40,  // sender's octet count 1600
        0x55, 0x66, 0x77, 0x88,  // block: SSRC of source
        0x19, 0x00, 0x00, 0x05,  // fraction lost 25/256, cumulative lost 5
        0x00, 0x01, 0x00, 0x0a,  // extended highest sequence number
        0x00, 0x00, 0x00, 0x20,  // interarrival jitter 32
        0x7e, 0x80, 0x00, 0x00,  // LSR
        0x00, 0x01, 0x80, 0x00,  // DLSR 1.5 s
    };
    CHECK(build_rtcp(sr) == expected);
    auto parsed = parse_rtcp(expected);
    REQUIRE(parsed);
    REQUIRE(parsed->size() == 1);
    CHECK(parsed->front() == sr);
}

TEST_CASE("rtcp: an RR matches RFC 3550 6.4.2 byte for byte", "[rtp]") {
    RtcpReport rr;
    rr.ssrc = 0x11223344;
    rr.blocks = {ReportBlock{0x55667788, 0, -2, 0x0002ffff, 256, 0, 0}};
    CHECK(build_rtcp(rr) == k_rr);
    auto parsed = parse_rtcp(k_rr);
    REQUIRE(parsed);
    REQUIRE(parsed->size() == 1);
    CHECK(parsed->front() == rr);
    CHECK_FALSE(parsed->front().sender);

    CHECK(build_rtcp(RtcpReport{0x0a0b0c0d, std::nullopt, {}}) == k_empty_rr);
}

TEST_CASE("rtcp: round trips", "[rtp]") {
    std::vector<ReportBlock> blocks31;
    for (std::uint32_t i = 0; i < 31; ++i)
        blocks31.push_back(ReportBlock{i * 7919, static_cast<std::uint8_t>(i * 8),
                                       static_cast<std::int32_t>(i) - 15, i << 20, i * 3, ~i, i});
    const std::vector<ReportBlock> edges = {
        ReportBlock{},
        ReportBlock{0xffffffff, 255, 0x7fffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
        ReportBlock{1, 1, -0x800000, 0, 0, 0, 0},
        ReportBlock{2, 128, -1, 65536, 1, 2, 3},
    };
    for (const auto& sender : {std::optional<SenderInfo>{}, std::optional<SenderInfo>{SenderInfo{}},
                               std::optional<SenderInfo>{SenderInfo{~0ull, ~0u, ~0u, ~0u}}}) {
        for (const auto& blocks : {std::vector<ReportBlock>{}, edges, blocks31}) {
            RtcpReport r{0xfeedface, sender, blocks};
            auto wire = build_rtcp(r);
            CHECK(wire.size() == 8 + (sender ? 20 : 0) + 24 * blocks.size());
            CHECK(static_cast<std::size_t>(wire[0] & 0x1f) == blocks.size());
            auto back = parse_rtcp(wire);
            REQUIRE(back);
            REQUIRE(back->size() == 1);
            CHECK(back->front() == r);
        }
    }
}

TEST_CASE("rtcp: cumulative lost is clamped to 24-bit two's complement", "[rtp]") {
    auto lost_after = [](std::int32_t lost) {
        auto wire = build_rtcp(RtcpReport{1, std::nullopt, {sample_block(2, lost)}});
        auto back = parse_rtcp(wire);
        REQUIRE(back);
        return back->at(0).blocks.at(0).cumulative_lost;
    };
    CHECK(lost_after(0x7fffff) == 0x7fffff);
    CHECK(lost_after(0x800000) == 0x7fffff);
    CHECK(lost_after(INT32_MAX) == 0x7fffff);
    CHECK(lost_after(-0x800000) == -0x800000);
    CHECK(lost_after(-0x800001) == -0x800000);
    CHECK(lost_after(INT32_MIN) == -0x800000);
    CHECK(lost_after(-1) == -1);
    // The wire bytes of the clamped values.
    auto wire = build_rtcp(RtcpReport{1, std::nullopt, {sample_block(2, INT32_MIN)}});
    CHECK(Bytes(wire.begin() + 13, wire.begin() + 16) == Bytes{0x80, 0x00, 0x00});
    wire = build_rtcp(RtcpReport{1, std::nullopt, {sample_block(2, INT32_MAX)}});
    CHECK(Bytes(wire.begin() + 13, wire.begin() + 16) == Bytes{0x7f, 0xff, 0xff});
}

TEST_CASE("rtcp: more than 31 blocks are cut to 31", "[rtp]") {
    RtcpReport r{1, std::nullopt, std::vector<ReportBlock>(40, sample_block(9, 1))};
    auto back = parse_rtcp(build_rtcp(r));
    REQUIRE(back);
    CHECK(back->at(0).blocks.size() == 31);
}

TEST_CASE("rtcp: a compound packet yields its SRs and RRs, skipping others", "[rtp]") {
    RtcpReport sr{0x01010101, SenderInfo{1, 2, 3, 4}, {sample_block(5, 6)}};
    const Bytes compound = cat({build_rtcp(sr), k_sdes, k_rr, k_bye, k_empty_rr});
    auto parsed = parse_rtcp(compound);
    REQUIRE(parsed);
    REQUIRE(parsed->size() == 3);
    CHECK((*parsed)[0] == sr);
    CHECK((*parsed)[1].ssrc == 0x11223344);
    CHECK((*parsed)[1].blocks.at(0).cumulative_lost == -2);
    CHECK((*parsed)[2] == RtcpReport{0x0a0b0c0d, std::nullopt, {}});

    // Only other packet types: no reports, no error.
    auto others = parse_rtcp(cat({k_sdes, k_bye}));
    REQUIRE(others);
    CHECK(others->empty());
}

TEST_CASE("rtcp: extensions after the blocks and padding on the last packet", "[rtp]") {
    // An RR with one block plus a one-word profile-specific extension.
    Bytes ext = cat({k_rr, Bytes{0xde, 0xad, 0xbe, 0xef}});
    ext[3] = 8;
    auto p = parse_rtcp(ext);
    REQUIRE(p);
    CHECK(p->at(0).blocks.size() == 1);

    // The last packet padded by 4 bytes (count included).
    Bytes padded = cat({k_empty_rr, Bytes{0, 0, 0, 4}});
    padded[0] |= 0x20;
    padded[3] = 2;
    p = parse_rtcp(cat({k_rr, padded}));
    REQUIRE(p);
    REQUIRE(p->size() == 2);
    CHECK(p->at(1) == RtcpReport{0x0a0b0c0d, std::nullopt, {}});
}

TEST_CASE("rtcp: every reject path", "[rtp]") {
    SECTION("empty or shorter than a header") {
        CHECK(code_of(parse_rtcp(Bytes{})) == rtp_errc::truncated);
        CHECK(code_of(parse_rtcp(std::span(k_rr).first(3))) == rtp_errc::truncated);
        // Trailing bytes after a complete packet.
        CHECK(code_of(parse_rtcp(cat({k_rr, Bytes{0x80, 0xc9}}))) == rtp_errc::truncated);
    }
    SECTION("version other than 2, first or later packet") {
        auto bad = k_rr;
        bad[0] = 0x41;
        CHECK(code_of(parse_rtcp(bad)) == rtp_errc::bad_version);
        auto sdes = k_sdes;
        sdes[0] = 0xc1;
        CHECK(code_of(parse_rtcp(cat({k_rr, sdes}))) == rtp_errc::bad_version);
    }
    SECTION("length field past the end") {
        CHECK(code_of(parse_rtcp(std::span(k_rr).first(28))) == rtp_errc::truncated);
        auto bad = k_rr;
        bad[2] = 0xff;
        CHECK(code_of(parse_rtcp(bad)) == rtp_errc::truncated);
        // Also for a packet type that is skipped.
        auto sdes = k_sdes;
        sdes[3] = 4;
        CHECK(code_of(parse_rtcp(cat({k_rr, sdes}))) == rtp_errc::truncated);
    }
    SECTION("RC too big for the length") {
        auto bad = k_rr;
        bad[0] = 0x82;  // RC=2 in 32 bytes
        CHECK(code_of(parse_rtcp(bad)) == rtp_errc::malformed);
        auto empty = k_empty_rr;
        empty[0] = 0x81;  // RC=1 with no block
        CHECK(code_of(parse_rtcp(empty)) == rtp_errc::malformed);
        // An SR holding its sender info but not the block it announces.
        auto sr = build_rtcp(RtcpReport{1, SenderInfo{}, {}});
        sr[0] = 0x81;
        CHECK(code_of(parse_rtcp(sr)) == rtp_errc::malformed);
        // An SR too short even for its sender info (length 1).
        CHECK(code_of(parse_rtcp(Bytes{0x80, 0xc8, 0x00, 0x01, 0, 0, 0, 1})) == rtp_errc::malformed);
    }
    SECTION("padding on a packet that is not the last") {
        auto padded = cat({k_empty_rr, Bytes{0, 0, 0, 4}});
        padded[0] |= 0x20;
        padded[3] = 2;
        CHECK(parse_rtcp(padded));
        CHECK(code_of(parse_rtcp(cat({padded, k_rr}))) == rtp_errc::malformed);
    }
    SECTION("padding count 0 or larger than the packet") {
        auto padded = cat({k_empty_rr, Bytes{0, 0, 0, 0}});
        padded[0] |= 0x20;
        padded[3] = 2;
        CHECK(code_of(parse_rtcp(padded)) == rtp_errc::malformed);
        padded.back() = 9;  // more than the 8 bytes after the header
        CHECK(code_of(parse_rtcp(padded)) == rtp_errc::malformed);
        // Padding that eats into the report block makes RC inconsistent.
        auto rr = cat({k_rr, Bytes{0, 0, 0, 8}});
        rr[0] |= 0x20;
        rr[3] = 8;
        CHECK(code_of(parse_rtcp(rr)) == rtp_errc::malformed);
        rr.back() = 4;
        CHECK(parse_rtcp(rr));
    }
}

// ---- receiver statistics ---------------------------------------------------------

TEST_CASE("rtp stats: nothing received", "[rtp]") {
    ReceiverStats s;
    CHECK_FALSE(s.started());
    CHECK(s.lost() == 0);
    auto b = s.make_block(7, 8, 9);
    CHECK(b == ReportBlock{7, 0, 0, 0, 0, 8, 9});
}

TEST_CASE("rtp stats: an in-order stream loses nothing", "[rtp]") {
    ReceiverStats s;
    for (std::uint16_t seq = 1000; seq < 1500; ++seq) s.on_packet(seq, seq * 960u, seq * 960u + 5);
    CHECK(s.started());
    CHECK(s.received() == 500);
    CHECK(s.lost() == 0);
    CHECK(s.extended_max() == 1499);
    CHECK(s.jitter() == 0);
    auto b = s.make_block(0xabc, 1, 2);
    CHECK(b == ReportBlock{0xabc, 0, 0, 1499, 0, 1, 2});
}

TEST_CASE("rtp stats: 10% loss per interval (A.3)", "[rtp]") {
    ReceiverStats s;
    auto feed = [&](std::uint16_t from, std::uint16_t to, bool drop) {
        for (std::uint16_t seq = from; seq < to; ++seq)
            if (!drop || seq % 10 != 3) s.on_packet(seq, 0, 0);
    };
    feed(0, 100, true);  // 90 of 100
    auto b = s.make_block(1, 0, 0);
    CHECK(int{b.fraction_lost} == Approx(25.6).margin(1));
    CHECK(b.fraction_lost == 10 * 256 / 100);
    CHECK(b.cumulative_lost == 10);
    CHECK(b.highest_seq == 99);

    feed(100, 200, true);
    b = s.make_block(1, 0, 0);
    CHECK(b.fraction_lost == 25);
    CHECK(b.cumulative_lost == 20);

    feed(200, 300, false);  // a clean interval: fraction back to 0, the total stays
    b = s.make_block(1, 0, 0);
    CHECK(b.fraction_lost == 0);
    CHECK(b.cumulative_lost == 20);
    CHECK(s.lost() == 20);

    // Half lost in one interval.
    for (std::uint16_t seq = 300; seq < 400; seq += 2) s.on_packet(seq, 0, 0);
    s.on_packet(400, 0, 0);
    b = s.make_block(1, 0, 0);
    CHECK(b.fraction_lost == 50 * 256 / 101);
    CHECK(b.cumulative_lost == 70);

    // No packet at all since the last report.
    b = s.make_block(1, 0, 0);
    CHECK(b.fraction_lost == 0);
    CHECK(b.cumulative_lost == 70);
}

TEST_CASE("rtp stats: sequence numbers wrap at 65535", "[rtp]") {
    ReceiverStats s;
    for (std::uint32_t i = 0; i < 20; ++i) s.on_packet(static_cast<std::uint16_t>(65530 + i), 0, 0);
    CHECK(s.extended_max() == 65536 + 13);
    CHECK(s.received() == 20);
    CHECK(s.lost() == 0);

    // Losses across the wrap are counted too.
    ReceiverStats t;
    for (std::uint16_t seq : {65533, 65534, 1, 2}) t.on_packet(seq, 0, 0);  // 65535 and 0 lost
    CHECK(t.extended_max() == 65538);
    CHECK(t.lost() == 2);
    auto b = t.make_block(1, 0, 0);
    CHECK(b.highest_seq == 65538);
    CHECK(b.cumulative_lost == 2);
    CHECK(b.fraction_lost == 2 * 256 / 6);

    // Many wraps.
    ReceiverStats u;
    for (std::uint32_t i = 0; i < 3 * 65536 + 5; i += 7) u.on_packet(static_cast<std::uint16_t>(i), 0, 0);
    const std::uint32_t last = (3 * 65536 + 5 - 1) / 7 * 7;
    CHECK(u.extended_max() == last);
    CHECK(u.lost() == static_cast<std::int64_t>(last + 1 - (last / 7 + 1)));
}

TEST_CASE("rtp stats: reordering and duplicates", "[rtp]") {
    ReceiverStats s;
    for (std::uint16_t seq : {10, 11, 13, 12, 14, 16, 15}) s.on_packet(seq, 0, 0);
    CHECK(s.received() == 7);
    CHECK(s.extended_max() == 16);
    CHECK(s.lost() == 0);

    // A late packet from before a wrap does not count a cycle.
    ReceiverStats w;
    for (std::uint16_t seq : {65534, 65535, 0, 1, 2}) w.on_packet(seq, 0, 0);
    w.on_packet(65533, 0, 0);  // late, but after the first: lost() counts it as extra
    CHECK(w.extended_max() == 65538);
    CHECK(w.received() == 6);
    CHECK(w.lost() == -1);

    // Duplicates make the loss negative; the fraction stays 0.
    ReceiverStats d;
    for (std::uint16_t seq : {1, 2, 2, 3, 3, 3}) d.on_packet(seq, 0, 0);
    CHECK(d.received() == 6);
    CHECK(d.lost() == -3);
    auto b = d.make_block(1, 0, 0);
    CHECK(b.fraction_lost == 0);
    CHECK(b.cumulative_lost == -3);

    // A packet less than MAX_MISORDER (100) behind is reordered, counted.
    ReceiverStats m;
    m.on_packet(1000, 0, 0);
    m.on_packet(901, 0, 0);
    CHECK(m.received() == 2);
    CHECK(m.extended_max() == 1000);
}

TEST_CASE("rtp stats: a big jump re-syncs after two sequential packets (A.1)", "[rtp]") {
    ReceiverStats s;
    for (std::uint16_t seq = 100; seq <= 110; ++seq) s.on_packet(seq, 0, 0);
    REQUIRE(s.received() == 11);

    SECTION("a single stray packet is ignored") {
        s.on_packet(30000, 0, 0);
        CHECK(s.received() == 11);
        CHECK(s.extended_max() == 110);
        s.on_packet(111, 0, 0);
        CHECK(s.received() == 12);
        CHECK(s.extended_max() == 111);
        CHECK(s.lost() == 0);
    }
    SECTION("two sequential packets after the jump restart the statistics") {
        s.on_packet(5000, 0, 0);
        CHECK(s.received() == 11);
        s.on_packet(5001, 0, 0);
        CHECK(s.received() == 1);
        CHECK(s.extended_max() == 5001);
        CHECK(s.lost() == 0);
        s.on_packet(5002, 0, 0);
        s.on_packet(5004, 0, 0);
        CHECK(s.received() == 3);
        CHECK(s.lost() == 1);
        auto b = s.make_block(1, 0, 0);
        CHECK(b.highest_seq == 5004);
        CHECK(b.cumulative_lost == 1);
        CHECK(b.fraction_lost == 256 / 4);
    }
    SECTION("non-sequential jumps do not re-sync") {
        s.on_packet(30000, 0, 0);
        s.on_packet(40000, 0, 0);
        s.on_packet(30001, 0, 0);  // follows 30000, but 40000 came between
        CHECK(s.received() == 11);
        CHECK(s.extended_max() == 110);
        s.on_packet(30002, 0, 0);  // follows 30001 directly: re-sync
        CHECK(s.received() == 1);
        CHECK(s.extended_max() == 30002);
    }
    SECTION("a jump backwards beyond MAX_MISORDER is a jump too") {
        s.on_packet(5, 0, 0);
        CHECK(s.received() == 11);
        s.on_packet(6, 0, 0);
        CHECK(s.received() == 1);
        CHECK(s.extended_max() == 6);
    }
    SECTION("a gap below MAX_DROPOUT (3000) is loss, not a jump") {
        s.on_packet(110 + 2999, 0, 0);
        CHECK(s.received() == 12);
        CHECK(s.lost() == 2998);
    }
}

TEST_CASE("rtp stats: interarrival jitter (A.8)", "[rtp]") {
    // 20 ms Opus packets (960 samples); every second packet arrives `delay`
    // samples late, so |D| = delay for every packet after the first and
    // J_n = delay * (1 - (15/16)^(n-1)) after n packets.
    const double delay = 480;
    auto expected = [&](int n) { return delay * (1 - std::pow(15.0 / 16.0, n - 1)); };

    // Origins near the top of the 32-bit clocks, so both wrap during the run.
    const std::uint32_t ts0 = 0xffff0000, arrival0 = 0xfffff000;
    ReceiverStats s;
    for (int n = 1; n <= 300; ++n) {
        const auto i = static_cast<std::uint32_t>(n - 1);
        const std::uint32_t late = (n % 2 == 0) ? static_cast<std::uint32_t>(delay) : 0;
        s.on_packet(static_cast<std::uint16_t>(i), ts0 + i * 960, arrival0 + i * 960 + late);
        if (n == 1 || n == 2 || n == 17 || n == 100 || n == 300) {
            INFO("after " << n << " packets");
            CHECK(s.jitter() == Approx(expected(n)).epsilon(1e-9));
        }
    }
    CHECK(s.jitter() == Approx(delay).margin(1e-3));
    CHECK(s.make_block(1, 0, 0).jitter == static_cast<std::uint32_t>(expected(300)));

    // A constant delay, however large, is no jitter; a step in it is one D.
    ReceiverStats c;
    for (std::uint32_t i = 0; i < 50; ++i)
        c.on_packet(static_cast<std::uint16_t>(i), i * 960, i * 960 + 100000);
    CHECK(c.jitter() == 0);
    c.on_packet(50, 50 * 960, 50 * 960 + 100000 + 1600);
    CHECK(c.jitter() == Approx(100));

    // Packets arriving early (negative D) count by magnitude.
    ReceiverStats e;
    e.on_packet(0, 0, 1000);
    e.on_packet(1, 960, 960 + 1000 - 320);
    CHECK(e.jitter() == Approx(20));
}
