// The local API server: the sans-I/O core (api_internal.hpp) on an asio Unix
// stream socket. Everything runs on the daemon's loop thread, so nothing here
// takes a lock.
#include "juice/node/api.hpp"

#include "api_internal.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <asio.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>

namespace juice::node::api {

namespace {

std::shared_ptr<spdlog::logger> log() {
    // Not cached: the daemon may replace the default logger's sinks after we
    // first log, and a clone taken now would keep the old ones.
    if (auto existing = spdlog::get("api")) return existing;
    auto logger = spdlog::default_logger()->clone("api");
    try {
        spdlog::register_logger(logger);
    } catch (const spdlog::spdlog_ex&) {
        if (auto existing = spdlog::get("api")) return existing;
    }
    return logger;
}

Error sys_error(int err, std::string message) {
    return Error{std::error_code(err, std::generic_category()), std::move(message)};
}

}  // namespace

// ---- Reply ------------------------------------------------------------------

struct Reply::State {
    std::optional<json> id;  // nullopt: a notification, nothing goes back
    std::string method;
    // Called exactly once with the response (nullopt for notifications).
    std::function<void(std::optional<json>)> complete;
    bool answered = false;

    void finish(std::optional<json> response) {
        if (answered) return;
        answered = true;
        auto done = std::move(complete);
        complete = nullptr;
        if (done) done(id ? std::move(response) : std::nullopt);
    }

