// PulseAudio backends on the simple API. pa_simple calls block, so each
// stream gets one device thread that does nothing but block in
// pa_simple_read/pa_simple_write; the media thread only touches a bounded
// queue of frames (FrameQueue: at most 200 ms, standing delay trimmed),
// under a mutex, and never waits for the device.
//
// Threads and ownership:
//   - the pa_simple handle is created on the caller's thread, then used only
//     by the device thread until the destructor has joined it, then freed;
//   - m_stop is the only flag the device thread polls (an atomic);
//   - m_queue, m_failure and m_failed are guarded by m_mutex.
// The device thread is paced by the device clock (one 20 ms read or write
// per loop), so the destructor waits about one frame for the join. (A server
// that freezes without closing the connection would hold the join as long:
// the simple API cannot interrupt a blocked call. A dead server fails the
// call at once.)
#include "juice/node/media/audio.hpp"

#include "media/frame_queue.hpp"

#include <pulse/error.h>
#include <pulse/simple.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace juice::node::media {
namespace {

constexpr std::uint32_t k_frame_bytes = k_frame_samples * sizeof(std::int16_t);

struct PaSimpleCloser {
    void operator()(pa_simple* s) const noexcept { pa_simple_free(s); }
};
using PaSimplePtr = std::unique_ptr<pa_simple, PaSimpleCloser>;

Result<PaSimplePtr> connect(const std::string& app_name, pa_stream_direction_t dir) {
    const bool playback = dir == PA_STREAM_PLAYBACK;
    // Native-endian s16: the frames are std::int16_t arrays (S16LE here).
    const pa_sample_spec spec{PA_SAMPLE_S16NE, static_cast<std::uint32_t>(k_sample_rate), 1};
    // Small server-side buffers for call latency: 40 ms of playback target,
    // 20 ms capture fragments; the rest is the server's choice.
    pa_buffer_attr attr{};
    attr.maxlength = static_cast<std::uint32_t>(-1);
    attr.tlength = playback ? 2 * k_frame_bytes : static_cast<std::uint32_t>(-1);
    attr.prebuf = static_cast<std::uint32_t>(-1);
    attr.minreq = static_cast<std::uint32_t>(-1);
    attr.fragsize = playback ? static_cast<std::uint32_t>(-1) : k_frame_bytes;

    int err = 0;
    pa_simple* s = pa_simple_new(nullptr, app_name.empty() ? "juice" : app_name.c_str(), dir, nullptr,
                                 playback ? "call playback" : "call capture", &spec, nullptr, &attr, &err);
    if (!s) {
        const std::string what = playback ? "PulseAudio playback" : "PulseAudio capture";
        std::string hint = err == PA_ERR_NOENTITY
                               ? "the sound server has no such device (check PULSE_SINK/PULSE_SOURCE)"
                               : "no sound server; use audio_in/audio_out WAV files or --audio null";
        return make_error(audio_errc::no_device, what + ": " + pa_strerror(err) + ": " + hint);
    }
    return PaSimplePtr(s);
}

// What both directions share: the handle, the queue, the failure, the thread.
class PulseStream {
public:
    explicit PulseStream(PaSimplePtr pa) : m_pa(std::move(pa)) {}
    PulseStream(const PulseStream&) = delete;
    PulseStream& operator=(const PulseStream&) = delete;

    std::string failure() const {
        std::lock_guard lock(m_mutex);
        return m_failure;
    }

protected:
    ~PulseStream() = default;

    // Starts the device thread; call last in the derived constructor, so the
    // thread never sees a half-built object.
    template <class F>
    void start(F body) {
        m_thread = std::thread(std::move(body));
    }
    // Stops and joins the device thread; call first in the derived
    // destructor, before anything the thread uses goes away.
    void stop() noexcept {
        m_stop.store(true, std::memory_order_relaxed);
        if (m_thread.joinable()) m_thread.join();
    }
    bool stopping() const noexcept { return m_stop.load(std::memory_order_relaxed); }

    // Device thread: records why the device failed; the thread then returns.
    void fail(const char* what, int err) {
        std::lock_guard lock(m_mutex);
        m_failed = true;
        m_failure = std::string(what) + ": " + pa_strerror(err) + " (the sound device went away)";
    }

    PaSimplePtr m_pa;  // device thread only, while it runs
    mutable std::mutex m_mutex;
    FrameQueue m_queue;     // guarded by m_mutex
    std::string m_failure;  // guarded by m_mutex
    bool m_failed = false;  // guarded by m_mutex

private:
    std::atomic<bool> m_stop{false};
    std::thread m_thread;
};

class PulseSource final : public AudioSource, private PulseStream {
public:
    explicit PulseSource(PaSimplePtr pa) : PulseStream(std::move(pa)) {
        start([this] { run(); });
    }
    ~PulseSource() override { stop(); }

    // Media thread. Never blocks on the device: the oldest captured frame,
    // or silence when none has arrived (true) or the device failed (false).
    bool read(std::span<std::int16_t, k_frame_samples> out) override {
        Frame f;
        std::lock_guard lock(m_mutex);
        if (m_queue.pop(f)) {
            std::copy(f.begin(), f.end(), out.begin());
            return true;
        }
        std::fill(out.begin(), out.end(), std::int16_t{0});
        return !m_failed;
    }

    std::string failure() const override { return PulseStream::failure(); }

private:
    // Device thread: blocks about 20 ms per frame in pa_simple_read.
    void run() {
        Frame f{};
        while (!stopping()) {
            int err = 0;
            if (pa_simple_read(m_pa.get(), f.data(), k_frame_bytes, &err) < 0) {
                fail("PulseAudio capture failed", err);
                return;
            }
            std::lock_guard lock(m_mutex);
            m_queue.push(f);
        }
    }
};

class PulseSink final : public AudioSink, private PulseStream {
public:
    explicit PulseSink(PaSimplePtr pa) : PulseStream(std::move(pa)) {
        start([this] { run(); });
    }
    ~PulseSink() override { stop(); }

    // Media thread. Never blocks on the device; after a failure the frame is
    // discarded (failure() says why).
    void write(std::span<const std::int16_t, k_frame_samples> in) override {
        Frame f;
        std::copy(in.begin(), in.end(), f.begin());
        std::lock_guard lock(m_mutex);
        if (m_failed) return;
        m_queue.push(f);
    }

    std::string failure() const override { return PulseStream::failure(); }

private:
    // Device thread: pa_simple_write blocks until the server wants more
    // (tlength is 40 ms). With nothing queued it plays silence, so the
    // stream keeps running on the device clock instead of underrunning.
    void run() {
        Frame f{};
        while (!stopping()) {
            {
                std::lock_guard lock(m_mutex);
                if (!m_queue.pop(f)) f.fill(0);
            }
            int err = 0;
            if (pa_simple_write(m_pa.get(), f.data(), k_frame_bytes, &err) < 0) {
                fail("PulseAudio playback failed", err);
                return;
            }
        }
    }
};

}  // namespace

Result<std::unique_ptr<AudioSource>> open_pulse_source(const std::string& app_name) {
    auto pa = connect(app_name, PA_STREAM_RECORD);
    if (!pa) return pa.error();
    return std::unique_ptr<AudioSource>(std::make_unique<PulseSource>(std::move(*pa)));
}

Result<std::unique_ptr<AudioSink>> open_pulse_sink(const std::string& app_name) {
    auto pa = connect(app_name, PA_STREAM_PLAYBACK);
    if (!pa) return pa.error();
    return std::unique_ptr<AudioSink>(std::make_unique<PulseSink>(std::move(*pa)));
}

}  // namespace juice::node::media
