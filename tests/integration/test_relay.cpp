// The test kit's own instruments, checked before call tests rely on them:
// UdpRelay (loss, delay, jitter, burst loss, bounds, shutdown) with real
// UDP sockets on loopback, and the audio comparison on synthetic signals
// whose lag and SNR are known by construction.
#include "audio_compare.hpp"
#include "harness.hpp"
#include "udp_relay.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numbers>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>

using namespace juice::test;
using Clock = std::chrono::steady_clock;
using Bytes = std::vector<std::uint8_t>;

namespace {

// A UDP socket on 127.0.0.1 (ephemeral port) playing one end of a path.
class Udp {
public:
    Udp() {
        m_fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (m_fd < 0) throw std::runtime_error("socket: " + std::string(strerror(errno)));
        int big = 4 << 20;  // bursts of 1000 datagrams; capped by rmem_max
        ::setsockopt(m_fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::bind(m_fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
            throw std::runtime_error("bind: " + std::string(strerror(errno)));
        socklen_t len = sizeof sa;
        ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&sa), &len);
        m_port = ntohs(sa.sin_port);
    }
    ~Udp() { ::close(m_fd); }
    Udp(const Udp&) = delete;
    Udp& operator=(const Udp&) = delete;

    std::uint16_t port() const { return m_port; }

    void send_to(std::uint16_t port, const Bytes& b) {
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons(port);
        if (::sendto(m_fd, b.data(), b.size(), 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa) !=
            static_cast<ssize_t>(b.size()))
            throw std::runtime_error("sendto: " + std::string(strerror(errno)));
    }

