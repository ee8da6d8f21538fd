// One call's media: Opus in RTP over SRTP on UDP, both directions.
//
// A MediaSession owns a UDP socket and, once started, a media thread that
// runs the whole pipeline every 20 ms:
//   send:    source frame -> Opus encode (in-band FEC) -> RTP -> SRTP -> UDP
//   receive: UDP -> SRTP check -> RTP -> speexdsp's adaptive jitter buffer
//            -> Opus decode (FEC from the next packet, else PLC) -> sink
// plus an SRTCP sender report every second, whose receiver block tells the
// peer how much of its audio was lost and how jittery it arrived; each side
// adapts its encoder (expected-loss setting, which drives FEC, and bitrate)
// to what the peer reports.
//
// Keys: both ends export the same keying material from their TLS link (RFC
// 5705 exporter, label k_srtp_exporter_label, context = call id), laid out as
// DTLS-SRTP does (RFC 5764 §4.2): client key, server key, client salt, server
// salt, for AES_CM_128_HMAC_SHA1_80. The TLS client sends with the client
// half. No key travels in a message.
//
// The datagrams go through the session's own UDP socket (bind()), or through
// a DatagramPort (over()): an ICE session through NATs, for one.
//
// Threads: bind()/start()/stop()/stats() are called from the owner's thread
// (the daemon loop); everything else runs on the media thread. stats() reads
// a snapshot under a mutex.
#pragma once

#include "juice/crypto/ids.hpp"
#include "juice/crypto/result.hpp"
#include "juice/node/media/audio.hpp"

#include <asio/ip/udp.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace juice::node::media {

inline constexpr std::uint8_t k_opus_payload_type = 111;
inline constexpr std::size_t k_srtp_keying_bytes = 60;
inline constexpr std::string_view k_srtp_exporter_label = "EXPERIMENTAL-juice-call-srtp";

struct CallStats {
    std::uint64_t packets_sent = 0, packets_received = 0;
    std::uint64_t bytes_sent = 0, bytes_received = 0;
    double loss_in = 0;         // share of the peer's packets that never arrived (whole call)
    double loss_out = 0;        // share of ours the peer reported lost (its last report)
    double jitter_ms = 0;       // interarrival jitter of the peer's stream
    double peer_jitter_ms = 0;  // the peer's view of ours
    double buffer_ms = 0;       // how long a frame waits in our jitter buffer (smoothed)
    double rtt_ms = -1;         // round trip from RTCP; -1 until known
    int bitrate = 0;            // our encoder's target, bit/s
    int expected_loss = 0;      // percent, given to the encoder (drives in-band FEC)
    std::uint64_t frames_decoded = 0, frames_recovered = 0, frames_concealed = 0;
    std::uint64_t rejected = 0;     // datagrams that failed SRTP authentication or parsing
    std::int64_t ms_since_rx = -1;  // since the last authenticated packet; -1 before the first
    std::string remote;             // where we send our audio
    bool source_ended = false;      // the audio input ran out (a WAV file ended)
    std::string audio_failure;      // the device failed, if it did
};

enum class Playout { decoded, recovered, concealed };

// A datagram path the session does not own a socket for (juice_ice's
// IcePort: an ICE session's selected pair, maybe through a TURN relay).
class DatagramPort {
public:
    virtual ~DatagramPort() = default;
    // Called once, from the owner's thread, when the session starts.
    // `deliver` may then be called on any thread, one datagram at a time,
    // until stop() returns.
    virtual void start(std::function<void(std::span<const std::uint8_t>)> deliver) = 0;
    // One datagram, from the media thread; dropped while no path is chosen.
    virtual void send(std::span<const std::uint8_t> datagram) = 0;
    // After it returns, `deliver` is never called again. Idempotent.
    virtual void stop() = 0;
};

struct SessionOptions {
    bool tls_client = false;         // our role on the link: picks our half of the keys
    Bytes keying_material;           // k_srtp_keying_bytes from the link's exporter
    asio::ip::udp::endpoint remote;  // bind()'s socket sends here; unused over a DatagramPort
    std::unique_ptr<AudioSource> source;
    std::unique_ptr<AudioSink> sink;
    int bitrate = 32000;
    // Observers for benchmarks and tests, called on the media thread: when a
    // frame was captured (our RTP timestamp) and when a frame of the peer's
    // stream was played (the peer's RTP timestamp).
    std::function<void(std::uint32_t rtp_ts, std::chrono::steady_clock::time_point)> on_capture;
    std::function<void(std::uint32_t rtp_ts, std::chrono::steady_clock::time_point, Playout)> on_playout;
};

class MediaSession {
public:
    // Binds the session's UDP socket: `ip` empty binds every address
    // (dual-stack when the host has IPv6), port 0 picks a free port.
    static Result<std::unique_ptr<MediaSession>> bind(const std::string& ip, std::uint16_t port);
    // A session whose datagrams go through `port` instead of a socket.
    static std::unique_ptr<MediaSession> over(std::shared_ptr<DatagramPort> port);
    ~MediaSession();  // stops
    MediaSession(const MediaSession&) = delete;
    MediaSession& operator=(const MediaSession&) = delete;

    std::uint16_t local_port() const;  // 0 over a DatagramPort
    // Starts the media thread. Fails on bad keys or options; only once.
    Result<void> start(SessionOptions options);
    // Stops and joins the media thread (idempotent). The sink is closed.
    void stop();
    CallStats stats() const;

    struct Impl;

private:
    explicit MediaSession(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

}  // namespace juice::node::media
