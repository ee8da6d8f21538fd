#include "juice/node/config.hpp"

#include <catch2/catch.hpp>

using juice::node::parse_ip_port;

TEST_CASE("config: IP:PORT for --stun and --turn") {
    auto v4 = parse_ip_port("203.0.113.3:3478");
    REQUIRE(v4);
    CHECK(v4->ip == "203.0.113.3");
    CHECK(v4->port == 3478);
    auto v6 = parse_ip_port("[2001:db8::1]:65535");
    REQUIRE(v6);
    CHECK(v6->ip == "2001:db8::1");
    CHECK(v6->port == 65535);
    for (const char* bad : {"", "203.0.113.3", "203.0.113.3:", "203.0.113.3:0", "203.0.113.3:65536",
                            "203.0.113.3:34x", "turn.example.org:3478", ":3478", "[::1:3478"})
        CHECK_FALSE(parse_ip_port(bad));
}
