// Hostile peers on the link port of a real juiced: unknown keys, a
// contact's name with another key, bytes that are not TLS, oversized and
// malformed frames from an authenticated contact, a slowloris, a flood.
// The test plays the peer itself with crypto::TlsEngine over a plain TCP
// socket (and once with Debian's gnutls-cli, an independent TLS client).
#include "harness.hpp"

#include "juice/crypto/identity.hpp"
#include "juice/crypto/tls.hpp"
#include "juice/node/frame.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

using namespace juice::test;
using namespace juice;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

int ms_left(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    return static_cast<int>(std::max<long long>(0, left));
}

// A TCP connection to 127.0.0.1:port, non-blocking after the connect.
class Tcp {
public:
    explicit Tcp(int port) {
        m_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (m_fd < 0) throw std::runtime_error("socket: " + std::string(strerror(errno)));
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons(static_cast<std::uint16_t>(port));
        if (::connect(m_fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
            int err = errno;
            ::close(m_fd);
            throw std::runtime_error("connect to link port: " + std::string(strerror(err)));
        }
        ::fcntl(m_fd, F_SETFL, ::fcntl(m_fd, F_GETFL) | O_NONBLOCK);
        socklen_t len = sizeof sa;
        ::getsockname(m_fd, reinterpret_cast<sockaddr*>(&sa), &len);
        m_local_port = ntohs(sa.sin_port);
    }
    ~Tcp() {
        if (m_fd >= 0) ::close(m_fd);
    }
    Tcp(const Tcp&) = delete;
    Tcp& operator=(const Tcp&) = delete;

    int fd() const { return m_fd; }
    int local_port() const { return m_local_port; }
    // "127.0.0.1:port" as the daemon logs it.
    std::string name() const { return "127.0.0.1:" + std::to_string(m_local_port); }
    bool closed() const { return m_closed; }

    bool send(std::span<const std::uint8_t> bytes, milliseconds timeout = seconds(5)) {
        auto deadline = Clock::now() + timeout;
        while (!bytes.empty()) {
            ssize_t n = ::send(m_fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n > 0) {
                bytes = bytes.subspan(static_cast<std::size_t>(n));
                continue;
            }
            if (errno != EAGAIN && errno != EINTR) {
                m_closed = true;
                return false;
            }
            pollfd p{m_fd, POLLOUT, 0};
            if (ms_left(deadline) == 0) return false;
            ::poll(&p, 1, ms_left(deadline));
        }
        return true;
    }
    bool send(std::string_view text) {
        return send(std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
    }

    // What arrives within `timeout` (returns as soon as something does).
    // Sets closed() on end of stream or a reset.
    Bytes recv(milliseconds timeout) {
        Bytes out;
        if (m_closed) return out;
        pollfd p{m_fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return out;
        std::uint8_t buf[65536];
        while (true) {
            ssize_t n = ::recv(m_fd, buf, sizeof buf, 0);
            if (n > 0) {
                out.insert(out.end(), buf, buf + n);
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EINTR)) m_closed = true;
            return out;
        }
    }

    // Waits for the daemon to close the connection, discarding what it sends.
    bool wait_closed(milliseconds timeout) {
        auto deadline = Clock::now() + timeout;
        while (!m_closed && ms_left(deadline) > 0) recv(milliseconds(ms_left(deadline)));
        return m_closed;
    }

private:
    int m_fd = -1;
    int m_local_port = 0;
    bool m_closed = false;
};

// The test playing a peer: a TLS client with any identity, speaking frames.
class FakePeer {
public:
    FakePeer(int port, const crypto::Identity& self, const std::string& daemon_id)
        : m_tcp(port), m_tls(crypto::TlsEngine::Role::client, self, *UserId::from_hex(daemon_id)) {}

    Tcp& tcp() { return m_tcp; }
    crypto::TlsEngine& tls() { return m_tls; }
    const std::vector<node::Frame>& frames() const { return m_frames; }
    std::string error;  // why TLS or the frame stream failed, if it did

    // Starts TLS and pumps until the daemon's hello arrives (true), or the
    // connection fails or closes, or `timeout` passes (false).
    bool handshake(milliseconds timeout) {
        if (auto r = m_tls.start(); !r) {
            error = r.error().what();
            return false;
        }
        if (!flush()) return false;
        auto deadline = Clock::now() + timeout;
        while (m_frames.empty() && ms_left(deadline) > 0)
            if (!pump(milliseconds(ms_left(deadline)))) return false;
        return !m_frames.empty() && std::holds_alternative<node::HelloFrame>(m_frames.front());
    }

    // Encrypts and sends `plaintext` (frames, or anything pretending to be).
    bool send_plain(const Bytes& plaintext) {
        if (auto r = m_tls.write(plaintext); !r) {
            error = r.error().what();
            return false;
        }
        return flush();
    }
    bool send_frame(const node::Frame& f) { return send_plain(node::encode_frame(f)); }

    // Pumps until the daemon closes the connection (or the TLS session
    // fails); false if it is still open after `timeout`.
    bool wait_closed(milliseconds timeout) {
        auto deadline = Clock::now() + timeout;
        while (ms_left(deadline) > 0)
            if (!pump(milliseconds(ms_left(deadline)))) return true;
        return false;
    }

private:
    bool flush() {
        auto out = m_tls.take_output();
        return out.empty() || m_tcp.send(out);
    }
    // One read; false once the connection is over.
    bool pump(milliseconds timeout) {
        auto in = m_tcp.recv(timeout);
        if (!in.empty()) {
            auto fed = m_tls.feed(in);
            (void)flush();
            if (!fed) {
                error = fed.error().what();
                return false;
            }
            auto plain = m_tls.take_plaintext();
            if (!plain.empty()) {
                m_decoder.feed(plain);
                while (auto next = m_decoder.next()) {
                    if (!*next) {
                        error = next->error().what();
                        return false;
                    }
                    m_frames.push_back(std::move(next->value()));
                }
            }
        }
        if (m_tls.state() == crypto::TlsEngine::State::closed) error = "tls closed";
        return !m_tcp.closed() && m_tls.state() != crypto::TlsEngine::State::failed &&
               m_tls.state() != crypto::TlsEngine::State::closed;
    }

    Tcp m_tcp;
    crypto::TlsEngine m_tls;
    node::FrameDecoder m_decoder;
    std::vector<node::Frame> m_frames;
};

const crypto::Identity& stranger() {
    static const crypto::Identity id = *crypto::Identity::generate(2048, "mallory");
    return id;
}

int link_port(Juiced& d) {
    int port = d.call("node.info")["link_port"].get<int>();
    REQUIRE(port > 0);
    return port;
}

std::size_t count_of(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
    return n;
}

// The daemon logged that it refused or dropped the connection from `who`
// ("127.0.0.1:port"); waits a little, since the log is written after the close.
bool logged_refusal(Juiced& d, const std::string& who) {
    return wait_until(
        [&] { return d.log().find("refused an incoming link from " + who + ":") != std::string::npos; },
        seconds(3));
}

// The link entry `d` shows for `peer_id` in node.info; null when none.
json link_entry(Juiced& d, const std::string& peer_id) {
    const json info = d.call("node.info");  // not in the range-for: it would dangle
    for (const auto& l : info["links"])
        if (l["id"] == peer_id) return l;
    return json();
}

// a sends b a message; true once a sees it delivered.
bool message_delivered(Juiced& a, Juiced& b, const std::string& text) {
    EventWatcher ea(a, {"message.state"});
    auto m = a.call("messages.send", {{"to", b.id()}, {"text", text}});
    return ea
        .wait_for([&](const json& e) { return e["msg_id"] == m["msg_id"] && e["state"] == "delivered"; },
                  seconds(10))
        .has_value();
}

Bytes length_prefix(std::uint32_t n) {
    return {static_cast<std::uint8_t>(n >> 24), static_cast<std::uint8_t>(n >> 16),
            static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n)};
}

}  // namespace

