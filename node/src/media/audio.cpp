// The error category, the null backends and the WAV backends (libsndfile in,
// speexdsp's resampler to 48 kHz, libsndfile out). PulseAudio is in
// audio_pulse.cpp.
#include "juice/node/media/audio.hpp"

#include <sndfile.h>
#include <speex/speex_resampler.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

namespace juice::node::media {
namespace {

class AudioCategory final : public std::error_category {
public:
    const char* name() const noexcept override { return "juice.audio"; }

    std::string message(int ev) const override {
        switch (static_cast<audio_errc>(ev)) {
            case audio_errc::open_failed:
                return "the audio file or device cannot be opened: check the path and permissions";
            case audio_errc::bad_format:
                return "the file is not audio juice can read (use a WAV, FLAC or Ogg file)";
            case audio_errc::no_device:
                return "no sound server or device is available: use audio_in/audio_out WAV files or "
                       "--audio null";
            case audio_errc::device_lost:
                return "the sound device went away during the call";
        }
        return "unknown audio error " + std::to_string(ev);
    }
};

// Limits on what a file header may claim before we allocate for it: no real
// recording has more channels or a higher rate, and the resampler's filter
// size grows with the rate ratio.
constexpr int k_max_channels = 64;
constexpr int k_max_rate = 384000;
// The sink rewrites the WAV header once per second of audio, so a killed
// daemon loses at most that much of the recording.
constexpr std::uint64_t k_header_every_frames = 1000 / k_frame_ms;

std::string errno_text(int err) {
    return std::strerror(err);
}

// Owns a file descriptor; libsndfile is given it with close_desc = false so
// that exactly one party closes it, on every path.
class Fd {
public:
    explicit Fd(int fd = -1) noexcept : m_fd(fd) {}
    Fd(Fd&& o) noexcept : m_fd(std::exchange(o.m_fd, -1)) {}
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            m_fd = std::exchange(o.m_fd, -1);
        }
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    int get() const noexcept { return m_fd; }
    void reset() noexcept {
        if (m_fd >= 0) ::close(m_fd);
        m_fd = -1;
    }

private:
    int m_fd;
};

// Opens a regular file (O_CLOEXEC, mode 0644 if created). Anything else is
// refused: a FIFO would block open() and then the media thread, and the WAV
// header needs a seekable file. The error's message is the bare reason.
Result<Fd> open_regular(const std::string& path, int flags) {
    // O_NONBLOCK only so that opening a FIFO returns at once; it is cleared
    // below (it means nothing for a regular file anyway).
    Fd fd(::open(path.c_str(), flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0644));
    if (fd.get() < 0) {
        const int err = errno;
        std::string reason = errno_text(err);
        if (err == ENOENT && (flags & O_CREAT)) reason += " (does its directory exist?)";
        return make_error(audio_errc::open_failed, std::move(reason));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return make_error(audio_errc::open_failed, errno_text(errno));
    if (!S_ISREG(st.st_mode)) {
        return make_error(audio_errc::open_failed,
                          S_ISDIR(st.st_mode) ? "it is a directory" : "it is not a regular file");
    }
    const int fl = ::fcntl(fd.get(), F_GETFL);
    if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK) != 0) {
        return make_error(audio_errc::open_failed, errno_text(errno));
    }
    return fd;
}

