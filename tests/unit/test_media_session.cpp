// MediaSession: two real sessions in this process over UDP on 127.0.0.1 —
// Opus, SRTP, the jitter buffer, RTCP — with in-memory audio.
#include "juice/node/media/session.hpp"

#include <catch2/catch.hpp>

#include <asio.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <random>
#include <thread>

using namespace juice;
using namespace juice::node::media;
using namespace std::chrono_literals;

namespace {

// A 440 Hz tone, forever.
class ToneSource : public AudioSource {
public:
    bool read(std::span<std::int16_t, k_frame_samples> out) override {
        for (auto& s : out)
            s = static_cast<std::int16_t>(8000 * std::sin(2 * M_PI * 440 * (m_n++) / k_sample_rate));
        return true;
    }

private:
    std::uint64_t m_n = 0;
};

// Counts played frames and their energy (read after stop()).
struct Heard {
    std::mutex mu;
    std::size_t frames = 0;
    double energy = 0;
};
class CountingSink : public AudioSink {
public:
    explicit CountingSink(std::shared_ptr<Heard> h) : m_h(std::move(h)) {}
    void write(std::span<const std::int16_t, k_frame_samples> in) override {
        double e = 0;
        for (auto s : in) e += static_cast<double>(s) * s;
        std::lock_guard lk(m_h->mu);
        ++m_h->frames;
        m_h->energy += e;
    }

private:
    std::shared_ptr<Heard> m_h;
};

Bytes keys(std::uint8_t seed) {
    Bytes k(k_srtp_keying_bytes);
    for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(seed * 31 + i);
    return k;
}

asio::ip::udp::endpoint local(std::uint16_t port) {
    return {asio::ip::make_address("127.0.0.1"), port};
}

bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
    auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
        if (pred()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return pred();
}

struct Pair {
    std::unique_ptr<MediaSession> a, b;
    std::shared_ptr<Heard> heard_by_b = std::make_shared<Heard>();
    Pair(const Bytes& ka, const Bytes& kb) {
        auto x = MediaSession::bind("127.0.0.1", 0);
        auto y = MediaSession::bind("127.0.0.1", 0);
        REQUIRE(x);
        REQUIRE(y);
        a = std::move(*x);
        b = std::move(*y);
        SessionOptions oa, ob;
        oa.tls_client = true;
        oa.keying_material = ka;
        oa.remote = local(b->local_port());
        oa.source = std::make_unique<ToneSource>();
        ob.tls_client = false;
        ob.keying_material = kb;
        ob.remote = local(a->local_port());
        ob.sink = std::make_unique<CountingSink>(heard_by_b);
        REQUIRE(a->start(std::move(oa)));
        REQUIRE(b->start(std::move(ob)));
    }
};

}  // namespace

TEST_CASE("media session: a tone goes both ways under SRTP, with RTCP stats", "[media]") {
    Pair p(keys(1), keys(1));
    REQUIRE(wait_for(
        [&] {
            auto sa = p.a->stats(), sb = p.b->stats();
            return sb.packets_received > 40 && sa.packets_received > 40 && sa.rtt_ms >= 0;
        },
        5s));
    auto sb = p.b->stats();
    CHECK(sb.rejected == 0);
    CHECK(sb.loss_in < 0.05);
    CHECK(sb.frames_decoded > 20);
    CHECK(sb.bitrate == 32000);
    CHECK(p.a->stats().rtt_ms < 200);
    p.a->stop();
    p.b->stop();
    std::lock_guard lk(p.heard_by_b->mu);
    CHECK(p.heard_by_b->frames > 40);
    // The tone came through: mean power far above silence (8000 amplitude
    // sine: ~3.2e7 per sample; Opus and the first silent frames lower it).
    CHECK(p.heard_by_b->energy / (p.heard_by_b->frames * k_frame_samples) > 1e6);
}

TEST_CASE("media session: packets under other keys are rejected, and nothing plays", "[media]") {
    Pair p(keys(1), keys(2));
    REQUIRE(wait_for([&] { return p.b->stats().rejected > 40; }, 5s));
    auto sb = p.b->stats();
    CHECK(sb.packets_received == 0);
    CHECK(sb.frames_decoded == 0);
    CHECK(sb.ms_since_rx == -1);
    p.a->stop();
    p.b->stop();
    std::lock_guard lk(p.heard_by_b->mu);
    CHECK(p.heard_by_b->energy == 0);  // silence only
}

