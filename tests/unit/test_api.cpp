// The local API: the sans-I/O JSON-RPC core first, then a real ApiServer on a
// Unix socket in a temp dir driven by real ApiClients (in-process, no sleeps:
// every wait is a deadline).
#include "api_internal.hpp"
#include "juice/node/api.hpp"
#include "juice/node/api_client.hpp"

#include <asio.hpp>
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <thread>

using namespace juice::node::api;
using juice::node::api::detail::dispatch_line;
using json = nlohmann::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// ---- sans-I/O helpers ---------------------------------------------------------

// A method table for dispatch_line plus everything it sent.
struct Harness {
    std::map<std::string, Handler> methods;
    std::vector<std::string> sent;
    std::vector<Reply> kept;  // replies held by "later"
    int runs = 0;

    Harness() {
        methods["echo"] = [this](const json& params, Reply reply) {
            ++runs;
            reply.result(params);
        };
        methods["fail"] = [this](const json&, Reply reply) {
            ++runs;
            reply.error(RpcError::app("unknown_contact", "no such contact"));
        };
        methods["later"] = [this](const json&, Reply reply) {
            ++runs;
            kept.push_back(reply);
        };
        methods["drop"] = [this](const json&, Reply) { ++runs; };
        methods["typed"] = [this](const json& params, Reply reply) {
            ++runs;
            reply.result(params.at("name").get<std::string>());
        };
        methods["throws"] = [](const json&, Reply) { throw std::runtime_error("boom"); };
    }

    void line(std::string_view text) {
        dispatch_line(
            text,
            [this](const std::string& m) -> Handler {
                auto it = methods.find(m);
                return it == methods.end() ? Handler{} : it->second;
            },
            [this](std::string out) { sent.push_back(std::move(out)); });
    }

    json only() {
        REQUIRE(sent.size() == 1);
        auto j = json::parse(sent.front());
        sent.clear();
        return j;
    }
};

void check_error(const json& response, int code, const std::string& reason, const json& id = nullptr) {
    INFO(response.dump());
    CHECK(response.at("jsonrpc") == "2.0");
    CHECK(response.at("id") == id);
    CHECK_FALSE(response.contains("result"));
    CHECK(response.at("error").at("code") == code);
    CHECK(response.at("error").at("message").is_string());
    CHECK_FALSE(response.at("error").at("message").get<std::string>().empty());
    CHECK(response.at("error").at("data").at("reason") == reason);
}

}  // namespace

TEST_CASE("api core: malformed JSON is a parse error with id null", "[api]") {
    Harness h;
    for (const char* bad : {"{", "not json", "{\"jsonrpc\":\"2.0\",", "[1,2", "\"unterminated", "{} {}"}) {
        h.line(bad);
        check_error(h.only(), k_parse_error, "parse_error");
    }
    std::string deep(200, '[');
    deep += std::string(200, ']');
    h.line(deep);
    check_error(h.only(), k_parse_error, "parse_error");
    CHECK(h.runs == 0);
}

TEST_CASE("api core: invalid requests", "[api]") {
    Harness h;
    for (const char* bad :
         {"5", "\"echo\"", "null", "true", "{}", R"({"method":"echo","id":1,"jsonrpc":"1.0"})",
          R"({"jsonrpc":2.0,"method":"echo","id":1})"}) {
        h.line(bad);
        auto r = h.only();
        check_error(r, k_invalid_request, "invalid_request", r.at("id"));
        CHECK((r.at("id").is_null() || r.at("id") == 1));
    }
    // A valid id is echoed even when the rest is wrong.
    h.line(R"({"jsonrpc":"2.0","method":7,"id":"x"})");
    check_error(h.only(), k_invalid_request, "invalid_request", "x");
    h.line(R"({"jsonrpc":"2.0","id":3})");
    check_error(h.only(), k_invalid_request, "invalid_request", 3);
    // Bad id types: object, array, bool -> invalid, id null.
    for (const char* bad :
         {R"({"jsonrpc":"2.0","method":"echo","id":{}})", R"({"jsonrpc":"2.0","method":"echo","id":[1]})",
          R"({"jsonrpc":"2.0","method":"echo","id":true})"}) {
        h.line(bad);
        check_error(h.only(), k_invalid_request, "invalid_request");
    }
    // Scalar params are not structured values.
    h.line(R"({"jsonrpc":"2.0","method":"echo","id":4,"params":"x"})");
    check_error(h.only(), k_invalid_request, "invalid_request", 4);
    CHECK(h.runs == 0);
}

