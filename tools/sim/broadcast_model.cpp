// The baseline: the classic buddy chat that broadcasts (see sim.hpp).
//
// One relay (the server) on 127.20.0.1 and N clients, each on its own
// address 127.21.x.y, all real UDP sockets. Every client sends an "I'm still
// here" ping every ping_interval_s (random phase) and a message now and
// then; the relay forwards every datagram to every client, and each client
// keeps what concerns it (a ping from a buddy, a message to itself) and
// drops the rest. A ping carries as many bytes as a juice presence record's
// data (unsigned: the classic design trusts its server), so the two models
// move payloads of the same size.
#include "juice/dht/presence.hpp"
#include "sim.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>

namespace juice::sim {

namespace {

using json = nlohmann::json;

constexpr std::uint8_t k_ping = 1, k_message = 2;
constexpr std::size_t k_header = 1 + 4 + 4 + 8;  // kind, from, to, send time (ns)
constexpr std::size_t k_message_body = 200;

int udp_socket(const std::string& ip, std::uint16_t port = 0) {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        throw std::runtime_error("bind " + ip + ": " + std::strerror(errno));
    }
    int buf = 4 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    return fd;
}

sockaddr_in bound(int fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    return a;
}

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now().time_since_epoch()).count();
}

struct ClientStats {
    std::uint64_t bytes_in = 0, bytes_out = 0, packets_in = 0, packets_out = 0;
    std::uint64_t kept = 0, dropped = 0;  // by the client's own filter
};

// A typical presence record's size, as juice would publish it.
std::size_t ping_payload_size() {
    dht::PresenceRecord r;
    r.name = "sim1234";
    r.caps = {"text", "voice"};
    r.device = "sim-device-1234";
    r.addrs = {{"127.21.4.200", 40000, "host"}};
    r.ts = 1700000000000;
    return dht::encode_presence(r).size() + 20;  // + the sender's user id
}

}  // namespace

