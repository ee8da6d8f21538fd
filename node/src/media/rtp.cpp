// RTP/RTCP codec and RFC 3550 appendix A receiver statistics.
//
// Wire layouts (RFC 3550, all fields big-endian):
//   RTP   V=2 P X CC(4) | M PT(7) | seq(16) | timestamp(32) | SSRC(32)
//         | CC x CSRC(32) | [ext: profile(16) length(16) | length x 32 bits]
//         | payload | [padding, last byte = pad count incl. itself]
//   RTCP  V=2 P RC(5) | PT(8) | length(16) = 32-bit words - 1
//         SR (200): SSRC | NTP(64) | RTP ts | packets | octets | RC blocks
//         RR (201): SSRC | RC blocks
//         block: SSRC | fraction(8) cumulative lost(24, signed) | highest seq
//                | jitter | LSR | DLSR
// Sizes are checked before every read; lengths come from the packet and are
// never trusted beyond the buffer.
#include "juice/node/media/rtp.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace juice::node::media {

namespace {

constexpr std::size_t k_rtp_header = 12;
constexpr std::size_t k_rtcp_header = 4;
constexpr std::size_t k_sender_info = 20;
constexpr std::size_t k_report_block = 24;
constexpr std::size_t k_max_blocks = 31;  // the 5-bit RC field
constexpr std::uint8_t k_pt_sr = 200;
constexpr std::uint8_t k_pt_rr = 201;
constexpr std::int32_t k_lost_min = -0x800000;  // 24-bit two's complement
constexpr std::int32_t k_lost_max = 0x7fffff;

// RFC 3550 A.1.
constexpr std::uint32_t k_seq_mod = 1u << 16;
constexpr std::uint16_t k_max_dropout = 3000;
constexpr std::uint32_t k_max_misorder = 100;

class RtpCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "juice.rtp"; }
    std::string message(int ev) const override {
        switch (static_cast<rtp_errc>(ev)) {
            case rtp_errc::truncated:
                return "the peer sent an RTP/RTCP packet shorter than its headers say";
            case rtp_errc::bad_version:
                return "the peer sent an RTP/RTCP packet whose version is not 2";
            case rtp_errc::malformed:
                return "the peer sent an RTP/RTCP packet with inconsistent lengths, padding or counts";
        }
        return "unknown RTP error " + std::to_string(ev);
    }
};

Error truncated(const std::string& what) {
    return make_error(rtp_errc::truncated, "truncated packet: " + what);
}
Error malformed(const std::string& what) {
    return make_error(rtp_errc::malformed, "malformed packet: " + what);
}
Error bad_version(const char* kind, unsigned version) {
    return make_error(rtp_errc::bad_version, std::string(kind) + " version " + std::to_string(version) +
                                                 " is not 2: the peer does not speak RTP, or the "
                                                 "packet was damaged");
}