TEST_CASE("api core: params must be an object or absent", "[api]") {
    Harness h;
    h.line(R"({"jsonrpc":"2.0","method":"echo","id":1,"params":[1,2]})");
    check_error(h.only(), k_invalid_params, "invalid_params", 1);
    // ...and notifications are never answered, not even for that.
    h.line(R"({"jsonrpc":"2.0","method":"echo","params":[1,2]})");
    CHECK(h.sent.empty());
    CHECK(h.runs == 0);

    h.line(R"({"jsonrpc":"2.0","method":"echo","id":2})");
    CHECK(h.only().at("result") == json::object());
    h.line(R"({"jsonrpc":"2.0","method":"echo","id":3,"params":null})");
    CHECK(h.only().at("result") == json::object());
    h.line(R"({"jsonrpc":"2.0","method":"echo","id":4,"params":{"a":[1,{"b":2}]}})");
    CHECK(h.only().at("result") == json{{"a", {1, {{"b", 2}}}}});

    // A handler reading a missing or mistyped field answers invalid_params.
    h.line(R"({"jsonrpc":"2.0","method":"typed","id":5,"params":{}})");
    check_error(h.only(), k_invalid_params, "invalid_params", 5);
    h.line(R"({"jsonrpc":"2.0","method":"typed","id":6,"params":{"name":3}})");
    check_error(h.only(), k_invalid_params, "invalid_params", 6);
    h.line(R"({"jsonrpc":"2.0","method":"typed","id":7,"params":{"name":"ok"}})");
    CHECK(h.only().at("result") == "ok");
}

TEST_CASE("api core: ids of every JSON-RPC type are echoed", "[api]") {
    Harness h;
    for (json id : {json("abc"), json(""), json(7), json(-3), json(1.5), json(nullptr),
                    json(18446744073709551615ull)}) {
        json request{{"jsonrpc", "2.0"}, {"method", "echo"}, {"id", id}, {"params", {{"k", 1}}}};
        h.line(request.dump());
        auto r = h.only();
        CHECK(r.at("id") == id);
        CHECK(r.at("result") == json{{"k", 1}});
    }
    h.line(R"({"jsonrpc":"2.0","method":"fail","id":"e"})");
    check_error(h.only(), k_app_error, "unknown_contact", "e");
}

TEST_CASE("api core: unknown methods and notifications", "[api]") {
    Harness h;
    h.line(R"({"jsonrpc":"2.0","method":"nope","id":9})");
    auto r = h.only();
    check_error(r, k_method_not_found, "unknown_method", 9);
    CHECK(r["error"]["message"].get<std::string>().find("api.methods") != std::string::npos);

    // Notifications run their handler but get no answer, not even an error.
    h.line(R"({"jsonrpc":"2.0","method":"echo","params":{"x":1}})");
    h.line(R"({"jsonrpc":"2.0","method":"fail"})");
    h.line(R"({"jsonrpc":"2.0","method":"nope"})");
    h.line(R"({"jsonrpc":"2.0","method":"drop"})");
    h.line(R"({"jsonrpc":"2.0","method":"throws"})");
    CHECK(h.sent.empty());
    CHECK(h.runs == 3);
}

