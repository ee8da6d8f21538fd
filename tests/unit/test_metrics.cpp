// Operator metrics: the Prometheus text, the HTTP request handling of the
// metrics endpoint, and the DHT traffic rates.
#include "juice/node/metrics.hpp"
#include "node_common.hpp"

#include <catch2/catch.hpp>

using namespace juice::node;

namespace {
std::vector<Metric> sample() {
    return {{"juice_dht_nodes", "good nodes", Metric::Type::gauge, 12},
            {"juice_dht_bytes_sent_total", "bytes", Metric::Type::counter, 123456789012.0},
            {"juice_uptime_seconds", "up", Metric::Type::gauge, 1.5}};
}
}  // namespace

TEST_CASE("prometheus text: HELP, TYPE and a sample per metric", "[metrics]") {
    auto text = render_prometheus(sample());
    CHECK(text ==
          "# HELP juice_dht_nodes good nodes\n# TYPE juice_dht_nodes gauge\njuice_dht_nodes 12\n"
          "# HELP juice_dht_bytes_sent_total bytes\n# TYPE juice_dht_bytes_sent_total counter\n"
          "juice_dht_bytes_sent_total 123456789012\n"
          "# HELP juice_uptime_seconds up\n# TYPE juice_uptime_seconds gauge\njuice_uptime_seconds 1.5\n");
}

TEST_CASE("prometheus text: bad names and help text are made valid", "[metrics]") {
    auto text = render_prometheus({{"9 bad-name", "a\\b\nc", Metric::Type::gauge, 0}});
    CHECK(text.find("# HELP __bad_name a\\\\b\\nc\n") != std::string::npos);
    CHECK(text.find("\n__bad_name 0\n") != std::string::npos);
    CHECK(render_prometheus({{"x", "", Metric::Type::gauge, std::numeric_limits<double>::quiet_NaN()}})
              .find("x NaN") != std::string::npos);
    CHECK(render_prometheus({}).empty());
}

TEST_CASE("metrics endpoint: GET /metrics, and clear errors for anything else", "[metrics]") {
    int calls = 0;
    auto src = [&] {
        ++calls;
        return sample();
    };
    auto ok = answer_metrics_request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", src);
    CHECK(ok.status == 200);
    CHECK(ok.content_type.find("version=0.0.4") != std::string::npos);
    CHECK(ok.body == render_prometheus(sample()));
    CHECK(answer_metrics_request("GET /metrics?x=1 HTTP/1.0\r\n\r\n", src).status == 200);
    auto head = answer_metrics_request("HEAD /metrics HTTP/1.1\r\n\r\n", src);
    CHECK(head.status == 200);
    CHECK(head.body.empty());
    CHECK(calls == 3);

    CHECK(answer_metrics_request("POST /metrics HTTP/1.1\r\n\r\n", src).status == 405);
    CHECK(answer_metrics_request("GET / HTTP/1.1\r\n\r\n", src).status == 404);
    CHECK(answer_metrics_request("GET /metrics/x HTTP/1.1\r\n\r\n", src).status == 404);
    for (const char* bad : {"", "\r\n\r\n", "GET", "GET /metrics", "GET /metrics FTP/1.0\r\n\r\n",
                            "\x01\x02\x03 \xff \xfe", "GET  HTTP/1.1"}) {
        INFO(bad);
        auto a = answer_metrics_request(bad, src);
        CHECK((a.status == 400 || a.status == 404));
        CHECK_FALSE(a.body.empty());
    }
    CHECK(calls == 3);  // no error path asked for the metrics
}

TEST_CASE("rate meter: per-second rates over the sample window", "[metrics]") {
    RateMeter m(10);
    juice::dht::DhtInfo i;
    auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
    CHECK(m.rates().packets_in == 0);  // no samples yet
    for (int s = 0; s <= 20; ++s) {
        i.packets_in = 100u * s;
        i.bytes_in = 10000u * s;
        i.packets_out = 50u * s;
        i.bytes_out = 5000u * s;
        m.sample(i, t0 + std::chrono::seconds(s));
    }
    auto r = m.rates();
    CHECK(r.packets_in == Approx(100));
    CHECK(r.bytes_in == Approx(10000));
    CHECK(r.packets_out == Approx(50));
    CHECK(r.bytes_out == Approx(5000));
    // A counter that went backwards (a restarted DHT node) reads as 0, not as
    // a huge number.
    i.packets_in = 0;
    for (int s = 21; s <= 25; ++s) m.sample(i, t0 + std::chrono::seconds(s));
    CHECK(m.rates().packets_in == 0);
}
