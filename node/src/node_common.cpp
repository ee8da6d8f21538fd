#include "node_common.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

namespace juice::node {

void RateMeter::sample(const dht::DhtInfo& i, std::chrono::steady_clock::time_point now) {
    m_samples.push_back({now, i.packets_in, i.packets_out, i.bytes_in, i.bytes_out});
    while (m_samples.size() > m_window + 1) m_samples.pop_front();
}

RateMeter::Rates RateMeter::rates() const {
    Rates r;
    if (m_samples.size() < 2) return r;
    const auto& a = m_samples.front();
    const auto& b = m_samples.back();
    double s = std::chrono::duration<double>(b.t - a.t).count();
    if (s <= 0) return r;
    // Counters only grow while the node runs; a restart resets both ends.
    auto d = [s](std::uint64_t x, std::uint64_t y) { return y >= x ? (y - x) / s : 0.0; };
    r.packets_in = d(a.pin, b.pin);
    r.packets_out = d(a.pout, b.pout);
    r.bytes_in = d(a.bin, b.bin);
    r.bytes_out = d(a.bout, b.bout);
    return r;
}

Result<int> lock_data_dir(const std::filesystem::path& dir, const std::string& lock_name,
                          const std::string& who) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    auto path = dir / lock_name;
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return make_error(std::errc::io_error, "cannot open " + path.string() + ": " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = {};
        (void)!::pread(fd, pid, sizeof pid - 1, 0);
        ::close(fd);
        return make_error(std::errc::resource_unavailable_try_again,
                          "another " + who + " (pid " + std::string(pid) + ") is already using " +
                              dir.string() + "; stop it first, or use another --data-dir");
    }
    auto me = std::to_string(::getpid());
    (void)!::ftruncate(fd, 0);
    (void)!::pwrite(fd, me.data(), me.size(), 0);
    return fd;
}

std::uint64_t process_rss_bytes() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            try {
                return std::stoull(line.substr(6)) * 1024;
            } catch (const std::exception&) {
                return 0;
            }
        }
    }
    return 0;
}

nlohmann::json dht_json(const dht::DhtInfo& i, const RateMeter::Rates& r) {
    auto round1 = [](double v) { return static_cast<double>(static_cast<long long>(v * 10 + 0.5)) / 10; };
    return {{"state", i.state},
            {"nodes", i.nodes},
            {"dubious_nodes", i.dubious_nodes},
            {"network_size_estimate", i.network_size_estimate},
            {"network", i.network},
            {"port", i.port},
            {"public_addr", i.public_addr},
            {"searches", i.searches},
            {"stored_values", i.stored_values},
            {"stored_bytes", i.stored_bytes},
            {"packets_in", i.packets_in},
            {"packets_out", i.packets_out},
            {"bytes_in", i.bytes_in},
            {"bytes_out", i.bytes_out},
            {"packets_in_per_s", round1(r.packets_in)},
            {"packets_out_per_s", round1(r.packets_out)},
            {"bytes_in_per_s", round1(r.bytes_in)},
            {"bytes_out_per_s", round1(r.bytes_out)},
            {"packets_rate_limited", i.packets_rate_limited},
            {"puts_refused", i.puts_refused},
            {"inbox_backlog", i.inbox_backlog},
            {"inbox_dropped", i.inbox_dropped}};
}

std::vector<Metric> dht_metrics(const dht::DhtInfo& i, double uptime_s) {
    using T = Metric::Type;
    auto d = [](auto v) { return static_cast<double>(v); };
    return {
        {"juice_up", "1 while the node runs", T::gauge, 1},
        {"juice_uptime_seconds", "seconds since the node started", T::gauge, uptime_s},
        {"juice_dht_connected", "1 when the DHT node is connected", T::gauge,
         i.state == "connected" ? 1.0 : 0.0},
        {"juice_dht_nodes", "good nodes in the routing tables (IPv4 + IPv6)", T::gauge, d(i.nodes)},
        {"juice_dht_dubious_nodes", "dubious nodes in the routing tables", T::gauge, d(i.dubious_nodes)},
        {"juice_dht_network_size_estimate", "rough network size from the routing table depth", T::gauge,
         d(i.network_size_estimate)},
        {"juice_dht_searches", "searches OpenDHT keeps (gets, puts, listens)", T::gauge, d(i.searches)},
        {"juice_dht_stored_values", "values stored for the network", T::gauge, d(i.stored_values)},
        {"juice_dht_stored_bytes", "bytes of values stored for the network", T::gauge, d(i.stored_bytes)},
        {"juice_dht_packets_received_total", "datagrams received on the DHT socket", T::counter,
         d(i.packets_in)},
        {"juice_dht_packets_sent_total", "datagrams sent on the DHT socket", T::counter, d(i.packets_out)},
        {"juice_dht_bytes_received_total", "UDP payload bytes received on the DHT socket", T::counter,
         d(i.bytes_in)},
        {"juice_dht_bytes_sent_total", "UDP payload bytes sent on the DHT socket", T::counter,
         d(i.bytes_out)},
        {"juice_dht_packets_rate_limited_total", "datagrams dropped by the per-IP rate limit", T::counter,
         d(i.packets_rate_limited)},
        {"juice_dht_puts_refused_total", "puts dropped because they would crash OpenDHT 2.4.12", T::counter,
         d(i.puts_refused)},
        {"juice_process_resident_memory_bytes", "resident memory of the process", T::gauge,
         d(process_rss_bytes())},
    };
}

}  // namespace juice::node
