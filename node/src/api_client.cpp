// A blocking API client: a plain AF_UNIX socket, non-blocking I/O and poll()
// with deadlines. No asio, so front-ends can poll() it next to stdin.
#include "juice/node/api_client.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace juice::node::api {

namespace {

// A daemon line longer than this is a protocol error (we would never finish reading it).
constexpr std::size_t k_max_incoming_line = 256u << 20;

class ClientErrorCategory : public std::error_category {
public:
    const char* name() const noexcept override { return "juice.api_client"; }
    std::string message(int value) const override {
        switch (static_cast<client_errc>(value)) {
            case client_errc::connect_failed:
                return "cannot reach juiced";
            case client_errc::timeout:
                return "juiced did not answer in time";
            case client_errc::closed:
                return "juiced closed the connection";
            case client_errc::protocol:
                return "juiced sent something that is not JSON-RPC";
        }
        return "unknown API client error";
    }
};

using Clock = std::chrono::steady_clock;

int ms_until(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return 0;
    if (left > 1'000'000'000) return 1'000'000'000;
    return static_cast<int>(left);
}

Clock::time_point deadline_after(std::chrono::milliseconds timeout) {
    // Saturate: "wait forever" callers may pass milliseconds::max().
    auto now = Clock::now();
    if (timeout.count() < 0) return now;
    if (timeout > std::chrono::hours(24 * 365)) return now + std::chrono::hours(24 * 365);
    return now + timeout;
}

RpcError rpc_error_from(const json& error) {
    RpcError err;
    err.code = k_internal_error;
    if (!error.is_object()) {
        err.message = "juiced answered with a malformed error";
        err.reason = "internal";
        return err;
    }
    if (auto code = error.find("code"); code != error.end() && code->is_number_integer())
        err.code = code->get<int>();
    if (auto message = error.find("message"); message != error.end() && message->is_string())
        err.message = message->get<std::string>();
    if (auto data = error.find("data"); data != error.end() && data->is_object())
        if (auto reason = data->find("reason"); reason != data->end() && reason->is_string())
            err.reason = reason->get<std::string>();
    if (err.message.empty()) err.message = "juiced reported an error without a message";
    return err;
}

}  // namespace

const std::error_category& client_error_category() noexcept {
    static const ClientErrorCategory category;
    return category;
}

Result<ApiClient> ApiClient::connect(const std::filesystem::path& socket_path,
                                     std::chrono::milliseconds timeout) {
    const std::string path = socket_path.string();
    auto fail = [&](const std::string& why) {
        return make_error(
            client_errc::connect_failed,
            fmt::format("cannot reach juiced at {}: {}. Is it running? Start it with `juiced`", path, why));
    };
    sockaddr_un addr{};
    if (path.empty() || path.size() >= sizeof(addr.sun_path))
        return fail(fmt::format("the path is empty or longer than {} bytes", sizeof(addr.sun_path) - 1));
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return fail(std::strerror(errno));

    // A non-blocking AF_UNIX connect never completes later: EAGAIN means the
    // daemon's backlog is full, so retry until the deadline.
    const auto deadline = deadline_after(timeout);
    for (;;) {
        if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) break;
        int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN && Clock::now() < deadline) {
            ::poll(nullptr, 0, std::min(10, ms_until(deadline)));
            continue;
        }
        ::close(fd);
        if (err == EAGAIN) return fail("the daemon is too busy to accept connections (timed out)");
        return fail(std::strerror(err));
    }

    ApiClient client;
    client.m_fd = fd;
    return Result<ApiClient>(std::move(client));
}

ApiClient::ApiClient(ApiClient&& other) noexcept
    : m_fd(std::exchange(other.m_fd, -1)),
      m_next_id(other.m_next_id),
      m_inbuf(std::move(other.m_inbuf)),
      m_events(std::move(other.m_events)) {}

ApiClient& ApiClient::operator=(ApiClient&& other) noexcept {
    if (this != &other) {
        if (m_fd >= 0) ::close(m_fd);
        m_fd = std::exchange(other.m_fd, -1);
        m_next_id = other.m_next_id;
        m_inbuf = std::move(other.m_inbuf);
        m_events = std::move(other.m_events);
    }
    return *this;
}

ApiClient::~ApiClient() {
    if (m_fd >= 0) ::close(m_fd);
}

int ApiClient::fd() const {
    return m_fd;
}