TEST_CASE("media session: garbage datagrams are counted and change nothing", "[media]") {
    Pair p(keys(3), keys(3));
    REQUIRE(wait_for([&] { return p.b->stats().packets_received > 10; }, 5s));
    asio::io_context io;
    asio::ip::udp::socket s(io, asio::ip::udp::v4());
    std::mt19937 rng(5);
    for (int i = 0; i < 500; ++i) {
        std::vector<std::uint8_t> junk(static_cast<std::size_t>(rng() % 1500));
        for (auto& x : junk) x = static_cast<std::uint8_t>(rng());
        if (i % 3 == 0 && junk.size() > 2) junk[0] = 0x80, junk[1] = 111;  // looks like RTP
        if (i % 3 == 1 && junk.size() > 2) junk[0] = 0x80, junk[1] = 200;  // looks like RTCP
        s.send_to(asio::buffer(junk), local(p.b->local_port()));
        if (i % 20 == 0) std::this_thread::sleep_for(2ms);  // stay within the socket's receive buffer
    }
    REQUIRE(wait_for([&] { return p.b->stats().rejected >= 450; }, 5s));
    auto before = p.b->stats().packets_received;
    REQUIRE(wait_for([&] { return p.b->stats().packets_received > before + 20; }, 5s));
    CHECK(p.b->stats().loss_in < 0.05);
}

TEST_CASE("media session: bad options fail start, and stop never hangs", "[media]") {
    auto s = MediaSession::bind("127.0.0.1", 0);
    REQUIRE(s);
    SessionOptions o;
    o.keying_material = Bytes(10);
    auto r = (*s)->start(std::move(o));
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("keying material") != std::string::npos);
    CHECK_FALSE(MediaSession::bind("not-an-ip", 0));

    // Start and stop many times, at random moments relative to the 20 ms
    // tick and the RTCP timer: stop() must always return (it once hung when
    // a timer's handler was already queued).
    for (int i = 0; i < 30; ++i) {
        Pair p(keys(4), keys(4));
        std::this_thread::sleep_for(std::chrono::milliseconds(i % 7 * 9));
        p.a->stop();
        p.b->stop();
        p.a->stop();  // idempotent
    }
    SUCCEED("every stop returned");
}

namespace {

// Two DatagramPorts wired to each other in memory (a mock of an ICE path).
// Each delivers on the sending thread, as IcePort delivers on libnice's.
struct PortPair {
    struct End final : DatagramPort {
        std::mutex mu;
        std::function<void(std::span<const std::uint8_t>)> deliver;
        End* peer = nullptr;
        std::atomic<int> sent{0};
        void start(std::function<void(std::span<const std::uint8_t>)> d) override {
            std::lock_guard lk(mu);
            deliver = std::move(d);
        }
        void send(std::span<const std::uint8_t> datagram) override {
            ++sent;
            std::lock_guard lk(peer->mu);
            if (peer->deliver) peer->deliver(datagram);
        }
        void stop() override {
            std::lock_guard lk(mu);
            deliver = nullptr;
        }
    };
    std::shared_ptr<End> a = std::make_shared<End>(), b = std::make_shared<End>();
    PortPair() {
        a->peer = b.get();
        b->peer = a.get();
    }
};

}  // namespace

TEST_CASE("media session: over a DatagramPort, with no socket, a tone arrives and stop detaches", "[media]") {
    PortPair ports;
    auto a = MediaSession::over(ports.a), b = MediaSession::over(ports.b);
    CHECK(a->local_port() == 0);
    auto heard = std::make_shared<Heard>();
    SessionOptions oa, ob;
    oa.tls_client = true;
    oa.keying_material = keys(3);
    oa.source = std::make_unique<ToneSource>();
    ob.keying_material = keys(3);
    ob.sink = std::make_unique<CountingSink>(heard);
    REQUIRE(a->start(std::move(oa)));
    REQUIRE(b->start(std::move(ob)));
    REQUIRE(wait_for([&] { return b->stats().frames_decoded > 30 && a->stats().packets_received > 5; }, 5s));
    CHECK(b->stats().rejected == 0);
    CHECK(b->stats().loss_in < 0.05);
    b->stop();
    {
        std::lock_guard lk(ports.b->mu);
        CHECK_FALSE(ports.b->deliver);  // nothing reaches a stopped session
    }
    a->stop();
    std::lock_guard lk(heard->mu);
    CHECK(heard->frames > 30);
    CHECK(heard->energy / (heard->frames * k_frame_samples) > 1e6);
}
