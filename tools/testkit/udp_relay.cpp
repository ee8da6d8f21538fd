#include "udp_relay.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <queue>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

namespace juice::test {

namespace {

using Clock = std::chrono::steady_clock;

struct Address {
    sockaddr_storage storage{};
    socklen_t len = 0;

    const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage); }
    bool operator==(const Address& o) const {
        if (storage.ss_family != o.storage.ss_family) return false;
        if (storage.ss_family == AF_INET) {
            auto& a = reinterpret_cast<const sockaddr_in&>(storage);
            auto& b = reinterpret_cast<const sockaddr_in&>(o.storage);
            return a.sin_port == b.sin_port && a.sin_addr.s_addr == b.sin_addr.s_addr;
        }
        if (storage.ss_family == AF_INET6) {
            auto& a = reinterpret_cast<const sockaddr_in6&>(storage);
            auto& b = reinterpret_cast<const sockaddr_in6&>(o.storage);
            return a.sin6_port == b.sin6_port &&
                   std::memcmp(&a.sin6_addr, &b.sin6_addr, sizeof a.sin6_addr) == 0;
        }
        return false;
    }
};

Address resolve(const std::string& host, std::uint16_t port, int family, const char* what) {
    addrinfo hints{};
    hints.ai_family = family;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = family == AF_UNSPEC ? AI_PASSIVE : 0;
    addrinfo* res = nullptr;
    const std::string service = std::to_string(port);
    int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
    if (rc != 0 || !res)
        throw std::runtime_error(std::string("UdpRelay: cannot resolve ") + what + " '" + host +
                                 "': " + gai_strerror(rc));
    Address a;
    std::memcpy(&a.storage, res->ai_addr, res->ai_addrlen);
    a.len = res->ai_addrlen;
    ::freeaddrinfo(res);
    return a;
}

std::string errno_text() {
    return std::strerror(errno);
}

// A uniform double in [0, 1) from 53 random bits: unlike
// std::uniform_real_distribution, the same on every standard library, so a
// seed means the same run everywhere.
double unit(std::mt19937_64& rng) {
    return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

void check_probability(double p, const char* name) {
    if (!(p >= 0.0 && p <= 1.0))
        throw std::runtime_error(std::string("UdpRelay: ") + name + " must be within 0..1");
}

}  // namespace

struct UdpRelay::Impl {
    // The loss model and random stream of one direction; loop thread only.
    struct Direction {
        std::mt19937_64 rng;
        bool bad = false;  // Gilbert-Elliott state
    };

    struct Held {
        Clock::time_point due;
        std::uint64_t seq;  // FIFO among equal due times
        bool to_target;
        Address dest;
        std::vector<std::uint8_t> bytes;
    };
    struct Later {
        bool operator()(const Held& a, const Held& b) const {
            return a.due != b.due ? a.due > b.due : a.seq > b.seq;
        }
    };

    UdpRelayOptions opts;
    int fd = -1;
    int wake_fd = -1;
    std::uint16_t bound_port = 0;
    Address target;
    std::thread thread;

    // Loop thread only.
    std::optional<Address> peer;
    Direction dirs[2];  // [0] peer -> target, [1] target -> peer
    std::priority_queue<Held, std::vector<Held>, Later> queue;
    std::uint64_t next_seq = 0;

    mutable std::mutex stats_mutex;
    UdpRelayStats stats;  // guarded by stats_mutex

    UdpRelayDirectionStats& dir_stats(bool to_target) {
        return to_target ? stats.to_target : stats.from_target;
    }

    bool lose(Direction& d) {
        if (opts.burst.enabled) {
            const double u = unit(d.rng);
            d.bad = d.bad ? !(u < opts.burst.p_bad_to_good) : u < opts.burst.p_good_to_bad;
            return unit(d.rng) < (d.bad ? opts.burst.loss_in_bad : opts.loss);
        }
        return unit(d.rng) < opts.loss;
    }

    Clock::duration delay(Direction& d) {
        // Drawn even when jitter is 0 so that changing the jitter alone does
        // not shift the loss decisions of later datagrams.
        const double u = unit(d.rng);
        const auto jitter = std::chrono::duration_cast<std::chrono::nanoseconds>(opts.jitter);
        return opts.delay + std::chrono::nanoseconds(static_cast<std::int64_t>(u * jitter.count()));
    }

    void on_datagram(const Address& from, const std::uint8_t* data, std::size_t size, Clock::time_point now) {
        const bool to_target = !(from == target);
        if (to_target) {
            peer = from;
        } else if (!peer) {
            std::lock_guard lock(stats_mutex);
            ++stats.dropped_no_peer;
            return;
        }
        Direction& d = dirs[to_target ? 0 : 1];
        const bool lost = lose(d);
        const auto due = now + delay(d);
        std::lock_guard lock(stats_mutex);
        auto& s = dir_stats(to_target);
        ++s.received;
        if (lost) {
            ++s.dropped_loss;
        } else if (queue.size() >= opts.max_queue) {
            ++s.dropped_overflow;
        } else {
            queue.push(Held{due, next_seq++, to_target, to_target ? target : *peer,
                            std::vector<std::uint8_t>(data, data + size)});
            stats.queued = queue.size();
        }
    }

