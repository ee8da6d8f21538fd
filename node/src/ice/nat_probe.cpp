// RFC 5780 mapping tests; see nat_probe.hpp.
#include "nat_probe.hpp"

#include <stun/stunagent.h>
#include <stun/usages/bind.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>

namespace juice::node::ice {

namespace {

// RFC 5780 14.2; libnice 0.1.21's StunAttribute enum does not name it.
constexpr int k_other_address = 0x802C;
constexpr int k_response_origin = 0x802B;
constexpr int k_tries = 3;
constexpr int k_try_ms = 500;

std::string to_string(const sockaddr_in& a) {
    char ip[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(a.sin_port));
}

std::optional<sockaddr_in> v4(const std::string& ip, std::uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (::inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1) return std::nullopt;
    return a;
}

bool local_ip(const in_addr& ip) {
    ifaddrs* all = nullptr;
    if (::getifaddrs(&all) != 0) return false;
    bool found = false;
    for (auto* i = all; i && !found; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET)
            found = reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr == ip.s_addr;
    ::freeifaddrs(all);
    return found;
}

class Prober {
public:
    explicit Prober(int fd) : m_fd(fd) {
        static const std::uint16_t known[] = {STUN_ATTRIBUTE_MAPPED_ADDRESS,
                                              STUN_ATTRIBUTE_XOR_MAPPED_ADDRESS,
                                              STUN_ATTRIBUTE_CHANGED_ADDRESS,
                                              STUN_ATTRIBUTE_SOURCE_ADDRESS,
                                              STUN_ATTRIBUTE_ERROR_CODE,
                                              STUN_ATTRIBUTE_SOFTWARE,
                                              STUN_ATTRIBUTE_FINGERPRINT,
                                              k_response_origin,
                                              k_other_address,
                                              0};
        stun_agent_init(&m_agent, known, STUN_COMPATIBILITY_RFC5389, STUN_AGENT_USAGE_USE_FINGERPRINT);
    }

    struct Answer {
        sockaddr_in mapped{};
        std::optional<sockaddr_in> other;
    };