json run_broadcast(const BroadcastConfig& cfg) {
    const std::uint64_t seed = cfg.seed ? cfg.seed : std::random_device{}();
    std::mt19937_64 rng(seed);
    const int n = cfg.nodes;
    const std::size_t ping_size = std::max(ping_payload_size(), k_header);

    const auto buddies = buddy_graph(n, cfg.buddies, rng);  // the DHT model's kind of graph

    const int relay = udp_socket("127.20.0.1");
    const sockaddr_in relay_addr = bound(relay);
    std::vector<int> fds;
    std::vector<sockaddr_in> addrs;
    for (int i = 0; i < n; ++i) {
        fds.push_back(udp_socket(host_address(21, i)));
        addrs.push_back(bound(fds.back()));
    }

    std::atomic<bool> stop{false};
    std::uint64_t relay_in = 0, relay_out = 0, relay_bytes_out = 0;
    std::thread relay_thread([&] {
        std::vector<std::uint8_t> buf(65536);
        pollfd p{relay, POLLIN, 0};
        while (!stop) {
            if (::poll(&p, 1, 100) <= 0) continue;
            ssize_t len = ::recv(relay, buf.data(), buf.size(), MSG_DONTWAIT);
            if (len <= 0) continue;
            ++relay_in;
            // Every datagram to every user: the server does not know who
            // cares, the clients filter.
            for (const auto& a : addrs) {
                if (::sendto(relay, buf.data(), static_cast<std::size_t>(len), 0,
                             reinterpret_cast<const sockaddr*>(&a), sizeof a) == len) {
                    ++relay_out;
                    relay_bytes_out += static_cast<std::uint64_t>(len);
                }
            }
        }
    });

    std::vector<ClientStats> stats(static_cast<std::size_t>(n));
    std::vector<double> presence_ms;
    std::thread clients([&] {
        const int ep = ::epoll_create1(EPOLL_CLOEXEC);
        for (int i = 0; i < n; ++i) {
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u32 = static_cast<std::uint32_t>(i);
            ::epoll_ctl(ep, EPOLL_CTL_ADD, fds[static_cast<std::size_t>(i)], &ev);
        }
        const auto interval = std::chrono::duration<double>(cfg.ping_interval_s);
        std::uniform_real_distribution<double> phase(0, 1);
        std::exponential_distribution<double> msg_gap(cfg.messages_per_min > 0 ? cfg.messages_per_min / 60.0
                                                                               : 1);
        std::vector<clk::time_point> next_ping, next_msg;
        const auto t0 = clk::now();
        for (int i = 0; i < n; ++i) {
            next_ping.push_back(t0 + std::chrono::duration_cast<clk::duration>(interval * phase(rng)));
            next_msg.push_back(cfg.messages_per_min > 0
                                   ? t0 + std::chrono::duration_cast<clk::duration>(
                                              std::chrono::duration<double>(msg_gap(rng)))
                                   : clk::time_point::max());
        }
        std::vector<std::uint8_t> out(std::max(ping_size, k_header + k_message_body)), in(65536);
        std::vector<epoll_event> events(256);
        auto send = [&](int i, std::uint8_t kind, int to, std::size_t size) {
            out[0] = kind;
            std::uint32_t from32 = static_cast<std::uint32_t>(i), to32 = static_cast<std::uint32_t>(to);
            std::int64_t t = now_ns();
            std::memcpy(&out[1], &from32, 4);
            std::memcpy(&out[5], &to32, 4);
            std::memcpy(&out[9], &t, 8);
            if (::sendto(fds[static_cast<std::size_t>(i)], out.data(), size, 0,
                         reinterpret_cast<const sockaddr*>(&relay_addr),
                         sizeof relay_addr) == static_cast<ssize_t>(size)) {
                stats[static_cast<std::size_t>(i)].bytes_out += size;
                stats[static_cast<std::size_t>(i)].packets_out++;
            }
        };
        while (!stop) {
            const auto now = clk::now();
            for (int i = 0; i < n; ++i) {
                auto& np = next_ping[static_cast<std::size_t>(i)];
                if (np <= now) {
                    send(i, k_ping, -1, ping_size);
                    np += std::chrono::duration_cast<clk::duration>(interval);
                }
                auto& nm = next_msg[static_cast<std::size_t>(i)];
                if (nm <= now) {
                    const auto& b = buddies[static_cast<std::size_t>(i)];
                    int to =
                        b.empty() ? (i + 1) % n : *std::next(b.begin(), static_cast<long>(rng() % b.size()));
                    send(i, k_message, to, k_header + k_message_body);
                    nm += std::chrono::duration_cast<clk::duration>(
                        std::chrono::duration<double>(msg_gap(rng)));
                }
            }
            int k = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 5);
            for (int e = 0; e < k; ++e) {
                const int i = static_cast<int>(events[static_cast<std::size_t>(e)].data.u32);
                ssize_t len;
                while ((len = ::recv(fds[static_cast<std::size_t>(i)], in.data(), in.size(), MSG_DONTWAIT)) >
                       0) {
                    auto& s = stats[static_cast<std::size_t>(i)];
                    s.bytes_in += static_cast<std::uint64_t>(len);
                    s.packets_in++;
                    if (static_cast<std::size_t>(len) < k_header) continue;
                    std::uint32_t from, to;
                    std::int64_t t;
                    std::memcpy(&from, &in[1], 4);
                    std::memcpy(&to, &in[5], 4);
                    std::memcpy(&t, &in[9], 8);
                    bool mine = in[0] == k_ping
                                    ? std::binary_search(buddies[static_cast<std::size_t>(i)].begin(),
                                                         buddies[static_cast<std::size_t>(i)].end(),
                                                         static_cast<int>(from))
                                    : to == static_cast<std::uint32_t>(i);
                    if (mine) {
                        s.kept++;
                        if (in[0] == k_ping) presence_ms.push_back(static_cast<double>(now_ns() - t) / 1e6);
                    } else {
                        s.dropped++;
                    }
                }
            }
        }
        ::close(ep);
    });

    std::fprintf(stderr, "sim: broadcast model, %d users, measuring %d s\n", n, cfg.window_s);
    const double cpu0 = self_cpu_seconds();
    const auto t0 = clk::now();
    std::this_thread::sleep_for(std::chrono::seconds(cfg.window_s));
    stop = true;
    relay_thread.join();
    clients.join();
    const double secs = ms_between(t0, clk::now()) / 1000;
    const double cpu = self_cpu_seconds() - cpu0;
    for (int fd : fds) ::close(fd);
    ::close(relay);

    std::vector<double> total, bin, bout, pin, kept_share;
    std::uint64_t sent = 0, received = 0;
    for (const auto& s : stats) {
        total.push_back(static_cast<double>(s.bytes_in + s.bytes_out) * 60 / secs);
        bin.push_back(static_cast<double>(s.bytes_in) * 60 / secs);
        bout.push_back(static_cast<double>(s.bytes_out) * 60 / secs);
        pin.push_back(static_cast<double>(s.packets_in) * 60 / secs);
        if (s.packets_in)
            kept_share.push_back(static_cast<double>(s.kept) / static_cast<double>(s.packets_in));
        sent += s.packets_out;
        received += s.packets_in;
    }
    return {
        {"model", "broadcast"},
        {"config",
         {{"nodes", n},
          {"buddies", cfg.buddies},
          {"ping_interval_s", cfg.ping_interval_s},
          {"messages_per_min", cfg.messages_per_min},
          {"ping_bytes", ping_size},
          {"seed", seed}}},
        {"window_s", secs},
        {"per_user",
         {{"bytes_per_min_total", summarize(total)},
          {"bytes_in_per_min", summarize(bin)},
          {"bytes_out_per_min", summarize(bout)},
          {"packets_in_per_min", summarize(pin)},
          {"share_kept_by_filter", summarize(kept_share)}}},
        {"relay",
         {{"datagrams_in_per_s", static_cast<double>(relay_in) / secs},
          {"datagrams_out_per_s", static_cast<double>(relay_out) / secs},
          {"bytes_out_per_s", static_cast<double>(relay_bytes_out) / secs}}},
        {"delivered_share", relay_out ? static_cast<double>(received) / static_cast<double>(relay_out) : 1.0},
        {"presence_latency_ms", summarize(presence_ms)},
        {"cpu_share_of_one_core", cpu / secs}};
}

}  // namespace juice::sim