    void send_due(Clock::time_point now) {
        while (!queue.empty() && queue.top().due <= now) {
            const Held& h = queue.top();
            const ssize_t n =
                ::sendto(fd, h.bytes.data(), h.bytes.size(), MSG_DONTWAIT, h.dest.sa(), h.dest.len);
            std::lock_guard lock(stats_mutex);
            auto& s = dir_stats(h.to_target);
            if (n == static_cast<ssize_t>(h.bytes.size()))
                ++s.forwarded;
            else
                ++s.send_errors;
            queue.pop();
            stats.queued = queue.size();
        }
    }

    void run() {
        std::vector<std::uint8_t> buf(65536);
        while (true) {
            send_due(Clock::now());
            // ppoll, not poll: sub-millisecond timeouts keep the delays exact.
            timespec ts{};
            timespec* timeout = nullptr;
            if (!queue.empty()) {
                auto left =
                    std::chrono::duration_cast<std::chrono::nanoseconds>(queue.top().due - Clock::now());
                if (left.count() < 0) left = left.zero();
                ts.tv_sec = static_cast<time_t>(left.count() / 1000000000);
                ts.tv_nsec = static_cast<long>(left.count() % 1000000000);
                timeout = &ts;
            }
            pollfd fds[2] = {{fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
            if (::ppoll(fds, 2, timeout, nullptr) < 0 && errno != EINTR) return;
            if (fds[1].revents) return;
            if (!(fds[0].revents & POLLIN)) continue;
            // Drain what is there now (bounded, so that due datagrams are
            // not starved by a flood).
            for (int i = 0; i < 256; ++i) {
                Address from;
                from.len = sizeof from.storage;
                const ssize_t n = ::recvfrom(fd, buf.data(), buf.size(), MSG_DONTWAIT,
                                             reinterpret_cast<sockaddr*>(&from.storage), &from.len);
                if (n < 0) break;  // EAGAIN, or an ICMP error we do not care about
                on_datagram(from, buf.data(), static_cast<std::size_t>(n), Clock::now());
            }
        }
    }

    ~Impl() {
        if (fd >= 0) ::close(fd);
        if (wake_fd >= 0) ::close(wake_fd);
    }
};

UdpRelay::UdpRelay(UdpRelayOptions options) : m_impl(std::make_unique<Impl>()) {
    Impl& m = *m_impl;
    check_probability(options.loss, "loss");
    check_probability(options.burst.p_good_to_bad, "burst.p_good_to_bad");
    check_probability(options.burst.p_bad_to_good, "burst.p_bad_to_good");
    check_probability(options.burst.loss_in_bad, "burst.loss_in_bad");
    if (options.delay.count() < 0 || options.jitter.count() < 0)
        throw std::runtime_error("UdpRelay: delay and jitter must not be negative");
    if (options.target_port == 0) throw std::runtime_error("UdpRelay: target_port is required");
    m.opts = std::move(options);

    const Address listen = resolve(m.opts.listen_host, m.opts.listen_port, AF_UNSPEC, "listen address");
    m.target = resolve(m.opts.target_host, m.opts.target_port, listen.storage.ss_family, "target");

    m.fd = ::socket(listen.storage.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (m.fd < 0) throw std::runtime_error("UdpRelay: socket: " + errno_text());
    // Bursts of media (and tests that send 1000 datagrams at once) overflow
    // the default ~200 KiB buffer; the kernel caps this at rmem_max.
    int big = 4 << 20;
    (void)::setsockopt(m.fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    (void)::setsockopt(m.fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (::bind(m.fd, listen.sa(), listen.len) != 0)
        throw std::runtime_error("UdpRelay: bind " + m.opts.listen_host + ":" +
                                 std::to_string(m.opts.listen_port) + ": " + errno_text());
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(m.fd, reinterpret_cast<sockaddr*>(&bound), &len);
    m.bound_port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(bound).sin6_port
                                                     : reinterpret_cast<sockaddr_in&>(bound).sin_port);

    m.wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m.wake_fd < 0) throw std::runtime_error("UdpRelay: eventfd: " + errno_text());

    // Distinct, seed-derived streams per direction (seed_seq mixes the bits
    // so seeds 1 and 2 give unrelated streams).
    for (std::uint32_t i = 0; i < 2; ++i) {
        std::seed_seq seq{static_cast<std::uint32_t>(m.opts.seed),
                          static_cast<std::uint32_t>(m.opts.seed >> 32), i};
        m.dirs[i].rng.seed(seq);
    }
    m.thread = std::thread([&m] { m.run(); });
}

UdpRelay::~UdpRelay() {
    const std::uint64_t one = 1;
    // An eventfd write of 1 cannot fail short of a bug; the loop exits on it.
    [[maybe_unused]] const ssize_t n = ::write(m_impl->wake_fd, &one, sizeof one);
    assert(n == sizeof one);
    if (m_impl->thread.joinable()) m_impl->thread.join();
}

std::uint16_t UdpRelay::port() const {
    return m_impl->bound_port;
}

std::string UdpRelay::address() const {
    const std::string& host = m_impl->opts.listen_host;
    const bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(m_impl->bound_port);
}

UdpRelayStats UdpRelay::stats() const {
    std::lock_guard lock(m_impl->stats_mutex);
    return m_impl->stats;
}

const UdpRelayOptions& UdpRelay::options() const {
    return m_impl->opts;
}

}  // namespace juice::test