TEST_CASE("hostile links: unknown keys and a contact's name on another key are refused", "[hostile][link]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    befriend(a, b);
    const int port = link_port(a);
    const json link_before = link_entry(a, b.id());
    REQUIRE(!link_before.is_null());

    // A fresh key nobody knows.
    {
        auto t0 = Clock::now();
        FakePeer p(port, stranger(), a.id());
        CHECK_FALSE(p.handshake(seconds(5)));
        CHECK(p.wait_closed(seconds(5)));
        CHECK(p.frames().empty());  // not even a hello
        WARN("unknown key: closed after " << ms_since(t0) << " ms (" << p.error << ")");
        CHECK(ms_since(t0) < 5000);
        CHECK(logged_refusal(a, p.tcp().name()));
    }
    // Bob's name, another key.
    {
        const auto fake_bob = *crypto::Identity::generate(2048, b.name());
        REQUIRE(fake_bob.certificate_name() == b.name());
        REQUIRE(fake_bob.id().hex() != b.id());
        auto t0 = Clock::now();
        FakePeer p(port, fake_bob, a.id());
        CHECK_FALSE(p.handshake(seconds(5)));
        CHECK(p.wait_closed(seconds(5)));
        CHECK(p.frames().empty());
        WARN("bob's name on another key: closed after " << ms_since(t0) << " ms");
        CHECK(logged_refusal(a, p.tcp().name()));
    }
    // gnutls-cli, an independent client, with a random self-signed certificate.
    {
        TempDir keys;
        REQUIRE(crypto::Identity::generate(2048, "gnutls")->save(keys.path() / "id", std::nullopt));
        const auto before = count_of(a.log(), "refused an incoming link from");
        auto t0 = Clock::now();
        Process cli(
            "gnutls-cli",
            {"--insecure", "--x509certfile", (keys.path() / "id" / "identity.crt").string(), "--x509keyfile",
             (keys.path() / "id" / "identity.key").string(), "-p", std::to_string(port), "127.0.0.1"},
            keys.path() / "gnutls-cli.log", {}, /*stdin_pipe=*/true);  // stdin open: it must not quit first
        const int code = cli.wait(seconds(10));
        INFO("gnutls-cli log:\n" << cli.log());
        CHECK(code > 0);  // it exited with an error, within the bound
        WARN("gnutls-cli: exit " << code << " after " << ms_since(t0) << " ms");
        CHECK(wait_until([&] { return count_of(a.log(), "refused an incoming link from") > before; },
                         seconds(3)));
    }

    // The real contact's link was never disturbed, and messages flow.
    const json link_after = link_entry(a, b.id());
    REQUIRE(!link_after.is_null());
    CHECK(link_after["since"] == link_before["since"]);
    CHECK(message_delivered(a, b, "still here"));
    CHECK(message_delivered(b, a, "me too"));
}

