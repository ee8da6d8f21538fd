#include "juice/node/config.hpp"

#include <asio/ip/address.hpp>

#include <charconv>
#include <cstdlib>

namespace juice::node {

std::filesystem::path Config::default_data_dir() {
    if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg)
        return std::filesystem::path(xdg) / "juice";
    if (const char* home = std::getenv("HOME"); home && *home)
        return std::filesystem::path(home) / ".local" / "share" / "juice";
    return std::filesystem::path("juice-data");
}

std::optional<IpPort> parse_ip_port(std::string_view s) {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    std::uint16_t port = 0;
    const auto tail = s.substr(colon + 1);
    if (tail.empty()) return std::nullopt;
    const auto [end, err] = std::from_chars(tail.data(), tail.data() + tail.size(), port);
    if (err != std::errc{} || end != tail.data() + tail.size() || port == 0) return std::nullopt;
    auto host = s.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    std::error_code ec;
    (void)asio::ip::make_address(std::string(host), ec);
    if (ec) return std::nullopt;
    return IpPort{std::string(host), port};
}

}  // namespace juice::node