TEST_CASE("api core: asynchronous, dropped and failing replies", "[api]") {
    Harness h;
    h.line(R"({"jsonrpc":"2.0","method":"later","id":"a"})");
    CHECK(h.sent.empty());
    REQUIRE(h.kept.size() == 1);
    Reply copy = h.kept.front();
    copy.result(json{{"done", true}});
    copy.result(json{{"done", false}});  // later answers are ignored
    h.kept.front().error(RpcError::app("x", "y"));
    auto r = h.only();
    CHECK(r.at("id") == "a");
    CHECK(r.at("result") == json{{"done", true}});
    h.kept.clear();
    CHECK(h.sent.empty());  // dropping an answered reply sends nothing more

    h.line(R"({"jsonrpc":"2.0","method":"drop","id":1})");
    check_error(h.only(), k_internal_error, "internal", 1);

    h.line(R"({"jsonrpc":"2.0","method":"later","id":2})");
    CHECK(h.sent.empty());
    h.kept.clear();  // every copy gone unanswered: the bug guard answers
    check_error(h.only(), k_internal_error, "internal", 2);

    h.line(R"({"jsonrpc":"2.0","method":"throws","id":3})");
    check_error(h.only(), k_internal_error, "internal", 3);
}

TEST_CASE("api core: batches", "[api]") {
    Harness h;
    SECTION("mixed members answer as one array, in order, without notifications") {
        h.line(R"([{"jsonrpc":"2.0","method":"echo","id":1,"params":{"n":1}},
                   {"jsonrpc":"2.0","method":"echo","params":{"n":2}},
                   {"foo":"bar"},
                   {"jsonrpc":"2.0","method":"nope","id":"u"},
                   {"jsonrpc":"2.0","method":"echo","id":5,"params":[1]},
                   3])");
        auto r = h.only();
        REQUIRE(r.is_array());
        REQUIRE(r.size() == 5);
        CHECK(r[0].at("id") == 1);
        CHECK(r[0].at("result") == json{{"n", 1}});
        check_error(r[1], k_invalid_request, "invalid_request");
        check_error(r[2], k_method_not_found, "unknown_method", "u");
        check_error(r[3], k_invalid_params, "invalid_params", 5);
        check_error(r[4], k_invalid_request, "invalid_request");
        CHECK(h.runs == 2);
    }
    SECTION("an empty batch is one invalid request, not an array") {
        h.line("[]");
        auto r = h.only();
        REQUIRE(r.is_object());
        check_error(r, k_invalid_request, "invalid_request");
    }
    SECTION("a batch of scalars gets one error per member") {
        h.line("[1,2,3]");
        auto r = h.only();
        REQUIRE(r.is_array());
        CHECK(r.size() == 3);
        for (auto& member : r) check_error(member, k_invalid_request, "invalid_request");
    }
    SECTION("an all-notification batch gets no reply at all") {
        h.line(R"([{"jsonrpc":"2.0","method":"echo"},{"jsonrpc":"2.0","method":"nope"}])");
        CHECK(h.sent.empty());
        CHECK(h.runs == 1);
    }
    SECTION("the array waits for asynchronous members") {
        h.line(R"([{"jsonrpc":"2.0","method":"later","id":1},{"jsonrpc":"2.0","method":"echo","id":2},
                   {"jsonrpc":"2.0","method":"later","id":3}])");
        CHECK(h.sent.empty());
        REQUIRE(h.kept.size() == 2);
        h.kept[1].result("third");
        CHECK(h.sent.empty());
        h.kept[0].error(RpcError::app("busy", "try later"));
        auto r = h.only();
        REQUIRE(r.size() == 3);
        check_error(r[0], k_app_error, "busy", 1);
        CHECK(r[1].at("id") == 2);
        CHECK(r[2].at("result") == "third");
    }
    SECTION("a dropped member still completes the batch") {
        h.line(R"([{"jsonrpc":"2.0","method":"drop","id":1},{"jsonrpc":"2.0","method":"echo","id":2}])");
        auto r = h.only();
        REQUIRE(r.size() == 2);
        check_error(r[0], k_internal_error, "internal", 1);
    }
}