TEST_CASE("hostile links: garbage, an oversized and a malformed frame close only that connection",
          "[hostile][link]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    befriend(a, b);
    const int port = link_port(a);
    // The test becomes bob: his key is in his data dir (unencrypted in tests).
    auto bob_id = crypto::Identity::load(b.data_dir(), std::nullopt);
    REQUIRE(bob_id);
    REQUIRE(bob_id->id().hex() == b.id());
    REQUIRE(b.stop() == 0);
    REQUIRE(wait_until([&] { return link_entry(a, b.id()).is_null(); }, seconds(10)));

    SECTION("plain bytes, not TLS") {
        Tcp t(port);
        REQUIRE(t.send("GET / HTTP/1.1\r\nHost: juice\r\n\r\n"));
        std::string junk(4096, '\0');
        std::mt19937 rng{std::random_device{}()};
        for (auto& c : junk) c = static_cast<char>(rng());
        (void)t.send(junk);
        auto t0 = Clock::now();
        CHECK(t.wait_closed(seconds(5)));
        WARN("garbage: closed after " << ms_since(t0) << " ms");
        CHECK(logged_refusal(a, t.name()));
    }

    SECTION("a frame longer than 256 KiB from an authenticated contact") {
        FakePeer p(port, *bob_id, a.id());
        REQUIRE(p.handshake(seconds(5)));
        REQUIRE(p.send_frame(node::HelloFrame{1, "bob", {"text"}, "online", ""}));
        REQUIRE(wait_until([&] { return link_entry(a, b.id())["remote"] == p.tcp().name(); }, seconds(5)));
        Bytes big = length_prefix(256 * 1024 + 1);
        big.resize(big.size() + 64 * 1024, 0x90);
        auto t0 = Clock::now();
        REQUIRE(p.send_plain(big));
        CHECK(p.wait_closed(seconds(5)));
        WARN("oversized frame: closed after " << ms_since(t0) << " ms");
        CHECK(wait_until([&] { return link_entry(a, b.id()).is_null(); }, seconds(3)));
        CHECK(wait_until(
            [&] {
                return a.log().find("link down with " + b.id().substr(0, 8) + ": bad frame") !=
                       std::string::npos;
            },
            seconds(3)));
    }

    SECTION("a malformed msgpack frame from an authenticated contact") {
        FakePeer p(port, *bob_id, a.id());
        REQUIRE(p.handshake(seconds(5)));
        REQUIRE(p.send_frame(node::HelloFrame{1, "bob", {"text"}, "online", ""}));
        REQUIRE(wait_until([&] { return link_entry(a, b.id())["remote"] == p.tcp().name(); }, seconds(5)));
        Bytes bad = length_prefix(6);
        for (int x : {0x81, 0xa1, 0x74, 0xc1, 0xc1, 0xc1})
            bad.push_back(static_cast<std::uint8_t>(x));  // 0xc1: never used
        REQUIRE(p.send_plain(bad));
        CHECK(p.wait_closed(seconds(5)));
        CHECK(wait_until(
            [&] {
                return a.log().find("link down with " + b.id().substr(0, 8) + ": bad frame") !=
                       std::string::npos;
            },
            seconds(3)));
    }

    SECTION("a malformed frame instead of the hello") {
        FakePeer p(port, *bob_id, a.id());
        REQUIRE(p.handshake(seconds(5)));
        REQUIRE(p.send_plain(length_prefix(0)));
        CHECK(p.wait_closed(seconds(5)));
        CHECK(logged_refusal(a, p.tcp().name()));
    }

    // Meanwhile the API answered, and the real bob links again.
    CHECK(a.call("identity.get")["id"] == a.id());
    auto t0 = Clock::now();
    REQUIRE(b.start());
    REQUIRE(wait_until([&] { return contact_entry(a, b.id())["linked"] == true; }, seconds(20)));
    WARN("the real bob linked again " << ms_since(t0) << " ms after his restart");
    CHECK(message_delivered(a, b, "welcome back"));
}