    // The next datagram, or nullopt after `timeout`. *from_port: its sender.
    std::optional<Bytes> recv(std::chrono::milliseconds timeout, std::uint16_t* from_port = nullptr) {
        pollfd p{m_fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
        sockaddr_in sa{};
        socklen_t len = sizeof sa;
        ssize_t n = ::recvfrom(m_fd, m_buf, sizeof m_buf, 0, reinterpret_cast<sockaddr*>(&sa), &len);
        if (n < 0) return std::nullopt;
        if (from_port) *from_port = ntohs(sa.sin_port);
        return Bytes(m_buf, m_buf + n);
    }

private:
    int m_fd = -1;
    std::uint16_t m_port = 0;
    std::uint8_t m_buf[2048];  // our datagrams are at most 1212 bytes
};

// Datagram `seq`: its number, the send time, then a pattern of 0..1199 bytes
// derived from seq (so that corruption or truncation is seen).
Bytes make_datagram(std::uint32_t seq) {
    const auto now = Clock::now().time_since_epoch().count();
    Bytes b(4 + sizeof now + (seq * 7919u) % 1200u);
    std::memcpy(b.data(), &seq, 4);
    std::memcpy(b.data() + 4, &now, sizeof now);
    for (std::size_t i = 4 + sizeof now; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(seq * 31u + i);
    return b;
}

struct Parsed {
    std::uint32_t seq;
    Clock::time_point sent;
    bool intact;
};

Parsed parse(const Bytes& b) {
    Parsed p{};
    Clock::rep t = 0;
    if (b.size() < 4 + sizeof t) return p;
    std::memcpy(&p.seq, b.data(), 4);
    std::memcpy(&t, b.data() + 4, sizeof t);
    p.sent = Clock::time_point(Clock::duration(t));
    Bytes expect = make_datagram(p.seq);
    p.intact = expect.size() == b.size() &&
               std::equal(b.begin() + 4 + sizeof t, b.end(), expect.begin() + 4 + sizeof t);
    return p;
}

// Sends datagrams 0..n-1 from `from` through `relay` in batches of 50 and
// collects at `to` all that the relay forwarded (in one direction:
// to_target or back), in arrival order. Waits by polling, with deadlines.
std::vector<Parsed> pump(Udp& from, const UdpRelay& relay, Udp& to, int n, bool to_target) {
    auto dir = [&] {
        auto s = relay.stats();
        return to_target ? s.to_target : s.from_target;
    };
    std::vector<Parsed> got;
    for (int i = 0; i < n; i += 50) {
        for (int k = i; k < std::min(n, i + 50); ++k)
            from.send_to(relay.port(), make_datagram(static_cast<std::uint32_t>(k)));
        // Drain what is already there so that no socket buffer fills.
        while (auto b = to.recv(std::chrono::milliseconds(0))) got.push_back(parse(*b));
    }
    wait_until(
        [&] {
            auto d = dir();
            return d.received == static_cast<std::uint64_t>(n) &&
                   d.forwarded + d.dropped_loss + d.dropped_overflow + d.send_errors == d.received;
        },
        std::chrono::seconds(5));
    const auto expect = dir().forwarded;
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    while (got.size() < expect && Clock::now() < deadline)
        if (auto b = to.recv(std::chrono::milliseconds(100))) got.push_back(parse(*b));
    return got;
}

UdpRelayOptions relay_to(const Udp& target) {
    UdpRelayOptions o;
    o.target_port = target.port();
    return o;
}

}  // namespace

TEST_CASE("relay: without loss, 1000 datagrams each way arrive intact", "[testkit][relay]") {
    Udp a, b;  // a: the peer that calls in; b: the target
    UdpRelay relay(relay_to(b));
    REQUIRE(relay.port() != 0);

    // From the target before anyone called: nowhere to send it.
    b.send_to(relay.port(), make_datagram(0));
    REQUIRE(wait_until([&] { return relay.stats().dropped_no_peer == 1; }, std::chrono::seconds(2)));

    auto there = pump(a, relay, b, 1000, true);
    auto back = pump(b, relay, a, 1000, false);
    for (auto* got : {&there, &back}) {
        REQUIRE(got->size() == 1000);
        std::set<std::uint32_t> seqs;
        for (auto& p : *got) {
            CHECK(p.intact);
            seqs.insert(p.seq);
        }
        CHECK(seqs.size() == 1000);
    }
    auto s = relay.stats();
    CHECK(s.to_target.received == 1000);
    CHECK(s.to_target.forwarded == 1000);
    CHECK(s.from_target.received == 1000);
    CHECK(s.from_target.forwarded == 1000);
    CHECK(s.to_target.dropped_loss + s.from_target.dropped_loss == 0);
    CHECK(s.queued == 0);

    // Both ends see the relay's listen socket as their peer.
    std::uint16_t seen = 0;
    a.send_to(relay.port(), make_datagram(1));
    REQUIRE(b.recv(std::chrono::seconds(2), &seen));
    CHECK(seen == relay.port());
    b.send_to(relay.port(), make_datagram(2));
    REQUIRE(a.recv(std::chrono::seconds(2), &seen));
    CHECK(seen == relay.port());
}

TEST_CASE("relay: 10% loss drops 10% +-3% per direction, the same datagrams for the same seed",
          "[testkit][relay]") {
    Udp a, b;
    auto opts = relay_to(b);
    opts.loss = 0.1;
    opts.seed = 42;

    std::set<std::uint32_t> first_run;
    for (int run = 0; run < 2; ++run) {
        UdpRelay relay(opts);
        auto there = pump(a, relay, b, 1000, true);
        auto back = pump(b, relay, a, 1000, false);
        auto s = relay.stats();
        INFO("to target: dropped " << s.to_target.dropped_loss << ", from target: dropped "
                                   << s.from_target.dropped_loss);
        CHECK(s.to_target.received == 1000);
        CHECK(s.to_target.dropped_loss >= 70);
        CHECK(s.to_target.dropped_loss <= 130);
        CHECK(s.from_target.dropped_loss >= 70);
        CHECK(s.from_target.dropped_loss <= 130);
        CHECK(s.to_target.forwarded + s.to_target.dropped_loss == 1000);
        CHECK(there.size() == s.to_target.forwarded);
        CHECK(back.size() == s.from_target.forwarded);

        std::set<std::uint32_t> seqs;
        for (auto& p : there) seqs.insert(p.seq);
        if (run == 0)
            first_run = seqs;
        else
            CHECK(seqs == first_run);
    }
}

TEST_CASE("relay: burst loss (Gilbert-Elliott) loses in runs", "[testkit][relay]") {
    Udp a, b;
    auto opts = relay_to(b);
    opts.burst = {.enabled = true, .p_good_to_bad = 0.05, .p_bad_to_good = 0.25, .loss_in_bad = 1.0};
    opts.seed = 7;
    UdpRelay relay(opts);
    auto got = pump(a, relay, b, 2000, true);

    std::vector<bool> arrived(2000, false);
    for (auto& p : got) arrived.at(p.seq) = true;
    int lost = 0, runs = 0;
    for (std::size_t i = 0; i < arrived.size(); ++i) {
        if (arrived[i]) continue;
        ++lost;
        if (i == 0 || arrived[i - 1]) ++runs;
    }
    REQUIRE(runs > 0);
    const double mean_run = static_cast<double>(lost) / runs;
    INFO("lost " << lost << " in " << runs << " runs");
    // Stationary loss 0.05 / (0.05 + 0.25) = 16.7%; mean run 1 / 0.25 = 4
    // (independent 16.7% loss would give runs of 1.2).
    CHECK(lost >= 2000 * 0.10);
    CHECK(lost <= 2000 * 0.24);
    CHECK(mean_run >= 2.5);
    CHECK(relay.stats().to_target.dropped_loss == static_cast<std::uint64_t>(lost));
}

TEST_CASE("relay: 20 ms delay with 30 ms jitter spreads arrivals over 20..50 ms and reorders",
          "[testkit][relay]") {
    Udp a, b;
    auto opts = relay_to(b);
    opts.delay = std::chrono::milliseconds(20);
    opts.jitter = std::chrono::milliseconds(30);
    UdpRelay relay(opts);

    // One datagram every 2 ms, received on another thread as they come.
    std::vector<std::pair<Parsed, Clock::time_point>> got;
    std::thread receiver([&] {
        while (got.size() < 200)
            if (auto d = b.recv(std::chrono::milliseconds(1000)))
                got.emplace_back(parse(*d), Clock::now());
            else
                break;
    });
    for (std::uint32_t i = 0; i < 200; ++i) {
        a.send_to(relay.port(), make_datagram(i));
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    receiver.join();
    REQUIRE(got.size() == 200);

    std::vector<double> delays;
    int reordered = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        delays.push_back(
            std::chrono::duration<double, std::milli>(got[i].second - got[i].first.sent).count());
        if (i > 0 && got[i].first.seq < got[i - 1].first.seq) ++reordered;
    }
    std::sort(delays.begin(), delays.end());
    const double p10 = delays[delays.size() / 10], p90 = delays[delays.size() * 9 / 10];
    const auto in_model =
        std::count_if(delays.begin(), delays.end(), [](double d) { return d <= 50.0 + 5.0; });
    INFO("delay min " << delays.front() << " p10 " << p10 << " p90 " << p90 << " max " << delays.back()
                      << " ms; " << in_model << " of 200 within 55 ms; reordered " << reordered);
    // Never early, and spread over the whole 20..50 ms (uniform: p10 23,
    // p90 47). Late outliers are the scheduler's: a loaded 2-core machine
    // under TSan stalled threads for 40+ ms (p95 85 ms once), so only most
    // arrivals must be within 5 ms of the model.
    CHECK(delays.front() >= 20.0);
    CHECK(p10 <= 30.0);
    CHECK(p90 >= 40.0);
    CHECK(in_model >= 160);
    CHECK(delays.back() <= 50.0 + 250.0);
    CHECK(reordered >= 10);
}

TEST_CASE("relay: the delay queue is bounded and the destructor does not wait for it", "[testkit][relay]") {
    Udp a, b;
    auto opts = relay_to(b);
    opts.delay = std::chrono::milliseconds(5000);
    opts.max_queue = 100;
    auto relay = std::make_unique<UdpRelay>(opts);
    for (std::uint32_t i = 0; i < 300; ++i) a.send_to(relay->port(), make_datagram(i));
    REQUIRE(wait_until([&] { return relay->stats().to_target.received == 300; }, std::chrono::seconds(2)));
    auto s = relay->stats();
    CHECK(s.queued == 100);
    CHECK(s.to_target.dropped_overflow == 200);
    CHECK(s.to_target.forwarded == 0);

    const auto t0 = Clock::now();
    relay.reset();
    CHECK(Clock::now() - t0 < std::chrono::milliseconds(500));
    CHECK_FALSE(b.recv(std::chrono::milliseconds(0)));
}

TEST_CASE("relay: an idle relay stops at once, and bad options are refused", "[testkit][relay]") {
    Udp b;
    const auto t0 = Clock::now();
    { UdpRelay relay(relay_to(b)); }
    CHECK(Clock::now() - t0 < std::chrono::milliseconds(500));

    auto bad = relay_to(b);
    bad.loss = 1.5;
    CHECK_THROWS_AS(UdpRelay(bad), std::runtime_error);
    bad = relay_to(b);
    bad.target_host = "no.such.host.invalid";
    CHECK_THROWS_AS(UdpRelay(bad), std::runtime_error);
    bad = relay_to(b);
    bad.target_port = 0;
    CHECK_THROWS_AS(UdpRelay(bad), std::runtime_error);
}

// ---------------------------------------------------------------------------
// Audio comparison on synthetic signals.

namespace {

namespace audio = juice::test::audio;
constexpr int k_rate = 48000;
constexpr int k_frame = k_rate / 50;  // 20 ms

// Bursts of sine (a new frequency per burst, 150..1500 Hz) and gaps, each
// 2..15 frames of 20 ms, aligned to 20 ms frames; constant amplitude, so that
// every active frame has the same energy (the SNR per frame is then known).
// *on_frames: how many frames carry a burst.
std::vector<float> bursts(unsigned seed, double seconds, int* on_frames = nullptr) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> len(2, 15);
    std::uniform_real_distribution<double> freq(150.0, 1500.0);
    const int frames = static_cast<int>(seconds * 50);
    std::vector<float> x(static_cast<std::size_t>(frames) * k_frame, 0.0f);
    int on = 0;
    bool burst = true;
    for (int f = 0; f < frames;) {
        const int n = std::min(len(rng), frames - f);
        if (burst) {
            const double hz = freq(rng);
            for (int i = 0; i < n * k_frame; ++i)
                x[static_cast<std::size_t>(f * k_frame + i)] =
                    static_cast<float>(0.5 * std::sin(2 * std::numbers::pi * hz * i / k_rate));
            on += n;
        }
        f += n;
        burst = !burst;
    }
    if (on_frames) *on_frames = on;
    return x;
}

std::vector<float> delayed(const std::vector<float>& x, int lag) {
    std::vector<float> y;
    if (lag >= 0) {
        y.assign(static_cast<std::size_t>(lag), 0.0f);
        y.insert(y.end(), x.begin(), x.end());
    } else {
        y.assign(x.begin() + (-lag), x.end());
    }
    return y;
}

}  // namespace

TEST_CASE("audio: alignment finds a known lag to the sample, either way", "[testkit][audio]") {
    const auto x = bursts(1, 3.0);
    for (int lag : {0, 1234, 37 * 48, -500, 20000}) {
        auto a = audio::align(x, delayed(x, lag), k_rate, 1000);
        INFO("lag " << lag);
        CHECK(a.lag_samples == lag);
        CHECK(a.correlation > 0.99);
        CHECK(a.waveform_correlation > 0.99);
    }
    // The envelope-only alignment, to the window.
    auto env = audio::envelope(x, k_rate);
    auto a = audio::align_envelopes(env, audio::envelope(delayed(x, 4800), k_rate), 50, 480);
    CHECK(a.lag_windows == 10);
    CHECK(a.lag_samples == 4800);
    CHECK(a.correlation > 0.999);
}

TEST_CASE("audio: unrelated signals, noise and silence do not correlate", "[testkit][audio]") {
    const auto x = bursts(1, 3.0);
    std::mt19937 rng(3);
    std::normal_distribution<float> gauss(0.0f, 0.2f);
    std::vector<float> noise(x.size());
    for (auto& v : noise) v = gauss(rng);
    const std::vector<float> silence(x.size(), 0.0f);

    for (unsigned seed : {2u, 3u, 4u}) {
        auto c = audio::compare(x, bursts(seed, 3.0), k_rate, 1000);
        INFO("seed " << seed << ": " << audio::describe(c));
        CHECK(c.alignment.correlation < 0.5);
        CHECK(c.alignment.waveform_correlation < 0.2);
        CHECK(c.segmental_snr_db < 1.0);
    }
    auto n = audio::compare(x, noise, k_rate, 1000);
    INFO(audio::describe(n));
    CHECK(n.alignment.correlation < 0.3);
    CHECK(n.segmental_snr_db < 0.0);
    auto s = audio::compare(x, silence, k_rate, 1000);
    CHECK(s.alignment.correlation == 0.0);
    CHECK(s.segmental_snr_db == Approx(0.0).margin(1e-9));
    CHECK_FALSE(audio::check(s, audio::k_lossy_call).empty());
}

TEST_CASE("audio: segmental SNR is the clamp for a copy and the noise level for a noisy one",
          "[testkit][audio]") {
    const auto x = bursts(5, 3.0);
    CHECK(audio::segmental_snr(x, x, k_rate, 0) == audio::k_segsnr_max_db);
    const int lag = 777;
    CHECK(audio::segmental_snr(x, delayed(x, lag), k_rate, lag) == audio::k_segsnr_max_db);

    // Sine amplitude 0.5: RMS 0.5/sqrt(2) in every active frame.
    const double signal_rms = 0.5 / std::sqrt(2.0);
    for (double snr : {5.0, 10.0, 20.0}) {
        std::mt19937 rng(static_cast<unsigned>(snr));
        std::normal_distribution<double> gauss(0.0, signal_rms / std::pow(10.0, snr / 20.0));
        auto y = x;
        for (auto& v : y) v = static_cast<float>(v + gauss(rng));
        const double got = audio::segmental_snr(x, delayed(y, lag), k_rate, lag);
        INFO("SNR " << snr << " dB: measured " << got);
        CHECK(std::abs(got - snr) <= 2.0);
    }
}

TEST_CASE("audio: active fraction tells bursts from silence and constant noise", "[testkit][audio]") {
    int on = 0;
    const auto x = bursts(6, 3.0, &on);
    CHECK(audio::active_fraction(x, k_rate) == Approx(on / 150.0).margin(0.01));
    CHECK(audio::active_fraction(std::vector<float>(x.size(), 0.0f), k_rate) == 0.0);
    std::mt19937 rng(1);
    std::normal_distribution<float> gauss(0.0f, 0.1f);
    std::vector<float> noise(x.size());
    for (auto& v : noise) v = gauss(rng);
    CHECK(audio::active_fraction(noise, k_rate) == 1.0);
}

TEST_CASE("audio: WAV files round-trip, and a missing file is a clear error", "[testkit][audio]") {
    TempDir dir;
    const auto x = bursts(8, 1.0);
    audio::write_mono(dir.path() / "x.wav", x, k_rate);
    int rate = 0;
    const auto y = audio::read_mono(dir.path() / "x.wav", &rate);
    CHECK(rate == k_rate);
    REQUIRE(y.size() == x.size());
    double worst = 0;
    for (std::size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(double(x[i]) - y[i]));
    CHECK(worst <= 1.0 / 32768 + 1e-6);
    CHECK_THROWS_WITH(audio::read_mono(dir.path() / "missing.wav", &rate), Catch::Contains("missing.wav"));
}