TEST_CASE("api core: line framing with a maximum length", "[api]") {
    detail::LineSplitter s(10);
    auto p = s.feed("ab");
    CHECK(p.empty());
    p = s.feed("c\r\n\n  \r\nde\nf");
    REQUIRE(p.size() == 2);
    CHECK(p[0].line == "abc");
    CHECK(p[1].line == "de");
    p = s.feed("0123456789\n");  // "f" + 10 bytes: over the limit
    REQUIRE(p.size() == 1);
    CHECK(p[0].too_long);
    p = s.feed("0123456789\n");  // exactly the limit is fine
    REQUIRE(p.size() == 1);
    CHECK(p[0].line == "0123456789");

    // A long line yields one error as soon as it passes the limit, the rest
    // is skipped up to its '\n', and the next line is read normally.
    p = s.feed("0123456789ABC");
    REQUIRE(p.size() == 1);
    CHECK(p[0].too_long);
    CHECK(s.discarding());
    CHECK(s.feed(std::string(1000, 'x')).empty());
    p = s.feed("yyy\nok\n");
    REQUIRE(p.size() == 1);
    CHECK(p[0].line == "ok");
    CHECK_FALSE(s.discarding());
}

TEST_CASE("api core: outgoing queue drops events, never responses", "[api]") {
    detail::OutQueue q(16);
    for (int i = 0; i < 8; ++i) CHECK(q.push_event("e"));
    CHECK(q.push_event("e"));        // 8 queued: not more than half yet
    CHECK_FALSE(q.push_event("e"));  // 9 > 8: dropped
    CHECK(q.dropping());
    CHECK(q.push_response("r"));  // responses still go in
    for (int i = 0; i < 5; ++i) CHECK_FALSE(q.push_event("e"));
    CHECK(q.dropped_total() == 6);
    while (q.size() < 16) REQUIRE(q.push_response("r"));
    CHECK_FALSE(q.push_response("r"));  // full: the caller disconnects the client
    CHECK(q.lines().front() == "e\n");

    q.pop(10);  // 6 left: not below a quarter (4) yet
    CHECK(q.dropping());
    CHECK_FALSE(q.push_event("e"));
    q.pop(3);  // 3 left: the notice goes in, events flow again
    CHECK_FALSE(q.dropping());
    REQUIRE(q.size() == 4);
    auto notice = json::parse(q.lines().back());
    CHECK(notice == json{{"jsonrpc", "2.0"},
                         {"method", "event"},
                         {"params", {{"type", "events_dropped"}, {"count", 7}}}});
    CHECK(q.push_event("late"));
    CHECK(q.lines().back() == "late\n");
    CHECK(q.dropped_unannounced() == 0);
    CHECK(q.dropped_total() == 7);
}

TEST_CASE("api core: subscription type filters", "[api]") {
    using detail::type_matches;
    CHECK(type_matches({"presence"}, "presence"));
    CHECK_FALSE(type_matches({"presence"}, "presence.x"));
    CHECK(type_matches({"link", "message.*"}, "message.state"));
    CHECK_FALSE(type_matches({"message.*"}, "messages"));
    CHECK(type_matches({"*"}, "anything"));
}

// ---- real sockets ---------------------------------------------------------------

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "juice-api-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

// A server on its own loop thread, like the daemon's.
struct LoopServer {
    asio::io_context io;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
    ApiServer server;
    std::thread thread;
    bool running = false;

    explicit LoopServer(ApiServer::Options options)
        : work(io.get_executor()), server(io, std::move(options)) {}

    // Call before run(): afterwards the server belongs to the loop thread.
    void add_defaults() {
        server.add_method("echo", [](const json& params, Reply reply) { reply.result(params); });
        server.add_method("later", [this](const json& params, Reply reply) {
            asio::post(io, [reply, params] { reply.result(json{{"later", params}}); });
        });
    }

    juice::Result<void> start_and_run() {
        auto r = server.start();
        if (r) {
            thread = std::thread([this] { io.run(); });
            running = true;
        }
        return r;
    }

    template <class F>
    auto on_loop(F f) -> decltype(f()) {
        std::packaged_task<decltype(f())()> task(std::move(f));
        auto future = task.get_future();
        asio::post(io, [&task] { task(); });
        return future.get();
    }

    ~LoopServer() {
        if (running) {
            on_loop([this] { server.stop(); });
            work.reset();
            io.stop();
            thread.join();
        }
    }
};

ApiServer::Options options_in(const fs::path& dir) {
    ApiServer::Options o;
    o.socket_path = dir / "api.sock";
    return o;
}

// A raw connection, for lines no well-behaved client would send.
struct RawConn {
    int fd = -1;
    std::string buf;