TEST_CASE("hostile links: a slowloris is cut by the handshake deadline", "[hostile][link]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot);
    REQUIRE(a.start());
    const int port = link_port(a);

    // A genuine ClientHello, sent one byte a second.
    crypto::TlsEngine hello_maker(crypto::TlsEngine::Role::client, stranger(), *UserId::from_hex(a.id()));
    REQUIRE(hello_maker.start());
    const Bytes client_hello = hello_maker.take_output();
    REQUIRE(client_hello.size() > 20);

    Tcp slow(port);
    const auto t0 = Clock::now();
    std::size_t sent = 0;
    double worst_api_ms = 0;
    int others_refused = 0;
    while (!slow.closed() && ms_since(t0) < 15000) {
        if (sent < client_hello.size()) (void)slow.send(std::span(client_hello).subspan(sent++, 1));
        (void)slow.recv(seconds(1));  // the slowloris's pacing
        // Meanwhile the daemon serves the API and other link connections.
        auto t = Clock::now();
        CHECK(a.call("node.info")["id"] == a.id());
        worst_api_ms = std::max(worst_api_ms, ms_since(t));
        if (sent == 3) {
            Tcp other(port);
            (void)other.send("not tls at all\r\n\r\n");
            if (other.wait_closed(seconds(3))) ++others_refused;
        }
    }
    const double closed_after = ms_since(t0);
    WARN("slowloris: " << sent << " bytes sent, closed after " << closed_after << " ms; API max "
                       << worst_api_ms << " ms meanwhile");
    CHECK(slow.closed());
    CHECK(closed_after > 9000);
    CHECK(closed_after < 12000);
    CHECK(others_refused == 1);
    CHECK(wait_until(
        [&] {
            auto log = a.log();
            return log.find("refused an incoming link from " + slow.name() + ": tls handshake timed out") !=
                   std::string::npos;
        },
        seconds(3)));
    CHECK(worst_api_ms < 1000);
}

