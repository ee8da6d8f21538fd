// Link frames: what two daemons say to each other inside their TLS link.
//
// Wire format: a 4-byte big-endian length N (1..k_max_frame_size), then N
// bytes of msgpack: a map with at least "t" (frame type, a short string) and
// "v" (frame format version, an integer; this is version 1). Unknown keys are
// ignored and unknown frame types are reported as FrameType::unknown (so a
// newer peer's frames are skipped, not fatal). Every field is type- and
// size-checked on decode.
//
// The codec is sans-I/O: FrameDecoder takes bytes and yields frames.
#pragma once

#include "juice/crypto/ids.hpp"
#include "juice/crypto/result.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace juice::node {

inline constexpr std::size_t k_max_frame_size = 256 * 1024;
inline constexpr std::size_t k_max_text_bytes = 64 * 1024;  // message body cap
inline constexpr std::size_t k_max_name_bytes = 64;
inline constexpr std::size_t k_max_note_bytes = 256;
inline constexpr std::size_t k_max_request_bytes = 1024;  // contact request message
inline constexpr std::size_t k_max_receipt_ids = 512;

enum class frame_errc {
    oversized = 1,  // length prefix above k_max_frame_size, or zero
    malformed,      // not msgpack, not a map, missing or mistyped field
    unsupported,    // "v" is newer than we read and the frame is not optional
};
const std::error_category& frame_error_category() noexcept;
inline std::error_code make_error_code(frame_errc e) noexcept {
    return {static_cast<int>(e), frame_error_category()};
}