    explicit RawConn(const fs::path& path) {
        fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
        REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    }
    ~RawConn() { ::close(fd); }

    void send(std::string_view data) {
        while (!data.empty()) {
            ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
            REQUIRE(n > 0);
            data.remove_prefix(static_cast<std::size_t>(n));
        }
    }

    std::optional<json> read(std::chrono::milliseconds timeout = 5s) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            if (auto nl = buf.find('\n'); nl != std::string::npos) {
                auto line = buf.substr(0, nl);
                buf.erase(0, nl + 1);
                return json::parse(line);
            }
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            char chunk[4096];
            ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
            if (n <= 0) return std::nullopt;
            buf.append(chunk, static_cast<std::size_t>(n));
        }
    }
};

ApiClient connect_to(const fs::path& path) {
    auto c = ApiClient::connect(path, 5s);
    INFO((c ? std::string() : c.error().what()));
    REQUIRE(c);
    return std::move(c).value();
}

}  // namespace

TEST_CASE("api socket: methods answer, at once or later", "[api][socket]") {
    TempDir dir;
    LoopServer s(options_in(dir.path));
    s.add_defaults();
    REQUIRE(s.start_and_run());
    auto client = connect_to(dir.path / "api.sock");

    auto r = client.call("echo", {{"hello", "world"}}, 5s);
    REQUIRE(r);
    REQUIRE(r->ok());
    CHECK(r->result == json{{"hello", "world"}});

    r = client.call("later", {{"n", 1}}, 5s);
    REQUIRE(r);
    REQUIRE(r->ok());
    CHECK(r->result == json{{"later", {{"n", 1}}}});

    r = client.call("api.methods", json::object(), 5s);
    REQUIRE(r);
    CHECK(r->result == json{"api.methods", "echo", "events.subscribe", "events.unsubscribe", "later"});
}

TEST_CASE("api socket: errors keep the connection usable", "[api][socket]") {
    TempDir dir;
    LoopServer s(options_in(dir.path));
    s.add_defaults();
    REQUIRE(s.start_and_run());

    SECTION("unknown method") {
        auto client = connect_to(dir.path / "api.sock");
        auto r = client.call("no.such.method", json::object(), 5s);
        REQUIRE(r);
        REQUIRE_FALSE(r->ok());
        CHECK(r->error->code == k_method_not_found);
        CHECK(r->error->reason == "unknown_method");
        r = client.call("echo", {{"still", "here"}}, 5s);
        REQUIRE(r);
        CHECK(r->result == json{{"still", "here"}});
    }
    SECTION("malformed line, then a valid call") {
        RawConn raw(dir.path / "api.sock");
        raw.send("{this is not json\n");
        auto e = raw.read();
        REQUIRE(e);
        CHECK(e->at("error").at("data").at("reason") == "parse_error");
        raw.send(R"({"jsonrpc":"2.0","method":"echo","id":1,"params":{"a":1}})"
                 "\r\n");
        auto r = raw.read();
        REQUIRE(r);
        CHECK(r->at("result") == json{{"a", 1}});
        // A batch over the wire too.
        raw.send(R"([{"jsonrpc":"2.0","method":"echo","id":1},{"jsonrpc":"2.0","method":"later","id":2}])"
                 "\n");
        r = raw.read();
        REQUIRE(r);
        REQUIRE(r->is_array());
        CHECK(r->size() == 2);
    }
    SECTION("a 2 MiB line is too_large and the connection survives") {
        RawConn raw(dir.path / "api.sock");
        std::string big = R"({"jsonrpc":"2.0","method":"echo","id":1,"params":{"x":")";
        big += std::string(2 << 20, 'x');
        big += "\"}}\n";
        big += R"({"jsonrpc":"2.0","method":"echo","id":2,"params":{"after":true}})"
               "\n";
        raw.send(big);
        auto e = raw.read(10s);
        REQUIRE(e);
        CHECK(e->at("id").is_null());
        CHECK(e->at("error").at("data").at("reason") == "too_large");
        auto r = raw.read(10s);
        REQUIRE(r);
        CHECK(r->at("id") == 2);
        CHECK(r->at("result") == json{{"after", true}});
    }
}

