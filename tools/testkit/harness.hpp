// Integration-test harness: temp dirs, child processes, a real dhtnode
// bootstrap, and deadline polling (never fixed sleeps).
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <cstdint>
#include <string>
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

// Polls `pred` every 10 ms until it returns true or `timeout` passes.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

// A UDP or TCP port on 127.0.0.1 that was free a moment ago.
int free_udp_port();
int free_tcp_port();

// A real stock `dhtnode` on loopback, on a private network id, used as the
// only bootstrap. Started in the constructor; waits until it answers.
class DhtBootstrap {
public:
    explicit DhtBootstrap(std::uint64_t network, const std::filesystem::path& dir);
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

// A random private network id, so parallel test runs never meet.
std::uint64_t random_network_id();

}  // namespace juice::test