// First frame each side sends once TLS is up.
struct HelloFrame {
    std::uint32_t protocol = 1;
    std::string name;               // display name, <= k_max_name_bytes
    std::vector<std::string> caps;  // e.g. "text", "voice"; <= 16 entries of <= 16 bytes
    std::string status;             // "online" | "away" | "busy" | "invisible"
    std::string note;               // <= k_max_note_bytes
    bool operator==(const HelloFrame&) const = default;
};
struct MessageFrame {
    MessageId id;
    std::int64_t ts = 0;  // sender's clock, Unix ms
    std::string text;     // UTF-8, <= k_max_text_bytes
    bool operator==(const MessageFrame&) const = default;
};
struct AckFrame {  // receiver stored the message
    MessageId id;
    bool operator==(const AckFrame&) const = default;
};
struct PresenceFrame {  // status change, sent to linked contacts at once
    std::string status;
    std::string note;
    bool operator==(const PresenceFrame&) const = default;
};
struct KeepaliveFrame {
    bool reply = false;  // false: a ping that wants a reply; true: the reply
    bool operator==(const KeepaliveFrame&) const = default;
};
struct ByeFrame {        // clean shutdown or removal; peer shows us offline
    std::string reason;  // "shutdown", "removed"; <= 64 bytes
    bool operator==(const ByeFrame&) const = default;
};
// A contact request (sent through the recipient's DHT inbox, since no link
// forms before both sides list each other).
struct RequestFrame {
    std::string name;     // the requester's display name, <= k_max_name_bytes
    std::string message;  // "hi, it's Alice", <= k_max_request_bytes
    std::int64_t ts = 0;  // when the request was made (Unix ms): tells a newer request from a repeat
    bool operator==(const RequestFrame&) const = default;
};
struct AnswerFrame {  // the answer to a RequestFrame
    bool accept = false;
    bool operator==(const AnswerFrame&) const = default;
};
struct ReceiptFrame {            // the receiver read these messages
    std::vector<MessageId> ids;  // 1..k_max_receipt_ids
    bool operator==(const ReceiptFrame&) const = default;
};
struct TypingFrame {  // the sender is typing (expires by itself after ~10 s)
    bool typing = false;
    bool operator==(const TypingFrame&) const = default;
};
// One side's ICE parameters (docs/NAT.md): in an `ice` frame (a link's
// offer/answer, through DHT signals) and in a call's offer/accept when the
// call's audio goes through an ICE session of its own.
inline constexpr std::size_t k_max_ice_candidates = 24;
struct IceCandidateInfo {
    std::string foundation;  // <= 32 bytes
    std::uint32_t priority = 0;
    std::string type;  // "host" | "srflx" | "prflx" | "relay"
    std::string ip;    // <= 45 bytes
    std::uint16_t port = 0;
    bool operator==(const IceCandidateInfo&) const = default;
};
struct IceParams {
    std::string ufrag, pwd;                    // 4..32 and 22..64 ICE chars
    std::vector<IceCandidateInfo> candidates;  // 1..k_max_ice_candidates
    bool operator==(const IceParams&) const = default;
};
// Call signalling (the media itself travels over SRTP/UDP, see
// media/session.hpp). One frame type with an operation:
//   offer  the caller rings; `media` says where to send the caller's audio
//   accept the callee answers; `media` says where to send the callee's audio
//   end    either side ends (or refuses) the call; `reason` says why
// Over a link that itself runs through ICE, offer and accept carry `ice`
// instead: the audio then takes an ICE session of its own (a direct pair or
// a TURN relay), and `media` may be empty.
inline constexpr std::size_t k_max_media_addresses = 4;
inline constexpr std::size_t k_max_call_reason_bytes = 32;
struct MediaAddress {
    std::string ip;  // empty: the address this link's peer connects from
    std::uint16_t port = 0;
    bool operator==(const MediaAddress&) const = default;
};
struct CallFrame {
    enum class Op { offer, accept, end };
    MessageId id;  // the call id, chosen by the caller
    Op op = Op::offer;
    std::vector<MediaAddress> media;              // offer/accept: 1..k_max_media_addresses (0.. with `ice`)
    std::string reason;                           // end: "hangup", "rejected", "busy", "timeout", ...
    std::optional<IceParams> ice = std::nullopt;  // offer/accept through NATs
    bool operator==(const CallFrame&) const = default;
};
// A link's ICE signalling, carried in DHT signals: the dialer's offer, the
// answer, or `end` (refusal, give-up). One attempt id per attempt.
struct IceFrame {
    enum class Op { offer, answer, end };
    MessageId attempt;
    Op op = Op::offer;
    std::int64_t ts = 0;                       // sender's clock, Unix ms
    std::string ufrag, pwd;                    // offer/answer: 4..32 and 22..64 ICE chars
    std::vector<IceCandidateInfo> candidates;  // offer/answer: 1..k_max_ice_candidates
    std::string reason;                        // end: <= 32 bytes
    bool operator==(const IceFrame&) const = default;
};
struct UnknownFrame {  // a type this version does not know: skip it
    std::string type;
    bool operator==(const UnknownFrame&) const = default;
};

using Frame =
    std::variant<HelloFrame, MessageFrame, AckFrame, PresenceFrame, KeepaliveFrame, ByeFrame, RequestFrame,
                 AnswerFrame, ReceiptFrame, TypingFrame, CallFrame, IceFrame, UnknownFrame>;

// Length prefix + msgpack body. UnknownFrame cannot be encoded (returns empty).
Bytes encode_frame(const Frame& frame);

// Decodes one frame body (without the length prefix).
Result<Frame> decode_frame_body(std::span<const std::uint8_t> body);

class FrameDecoder {
public:
    // Appends bytes. Call next() until it returns nullopt.
    void feed(std::span<const std::uint8_t> bytes);
    // The next complete frame, an error (after which the stream is unusable:
    // close the link), or nullopt when more bytes are needed.
    std::optional<Result<Frame>> next();
    std::size_t buffered() const { return m_buf.size() - m_pos; }

private:
    Bytes m_buf;
    std::size_t m_pos = 0;
    bool m_failed = false;
};

}  // namespace juice::node

template <>
struct std::is_error_code_enum<juice::node::frame_errc> : std::true_type {};