TEST_CASE("api socket: the socket file and a second daemon", "[api][socket]") {
    TempDir dir;
    auto nested = dir.path / "run" / "juice";
    auto path = nested / "api.sock";
    ApiServer::Options o;
    o.socket_path = path;
    LoopServer s(o);
    REQUIRE(s.start_and_run());

    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 0777) == 0600);
    REQUIRE(::stat(nested.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0700);

    asio::io_context other_io;
    ApiServer second(other_io, o);
    auto r = second.start();
    REQUIRE_FALSE(r);
    CHECK(r.error().what().find("another juiced is already running on " + path.string()) !=
          std::string::npos);
    second.stop();
    CHECK(fs::exists(path));  // the refused server did not remove the live socket

    s.on_loop([&] { s.server.stop(); });
    CHECK_FALSE(fs::exists(path));
}

TEST_CASE("api socket: stale sockets are replaced, bad paths refused", "[api][socket]") {
    TempDir dir;
    auto path = dir.path / "api.sock";
    {
        // A socket file nobody listens on, as a crashed daemon leaves it.
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
        ::close(fd);
    }
    REQUIRE(fs::exists(path));
    {
        asio::io_context io;
        ApiServer server(io, options_in(dir.path));
        auto r = server.start();
        INFO((r ? std::string() : r.error().what()));
        CHECK(r);
    }
    CHECK_FALSE(fs::exists(path));  // the destructor stops and removes it

    asio::io_context io;
    ApiServer::Options o;
    o.socket_path = dir.path / std::string(120, 'a') / "api.sock";
    auto r = ApiServer(io, o).start();
    REQUIRE_FALSE(r);
    CHECK(r.error().what().find("--api-socket") != std::string::npos);

    fs::path not_socket = dir.path / "file";
    { std::ofstream(not_socket) << "x"; }
    o.socket_path = not_socket;
    r = ApiServer(io, o).start();
    REQUIRE_FALSE(r);
    CHECK(r.error().what().find("not a socket") != std::string::npos);
    CHECK(fs::exists(not_socket));

    auto unreachable = ApiClient::connect(dir.path / "nobody.sock", 1s);
    REQUIRE_FALSE(unreachable);
    CHECK(unreachable.error().code == client_errc::connect_failed);
    CHECK(unreachable.error().what().find("Is it running?") != std::string::npos);
}

