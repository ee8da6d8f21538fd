#include "juice/node/metrics.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <asio.hpp>

#include <cmath>
#include <sstream>

namespace juice::node {

namespace {

constexpr std::size_t k_max_request = 8 * 1024;
constexpr std::size_t k_max_connections = 16;
constexpr auto k_request_timeout = std::chrono::seconds(5);

std::string clean_name(const std::string& name) {
    std::string out = name.empty() ? "_" : name;
    for (std::size_t i = 0; i < out.size(); ++i) {
        char c = out[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                  (i > 0 && c >= '0' && c <= '9');
        if (!ok) out[i] = '_';
    }
    return out;
}

// HELP text escapes backslash and newline (the text format's rules).
std::string clean_help(const std::string& help) {
    std::string out;
    for (char c : help) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

std::string format_value(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<long long>(v));
    return fmt::format("{}", v);
}

const char* reason_phrase(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 431:
            return "Request Header Fields Too Large";
        default:
            return "Error";
    }
}

}  // namespace

std::string render_prometheus(const std::vector<Metric>& metrics) {
    std::string out;
    for (const auto& m : metrics) {
        auto name = clean_name(m.name);
        out +=
            fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, clean_help(m.help), name,
                        m.type == Metric::Type::counter ? "counter" : "gauge", name, format_value(m.value));
    }
    return out;
}

HttpAnswer answer_metrics_request(std::string_view head, const std::function<std::vector<Metric>()>& source) {
    HttpAnswer a;
    a.content_type = "text/plain; charset=utf-8";
    auto eol = head.find("\r\n");
    auto line = head.substr(0, eol == std::string_view::npos ? head.size() : eol);
    // "METHOD SP TARGET SP HTTP/x.y"
    auto sp1 = line.find(' ');
    auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp1 == std::string_view::npos || sp2 == std::string_view::npos ||
        line.substr(sp2 + 1).rfind("HTTP/", 0) != 0) {
        a.status = 400;
        a.body = "bad request: expected 'GET /metrics HTTP/1.1'\n";
        return a;
    }
    auto method = line.substr(0, sp1);
    auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
    if (target != "/metrics") {
        a.status = 404;
        a.body = "not found: metrics are at /metrics\n";
        return a;
    }
    if (method != "GET" && method != "HEAD") {
        a.status = 405;
        a.body = "method not allowed: use GET\n";
        return a;
    }
    a.content_type = "text/plain; version=0.0.4; charset=utf-8";
    a.body = render_prometheus(source ? source() : std::vector<Metric>{});
    if (method == "HEAD") a.body.clear();
    return a;
}

struct MetricsServer::Impl : std::enable_shared_from_this<Impl> {
    asio::io_context& io;
    Source source;
    asio::ip::tcp::acceptor acceptor;
    asio::steady_timer backoff;
    std::size_t connections = 0;
    bool stopped = false;

    Impl(asio::io_context& ctx, Source src) : io(ctx), source(std::move(src)), acceptor(ctx), backoff(ctx) {}

    struct Conn {
        asio::ip::tcp::socket sock;
        asio::steady_timer timer;
        std::string buf;
        std::string out;
        explicit Conn(asio::io_context& io) : sock(io), timer(io) {}
    };

    void accept() {
        if (stopped) return;
        if (connections >= k_max_connections) {
            // Let the kernel's backlog hold new ones until one finishes.
            backoff.expires_after(std::chrono::milliseconds(50));
            backoff.async_wait([self = shared_from_this()](std::error_code ec) {
                if (!ec) self->accept();
            });
            return;
        }
        acceptor.async_accept([self = shared_from_this()](std::error_code ec, asio::ip::tcp::socket s) {
            if (self->stopped) return;
            if (!ec) self->serve(std::move(s));
            self->accept();
        });
    }

    void serve(asio::ip::tcp::socket s) {
        auto c = std::make_shared<Conn>(io);
        c->sock = std::move(s);
        ++connections;
        c->timer.expires_after(k_request_timeout);
        c->timer.async_wait([c](std::error_code ec) {
            if (!ec) {
                std::error_code ignored;
                c->sock.close(ignored);
            }
        });
        read(c);
    }

    void read(const std::shared_ptr<Conn>& c) {
        auto chunk = std::make_shared<std::array<char, 1024>>();
        c->sock.async_read_some(
            asio::buffer(*chunk), [self = shared_from_this(), c, chunk](std::error_code ec, std::size_t n) {
                if (ec) return self->done(c);
                c->buf.append(chunk->data(), n);
                if (c->buf.find("\r\n\r\n") != std::string::npos || c->buf.find("\n\n") != std::string::npos)
                    return self->respond(c, answer_metrics_request(c->buf, self->source));
                if (c->buf.size() > k_max_request) {
                    HttpAnswer a;
                    a.status = 431;
                    a.content_type = "text/plain; charset=utf-8";
                    a.body = "request too large\n";
                    return self->respond(c, a);
                }
                self->read(c);
            });
    }

    void respond(const std::shared_ptr<Conn>& c, const HttpAnswer& a) {
        c->out = fmt::format(
            "HTTP/1.0 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            a.status, reason_phrase(a.status), a.content_type, a.body.size(), a.body);
        asio::async_write(c->sock, asio::buffer(c->out),
                          [self = shared_from_this(), c](std::error_code, std::size_t) {
                              std::error_code ignored;
                              c->sock.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
                              self->done(c);
                          });
    }

    void done(const std::shared_ptr<Conn>& c) {
        std::error_code ignored;
        c->timer.cancel();
        if (c->sock.is_open()) c->sock.close(ignored);
        if (connections) --connections;
    }
};

MetricsServer::MetricsServer(asio::io_context& io, Source source)
    : m_impl(std::make_shared<Impl>(io, std::move(source))) {}

MetricsServer::~MetricsServer() {
    stop();
}

Result<void> MetricsServer::start(const std::string& address, std::uint16_t port) {
    auto& d = *m_impl;
    std::error_code ec;
    auto ip = asio::ip::make_address(address, ec);
    if (ec)
        return make_error(std::errc::invalid_argument, "not an IP address for metrics: '" + address + "'");
    asio::ip::tcp::endpoint ep(ip, port);
    d.acceptor.open(ep.protocol(), ec);
    if (!ec) d.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) d.acceptor.bind(ep, ec);
    if (!ec) d.acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
        std::error_code ignored;
        d.acceptor.close(ignored);
        return make_error(std::errc::address_in_use,
                          fmt::format("cannot serve metrics on {}:{}: {}. Choose another --metrics-port.",
                                      address, port, ec.message()));
    }
    d.stopped = false;
    d.accept();
    return {};
}

void MetricsServer::stop() {
    auto& d = *m_impl;
    d.stopped = true;
    std::error_code ignored;
    d.acceptor.close(ignored);
    d.backoff.cancel();
}

std::uint16_t MetricsServer::port() const {
    std::error_code ec;
    auto ep = m_impl->acceptor.local_endpoint(ec);
    return ec ? 0 : ep.port();
}

}  // namespace juice::node
