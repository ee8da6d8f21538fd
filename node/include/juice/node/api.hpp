// The local API: JSON-RPC 2.0, one object per line, over a Unix stream
// socket (see docs/API.md for every method and event).
//
// ApiServer runs on the daemon's asio loop: every handler is called on the
// loop thread and may answer at once or later (keep the Reply). Responses and
// events go to a per-client bounded queue; a client that does not read gets
// its events dropped (with an `events_dropped` notice once it catches up),
// never a stalled daemon. A malformed line gets a JSON-RPC parse error and
// the connection stays open.
#pragma once

#include "juice/crypto/result.hpp"

#include <asio/io_context.hpp>
#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

namespace juice::node::api {

using json = nlohmann::json;

// JSON-RPC error codes used by juice.
inline constexpr int k_parse_error = -32700;
inline constexpr int k_invalid_request = -32600;
inline constexpr int k_method_not_found = -32601;
inline constexpr int k_invalid_params = -32602;
inline constexpr int k_internal_error = -32603;
inline constexpr int k_app_error = -32000;  // juice-level failure; see reason

struct RpcError {
    int code = k_app_error;
    std::string message;  // human-readable, says what to do
    std::string reason;   // stable machine string: "invalid_params", "unknown_contact", ...

    static RpcError invalid_params(std::string message) {
        return {k_invalid_params, std::move(message), "invalid_params"};
    }
    static RpcError app(std::string reason, std::string message) {
        return {k_app_error, std::move(message), std::move(reason)};
    }
};

// The answer to one request. Copyable; the first result()/error() call wins,
// later ones are ignored. Dropping every copy without answering answers with
// an internal error (a bug guard). Notifications (requests without id) get no
// response but the handler runs the same way. Loop thread only.
class Reply {
public:
    void result(json value) const;
    void error(RpcError err) const;

    struct State;
    explicit Reply(std::shared_ptr<State> state) : m_state(std::move(state)) {}

private:
    std::shared_ptr<State> m_state;
};

using Handler = std::function<void(const json& params, Reply reply)>;

// Default socket path: $XDG_RUNTIME_DIR/juice/api.sock, or
// /tmp/juice-<uid>/api.sock when XDG_RUNTIME_DIR is unset.
std::filesystem::path default_socket_path();

class ApiServer {
public:
    struct Options {
        std::filesystem::path socket_path = default_socket_path();
        std::size_t max_clients = 256;
        std::size_t max_line_bytes = 1 << 20;  // a longer line: error, then the rest is skipped
        std::size_t max_queue = 4096;          // queued outgoing lines per client
    };

    ApiServer(asio::io_context& io, Options options);
    ~ApiServer();

    // Creates the socket's directory (0700) if needed, refuses to start if
    // another daemon answers on the socket, removes a stale socket file,
    // binds and sets mode 0600. Errors are user-readable.
    Result<void> start();
    void stop();  // closes the listener and all clients; removes the socket file

    // Registers a method. `events.subscribe` is built in: params
    // {types?: [..]} (all types when absent).
    void add_method(std::string name, Handler handler);

    // Sends {"jsonrpc":"2.0","method":"event","params": event} to every
    // subscribed client whose filter admits event["type"]. Loop thread only.
    void publish(const json& event);

    std::size_t client_count() const;

    struct Impl;

private:
    std::shared_ptr<Impl> m_impl;
};

}  // namespace juice::node::api
