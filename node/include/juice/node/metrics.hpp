// Operator metrics: Prometheus text exposition (format 0.0.4) served over a
// tiny HTTP/1.0 endpoint, meant for a loopback port (juiced --metrics-port).
//
// render_prometheus() is the sans-I/O part (unit-tested). MetricsServer runs
// on the daemon's asio loop: it answers `GET /metrics` with the samples the
// source function returns at that moment, and anything else with 404, 405 or
// 400. Bounds: requests over 8 KiB or slower than 5 s are cut off, at most 16
// connections at once (more wait in the kernel's backlog).
#pragma once

#include "juice/crypto/result.hpp"

#include <asio/io_context.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace juice::node {

struct Metric {
    std::string name;  // [a-zA-Z_:][a-zA-Z0-9_:]*; anything else is replaced by '_'
    std::string help;
    enum class Type { counter, gauge } type = Type::gauge;
    double value = 0;
};

// The text format: "# HELP", "# TYPE" and one sample line per metric.
std::string render_prometheus(const std::vector<Metric>& metrics);

// What an HTTP request line asks for, as MetricsServer sees it (sans-I/O).
// Returns the status code and the body to send.
struct HttpAnswer {
    int status = 200;
    std::string content_type = "text/plain; version=0.0.4; charset=utf-8";
    std::string body;
};
HttpAnswer answer_metrics_request(std::string_view request_head,
                                  const std::function<std::vector<Metric>()>& source);

class MetricsServer {
public:
    using Source = std::function<std::vector<Metric>()>;
    MetricsServer(asio::io_context& io, Source source);
    ~MetricsServer();

    // Binds `address:port` (port 0 = any) and starts accepting. A bind error
    // is user-readable. Loopback is the intended address: the metrics carry
    // no secrets but they tell who is online how much.
    Result<void> start(const std::string& address, std::uint16_t port);
    void stop();
    std::uint16_t port() const;

    struct Impl;

private:
    std::shared_ptr<Impl> m_impl;
};

}  // namespace juice::node