TEST_CASE("api socket: a client over max_clients gets an error line", "[api][socket]") {
    TempDir dir;
    auto o = options_in(dir.path);
    o.max_clients = 2;
    LoopServer s(o);
    s.add_defaults();
    REQUIRE(s.start_and_run());
    auto path = o.socket_path;

    std::optional<ApiClient> a(connect_to(path));
    auto b = connect_to(path);
    REQUIRE(a->call("echo", json::object(), 5s));
    REQUIRE(b.call("echo", json::object(), 5s));
    auto c = connect_to(path);
    auto r = c.call("echo", json::object(), 5s);
    if (r) {  // the error line arrived as the answer
        REQUIRE_FALSE(r->ok());
        CHECK(r->error->reason == "too_many_clients");
    } else {  // or the socket was closed before the request went out
        CHECK(r.error().code == client_errc::closed);
    }

    a.reset();
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (s.on_loop([&] { return s.server.client_count(); }) != 1 &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
    auto d = connect_to(path);
    auto again = d.call("echo", {{"ok", 1}}, 5s);
    REQUIRE(again);
    CHECK(again->ok());
}

TEST_CASE("api socket: events, filters and a client that does not read", "[api][socket]") {
    TempDir dir;
    LoopServer s(options_in(dir.path));
    s.add_defaults();
    REQUIRE(s.start_and_run());
    auto path = dir.path / "api.sock";

    SECTION("subscriptions filter by type") {
        auto all = connect_to(path);
        auto some = connect_to(path);
        auto none = connect_to(path);
        REQUIRE(all.call("events.subscribe", json::object(), 5s)->ok());
        REQUIRE(some.call("events.subscribe", {{"types", {"link", "message.*"}}}, 5s)->ok());
        auto bad = some.call("events.subscribe", {{"types", "link"}}, 5s);
        REQUIRE(bad);
        CHECK(bad->error->reason == "invalid_params");
        bad = some.call("events.subscribe", {{"types", {1}}}, 5s);
        CHECK(bad->error->reason == "invalid_params");

        s.on_loop([&] {
            s.server.publish({{"type", "presence"}, {"id", "a"}});
            s.server.publish({{"type", "message.state"}, {"msg_id", "m"}});
        });
        auto e = all.next_event(5s);
        REQUIRE(e);
        REQUIRE(*e);
        CHECK((**e)["type"] == "presence");
        e = all.next_event(5s);
        CHECK((**e)["type"] == "message.state");
        e = some.next_event(5s);
        REQUIRE(*e);
        CHECK((**e)["type"] == "message.state");
        CHECK_FALSE(*none.next_event(0ms));

        REQUIRE(all.call("events.unsubscribe", json::object(), 5s)->ok());
        s.on_loop([&] { s.server.publish({{"type", "presence"}}); });
        REQUIRE(all.call("echo", json::object(), 5s)->ok());  // ordered after the publish
        CHECK_FALSE(*all.next_event(0ms));
    }

    SECTION("100k events to a client that does not read") {
        auto slow = connect_to(path);
        auto fast = connect_to(path);
        REQUIRE(slow.call("events.subscribe", json::object(), 5s)->ok());

        constexpr int k_total = 100'000;
        constexpr int k_chunk = 1000;
        for (int c = 0; c < k_total / k_chunk; ++c) {
            asio::post(s.io, [&s, c] {
                for (int i = 0; i < k_chunk; ++i)
                    s.server.publish(
                        {{"type", "message.received"}, {"seq", c * k_chunk + i}, {"text", "hello"}});
            });
        }
        // The loop keeps serving others while the slow client's queue is full.
        // (Generous: under ThreadSanitizer the 100k publishes ahead of this
        // call take over 10 s; normally a few hundred ms.)
        auto r = fast.call("later", {{"x", 1}}, 60s);
        REQUIRE(r);
        CHECK(r->ok());
        s.on_loop([] {});  // every publish has run

        int received = 0;
        std::optional<json> dropped;
        auto deadline = std::chrono::steady_clock::now() + 30s;
        while (!dropped && std::chrono::steady_clock::now() < deadline) {
            auto e = slow.next_event(5s);
            REQUIRE(e);
            REQUIRE(*e);
            if ((**e)["type"] == "events_dropped")
                dropped = **e;
            else
                ++received;
        }
        REQUIRE(dropped);
        auto count = dropped->at("count").get<long long>();
        CHECK(count > 0);
        CHECK(received + count == k_total);
        CHECK(received > 0);
        // After the notice the stream flows again.
        s.on_loop([&] { s.server.publish({{"type", "presence"}}); });
        auto e = slow.next_event(5s);
        REQUIRE(*e);
        CHECK((**e)["type"] == "presence");
    }
}

TEST_CASE("api socket: 200 concurrent clients all get answers", "[api][socket]") {
    TempDir dir;
    LoopServer s(options_in(dir.path));
    s.add_defaults();
    REQUIRE(s.start_and_run());
    auto path = dir.path / "api.sock";

    constexpr int k_clients = 200;
    constexpr int k_threads = 8;
    std::vector<ApiClient> clients;
    clients.reserve(k_clients);
    for (int i = 0; i < k_clients; ++i) clients.push_back(connect_to(path));
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (s.on_loop([&] { return s.server.client_count(); }) != k_clients &&
           std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
    CHECK(s.on_loop([&] { return s.server.client_count(); }) == k_clients);

    std::vector<int> ok(k_clients, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < k_threads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = t; i < k_clients; i += k_threads) {
                auto r = clients[static_cast<std::size_t>(i)].call(i % 2 ? "later" : "echo", {{"i", i}}, 10s);
                json expect = json{{"i", i}};
                if (i % 2) expect = json{{"later", expect}};
                ok[static_cast<std::size_t>(i)] = r && r->ok() && r->result == expect;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(std::count(ok.begin(), ok.end(), 1) == k_clients);
}