struct SndfileCloser {
    void operator()(SNDFILE* f) const noexcept { sf_close(f); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

struct ResamplerCloser {
    void operator()(SpeexResamplerState* r) const noexcept { speex_resampler_destroy(r); }
};
using ResamplerPtr = std::unique_ptr<SpeexResamplerState, ResamplerCloser>;

// Float files may hold anything: beyond full scale clips, NaN is silence
// (converting it to an integer would be undefined behaviour).
std::int16_t to_s16(float x) noexcept {
    if (std::isnan(x)) return 0;
    const float scaled = std::nearbyint(x * 32768.0f);
    return static_cast<std::int16_t>(std::clamp(scaled, -32768.0f, 32767.0f));
}

// ---- null ----------------------------------------------------------------

class NullSource final : public AudioSource {
public:
    bool read(std::span<std::int16_t, k_frame_samples> out) override {
        std::fill(out.begin(), out.end(), std::int16_t{0});
        return true;
    }
};

class NullSink final : public AudioSink {
public:
    void write(std::span<const std::int16_t, k_frame_samples>) override {}
};

// ---- WAV source ------------------------------------------------------------

// Single-threaded: every call comes from the media thread.
class WavSource final : public AudioSource {
public:
    WavSource(Fd fd, SndfilePtr file, int channels, int rate, ResamplerPtr resampler)
        : m_fd(std::move(fd)),
          m_file(std::move(file)),
          m_channels(channels),
          m_rate(rate),
          m_resampler(std::move(resampler)),
          // One refill reads about one frame's duration of input, so memory
          // stays small whatever the rate (at 1 Hz one input sample is 1 s).
          m_chunk(std::max<sf_count_t>(1, rate / (1000 / k_frame_ms))),
          m_in(static_cast<std::size_t>(m_chunk) * static_cast<std::size_t>(channels)) {}

    ~WavSource() override {
        m_file.reset();  // sf_close before the descriptor it uses is closed
    }

    bool read(std::span<std::int16_t, k_frame_samples> out) override {
        while (available() < k_frame_samples && !m_input_done) refill();
        const std::size_t n = std::min(available(), k_frame_samples);
        if (n == 0) {
            std::fill(out.begin(), out.end(), std::int16_t{0});
            return false;
        }
        const float* p = m_out.data() + m_out_pos;
        std::transform(p, p + n, out.begin(), to_s16);
        std::fill(out.begin() + static_cast<std::ptrdiff_t>(n), out.end(), std::int16_t{0});
        m_out_pos += n;
        if (m_out_pos == m_out.size()) {
            m_out.clear();
            m_out_pos = 0;
        }
        return true;
    }

    std::string failure() const override { return m_failure; }

private:
    std::size_t available() const noexcept { return m_out.size() - m_out_pos; }

    // Reads one chunk of the file, mixes it to mono and appends it, at
    // 48 kHz, to m_out. At the end of the file it flushes the resampler and
    // trims the output to exactly the file's duration at 48 kHz.
    void refill() {
        // Drop what read() has consumed so m_out does not grow without bound.
        if (m_out_pos > 0) {
            m_out.erase(m_out.begin(), m_out.begin() + static_cast<std::ptrdiff_t>(m_out_pos));
            m_out_pos = 0;
        }
        const sf_count_t got = sf_readf_float(m_file.get(), m_in.data(), m_chunk);
        if (got <= 0) {
            if (sf_error(m_file.get()) != SF_ERR_NO_ERROR) m_failure = sf_strerror(m_file.get());
            finish();
            return;
        }
        m_in_frames += static_cast<std::uint64_t>(got);
        m_mono.resize(static_cast<std::size_t>(got));
        const float scale = 1.0f / static_cast<float>(m_channels);
        for (std::size_t i = 0; i < m_mono.size(); ++i) {
            const float* frame = m_in.data() + i * static_cast<std::size_t>(m_channels);
            float sum = 0.0f;
            for (int c = 0; c < m_channels; ++c) sum += frame[c];
            m_mono[i] = sum * scale;
        }
        push(m_mono);
    }

    // Resamples `mono` (at the file's rate) onto the end of m_out.
    void push(const std::vector<float>& mono) {
        if (!m_resampler) {
            m_out.insert(m_out.end(), mono.begin(), mono.end());
            m_out_total += mono.size();
            return;
        }
        std::size_t pos = 0;
        while (pos < mono.size()) {
            const std::size_t room = (mono.size() - pos) * static_cast<std::size_t>(k_sample_rate) /
                                         static_cast<std::size_t>(m_rate) +
                                     64;
            const std::size_t base = m_out.size();
            m_out.resize(base + room);
            auto in_len = static_cast<spx_uint32_t>(mono.size() - pos);
            auto out_len = static_cast<spx_uint32_t>(room);
            speex_resampler_process_float(m_resampler.get(), 0, mono.data() + pos, &in_len,
                                          m_out.data() + base, &out_len);
            m_out.resize(base + out_len);
            m_out_total += out_len;
            pos += in_len;
            if (in_len == 0 && out_len == 0) break;  // cannot happen with room > 0; never spin
        }
    }

    void finish() {
        m_input_done = true;
        const std::uint64_t expected = (m_in_frames * static_cast<std::uint64_t>(k_sample_rate) +
                                        static_cast<std::uint64_t>(m_rate) / 2) /
                                       static_cast<std::uint64_t>(m_rate);
        if (m_resampler) {
            // The resampler holds back its filter's latency; push zeros
            // through to get the tail of the file out.
            const int latency = speex_resampler_get_input_latency(m_resampler.get());
            push(std::vector<float>(static_cast<std::size_t>(std::max(latency, 0)) + 1, 0.0f));
        }
        // Exactly the file's duration: cut the flushed filter tail, or pad
        // the rare sample the filter still owes with silence.
        const std::uint64_t delivered_before = m_out_total - m_out.size();  // m_out_pos is 0 here
        if (m_out_total > expected) {
            const std::uint64_t keep = expected > delivered_before ? expected - delivered_before : 0;
            m_out.resize(static_cast<std::size_t>(keep));
        } else if (m_out_total < expected) {
            m_out.resize(m_out.size() + static_cast<std::size_t>(expected - m_out_total), 0.0f);
        }
        m_out_total = expected;
    }

    Fd m_fd;
    SndfilePtr m_file;
    int m_channels;
    int m_rate;
    ResamplerPtr m_resampler;   // null when the file is already at 48 kHz
    sf_count_t m_chunk;         // input frames per refill
    std::vector<float> m_in;    // interleaved input chunk
    std::vector<float> m_mono;  // the chunk mixed to mono
    std::vector<float> m_out;   // 48 kHz samples not yet read, from m_out_pos
    std::size_t m_out_pos = 0;
    std::uint64_t m_in_frames = 0;  // input frames read from the file so far
    std::uint64_t m_out_total = 0;  // 48 kHz samples ever appended to m_out
    bool m_input_done = false;
    std::string m_failure;
};

// ---- WAV sink ----------------------------------------------------------------

class WavSink final : public AudioSink {
public:
    WavSink(Fd fd, SndfilePtr file) : m_fd(std::move(fd)), m_file(std::move(file)) {}

    ~WavSink() override {
        m_file.reset();  // sf_close writes the final header before the descriptor is closed
    }

    void write(std::span<const std::int16_t, k_frame_samples> in) override {
        if (!m_failure.empty()) return;
        const sf_count_t n = sf_write_short(m_file.get(), in.data(), static_cast<sf_count_t>(in.size()));
        if (n != static_cast<sf_count_t>(in.size())) {
            m_failure = std::string("writing the WAV file failed: ") + sf_strerror(m_file.get());
            return;
        }
        if (++m_frames % k_header_every_frames == 0) {
            sf_command(m_file.get(), SFC_UPDATE_HEADER_NOW, nullptr, 0);
        }
    }

    std::string failure() const override { return m_failure; }

private:
    Fd m_fd;
    SndfilePtr m_file;
    std::uint64_t m_frames = 0;
    std::string m_failure;
};

}  // namespace

const std::error_category& audio_error_category() noexcept {
    static const AudioCategory category;
    return category;
}

std::unique_ptr<AudioSource> make_null_source() {
    return std::make_unique<NullSource>();
}
std::unique_ptr<AudioSink> make_null_sink() {
    return std::make_unique<NullSink>();
}

Result<std::unique_ptr<AudioSource>> open_wav_source(const std::string& path) {
    // Open the file ourselves first: that tells "cannot open" (with the OS
    // reason) apart from "not audio", which libsndfile's errors do not.
    auto fd = open_regular(path, O_RDONLY);
    if (!fd)
        return make_error(audio_errc::open_failed,
                          "cannot open audio input '" + path + "': " + fd.error().message);

    SF_INFO info{};
    SndfilePtr file(sf_open_fd(fd->get(), SFM_READ, &info, SF_FALSE));
    if (!file) {
        return make_error(audio_errc::bad_format,
                          "audio input '" + path + "' is not an audio file libsndfile can read (" +
                              sf_strerror(nullptr) + "); use a WAV, FLAC or Ogg file");
    }
    if (info.channels < 1 || info.channels > k_max_channels) {
        return make_error(audio_errc::bad_format, "audio input '" + path + "' claims " +
                                                      std::to_string(info.channels) + " channels (at most " +
                                                      std::to_string(k_max_channels) + " are supported)");
    }
    if (info.samplerate <= 0 || info.samplerate > k_max_rate) {
        return make_error(audio_errc::bad_format, "audio input '" + path + "' claims a sample rate of " +
                                                      std::to_string(info.samplerate) + " Hz (1 to " +
                                                      std::to_string(k_max_rate) + " Hz are supported)");
    }
    // Integer files are read as floats in [-1, 1) (libsndfile's default);
    // float files are passed through and clipped when converted back.
    sf_command(file.get(), SFC_SET_NORM_FLOAT, nullptr, SF_TRUE);

    ResamplerPtr resampler;
    if (info.samplerate != k_sample_rate) {
        int err = 0;
        resampler.reset(speex_resampler_init(1, static_cast<spx_uint32_t>(info.samplerate),
                                             static_cast<spx_uint32_t>(k_sample_rate), 5, &err));
        if (!resampler) {
            return make_error(audio_errc::bad_format, "audio input '" + path + "': cannot resample " +
                                                          std::to_string(info.samplerate) +
                                                          " Hz to 48 kHz: " + speex_resampler_strerror(err));
        }
        // Start output at the first input sample instead of after the
        // filter's delay of zeros.
        speex_resampler_skip_zeros(resampler.get());
    }
    return std::unique_ptr<AudioSource>(std::make_unique<WavSource>(
        std::move(*fd), std::move(file), info.channels, info.samplerate, std::move(resampler)));
}

Result<std::unique_ptr<AudioSink>> open_wav_sink(const std::string& path) {
    auto fd = open_regular(path, O_WRONLY | O_CREAT | O_TRUNC);
    if (!fd)
        return make_error(audio_errc::open_failed,
                          "cannot create audio output '" + path + "': " + fd.error().message);
    SF_INFO info{};
    info.samplerate = k_sample_rate;
    info.channels = 1;
    info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    SndfilePtr file(sf_open_fd(fd->get(), SFM_WRITE, &info, SF_FALSE));
    if (!file) {
        return make_error(audio_errc::open_failed,
                          "cannot write audio output '" + path + "': " + sf_strerror(nullptr));
    }
    return std::unique_ptr<AudioSink>(std::make_unique<WavSink>(std::move(*fd), std::move(file)));
}

}  // namespace juice::node::media
