// The sans-I/O core of the local API server: framing, JSON-RPC 2.0 parsing
// and dispatch, and the per-client outgoing queue policy. No sockets here, so
// the unit tests (and a fuzzer) drive it directly. api.cpp wires it to asio.
//
// Everything here is single-threaded: the server calls it on the loop thread.
#pragma once

#include "juice/node/api.hpp"

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace juice::node::api::detail {

// Stable `data.reason` strings of the errors the server itself produces.
inline constexpr const char* k_reason_parse_error = "parse_error";
inline constexpr const char* k_reason_invalid_request = "invalid_request";
inline constexpr const char* k_reason_unknown_method = "unknown_method";
inline constexpr const char* k_reason_invalid_params = "invalid_params";
inline constexpr const char* k_reason_internal = "internal";
inline constexpr const char* k_reason_too_large = "too_large";
inline constexpr const char* k_reason_too_many_clients = "too_many_clients";

// Requests nested deeper than this are parse errors (keeps recursive code
// that walks params, and nlohmann's dump, away from stack exhaustion).
inline constexpr std::size_t k_max_depth = 64;

// ---- messages ---------------------------------------------------------------

json make_result_response(const json& id, json result);
// Always carries data: {reason}.
json make_error_response(const json& id, const RpcError& err);
// {"jsonrpc":"2.0","method":"event","params": event}
json make_event_notification(const json& event);
// {"type":"events_dropped","count":N} wrapped as an event notification.
json make_events_dropped(std::uint64_t count);
// Compact JSON without the trailing '\n'. Invalid UTF-8 in strings is
// replaced by U+FFFD instead of throwing (peers may send anything).
std::string to_line(const json& message);

// ---- parsing ----------------------------------------------------------------

struct Request {
    std::string method;
    json params = json::object();  // always an object ("params" absent or null -> {})
    std::optional<json> id;        // nullopt: a notification (no "id" member at all)
};

// One member of a line (or the whole line when it is not a batch). At most
// one of the two is set; neither means "nothing to do, nothing to answer"
// (a notification whose params are invalid: JSON-RPC never answers those).
struct Entry {
    std::optional<Request> request;  // well-formed: look the method up and run it
    std::optional<json> response;    // answered at once: an error response
};

struct ParsedLine {
    bool batch = false;  // a non-empty array: the answers go back as one array
    std::vector<Entry> entries;
};

// Validates one request object (already parsed JSON).
Entry parse_request(const json& value);
// Parses one line (without '\n'). Never throws. A parse error or an empty
// batch yields a single non-batch entry with the error response.
ParsedLine parse_line(std::string_view line);

// ---- dispatch ---------------------------------------------------------------

// Finds the handler of `method` for the calling client; an empty Handler when
// there is none (the caller answers "unknown_method").
using Lookup = std::function<Handler(const std::string& method)>;
// Takes one complete outgoing line (a response or a batch's array), without
// '\n'. Called once per answered line, possibly after dispatch_line returned
// (asynchronous replies), so it must stay callable (capture weakly).
using Send = std::function<void(std::string line)>;

// Parses `line`, answers what can be answered at once, runs the handlers of
// the rest. A handler that throws nlohmann::json::exception is answered as
// invalid_params, any other std::exception as an internal error.
void dispatch_line(std::string_view line, const Lookup& lookup, const Send& send);

// The error answered for an unknown method (message says how to get help).
RpcError unknown_method_error(const std::string& method);
// The error answered when a line exceeds the limit.
RpcError too_large_error(std::size_t max_line_bytes);

// ---- framing ----------------------------------------------------------------

// Splits a byte stream into '\n'-terminated lines of at most `max_line` bytes
// (the '\n' and one trailing '\r' are stripped). A longer line yields one
// too_long piece as soon as it passes the limit; the rest of it, up to the
// next '\n', is skipped. Blank lines are skipped.
class LineSplitter {
public:
    struct Piece {
        std::string line;
        bool too_long = false;
    };

    explicit LineSplitter(std::size_t max_line) : m_max(max_line) {}
    std::vector<Piece> feed(std::string_view data);
    bool discarding() const { return m_discarding; }

private:
    std::size_t m_max;
    std::string m_buf;
    bool m_discarding = false;
};

// ---- outgoing queue ---------------------------------------------------------

// The lines waiting to be written to one client, each stored with its '\n'.
// Responses are never dropped: push_response fails only when the queue is
// already full (the caller then disconnects that client). Events are dropped
// (and counted) once the queue holds more than max/2 lines, and stay dropped
// until it drains below max/4; at that point one events_dropped notice is
// queued, ahead of any later event.
class OutQueue {
public:
    explicit OutQueue(std::size_t max_lines) : m_max(max_lines < 1 ? 1 : max_lines) {}

    [[nodiscard]] bool push_response(std::string line);
    bool push_event(std::string line);  // false: dropped

    bool empty() const { return m_lines.empty(); }
    std::size_t size() const { return m_lines.size(); }
    // Lines to write, oldest first. References stay valid across push_* (deque).
    const std::deque<std::string>& lines() const { return m_lines; }
    // After the first n lines were written.
    void pop(std::size_t n);

    bool dropping() const { return m_dropping; }
    std::uint64_t dropped_unannounced() const { return m_unannounced; }
    std::uint64_t dropped_total() const { return m_dropped_total; }

private:
    std::size_t m_max;
    std::deque<std::string> m_lines;
    bool m_dropping = false;
    std::uint64_t m_unannounced = 0;
    std::uint64_t m_dropped_total = 0;
};

// Whether a subscription filter admits an event type: an exact name, or a
// pattern ending in ".*" that matches by prefix ("message.*").
bool type_matches(const std::vector<std::string>& filter, std::string_view type);

}  // namespace juice::node::api::detail
