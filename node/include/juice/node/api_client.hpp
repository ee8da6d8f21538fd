// A blocking client of the local API, for the `juice` CLI, benchmarks and
// integration tests. Not for use inside the daemon.
#pragma once

#include "juice/node/api.hpp"

#include <chrono>
#include <deque>
#include <optional>

namespace juice::node::api {

enum class client_errc {
    connect_failed = 1,  // no daemon at the socket path (message says how to start one)
    timeout,
    closed,    // the daemon closed the connection
    protocol,  // the daemon sent something that is not JSON-RPC
};
const std::error_category& client_error_category() noexcept;
inline std::error_code make_error_code(client_errc e) noexcept {
    return {static_cast<int>(e), client_error_category()};
}

struct Response {
    json result;  // valid when !error
    std::optional<RpcError> error;
    bool ok() const { return !error; }
};

class ApiClient {
public:
    static Result<ApiClient> connect(const std::filesystem::path& socket_path,
                                     std::chrono::milliseconds timeout = std::chrono::seconds(5));
    ApiClient(ApiClient&&) noexcept;
    ApiClient& operator=(ApiClient&&) noexcept;
    ~ApiClient();

    // Sends a request and waits for its response. Event notifications that
    // arrive meanwhile are kept for next_event().
    Result<Response> call(const std::string& method, const json& params = json::object(),
                          std::chrono::milliseconds timeout = std::chrono::seconds(30));

    // The next event notification's params ({"type": ..., ...}), waiting up
    // to `timeout`; nullopt on timeout.
    Result<std::optional<json>> next_event(std::chrono::milliseconds timeout);

    // The socket, for poll() in interactive front-ends (readable = call
    // next_event with a zero timeout).
    int fd() const;

private:
    ApiClient() = default;
    int m_fd = -1;
    long long m_next_id = 1;
    std::string m_inbuf;
    std::deque<json> m_events;
    Result<std::optional<json>> read_message(std::chrono::steady_clock::time_point deadline);
};

}  // namespace juice::node::api

template <>
struct std::is_error_code_enum<juice::node::api::client_errc> : std::true_type {};
