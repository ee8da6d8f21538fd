// RTP (RFC 3550) and RTCP sender/receiver reports: the sans-I/O codec of the
// call media path, plus the receiver statistics of RFC 3550 appendix A
// (extended sequence numbers, loss, interarrival jitter).
//
// Only what juice sends is built (one SR or RR with at most one report block
// per packet); parsing accepts any well-formed RTP packet and any compound
// RTCP packet, skipping RTCP packet types it does not use (SDES, BYE, APP...).
// Everything read from the network is bounds-checked; malformed input is an
// error, never a crash.
#pragma once

#include "juice/crypto/ids.hpp"  // Bytes
#include "juice/crypto/result.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <system_error>
#include <vector>

namespace juice::node::media {

enum class rtp_errc {
    truncated = 1,  // shorter than its headers say
    bad_version,    // version field is not 2
    malformed,      // inconsistent lengths, padding or counts
};
const std::error_category& rtp_error_category() noexcept;
inline std::error_code make_error_code(rtp_errc e) noexcept {
    return {static_cast<int>(e), rtp_error_category()};
}

struct RtpHeader {
    std::uint8_t payload_type = 0;  // 0..127
    bool marker = false;
    std::uint16_t seq = 0;
    std::uint32_t timestamp = 0;
    std::uint32_t ssrc = 0;
    bool operator==(const RtpHeader&) const = default;
};

struct RtpPacket {
    RtpHeader header;
    std::span<const std::uint8_t> payload;  // into the parsed buffer (CSRCs, extension, padding removed)
};

// A 12-byte header (no CSRC, no extension, no padding) followed by payload.
Bytes build_rtp(const RtpHeader& header, std::span<const std::uint8_t> payload);
Result<RtpPacket> parse_rtp(std::span<const std::uint8_t> packet);

// RFC 5761 demultiplexing: true when the second byte is an RTCP packet type
// (192..223), i.e. this datagram is RTCP, not RTP with payload type 64..95.
bool is_rtcp(std::span<const std::uint8_t> packet);

struct ReportBlock {
    std::uint32_t ssrc = 0;            // the source this block reports on
    std::uint8_t fraction_lost = 0;    // since the previous report, in 1/256
    std::int32_t cumulative_lost = 0;  // 24-bit signed on the wire
    std::uint32_t highest_seq = 0;     // extended highest sequence number received
    std::uint32_t jitter = 0;          // interarrival jitter, timestamp units
    std::uint32_t lsr = 0;             // middle 32 bits of the last SR's NTP time
    std::uint32_t dlsr = 0;            // delay since that SR, 1/65536 s
    bool operator==(const ReportBlock&) const = default;
};

struct SenderInfo {
    std::uint64_t ntp = 0;  // NTP timestamp (32.32)
    std::uint32_t rtp_timestamp = 0;
    std::uint32_t packets = 0;
    std::uint32_t octets = 0;
    bool operator==(const SenderInfo&) const = default;
};

struct RtcpReport {          // one SR (sender set) or RR
    std::uint32_t ssrc = 0;  // the reporter
    std::optional<SenderInfo> sender;
    std::vector<ReportBlock> blocks;  // at most 31
    bool operator==(const RtcpReport&) const = default;
};

// An SR (when report.sender is set) or an RR. At most 31 blocks.
Bytes build_rtcp(const RtcpReport& report);
// Every SR and RR in a compound RTCP packet, in order; other packet types
// are skipped. An error when any packet's header or length is inconsistent.
Result<std::vector<RtcpReport>> parse_rtcp(std::span<const std::uint8_t> packet);

// Receiver statistics for one remote source (RFC 3550 appendix A.1, A.3,
// A.8). Feed every authenticated RTP packet; make_block() produces the report
// block for the next RTCP packet and starts a new loss interval.
class ReceiverStats {
public:
    // `arrival` is the arrival time in the stream's timestamp units (48 kHz
    // samples for Opus), from any fixed origin.
    void on_packet(std::uint16_t seq, std::uint32_t rtp_timestamp, std::uint32_t arrival);
    // lsr/dlsr come from the caller's record of the last SR received.
    ReportBlock make_block(std::uint32_t ssrc, std::uint32_t lsr, std::uint32_t dlsr);

    bool started() const { return m_started; }
    std::uint64_t received() const { return m_received; }
    // Packets expected minus received since the first packet (may be < 0
    // with duplicates).
    std::int64_t lost() const;
    std::uint32_t extended_max() const { return m_cycles + m_max_seq; }
    double jitter() const { return m_jitter; }  // timestamp units

private:
    void init_seq(std::uint16_t seq);    // RFC 3550 A.1 init_seq
    bool update_seq(std::uint16_t seq);  // A.1 update_seq: false for a packet to ignore

    bool m_started = false;
    std::uint16_t m_max_seq = 0;
    std::uint32_t m_cycles = 0;  // count of sequence wraps, shifted left 16
    std::uint32_t m_base_seq = 0;
    std::uint32_t m_bad_seq = 0;
    std::uint64_t m_received = 0;
    std::uint64_t m_expected_prior = 0;
    std::uint64_t m_received_prior = 0;
    std::int64_t m_transit = 0;
    bool m_have_transit = false;
    double m_jitter = 0;
};

}  // namespace juice::node::media

template <>
struct std::is_error_code_enum<juice::node::media::rtp_errc> : std::true_type {};