    // One binding transaction with retransmissions; nullopt if unanswered.
    std::optional<Answer> bind(const sockaddr_in& server) {
        std::array<std::uint8_t, 576> req{};
        StunMessage msg;
        const std::size_t len = stun_usage_bind_create(&m_agent, &msg, req.data(), req.size());
        if (len == 0) return std::nullopt;
        for (int attempt = 0; attempt < k_tries; ++attempt) {
            ::sendto(m_fd, req.data(), len, 0, reinterpret_cast<const sockaddr*>(&server), sizeof server);
            const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(k_try_ms);
            for (;;) {
                const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                                      until - std::chrono::steady_clock::now())
                                      .count();
                if (left <= 0) break;
                pollfd p{m_fd, POLLIN, 0};
                if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
                std::array<std::uint8_t, 1500> buf{};
                sockaddr_in from{};
                socklen_t fl = sizeof from;
                const auto n =
                    ::recvfrom(m_fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
                if (n <= 0) continue;
                StunMessage resp;
                if (stun_agent_validate(&m_agent, &resp, buf.data(), static_cast<std::size_t>(n), nullptr,
                                        nullptr) != STUN_VALIDATION_SUCCESS ||
                    std::memcmp(resp.buffer + 8, msg.buffer + 8, 12) != 0)
                    continue;  // not the answer to this request (a late retransmission's, say)
                Answer a;
                sockaddr_storage mapped{}, alt{};
                socklen_t ml = sizeof mapped, al = sizeof alt;
                if (stun_usage_bind_process(&resp, reinterpret_cast<sockaddr*>(&mapped), &ml,
                                            reinterpret_cast<sockaddr*>(&alt),
                                            &al) != STUN_USAGE_BIND_RETURN_SUCCESS ||
                    mapped.ss_family != AF_INET)
                    return std::nullopt;
                std::memcpy(&a.mapped, &mapped, sizeof a.mapped);
                sockaddr_storage other{};
                socklen_t ol = sizeof other;
                if ((stun_message_find_addr(&resp, static_cast<StunAttribute>(k_other_address), &other,
                                            &ol) == STUN_MESSAGE_RETURN_SUCCESS ||
                     (ol = sizeof other, stun_message_find_addr(&resp, STUN_ATTRIBUTE_CHANGED_ADDRESS, &other,
                                                                &ol) == STUN_MESSAGE_RETURN_SUCCESS)) &&
                    other.ss_family == AF_INET) {
                    sockaddr_in o;
                    std::memcpy(&o, &other, sizeof o);
                    a.other = o;
                }
                return a;
            }
        }
        return std::nullopt;
    }

private:
    int m_fd;
    StunAgent m_agent{};
};

bool same(const sockaddr_in& a, const sockaddr_in& b) {
    return a.sin_addr.s_addr == b.sin_addr.s_addr && a.sin_port == b.sin_port;
}

}  // namespace

NatProbe probe_nat(const std::string& bind_ip, const std::vector<Server>& servers) {
    NatProbe out;
    out.mapping = "unknown";
    if (servers.empty()) {
        out.error = "no STUN or TURN server is configured (juiced --stun or --turn)";
        return out;
    }
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        out.error = std::string("cannot open a UDP socket: ") + std::strerror(errno);
        return out;
    }
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    auto local = v4(bind_ip.empty() ? "0.0.0.0" : bind_ip, 0);
    if (!local || ::bind(fd, reinterpret_cast<const sockaddr*>(&*local), sizeof *local) != 0) {
        out.error = "cannot bind the probe socket on " + (bind_ip.empty() ? std::string("0.0.0.0") : bind_ip);
        return out;
    }
    sockaddr_in bound{};
    socklen_t bl = sizeof bound;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bl);
    out.local = to_string(bound);

    Prober prober(fd);
    auto test = [&](const sockaddr_in& server) {
        auto a = prober.bind(server);
        out.tests.push_back({to_string(server), a ? to_string(a->mapped) : ""});
        return a;
    };
    auto first = v4(servers[0].ip, servers[0].port);
    if (!first) {
        out.error = "the server address is not numeric IPv4: " + servers[0].ip;
        return out;
    }
    auto t1 = test(*first);
    if (!t1) {
        out.error = "the STUN server " + to_string(*first) + " did not answer";
        return out;
    }
    out.port_preserved = t1->mapped.sin_port == bound.sin_port;
    if (local_ip(t1->mapped.sin_addr) && *out.port_preserved) {
        out.mapping = "none";
        return out;
    }
    if (t1->other && t1->other->sin_addr.s_addr != first->sin_addr.s_addr) {
        out.other_address = to_string(*t1->other);
        sockaddr_in ip2_p1 = *t1->other;
        ip2_p1.sin_port = first->sin_port;
        auto t2 = test(ip2_p1);
        if (!t2) {
            out.error = "the server's other address " + to_string(ip2_p1) + " did not answer";
            return out;
        }
        if (same(t2->mapped, t1->mapped)) {
            out.mapping = "endpoint-independent";
            return out;
        }
        auto t3 = test(*t1->other);
        if (!t3) {
            out.error = "the server's other address " + out.other_address + " did not answer";
            return out;
        }
        out.mapping = same(t3->mapped, t2->mapped) ? "address-dependent" : "address-and-port-dependent";
        return out;
    }
    for (std::size_t i = 1; i < servers.size(); ++i) {
        auto s = v4(servers[i].ip, servers[i].port);
        if (!s || s->sin_addr.s_addr == first->sin_addr.s_addr) continue;
        auto t = test(*s);
        if (!t) continue;
        out.mapping = same(t->mapped, t1->mapped) ? "endpoint-independent" : "endpoint-dependent";
        return out;
    }
    out.error = "the server has no second address (RFC 5780 OTHER-ADDRESS) to tell the mapping by";
    return out;
}

}  // namespace juice::node::ice
