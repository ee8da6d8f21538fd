// juice_testkit: what integration tests and benchmarks share: temp dirs,
// child processes, a real dhtnode bootstrap, real juiced daemons driven over
// their API socket, and deadline polling (never fixed sleeps).
#pragma once

#include "juice/node/api_client.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace juice::test {

using namespace std::chrono_literals;

// A fresh directory under $TMPDIR, removed on destruction (kept when
// JUICE_KEEP_TEST_DIRS is set, for debugging).
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return m_path; }

private:
    std::filesystem::path m_path;
};

// A child process. stdout+stderr go to `log_file`. Killed (SIGKILL) on
// destruction if still running.
//
// with_wrapper(wrapper, exe, args): the program and arguments that run `exe`
// under `wrapper` (e.g. ip netns exec NS); the first is the program.
std::vector<std::string> with_wrapper(const std::vector<std::string>& wrapper, const std::string& exe,
                                      std::vector<std::string> args);
class Process {
public:
    Process(const std::string& exe, const std::vector<std::string>& args,
            const std::filesystem::path& log_file, const std::map<std::string, std::string>& env = {},
            bool stdin_pipe = false);
    ~Process();
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    int pid() const { return m_pid; }
    bool running();
    void signal(int sig);
    // Waits for exit up to `timeout`; returns the exit status (as from
    // waitpid's WEXITSTATUS, or 128+signal), or -1 if still running.
    int wait(std::chrono::milliseconds timeout);
    void kill_now();  // SIGKILL + reap
    // Writes to the child's stdin (only with stdin_pipe).
    void write_stdin(const std::string& text);
    std::string log() const;  // the log file's content so far

private:
    int m_pid = -1;
    int m_stdin = -1;
    int m_status = -1;
    std::filesystem::path m_log;
};

// Polls `pred` every `poll` (10 ms by default) until it returns true or
// `timeout` passes. A longer `poll` suits predicates that are costly to
// evaluate (e.g. reading a whole message history).
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll = 10ms);

// A UDP or TCP port on 127.0.0.1 that was free a moment ago.
int free_udp_port();
int free_tcp_port();

// A real stock `dhtnode` on loopback, on a private network id, used as the
// only bootstrap. Started in the constructor; waits until it answers.
class DhtBootstrap {
public:
    // `extra_args` go to dhtnode as they are (e.g. {"-b", "127.0.0.1:4222"}
    // to join an existing node).
    explicit DhtBootstrap(std::uint64_t network, const std::filesystem::path& dir,
                          std::vector<std::string> extra_args = {});
    ~DhtBootstrap();
    int port() const { return m_port; }
    std::string address() const { return "127.0.0.1:" + std::to_string(m_port); }
    std::uint64_t network() const { return m_network; }
    Process& process() { return *m_proc; }

private:
    int m_port;
    std::uint64_t m_network;
    std::unique_ptr<Process> m_proc;
};

// A real `juiced --bootstrap-node` on loopback: no identity, its own data
// dir (routing table, node id), API socket <dir>/bootstrap.sock. start()
// waits until the API answers node.info; stop() sends SIGTERM and returns
// the exit code. `bootstrap` ("" = none) is a node to join through.
class JuicedBootstrap {
public:
    JuicedBootstrap(const std::filesystem::path& dir, std::uint64_t network, std::string bootstrap = {},
                    std::vector<std::string> extra_args = {});
    ~JuicedBootstrap();
    bool start(std::chrono::milliseconds timeout = 20s);
    int stop(std::chrono::milliseconds timeout = 10s);
    bool running() { return m_proc && m_proc->running(); }
    nlohmann::json call(const std::string& method, const nlohmann::json& params = nlohmann::json::object());
    int port() const { return m_port; }
    std::string address() const { return host + ":" + std::to_string(m_port); }
    std::uint64_t network() const { return m_network; }
    std::filesystem::path data_dir() const { return m_dir; }
    std::filesystem::path socket() const { return m_dir / "bootstrap.sock"; }
    std::string log() const { return m_proc ? m_proc->log() : std::string(); }
    std::vector<std::string> extra_args;
    std::string bootstrap;
    std::vector<std::string> wrapper;  // as Juiced::wrapper
    std::string host = "127.0.0.1";    // the address others reach it at
    std::string log_level = "debug";   // its --log-level (debug logs grow fast under load)

private:
    std::filesystem::path m_dir;
    std::uint64_t m_network;
    int m_port;
    std::unique_ptr<Process> m_proc;
    std::unique_ptr<node::api::ApiClient> m_client;
};

// A random private network id, so parallel test runs never meet.
std::uint64_t random_network_id();

// A real juiced process with its own data dir and API socket, on loopback,
// bootstrapping only through `bootstrap` (no LAN discovery), with a
// 2048-bit unencrypted key (fast to create; tests only).
class Juiced {
public:
    Juiced(std::string name, const std::filesystem::path& root, const DhtBootstrap& bootstrap,
           std::vector<std::string> extra_args = {});
    // Joins through any node: "host:port" on network `network`.
    Juiced(std::string name, const std::filesystem::path& root, std::string bootstrap, std::uint64_t network,
           std::vector<std::string> extra_args = {});
    ~Juiced();