TEST_CASE("hostile links: a connection flood is bounded", "[hostile][link]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot);
    REQUIRE(a.start());
    REQUIRE(b.start());
    befriend(a, b);
    const int port = link_port(a);
    auto bob_id = crypto::Identity::load(b.data_dir(), std::nullopt);
    REQUIRE(bob_id);
    REQUIRE(b.stop() == 0);
    REQUIRE(wait_until([&] { return link_entry(a, b.id()).is_null(); }, seconds(10)));

    const int fd_base = proc_fd_count(a.pid());
    REQUIRE(fd_base > 0);
    constexpr int k_flood = 300;
    constexpr int k_cap = 64;  // k_max_incoming_handshakes in node/src/daemon.cpp
    int fd_max = fd_base;
    int refused = 0;
    double api_worst = 0;
    bool fake_bob_linked = false;
    {
        std::vector<std::unique_ptr<Tcp>> flood;
        auto t0 = Clock::now();
        for (int i = 0; i < k_flood; ++i) {
            flood.push_back(std::make_unique<Tcp>(port));
            if (i % 50 == 0) fd_max = std::max(fd_max, proc_fd_count(a.pid()));
        }
        // Beyond the cap, connections are accepted and closed at once.
        auto count_closed = [&] {
            std::vector<pollfd> fds;
            for (auto& t : flood) fds.push_back({t->fd(), POLLIN, 0});
            ::poll(fds.data(), fds.size(), 0);
            int n = 0;
            for (std::size_t i = 0; i < fds.size(); ++i)
                if (fds[i].revents) {
                    (void)flood[i]->recv(milliseconds(0));
                    if (flood[i]->closed()) ++n;
                }
            return n;
        };
        CHECK(wait_until(
            [&] {
                fd_max = std::max(fd_max, proc_fd_count(a.pid()));
                refused = count_closed();
                return refused >= k_flood - k_cap;
            },
            seconds(5), milliseconds(50)));
        WARN("flood: " << k_flood << " connections, " << refused << " refused within " << ms_since(t0)
                       << " ms; juiced fds: " << fd_base << " before, max " << fd_max << " during");
        CHECK(refused <= k_flood - k_cap + 2);  // the cap admits 64 (give or take a closing one)
        CHECK(fd_max <= fd_base + k_cap + 8);
        CHECK(a.log().find(std::to_string(k_cap) + " handshakes in progress, refusing a connection") !=
              std::string::npos);

        // The API stays responsive.
        for (int i = 0; i < 10; ++i) {
            auto t = Clock::now();
            CHECK(a.call("node.info")["id"] == a.id());
            api_worst = std::max(api_worst, ms_since(t));
        }
        // A real contact's key during the flood: the cap is full of silent
        // connections, so it is expected to be turned away until they time out.
        FakePeer p(port, *bob_id, a.id());
        fake_bob_linked = p.handshake(seconds(3));
        if (fake_bob_linked) p.send_frame(node::HelloFrame{1, "bob", {"text"}, "online", ""});
        WARN("flood: API max " << api_worst << " ms; bob's key during the flood: "
                               << (fake_bob_linked ? "linked" : "refused (" + p.error + ")"));
    }  // the flood closes
    CHECK(api_worst < 1000);
    int fd_after = -1;
    CHECK(wait_until([&] { return (fd_after = proc_fd_count(a.pid())) <= fd_base; }, seconds(5)));
    WARN("flood: juiced fds back to " << fd_after << " (baseline " << fd_base << ")");

    auto t0 = Clock::now();
    REQUIRE(b.start());
    REQUIRE(wait_until([&] { return contact_entry(a, b.id())["linked"] == true; }, seconds(20)));
    WARN("after the flood the real bob linked " << ms_since(t0) << " ms after his start");
    CHECK(message_delivered(b, a, "made it"));
}