    ~State() {
        if (answered) return;
        try {
            log()->error("handler of '{}' dropped its reply without answering (a bug)", method);
            json id_value = id ? *id : json(nullptr);
            finish(detail::make_error_response(
                id_value, RpcError{k_internal_error,
                                   fmt::format("internal error: '{}' finished without an answer", method),
                                   detail::k_reason_internal}));
        } catch (...) {
            // A destructor must not throw; the client just gets no answer.
        }
    }
};

void Reply::result(json value) const {
    if (!m_state || m_state->answered) return;
    json id_value = m_state->id ? *m_state->id : json(nullptr);
    m_state->finish(detail::make_result_response(id_value, std::move(value)));
}

void Reply::error(RpcError err) const {
    if (!m_state || m_state->answered) return;
    if (!m_state->id)
        log()->debug("notification '{}' failed: {} ({})", m_state->method, err.message, err.reason);
    json id_value = m_state->id ? *m_state->id : json(nullptr);
    m_state->finish(detail::make_error_response(id_value, err));
}

// ---- sans-I/O core ----------------------------------------------------------

namespace detail {

json make_result_response(const json& id, json result) {
    return json{{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
}

json make_error_response(const json& id, const RpcError& err) {
    std::string reason = err.reason.empty() ? std::string(k_reason_internal) : err.reason;
    return json{{"jsonrpc", "2.0"},
                {"id", id},
                {"error", {{"code", err.code}, {"message", err.message}, {"data", {{"reason", reason}}}}}};
}

json make_event_notification(const json& event) {
    return json{{"jsonrpc", "2.0"}, {"method", "event"}, {"params", event}};
}

json make_events_dropped(std::uint64_t count) {
    return make_event_notification(json{{"type", "events_dropped"}, {"count", count}});
}

std::string to_line(const json& message) {
    return message.dump(-1, ' ', false, json::error_handler_t::replace);
}

RpcError unknown_method_error(const std::string& method) {
    return RpcError{k_method_not_found,
                    fmt::format("unknown method '{}'; call 'api.methods' for the list of methods, and see "
                                "docs/API.md for their parameters",
                                method),
                    k_reason_unknown_method};
}

RpcError too_large_error(std::size_t max_line_bytes) {
    return RpcError{k_invalid_request,
                    fmt::format("request line longer than {} bytes; it was ignored (send one JSON-RPC object "
                                "per line, and large data in smaller requests)",
                                max_line_bytes),
                    k_reason_too_large};
}

namespace {

Entry invalid_request(const json& id, std::string message) {
    return Entry{std::nullopt, make_error_response(id, RpcError{k_invalid_request, std::move(message),
                                                                k_reason_invalid_request})};
}

// Brackets nested deeper than k_max_depth (outside strings)?
bool too_deep(std::string_view text) {
    std::size_t depth = 0;
    bool in_string = false;
    bool escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > k_max_depth) return true;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return false;
}

std::string short_parse_message(const char* what) {
    // nlohmann prefixes "[json.exception.parse_error.101] "; users need the rest.
    std::string_view text(what);
    if (auto pos = text.find("] "); text.starts_with("[json.exception") && pos != std::string_view::npos)
        text.remove_prefix(pos + 2);
    return std::string(text);
}

// Runs one well-formed request; `complete` gets its response once answered.
void run(Request request, const Lookup& lookup, std::function<void(std::optional<json>)> complete) {
    auto state = std::make_shared<Reply::State>();
    state->id = std::move(request.id);
    state->method = request.method;
    state->complete = std::move(complete);
    Reply reply(state);
    state.reset();  // the Reply copies own it now; dropping them all is the bug guard

    Handler handler = lookup ? lookup(request.method) : Handler{};
    if (!handler) {
        reply.error(unknown_method_error(request.method));
        return;
    }
    try {
        handler(request.params, reply);
    } catch (const json::exception& e) {
        reply.error(RpcError::invalid_params(
            fmt::format("invalid params for '{}': {}", request.method, short_parse_message(e.what()))));
    } catch (const std::exception& e) {
        log()->error("handler of '{}' threw: {}", request.method, e.what());
        reply.error(RpcError{k_internal_error,
                             fmt::format("internal error in '{}': {}", request.method, e.what()),
                             k_reason_internal});
    }
}

// Collects the answers of one batch; sends them as one array once all are in.
struct Batch {
    std::vector<std::optional<json>> slots;
    std::size_t pending = 0;
    Send send;

    void settle(std::size_t index, std::optional<json> response) {
        if (index < slots.size()) slots[index] = std::move(response);
        if (--pending != 0) return;
        json all = json::array();
        for (auto& slot : slots)
            if (slot) all.push_back(std::move(*slot));
        slots.clear();
        if (!all.empty() && send) send(to_line(all));
    }
};

}  // namespace

Entry parse_request(const json& value) {
    if (!value.is_object()) return invalid_request(nullptr, "a request must be a JSON object");

    json id = nullptr;
    auto id_it = value.find("id");
    const bool has_id = id_it != value.end();
    if (has_id) {
        if (!(id_it->is_string() || id_it->is_number() || id_it->is_null()))
            return invalid_request(nullptr, "\"id\" must be a string, a number or null");
        id = *id_it;
    }

    auto version = value.find("jsonrpc");
    if (version == value.end() || !version->is_string() || version->get_ref<const std::string&>() != "2.0")
        return invalid_request(id, "\"jsonrpc\" must be \"2.0\"");

    auto method = value.find("method");
    if (method == value.end() || !method->is_string())
        return invalid_request(id, "\"method\" must be a string naming the method");

    Request request;
    request.method = method->get<std::string>();
    if (has_id) request.id = id;

    auto params = value.find("params");
    if (params != value.end() && !params->is_null()) {
        if (params->is_array()) {
            if (!has_id) return Entry{};  // notifications are never answered, not even errors
            return Entry{std::nullopt,
                         make_error_response(
                             id, RpcError::invalid_params("\"params\" must be an object of named parameters, "
                                                          "not an array"))};
        }
        if (!params->is_object()) return invalid_request(id, "\"params\" must be an object when present");
        request.params = *params;
    }
    return Entry{std::move(request), std::nullopt};
}

ParsedLine parse_line(std::string_view line) {
    ParsedLine out;
    auto parse_error = [&](std::string message) {
        out.entries.push_back(Entry{
            std::nullopt,
            make_error_response(nullptr, RpcError{k_parse_error, std::move(message), k_reason_parse_error})});
        return out;
    };
    if (too_deep(line))
        return parse_error(fmt::format("not valid JSON-RPC: nested deeper than {} levels", k_max_depth));

    json doc;
    try {
        doc = json::parse(line.begin(), line.end());
    } catch (const json::exception& e) {
        return parse_error(fmt::format("not valid JSON ({}); send one JSON-RPC 2.0 object per line",
                                       short_parse_message(e.what())));
    }

    if (doc.is_array()) {
        if (doc.empty()) {
            out.entries.push_back(
                invalid_request(nullptr, "empty batch: a batch must hold at least one request"));
            return out;
        }
        out.batch = true;
        out.entries.reserve(doc.size());
        for (const auto& member : doc) out.entries.push_back(parse_request(member));
        return out;
    }
    out.entries.push_back(parse_request(doc));
    return out;
}

void dispatch_line(std::string_view line, const Lookup& lookup, const Send& send) {
    ParsedLine parsed = parse_line(line);
    if (!parsed.batch) {
        Entry& entry = parsed.entries.front();
        if (entry.response) {
            send(to_line(*entry.response));
        } else if (entry.request) {
            run(std::move(*entry.request), lookup, [send](std::optional<json> response) {
                if (response) send(to_line(*response));
            });
        }
        return;
    }

    auto batch = std::make_shared<Batch>();
    batch->slots.resize(parsed.entries.size());
    batch->pending = parsed.entries.size() + 1;  // +1: members answered at once must not flush early
    batch->send = send;
    for (std::size_t i = 0; i < parsed.entries.size(); ++i) {
        Entry& entry = parsed.entries[i];
        if (entry.request) {
            run(std::move(*entry.request), lookup,
                [batch, i](std::optional<json> response) { batch->settle(i, std::move(response)); });
        } else {
            batch->settle(i, std::move(entry.response));
        }
    }
    batch->settle(batch->slots.size(), std::nullopt);  // the guard
}

std::vector<LineSplitter::Piece> LineSplitter::feed(std::string_view data) {
    std::vector<Piece> out;
    while (!data.empty()) {
        auto newline = data.find('\n');
        if (m_discarding) {
            if (newline == std::string_view::npos) break;
            m_discarding = false;
            data.remove_prefix(newline + 1);
            continue;
        }
        auto chunk = newline == std::string_view::npos ? data : data.substr(0, newline);
        if (m_buf.size() + chunk.size() > m_max) {
            out.push_back(Piece{{}, true});
            m_buf.clear();
            m_buf.shrink_to_fit();
            if (newline == std::string_view::npos) {
                m_discarding = true;
                break;
            }
            data.remove_prefix(newline + 1);
            continue;
        }
        m_buf.append(chunk);
        if (newline == std::string_view::npos) break;
        data.remove_prefix(newline + 1);
        std::string line = std::move(m_buf);
        m_buf.clear();
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t\r") != std::string::npos)
            out.push_back(Piece{std::move(line), false});
    }
    return out;
}

bool OutQueue::push_response(std::string line) {
    if (m_lines.size() >= m_max) return false;
    line.push_back('\n');
    m_lines.push_back(std::move(line));
    return true;
}

bool OutQueue::push_event(std::string line) {
    // Hysteresis: once dropping, keep dropping until the queue drained (pop()
    // then announces the gap), so the notice marks exactly where events are missing.
    if (m_dropping || m_lines.size() > m_max / 2) {
        m_dropping = true;
        ++m_unannounced;
        ++m_dropped_total;
        return false;
    }
    line.push_back('\n');
    m_lines.push_back(std::move(line));
    return true;
}

void OutQueue::pop(std::size_t n) {
    n = std::min(n, m_lines.size());
    m_lines.erase(m_lines.begin(), m_lines.begin() + static_cast<std::ptrdiff_t>(n));
    const std::size_t quarter = std::max<std::size_t>(1, m_max / 4);
    if (m_dropping && m_lines.size() < quarter) {
        m_dropping = false;
        std::string notice = to_line(make_events_dropped(m_unannounced));
        notice.push_back('\n');
        m_lines.push_back(std::move(notice));
        m_unannounced = 0;
    }
}

bool type_matches(const std::vector<std::string>& filter, std::string_view type) {
    for (const auto& pattern : filter) {
        std::string_view p(pattern);
        if (p == type || p == "*") return true;
        if (p.size() >= 2 && p.ends_with(".*") && type.starts_with(p.substr(0, p.size() - 1))) return true;
    }
    return false;
}

}  // namespace detail

// ---- the server -------------------------------------------------------------

std::filesystem::path default_socket_path() {
    const char* runtime = std::getenv("XDG_RUNTIME_DIR");
    if (runtime && runtime[0] == '/') return std::filesystem::path(runtime) / "juice" / "api.sock";
    return std::filesystem::path(fmt::format("/tmp/juice-{}", static_cast<unsigned long>(geteuid()))) /
           "api.sock";
}

namespace {

using Socket = asio::local::stream_protocol::socket;

void set_cloexec(int fd) {
    if (fd < 0) return;
    int flags = ::fcntl(fd, F_GETFD);
    if (flags >= 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

// Is something accepting connections on `path`? Non-blocking, so a busy
// daemon with a full backlog (EAGAIN) counts as running, not as stale.
bool socket_answers(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    int err = errno;
    ::close(fd);
    return rc == 0 || err == EAGAIN || err == EINPROGRESS;
}

// The socket's directory: created 0700 when missing (intermediate directories
// get the usual umask-based mode), refused when it belongs to another user.
Result<void> ensure_socket_dir(const std::filesystem::path& dir) {
    struct stat st {};
    const uid_t me = ::geteuid();
    auto check_existing = [&]() -> Result<void> {
        if (!S_ISDIR(st.st_mode))
            return sys_error(ENOTDIR,
                             fmt::format("{} is not a directory; choose another --api-socket", dir.string()));
        // Root-owned shared directories (/tmp, /run) are fine: the socket itself is 0600.
        if (st.st_uid != me && st.st_uid != 0)
            return sys_error(
                EPERM, fmt::format("{} belongs to another user (uid {}); refusing to put the API socket "
                                   "there. Remove it or choose another --api-socket",
                                   dir.string(), static_cast<unsigned long>(st.st_uid)));
        return {};
    };
    if (::stat(dir.c_str(), &st) == 0) return check_existing();
    if (errno != ENOENT)
        return sys_error(errno, fmt::format("cannot inspect {}: {}", dir.string(), std::strerror(errno)));

    if (auto parent = dir.parent_path(); !parent.empty() && parent != dir) {
        std::error_code ec;
        std::filesystem::create_directories(parent, ec);
        if (ec)
            return Error{
                ec, fmt::format("cannot create {} for the API socket: {}", parent.string(), ec.message())};
    }
    if (::mkdir(dir.c_str(), 0700) != 0) {
        if (errno != EEXIST)
            return sys_error(errno, fmt::format("cannot create {} for the API socket: {}", dir.string(),
                                                std::strerror(errno)));
        if (::stat(dir.c_str(), &st) != 0)
            return sys_error(errno, fmt::format("cannot inspect {}: {}", dir.string(), std::strerror(errno)));
        return check_existing();  // someone else created it meanwhile
    }
    ::chmod(dir.c_str(), 0700);  // exact mode whatever the umask
    return {};
}

}  // namespace

class Client;

struct ApiServer::Impl : std::enable_shared_from_this<ApiServer::Impl> {
    Impl(asio::io_context& context, Options opts)
        : io(context), options(std::move(opts)), acceptor(context), retry_timer(context) {}

    asio::io_context& io;
    Options options;
    asio::local::stream_protocol::acceptor acceptor;
    asio::steady_timer retry_timer;
    std::map<std::string, Handler, std::less<>> methods;
    std::unordered_map<Client*, std::shared_ptr<Client>> clients;
    bool listening = false;
    std::uint64_t next_client = 1;
    dev_t socket_dev = 0;  // identify our socket file, so stop() never removes another daemon's
    ino_t socket_ino = 0;

    void do_accept();
    void on_accept(const std::error_code& ec, Socket socket);
    void reject(Socket socket, const RpcError& err);
    void remove(Client* client) { clients.erase(client); }
    std::vector<std::string> method_names() const;
};

class Client : public std::enable_shared_from_this<Client> {
public:
    Client(Socket socket, std::weak_ptr<ApiServer::Impl> server, std::uint64_t number,
           const ApiServer::Options& options)
        : m_socket(std::move(socket)),
          m_server(std::move(server)),
          m_number(number),
          m_max_line(options.max_line_bytes),
          m_splitter(options.max_line_bytes),
          m_out(options.max_queue) {}

    void start() {
        std::weak_ptr<Client> weak = weak_from_this();
        m_send = [weak](std::string line) {
            if (auto self = weak.lock()) self->send_response(std::move(line));
        };
        m_lookup = [weak](const std::string& method) -> Handler {
            auto self = weak.lock();
            if (!self) return {};
            return self->lookup(method);
        };
        do_read();
    }

    void send_response(std::string line) {
        if (m_closed) return;
        if (!m_out.push_response(std::move(line))) {
            log()->warn("API client #{} does not read its responses ({} lines queued); disconnecting it",
                        m_number, m_out.size());
            close("too slow");
            return;
        }
        do_write();
    }

    void send_event(const std::string& line) {
        if (m_closed) return;
        const bool was_dropping = m_out.dropping();
        if (m_out.push_event(line))
            do_write();
        else if (!was_dropping)
            log()->info("API client #{} is not keeping up; dropping events until it catches up", m_number);
    }

    bool admits(std::string_view type) const {
        return m_subscribed && (m_types.empty() || detail::type_matches(m_types, type));
    }

    void close(std::string_view why) {
        if (m_closed) return;
        m_closed = true;
        std::error_code ignored;
        m_socket.shutdown(asio::socket_base::shutdown_both, ignored);
        m_socket.close(ignored);
        if (m_out.dropped_total() > 0)
            log()->debug("API client #{} closed ({}); {} events were dropped for it", m_number, why,
                         m_out.dropped_total());
        else
            log()->debug("API client #{} closed ({})", m_number, why);
        if (auto server = m_server.lock()) server->remove(this);
    }

private:
    Handler lookup(const std::string& method) {
        std::weak_ptr<Client> weak = weak_from_this();
        if (method == "events.subscribe") {
            return [weak](const json& params, Reply reply) {
                std::vector<std::string> types;
                if (auto it = params.find("types"); it != params.end() && !it->is_null()) {
                    if (!it->is_array() || it->empty())
                        return reply.error(
                            RpcError::invalid_params("\"types\" must be a non-empty array of event type "
                                                     "names (omit it for all events)"));
                    for (const auto& t : *it) {
                        if (!t.is_string() || t.get_ref<const std::string&>().empty())
                            return reply.error(
                                RpcError::invalid_params("\"types\" must hold only non-empty strings"));
                        types.push_back(t.get<std::string>());
                    }
                }
                if (auto self = weak.lock()) {
                    self->m_subscribed = true;
                    self->m_types = std::move(types);
                }
                reply.result(json::object());
            };
        }
        if (method == "events.unsubscribe") {
            return [weak](const json&, Reply reply) {
                if (auto self = weak.lock()) {
                    self->m_subscribed = false;
                    self->m_types.clear();
                }
                reply.result(json::object());
            };
        }
        auto server = m_server.lock();
        if (!server) return {};
        if (method == "api.methods") {
            std::weak_ptr<ApiServer::Impl> weak_server = server;
            return [weak_server](const json&, Reply reply) {
                auto s = weak_server.lock();
                reply.result(s ? json(s->method_names()) : json::array());
            };
        }
        auto it = server->methods.find(method);
        if (it == server->methods.end()) return {};
        return it->second;
    }

    void do_read() {
        m_socket.async_read_some(
            asio::buffer(m_rbuf),
            [self = shared_from_this()](const std::error_code& ec, std::size_t n) { self->on_read(ec, n); });
    }

    void on_read(const std::error_code& ec, std::size_t n) {
        if (m_closed) return;
        if (ec) {
            close(ec == asio::error::eof ? "disconnected" : ec.message());
            return;
        }
        auto pieces = m_splitter.feed(std::string_view(m_rbuf.data(), n));
        for (auto& piece : pieces) {
            if (m_closed) return;  // a handler may stop the server or overflow our queue
            if (piece.too_long) {
                log()->info("API client #{} sent a line over {} bytes; skipping it", m_number, m_max_line);
                send_response(detail::to_line(
                    detail::make_error_response(nullptr, detail::too_large_error(m_max_line))));
                continue;
            }
            detail::dispatch_line(piece.line, m_lookup, m_send);
        }
        if (!m_closed) do_read();
    }

    void do_write() {
        if (m_writing || m_closed || m_out.empty()) return;
        m_writing = true;
        // Gather up to 64 lines per write: fewer syscalls when events stream.
        const std::size_t n = std::min<std::size_t>(m_out.size(), 64);
        std::vector<asio::const_buffer> buffers;
        buffers.reserve(n);
        for (std::size_t i = 0; i < n; ++i) buffers.push_back(asio::buffer(m_out.lines()[i]));
        asio::async_write(m_socket, buffers,
                          [self = shared_from_this(), n](const std::error_code& ec, std::size_t) {
                              self->on_write(ec, n);
                          });
    }

    void on_write(const std::error_code& ec, std::size_t n) {
        m_writing = false;
        if (m_closed) return;
        if (ec) {
            close(ec.message());
            return;
        }
        m_out.pop(n);
        do_write();
    }

    Socket m_socket;
    std::weak_ptr<ApiServer::Impl> m_server;
    std::uint64_t m_number;
    std::size_t m_max_line;
    detail::LineSplitter m_splitter;
    detail::OutQueue m_out;
    // 16 KiB: at 256 clients that is 4 MiB, and the allocator keeps what
    // departed clients held (64 KiB buffers left ~13 MiB of RSS behind after
    // 200 clients came and went; tests/integration/test_hostile_api.cpp).
    std::array<char, 16 * 1024> m_rbuf{};
    detail::Lookup m_lookup;
    detail::Send m_send;
    bool m_writing = false;
    bool m_closed = false;
    bool m_subscribed = false;
    std::vector<std::string> m_types;  // empty: all types
};

std::vector<std::string> ApiServer::Impl::method_names() const {
    std::set<std::string> names{"api.methods", "events.subscribe", "events.unsubscribe"};
    for (const auto& [name, handler] : methods) names.insert(name);
    return {names.begin(), names.end()};
}

void ApiServer::Impl::do_accept() {
    acceptor.async_accept([self = shared_from_this()](const std::error_code& ec, Socket socket) {
        self->on_accept(ec, std::move(socket));
    });
}

void ApiServer::Impl::on_accept(const std::error_code& ec, Socket socket) {
    if (!listening) return;
    if (ec) {
        if (ec == asio::error::operation_aborted) return;
        // EMFILE and friends: retrying at once would spin the loop.
        log()->warn("accepting an API client failed: {}; retrying in 100 ms", ec.message());
        retry_timer.expires_after(std::chrono::milliseconds(100));
        retry_timer.async_wait([self = shared_from_this()](const std::error_code& wait_ec) {
            if (!wait_ec && self->listening) self->do_accept();
        });
        return;
    }
    set_cloexec(socket.native_handle());

#ifdef SO_PEERCRED
    // The socket file is 0600 already; this is defence in depth.
    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
        cred.uid != ::geteuid() && cred.uid != 0) {
        log()->warn("refused an API client of uid {} (only uid {} may connect)",
                    static_cast<unsigned long>(cred.uid), static_cast<unsigned long>(::geteuid()));
        reject(std::move(socket), RpcError::app("forbidden", "this juiced belongs to another user"));
        do_accept();
        return;
    }
#endif

    if (clients.size() >= options.max_clients) {
        log()->warn("refused an API client: {} clients connected (the limit)", clients.size());
        reject(
            std::move(socket),
            RpcError::app(detail::k_reason_too_many_clients,
                          fmt::format("too many API clients ({} connected, the limit is {}); close another "
                                      "client and retry",
                                      clients.size(), options.max_clients)));
    } else {
        auto client = std::make_shared<Client>(std::move(socket), weak_from_this(), next_client++, options);
        clients.emplace(client.get(), client);
        log()->debug("API client connected ({} now)", clients.size());
        client->start();
    }
    do_accept();
}

void ApiServer::Impl::reject(Socket socket, const RpcError& err) {
    auto sock = std::make_shared<Socket>(std::move(socket));
    auto line =
        std::make_shared<std::string>(detail::to_line(detail::make_error_response(nullptr, err)) + "\n");
    asio::async_write(*sock, asio::buffer(*line), [sock, line](const std::error_code&, std::size_t) {
        std::error_code ignored;
        sock->shutdown(asio::socket_base::shutdown_both, ignored);
        sock->close(ignored);
    });
}

ApiServer::ApiServer(asio::io_context& io, Options options)
    : m_impl(std::make_shared<Impl>(io, std::move(options))) {}

ApiServer::~ApiServer() {
    stop();
}

Result<void> ApiServer::start() {
    Impl& impl = *m_impl;
    if (impl.listening) return {};
    const std::filesystem::path& path = impl.options.socket_path;
    const std::string spath = path.string();
    if (spath.empty()) return sys_error(EINVAL, "no API socket path given");
    constexpr std::size_t k_max_path = sizeof(sockaddr_un{}.sun_path) - 1;
    if (spath.size() > k_max_path)
        return sys_error(
            ENAMETOOLONG,
            fmt::format("API socket path is {} bytes long, but Unix sockets allow at most {}: {}. "
                        "Choose a shorter path with --api-socket",
                        spath.size(), k_max_path, spath));

    auto dir = path.parent_path();
    if (dir.empty()) dir = ".";
    if (auto r = ensure_socket_dir(dir); !r) return r;

    struct stat st {};
    if (::lstat(spath.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return sys_error(EEXIST, fmt::format("{} exists and is not a socket; remove it or choose another "
                                                 "--api-socket",
                                                 spath));
        if (socket_answers(spath))
            return sys_error(EADDRINUSE, fmt::format("another juiced is already running on {} (stop it with "
                                                     "`juice shutdown`, or choose another --api-socket)",
                                                     spath));
        if (::unlink(spath.c_str()) != 0 && errno != ENOENT)
            return sys_error(
                errno, fmt::format("cannot remove the stale API socket {}: {}", spath, std::strerror(errno)));
        log()->info("removed stale API socket {}", spath);
    } else if (errno != ENOENT) {
        return sys_error(errno, fmt::format("cannot inspect {}: {}", spath, std::strerror(errno)));
    }

    std::error_code ec;
    impl.acceptor.open(asio::local::stream_protocol(), ec);
    if (!ec) impl.acceptor.bind(asio::local::stream_protocol::endpoint(spath), ec);
    if (ec) {
        std::error_code ignored;
        impl.acceptor.close(ignored);
        std::string hint = ec == asio::error::address_in_use ? " (another juiced may be starting)" : "";
        return Error{ec, fmt::format("cannot bind the API socket {}: {}{}", spath, ec.message(), hint)};
    }
    set_cloexec(impl.acceptor.native_handle());
    // chmod before listen(): until listen() nobody can connect, so no window
    // exists where the socket is reachable with the umask's mode.
    if (::chmod(spath.c_str(), 0600) != 0 || ::lstat(spath.c_str(), &st) != 0) {
        int err = errno;
        std::error_code ignored;
        impl.acceptor.close(ignored);
        ::unlink(spath.c_str());
        return sys_error(err, fmt::format("cannot set the mode of {}: {}", spath, std::strerror(err)));
    }
    impl.socket_dev = st.st_dev;
    impl.socket_ino = st.st_ino;
    impl.acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
        std::error_code ignored;
        impl.acceptor.close(ignored);
        ::unlink(spath.c_str());
        return Error{ec, fmt::format("cannot listen on the API socket {}: {}", spath, ec.message())};
    }
    impl.listening = true;
    impl.do_accept();
    log()->info("API listening on {}", spath);
    return {};
}

void ApiServer::stop() {
    if (!m_impl) return;
    Impl& impl = *m_impl;
    const bool was_listening = impl.listening;
    impl.listening = false;
    std::error_code ignored;
    impl.retry_timer.cancel();
    impl.acceptor.close(ignored);
    auto clients = std::move(impl.clients);
    impl.clients.clear();
    for (auto& [raw, client] : clients) client->close("server stopping");
    if (was_listening) {
        const std::string spath = impl.options.socket_path.string();
        struct stat st {};
        if (::lstat(spath.c_str(), &st) == 0 && st.st_dev == impl.socket_dev && st.st_ino == impl.socket_ino)
            ::unlink(spath.c_str());
        log()->info("API stopped");
    }
}

void ApiServer::add_method(std::string name, Handler handler) {
    m_impl->methods.insert_or_assign(std::move(name), std::move(handler));
}

void ApiServer::publish(const json& event) {
    auto type = event.is_object() ? event.find("type") : event.end();
    if (!event.is_object() || type == event.end() || !type->is_string()) {
        log()->error("publish: an event must be an object with a string \"type\" (a bug): {}",
                     detail::to_line(event).substr(0, 200));
        return;
    }
    const auto& type_name = type->get_ref<const std::string&>();
    std::string line;  // serialized once, only if someone wants it
    for (auto& [raw, client] : m_impl->clients) {
        if (!client->admits(type_name)) continue;
        if (line.empty()) line = detail::to_line(detail::make_event_notification(event));
        client->send_event(line);
    }
}

std::size_t ApiServer::client_count() const {
    return m_impl->clients.size();
}

}  // namespace juice::node::api