std::uint16_t get16(const std::uint8_t* p) {
    return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
std::uint32_t get32(const std::uint8_t* p) {
    return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
void put16(Bytes& out, std::uint16_t v) {
    out.push_back(static_cast<std::uint8_t>(v >> 8));
    out.push_back(static_cast<std::uint8_t>(v));
}
void put32(Bytes& out, std::uint32_t v) {
    out.push_back(static_cast<std::uint8_t>(v >> 24));
    out.push_back(static_cast<std::uint8_t>(v >> 16));
    out.push_back(static_cast<std::uint8_t>(v >> 8));
    out.push_back(static_cast<std::uint8_t>(v));
}

void put_block(Bytes& out, const ReportBlock& b) {
    put32(out, b.ssrc);
    const auto lost = std::clamp(b.cumulative_lost, k_lost_min, k_lost_max);
    // Converting a negative int32 to uint32 is modular: its low 24 bits are
    // the 24-bit two's complement.
    put32(out, std::uint32_t{b.fraction_lost} << 24 | (static_cast<std::uint32_t>(lost) & 0xffffff));
    put32(out, b.highest_seq);
    put32(out, b.jitter);
    put32(out, b.lsr);
    put32(out, b.dlsr);
}

ReportBlock get_block(const std::uint8_t* p) {
    ReportBlock b;
    b.ssrc = get32(p);
    b.fraction_lost = p[4];
    const std::uint32_t raw = get32(p + 4) & 0xffffff;
    b.cumulative_lost = static_cast<std::int32_t>(raw) - ((raw & 0x800000) ? 0x1000000 : 0);
    b.highest_seq = get32(p + 8);
    b.jitter = get32(p + 12);
    b.lsr = get32(p + 16);
    b.dlsr = get32(p + 20);
    return b;
}

}  // namespace

const std::error_category& rtp_error_category() noexcept {
    static const RtpCategory category;
    return category;
}

// ---- RTP ----------------------------------------------------------------------

Bytes build_rtp(const RtpHeader& header, std::span<const std::uint8_t> payload) {
    Bytes out;
    out.reserve(k_rtp_header + payload.size());
    out.push_back(0x80);  // V=2, no padding, no extension, CC=0
    out.push_back(static_cast<std::uint8_t>((header.marker ? 0x80 : 0) | (header.payload_type & 0x7f)));
    put16(out, header.seq);
    put32(out, header.timestamp);
    put32(out, header.ssrc);
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

Result<RtpPacket> parse_rtp(std::span<const std::uint8_t> packet) {
    const std::size_t size = packet.size();
    if (size < k_rtp_header)
        return truncated("an RTP packet of " + std::to_string(size) +
                         " bytes is shorter than its 12-byte header");
    const std::uint8_t* p = packet.data();
    if ((p[0] >> 6) != 2) return bad_version("RTP", p[0] >> 6);
    const bool padding = (p[0] & 0x20) != 0;
    const bool extension = (p[0] & 0x10) != 0;
    const std::size_t csrc_count = p[0] & 0x0f;

    RtpPacket out;
    out.header.marker = (p[1] & 0x80) != 0;
    out.header.payload_type = p[1] & 0x7f;
    out.header.seq = get16(p + 2);
    out.header.timestamp = get32(p + 4);
    out.header.ssrc = get32(p + 8);

    std::size_t offset = k_rtp_header + 4 * csrc_count;
    if (offset > size)
        return truncated("the RTP header lists " + std::to_string(csrc_count) + " CSRCs past the end");
    if (extension) {
        if (size - offset < 4) return truncated("the RTP header extension is cut off");
        const std::size_t words = get16(p + offset + 2);
        offset += 4;
        if (words > (size - offset) / 4)
            return truncated("the RTP header extension of " + std::to_string(words) +
                             " words runs past the end");
        offset += 4 * words;
    }
    std::size_t end = size;
    if (padding) {
        // The pad count includes itself, so it is at least 1, and it cannot
        // eat into the headers.
        const std::size_t pad = p[size - 1];
        if (pad == 0) return malformed("RTP padding with a count of 0");
        if (pad > size - offset)
            return malformed("RTP padding of " + std::to_string(pad) + " bytes is longer than the " +
                             std::to_string(size - offset) + " bytes after the header");
        end -= pad;
    }
    out.payload = packet.subspan(offset, end - offset);
    return out;
}

bool is_rtcp(std::span<const std::uint8_t> packet) {
    return packet.size() >= 2 && packet[1] >= 192 && packet[1] <= 223;
}

// ---- RTCP ---------------------------------------------------------------------

Bytes build_rtcp(const RtcpReport& report) {
    // More than 31 blocks cannot be expressed; the header documents the cap,
    // and a caller breaking it gets the first 31 rather than a corrupt packet.
    const std::size_t blocks = std::min(report.blocks.size(), k_max_blocks);
    const std::size_t size =
        k_rtcp_header + 4 + (report.sender ? k_sender_info : 0) + blocks * k_report_block;
    Bytes out;
    out.reserve(size);
    out.push_back(static_cast<std::uint8_t>(0x80 | blocks));
    out.push_back(report.sender ? k_pt_sr : k_pt_rr);
    put16(out, static_cast<std::uint16_t>(size / 4 - 1));
    put32(out, report.ssrc);
    if (report.sender) {
        const SenderInfo& s = *report.sender;
        put32(out, static_cast<std::uint32_t>(s.ntp >> 32));
        put32(out, static_cast<std::uint32_t>(s.ntp));
        put32(out, s.rtp_timestamp);
        put32(out, s.packets);
        put32(out, s.octets);
    }
    for (std::size_t i = 0; i < blocks; ++i) put_block(out, report.blocks[i]);
    return out;
}

Result<std::vector<RtcpReport>> parse_rtcp(std::span<const std::uint8_t> packet) {
    std::vector<RtcpReport> reports;
    if (packet.empty()) return truncated("an empty RTCP packet");
    std::size_t offset = 0;
    while (offset < packet.size()) {
        const std::size_t left = packet.size() - offset;
        if (left < k_rtcp_header)
            return truncated(std::to_string(left) + " bytes after the last RTCP packet are not a header");
        const std::uint8_t* p = packet.data() + offset;
        if ((p[0] >> 6) != 2) return bad_version("RTCP", p[0] >> 6);
        const bool padding = (p[0] & 0x20) != 0;
        const std::size_t count = p[0] & 0x1f;
        const std::uint8_t type = p[1];
        const std::size_t bytes = (std::size_t{get16(p + 2)} + 1) * 4;
        if (bytes > left)
            return truncated("an RTCP packet's length of " + std::to_string(bytes) + " bytes runs past the " +
                             std::to_string(left) + " bytes left");
        std::size_t content = bytes - k_rtcp_header;  // after the 4-byte header
        if (padding) {
            // RFC 3550 6.4.1: only the last packet of a compound may be padded.
            if (bytes != left) return malformed("padding on an RTCP packet that is not the last");
            const std::size_t pad = p[bytes - 1];
            if (pad == 0) return malformed("RTCP padding with a count of 0");
            if (pad > content)
                return malformed("RTCP padding of " + std::to_string(pad) +
                                 " bytes is longer than the packet");
            content -= pad;
        }
        if (type == k_pt_sr || type == k_pt_rr) {
            const bool sr = type == k_pt_sr;
            // Profile-specific extensions may follow the blocks, so the
            // content must hold at least what RC says, not exactly.
            const std::size_t need = 4 + (sr ? k_sender_info : 0) + count * k_report_block;
            if (content < need)
                return malformed(std::string(sr ? "an SR" : "an RR") + " claims " + std::to_string(count) +
                                 " report blocks but has room for fewer");
            const std::uint8_t* q = p + k_rtcp_header;
            RtcpReport r;
            r.ssrc = get32(q);
            q += 4;
            if (sr) {
                SenderInfo s;
                s.ntp = std::uint64_t{get32(q)} << 32 | get32(q + 4);
                s.rtp_timestamp = get32(q + 8);
                s.packets = get32(q + 12);
                s.octets = get32(q + 16);
                r.sender = s;
                q += k_sender_info;
            }
            r.blocks.reserve(count);
            for (std::size_t i = 0; i < count; ++i, q += k_report_block) r.blocks.push_back(get_block(q));
            reports.push_back(std::move(r));
        }
        offset += bytes;
    }
    return reports;
}

// ---- receiver statistics (RFC 3550 appendix A) -------------------------------

void ReceiverStats::init_seq(std::uint16_t seq) {
    m_base_seq = seq;
    m_max_seq = seq;
    m_bad_seq = k_seq_mod + 1;  // so seq == bad_seq is false
    m_cycles = 0;
    m_received = 0;
    m_received_prior = 0;
    m_expected_prior = 0;
    // A restarted source has a new timestamp origin: its first transit time
    // must not count as jitter.
    m_have_transit = false;
}

bool ReceiverStats::update_seq(std::uint16_t seq) {
    // A.1 holds a new source on probation until MIN_SEQUENTIAL (2) packets
    // arrive in sequence, to reject stray packets. juice feeds only packets
    // that passed SRTP authentication, so they are from the peer: the first
    // one is accepted at once. The re-sync after a big jump keeps A.1's rule.
    if (!m_started) {
        m_started = true;
        init_seq(seq);
        ++m_received;
        return true;
    }
    const auto udelta = static_cast<std::uint16_t>(seq - m_max_seq);
    if (udelta < k_max_dropout) {
        // In order, with a permissible gap.
        if (seq < m_max_seq) m_cycles += k_seq_mod;  // wrapped: another 64K cycle (mod 2^32)
        m_max_seq = seq;
    } else if (udelta <= k_seq_mod - k_max_misorder) {
        // A very large jump.
        if (seq == m_bad_seq) {
            // Two sequential packets: the other side restarted without
            // telling us, so re-sync (pretend this was the first packet).
            init_seq(seq);
        } else {
            m_bad_seq = (std::uint32_t{seq} + 1) & (k_seq_mod - 1);
            return false;
        }
    }
    // else: a duplicate or reordered packet, counted as received.
    ++m_received;
    return true;
}

void ReceiverStats::on_packet(std::uint16_t seq, std::uint32_t rtp_timestamp, std::uint32_t arrival) {
    if (!update_seq(seq)) return;
    // A.8: transit times wrap with the 32-bit clocks; their difference is
    // taken modulo 2^32 and read as signed, which is exact while the true
    // difference fits in 31 bits.
    const std::uint32_t transit = arrival - rtp_timestamp;
    if (m_have_transit) {
        const auto d = static_cast<std::int32_t>(transit - static_cast<std::uint32_t>(m_transit));
        const double ad = std::abs(static_cast<double>(d));
        m_jitter += (ad - m_jitter) / 16.0;
    }
    m_transit = transit;
    m_have_transit = true;
}

std::int64_t ReceiverStats::lost() const {
    if (!m_started) return 0;
    const std::int64_t expected = std::int64_t{extended_max()} - std::int64_t{m_base_seq} + 1;
    return expected - static_cast<std::int64_t>(m_received);
}

ReportBlock ReceiverStats::make_block(std::uint32_t ssrc, std::uint32_t lsr, std::uint32_t dlsr) {
    ReportBlock b;
    b.ssrc = ssrc;
    b.lsr = lsr;
    b.dlsr = dlsr;
    if (!m_started) return b;
    // A.3.
    const std::int64_t expected = std::int64_t{extended_max()} - std::int64_t{m_base_seq} + 1;
    const std::int64_t lost = expected - static_cast<std::int64_t>(m_received);
    b.cumulative_lost = static_cast<std::int32_t>(std::clamp<std::int64_t>(lost, k_lost_min, k_lost_max));

    const std::int64_t expected_interval = expected - static_cast<std::int64_t>(m_expected_prior);
    m_expected_prior = static_cast<std::uint64_t>(expected);
    const std::int64_t received_interval =
        static_cast<std::int64_t>(m_received) - static_cast<std::int64_t>(m_received_prior);
    m_received_prior = m_received;
    const std::int64_t lost_interval = expected_interval - received_interval;
    if (expected_interval > 0 && lost_interval > 0) {
        // lost < expected whenever a packet arrived in the interval; the cap
        // only guards the 8-bit field against a wrapped cycle count.
        b.fraction_lost =
            static_cast<std::uint8_t>(std::min<std::int64_t>((lost_interval << 8) / expected_interval, 255));
    }
    b.highest_seq = extended_max();
    b.jitter = static_cast<std::uint32_t>(m_jitter);
    return b;
}

}  // namespace juice::node::media
