// Audio I/O for calls, behind one interface.
//
// The call pipeline works on 20 ms frames of 48 kHz mono signed 16-bit PCM
// (k_frame_samples samples). A source yields one frame per call of read(); a
// sink takes one frame per call of write(). Both are called from the call's
// media thread, once per 20 ms tick, and must not block for long: a device
// backend runs its own thread and buffers between it and the tick.
//
// Backends:
//   - WAV files (libsndfile): the source reads any file libsndfile reads, at
//     any rate and channel count, mixed down to mono and resampled to 48 kHz
//     (speexdsp's resampler); at the end of the file it yields silence. The
//     sink writes a 48 kHz mono 16-bit PCM WAV whose header is kept valid as
//     it grows, so a killed daemon leaves a readable file.
//   - PulseAudio (the simple API, one thread per direction): the default
//     sound device.
//   - null: the source yields silence, the sink discards.
#pragma once

#include "juice/crypto/result.hpp"

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <system_error>

namespace juice::node::media {

inline constexpr int k_sample_rate = 48000;
inline constexpr int k_frame_ms = 20;
inline constexpr std::size_t k_frame_samples = k_sample_rate / 1000 * k_frame_ms;  // 960

enum class audio_errc {
    open_failed = 1,  // the file or device cannot be opened (message says why)
    bad_format,       // the file is not audio libsndfile can read
    no_device,        // no sound server or device is available
    device_lost,      // the device went away during the call
};
const std::error_category& audio_error_category() noexcept;
inline std::error_code make_error_code(audio_errc e) noexcept {
    return {static_cast<int>(e), audio_error_category()};
}

class AudioSource {
public:
    virtual ~AudioSource() = default;
    // Fills `out` with the next 20 ms. Returns false once the input has
    // ended (a file ran out, the device failed); `out` is then silence.
    virtual bool read(std::span<std::int16_t, k_frame_samples> out) = 0;
    // Why the source stopped producing, if it failed (not for a plain end
    // of file); empty while it works.
    virtual std::string failure() const { return {}; }
};

class AudioSink {
public:
    virtual ~AudioSink() = default;
    virtual void write(std::span<const std::int16_t, k_frame_samples> in) = 0;
    virtual std::string failure() const { return {}; }
};

Result<std::unique_ptr<AudioSource>> open_wav_source(const std::string& path);
Result<std::unique_ptr<AudioSink>> open_wav_sink(const std::string& path);
std::unique_ptr<AudioSource> make_null_source();
std::unique_ptr<AudioSink> make_null_sink();
// PulseAudio's default source/sink. Fails with audio_errc::no_device when no
// sound server answers (a headless machine).
Result<std::unique_ptr<AudioSource>> open_pulse_source(const std::string& app_name);
Result<std::unique_ptr<AudioSink>> open_pulse_sink(const std::string& app_name);

}  // namespace juice::node::media

template <>
struct std::is_error_code_enum<juice::node::media::audio_errc> : std::true_type {};