Result<std::optional<json>> ApiClient::read_message(Clock::time_point deadline) {
    if (m_fd < 0) return make_error(client_errc::closed, "the connection to juiced is closed");
    for (;;) {
        // A complete line may already be buffered (read along with an earlier one).
        if (auto newline = m_inbuf.find('\n'); newline != std::string::npos) {
            std::string line = m_inbuf.substr(0, newline);
            m_inbuf.erase(0, newline + 1);
            if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
            try {
                return std::optional<json>(json::parse(line));
            } catch (const json::exception& e) {
                return make_error(client_errc::protocol,
                                  fmt::format("juiced sent a line that is not JSON ({}): {}", e.what(),
                                              line.substr(0, 120)));
            }
        }
        if (m_inbuf.size() > k_max_incoming_line)
            return make_error(client_errc::protocol, "juiced sent a line longer than 256 MiB");

        char buf[64 * 1024];
        ssize_t n = ::recv(m_fd, buf, sizeof(buf), 0);
        if (n > 0) {
            m_inbuf.append(buf, static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) return make_error(client_errc::closed, "juiced closed the connection");
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return make_error(client_errc::closed,
                              fmt::format("the connection to juiced failed: {}", std::strerror(errno)));

        pollfd p{m_fd, POLLIN, 0};
        int rc = ::poll(&p, 1, ms_until(deadline));
        if (rc < 0 && errno != EINTR)
            return make_error(client_errc::closed, fmt::format("poll failed: {}", std::strerror(errno)));
        if (rc == 0) return std::optional<json>();  // deadline passed
    }
}

Result<Response> ApiClient::call(const std::string& method, const json& params,
                                 std::chrono::milliseconds timeout) {
    if (m_fd < 0) return make_error(client_errc::closed, "the connection to juiced is closed");
    const auto deadline = deadline_after(timeout);
    const long long id = m_next_id++;
    json request{{"jsonrpc", "2.0"}, {"id", id}, {"method", method}};
    if (!params.is_null()) request["params"] = params;
    std::string line = request.dump(-1, ' ', false, json::error_handler_t::replace);
    line.push_back('\n');

    // An error line without our id (parse error, too many clients) answers
    // this call: we only ever have one request in flight.
    auto answer_of = [&](const json& message) -> std::optional<Response> {
        if (!message.is_object()) return std::nullopt;
        auto mid = message.find("id");
        if (mid == message.end()) return std::nullopt;  // a notification
        const bool ours = mid->is_number_integer() && mid->get<long long>() == id;
        const bool unattributed = mid->is_null() && message.contains("error");
        if (!ours && !unattributed) return std::nullopt;  // a late answer to an abandoned call
        Response response;
        if (auto err = message.find("error"); err != message.end())
            response.error = rpc_error_from(*err);
        else if (auto res = message.find("result"); res != message.end())
            response.result = *res;
        else
            response.error =
                RpcError{k_internal_error, "juiced answered without result or error", "internal"};
        return response;
    };
    auto keep_if_event = [&](json& message) {
        if (message.is_object() && message.value("method", "") == "event" && message.contains("params"))
            m_events.push_back(std::move(message["params"]));
    };
    // Wait for our answer, keeping events for next_event().
    auto await_answer = [&]() -> Result<Response> {
        for (;;) {
            auto message = read_message(deadline);
            if (!message) return message.error();
            if (!*message)
                return make_error(client_errc::timeout, fmt::format("juiced did not answer '{}' within {} ms",
                                                                    method, timeout.count()));
            if (auto answer = answer_of(**message)) return *answer;
            keep_if_event(**message);
        }
    };

    std::size_t sent = 0;
    while (sent < line.size()) {
        ssize_t n = ::send(m_fd, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            // The daemon is not reading; keep reading its output meanwhile so
            // neither side blocks on a full buffer.
            pollfd p{m_fd, POLLOUT | POLLIN, 0};
            int rc = ::poll(&p, 1, ms_until(deadline));
            if (rc == 0)
                return make_error(client_errc::timeout,
                                  fmt::format("juiced did not take the '{}' request within {} ms", method,
                                              timeout.count()));
            if (rc > 0 && (p.revents & POLLIN)) {
                auto message = read_message(Clock::now());
                if (!message) return message.error();
                if (*message) {
                    if (auto answer = answer_of(**message)) return *answer;
                    keep_if_event(**message);
                }
            }
            continue;
        }
        int err = errno;
        // The daemon may have closed right after writing why (too many clients).
        auto message = read_message(Clock::now() + std::chrono::milliseconds(100));
        if (message && *message)
            if (auto answer = answer_of(**message)) return *answer;
        return make_error(client_errc::closed,
                          fmt::format("juiced closed the connection: {}", std::strerror(err)));
    }
    return await_answer();
}

Result<std::optional<json>> ApiClient::next_event(std::chrono::milliseconds timeout) {
    if (!m_events.empty()) {
        json event = std::move(m_events.front());
        m_events.pop_front();
        return std::optional<json>(std::move(event));
    }
    const auto deadline = deadline_after(timeout);
    for (;;) {
        auto message = read_message(deadline);
        if (!message) return message.error();
        if (!*message) return std::optional<json>();
        json& m = **message;
        if (m.is_object() && m.value("method", "") == "event" && m.contains("params"))
            return std::optional<json>(std::move(m["params"]));
        // Anything else is a late answer to an abandoned call: skip it.
    }
}

}  // namespace juice::node::api