    // Starts the process and waits until its API answers identity.get.
    // Returns false (with the log in `error`) if it did not come up.
    bool start(std::chrono::milliseconds timeout = 60s);
    // daemon.shutdown, then waits for a clean exit; returns the exit code.
    int stop(std::chrono::milliseconds timeout = 15s);
    void kill9();  // SIGKILL, no cleanup: a crash
    bool running() { return m_proc && m_proc->running(); }
    int pid() const { return m_proc ? m_proc->pid() : -1; }

    // A fresh API connection (events: call events.subscribe on it).
    node::api::ApiClient client() const;
    // Calls a method on the shared connection; throws std::runtime_error on
    // any transport or RPC error (tests want a loud failure).
    nlohmann::json call(const std::string& method, const nlohmann::json& params = nlohmann::json::object());

    const std::string& name() const { return m_name; }
    const std::string& id() const { return m_id; }
    // A command juiced runs under, e.g. {"ip", "netns", "exec", "juice-h1"};
    // empty = none. Takes effect at the next start().
    std::vector<std::string> wrapper;
    std::string link_bind = "127.0.0.1";  // --link-bind
    // The API socket: <data dir>/api.sock unless set_socket() chose another.
    std::filesystem::path socket() const { return m_socket.empty() ? m_dir / "api.sock" : m_socket; }
    // Puts the API socket at `path` (its directory need not exist: juiced
    // creates it). Takes effect at the next start().
    void set_socket(std::filesystem::path path) { m_socket = std::move(path); }
    std::filesystem::path data_dir() const { return m_dir; }
    std::string log() const;
    std::string error;

private:
    std::string m_name, m_id;
    std::filesystem::path m_dir;
    std::filesystem::path m_socket;  // empty: m_dir / "api.sock"
    std::string m_bootstrap;
    std::uint64_t m_network;
    std::vector<std::string> m_extra;
    std::unique_ptr<Process> m_proc;
    std::unique_ptr<node::api::ApiClient> m_client;
    int m_starts = 0;
};

// Collects events from one subscribed connection.
class EventWatcher {
public:
    explicit EventWatcher(const Juiced& daemon, const std::vector<std::string>& types = {});
    // Waits for the first not yet matched event (already received, then
    // live) for which `pred` is true and marks it matched. nullopt on timeout.
    std::optional<nlohmann::json> wait_for(const std::function<bool(const nlohmann::json&)>& pred,
                                           std::chrono::milliseconds timeout);
    const std::vector<nlohmann::json>& history() const { return m_seen; }

private:
    node::api::ApiClient m_client;
    std::vector<nlohmann::json> m_seen;
    std::vector<bool> m_used;
};

// `d`'s contacts.list entry for `id`; null when it has none.
nlohmann::json contact_entry(Juiced& d, const std::string& id);

// `a` asks `b`, `b` accepts; returns once both list each other as mutual and
// a's link to b is up. Throws std::runtime_error (with what was missing) when
// that does not happen within `timeout` per step.
void befriend(Juiced& a, Juiced& b, std::chrono::milliseconds timeout = 20s);

// A raw, blocking connection to a Unix stream socket (an API socket), for
// sending bytes no well-behaved client sends and reading the answer line by
// line. Every call takes a deadline; the socket closes on destruction.
class RawConnection {
public:
    // Throws std::runtime_error if the connection fails.
    explicit RawConnection(const std::filesystem::path& socket);
    ~RawConnection();
    RawConnection(const RawConnection&) = delete;
    RawConnection& operator=(const RawConnection&) = delete;

    // Writes all of `bytes`; false if the peer closed or `timeout` passed.
    bool send(std::string_view bytes, std::chrono::milliseconds timeout = 10s);
    // The next line (without its '\n'); nullopt on timeout or end of stream.
    std::optional<std::string> read_line(std::chrono::milliseconds timeout);
    // Waits for the peer to close, discarding what it sends meanwhile; false
    // on timeout.
    bool wait_closed(std::chrono::milliseconds timeout);
    bool eof() const { return m_eof; }
    int fd() const { return m_fd; }

private:
    int m_fd = -1;
    bool m_eof = false;
    std::string m_buf;
};

// From /proc: the resident set (VmRSS) in KiB and the number of open file
// descriptors of process `pid`; -1 when it cannot be read (process gone).
long proc_rss_kib(int pid);
int proc_fd_count(int pid);

// Latencies in ms -> {n, p50_ms, p95_ms, p99_ms, max_ms, mean_ms} (just
// {n: 0} when empty), as the benchmarks print them.
nlohmann::json summarize_ms(std::vector<double> v);
// The p-quantile (0..1, nearest rank) of an ascending sample; 0 if empty.
double percentile(const std::vector<double>& sorted, double p);

// `sh -c cmd`: true on exit status 0. For tools the tests drive (sox,
// espeak-ng, tshark); quote arguments yourself.
bool run_shell(const std::string& cmd);
// `sh -c cmd`'s standard output (empty if it cannot run).
std::string shell_output(const std::string& cmd);

// Path of the juiced binary: $JUICED, else the build's JUICED_PATH.
std::string juiced_path();

}  // namespace juice::test
