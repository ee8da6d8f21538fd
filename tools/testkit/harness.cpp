#include "harness.hpp"

#include <csignal>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace juice::test {

namespace fs = std::filesystem;

TempDir::TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/juice-test-XXXXXX";
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed: " + std::string(strerror(errno)));
    m_path = tmpl;
}

TempDir::~TempDir() {
    if (std::getenv("JUICE_KEEP_TEST_DIRS")) return;
    std::error_code ec;
    fs::remove_all(m_path, ec);
}

Process::Process(const std::string& exe, const std::vector<std::string>& args, const fs::path& log_file,
                 const std::map<std::string, std::string>& env, bool stdin_pipe)
    : m_log(log_file) {
    int pipefd[2] = {-1, -1};
    if (stdin_pipe && pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    int logfd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) throw std::runtime_error("cannot open log " + log_file.string());

    std::vector<std::string> argv_s{exe};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);

    m_pid = fork();
    if (m_pid < 0) throw std::runtime_error("fork failed");
    if (m_pid == 0) {
        setpgid(0, 0);
        int in = stdin_pipe ? pipefd[0] : ::open("/dev/null", O_RDONLY);
        dup2(in, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        for (auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
        execvp(exe.c_str(), argv.data());
        dprintf(2, "exec %s failed: %s\n", exe.c_str(), strerror(errno));
        _exit(127);
    }
    ::close(logfd);
    if (stdin_pipe) {
        ::close(pipefd[0]);
        m_stdin = pipefd[1];
    }
}

Process::~Process() {
    kill_now();
    if (m_stdin >= 0) ::close(m_stdin);
}

bool Process::running() {
    if (m_pid <= 0) return false;
    if (m_status >= 0) return false;
    int st = 0;
    pid_t r = waitpid(m_pid, &st, WNOHANG);
    if (r == m_pid) {
        m_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return false;
    }
    return true;
}

void Process::signal(int sig) {
    if (running()) ::kill(m_pid, sig);
}

int Process::wait(std::chrono::milliseconds timeout) {
    wait_until([&] { return !running(); }, timeout);
    return running() ? -1 : m_status;
}

void Process::kill_now() {
    if (running()) {
        ::kill(m_pid, SIGKILL);
        int st = 0;
        waitpid(m_pid, &st, 0);
        m_status = 128 + SIGKILL;
    }
}

void Process::write_stdin(const std::string& text) {
    if (m_stdin < 0) return;
    // The child may be gone (a test may have crashed it on purpose): a write
    // to its pipe must fail with EPIPE, not kill the test with SIGPIPE.
    static const bool ignored = [] {
        std::signal(SIGPIPE, SIG_IGN);
        return true;
    }();
    (void)ignored;
    const char* p = text.data();
    std::size_t left = text.size();
    while (left > 0) {
        ssize_t n = ::write(m_stdin, p, left);
        if (n <= 0) return;
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

std::string Process::log() const {
    std::ifstream in(m_log);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        if (pred()) return true;
        auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return false;
        std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(poll, deadline - now));
    }
}

static int free_port(int type) {
    int fd = ::socket(AF_INET, type, 0);
    if (fd < 0) throw std::runtime_error("socket failed");
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        ::close(fd);
        throw std::runtime_error("bind failed");
    }
    socklen_t len = sizeof sa;
    getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    ::close(fd);
    return ntohs(sa.sin_port);
}

int free_udp_port() {
    return free_port(SOCK_DGRAM);
}
int free_tcp_port() {
    return free_port(SOCK_STREAM);
}

std::uint64_t random_network_id() {
    std::random_device rd;
    // OpenDHT network ids are 32-bit on the wire; keep clear of 0 (public).
    return 1000 + (static_cast<std::uint64_t>(rd()) % 1000000000u);
}

DhtBootstrap::DhtBootstrap(std::uint64_t network, const fs::path& dir, std::vector<std::string> extra_args)
    : m_network(network) {
    // A stock dhtnode in console mode, stdin kept open so tests can type
    // commands (e.g. "g KEY"); it exits when stdin closes.
    for (int attempt = 0; attempt < 5; ++attempt) {
        m_port = free_udp_port();
        auto log = dir / ("dhtnode-" + std::to_string(m_port) + ".log");
        std::vector<std::string> args{"-n", std::to_string(network), "-p", std::to_string(m_port)};
        args.insert(args.end(), extra_args.begin(), extra_args.end());
        m_proc = std::make_unique<Process>("dhtnode", args, log, std::map<std::string, std::string>{}, true);
        bool up = wait_until(
            [&] { return m_proc->log().find("running on port") != std::string::npos || !m_proc->running(); },
            10s);
        if (up && m_proc->running()) return;
        m_proc.reset();
    }
    throw std::runtime_error("could not start dhtnode (is the dhtnode package installed?)");
}

DhtBootstrap::~DhtBootstrap() {
    if (m_proc) {
        m_proc->write_stdin("q\n");
        m_proc->wait(2s);
    }
}

}  // namespace juice::test

namespace juice::test {

std::string juiced_path() {
    if (const char* p = std::getenv("JUICED"); p && *p) return p;
#ifdef JUICED_PATH
    return JUICED_PATH;
#else
    return "juiced";
#endif
}

Juiced::Juiced(std::string name, const fs::path& root, const DhtBootstrap& bootstrap,
               std::vector<std::string> extra_args)
    : m_name(std::move(name)),
      m_dir(root / m_name),
      m_bootstrap(bootstrap.address()),
      m_network(bootstrap.network()),
      m_extra(std::move(extra_args)) {
    fs::create_directories(m_dir);
}

Juiced::Juiced(std::string name, const fs::path& root, std::string bootstrap, std::uint64_t network,
               std::vector<std::string> extra_args)
    : m_name(std::move(name)),
      m_dir(root / m_name),
      m_bootstrap(std::move(bootstrap)),
      m_network(network),
      m_extra(std::move(extra_args)) {
    fs::create_directories(m_dir);
}

std::vector<std::string> with_wrapper(const std::vector<std::string>& wrapper, const std::string& exe,
                                      std::vector<std::string> args) {
    std::vector<std::string> cmd = wrapper;
    cmd.push_back(exe);
    cmd.insert(cmd.end(), args.begin(), args.end());
    return cmd;
}

namespace {

// juiced (under `wrapper`), its output in `log`.
std::unique_ptr<Process> spawn_juiced(const std::vector<std::string>& wrapper, std::vector<std::string> args,
                                      const fs::path& log) {
    auto cmd = with_wrapper(wrapper, juiced_path(), std::move(args));
    return std::make_unique<Process>(cmd.front(), std::vector<std::string>(cmd.begin() + 1, cmd.end()), log);
}

// Polls until `proc`'s API answers `method` on `socket`; the connection and
// the answer, or nullptr if the process died or the time ran out.
std::unique_ptr<node::api::ApiClient> await_api(Process& proc, const fs::path& socket,
                                                const std::string& method, std::chrono::milliseconds timeout,
                                                nlohmann::json& result) {
    std::unique_ptr<node::api::ApiClient> client;
    wait_until(
        [&] {
            if (!proc.running()) return true;
            auto c = node::api::ApiClient::connect(socket, 200ms);
            if (!c) return false;
            auto r = c->call(method, nlohmann::json::object(), 2s);
            if (!r || !r->ok()) return false;
            result = r->result;
            client = std::make_unique<node::api::ApiClient>(std::move(*c));
            return true;
        },
        timeout);
    return proc.running() ? std::move(client) : nullptr;
}

// A call whose every failure throws, naming `who`.
nlohmann::json checked_call(node::api::ApiClient* client, const std::string& who, const std::string& method,
                            const nlohmann::json& params, std::chrono::milliseconds timeout) {
    if (!client) throw std::runtime_error(who + " is not running");
    auto r = client->call(method, params, timeout);
    if (!r) throw std::runtime_error(who + " " + method + ": " + r.error().what());
    if (!r->ok())
        throw std::runtime_error(who + " " + method + ": " + r->error->message + " (" + r->error->reason +
                                 ")");
    return r->result;
}

// SIGTERM, then up to 5 s for the exit (destructors).
void terminate(std::unique_ptr<Process>& proc) {
    if (proc && proc->running()) {
        proc->signal(SIGTERM);
        proc->wait(5s);
    }
}

}  // namespace

JuicedBootstrap::JuicedBootstrap(const fs::path& dir, std::uint64_t network, std::string bootstrap_addr,
                                 std::vector<std::string> extra)
    : extra_args(std::move(extra)),
      bootstrap(std::move(bootstrap_addr)),
      m_dir(dir),
      m_network(network),
      m_port(free_udp_port()) {
    fs::create_directories(m_dir);
}

JuicedBootstrap::~JuicedBootstrap() {
    m_client.reset();
    terminate(m_proc);
}

bool JuicedBootstrap::start(std::chrono::milliseconds timeout) {
    m_client.reset();
    std::vector<std::string> args{"--bootstrap-node",
                                  "--data-dir",
                                  m_dir.string(),
                                  "--api-socket",
                                  socket().string(),
                                  "--network",
                                  std::to_string(m_network),
                                  "--port",
                                  std::to_string(m_port),
                                  "--log-level",
                                  log_level};
    if (!bootstrap.empty()) args.insert(args.end(), {"--bootstrap", bootstrap});
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    m_proc = spawn_juiced(wrapper, std::move(args), m_dir / "bootstrap.log");
    nlohmann::json info;
    m_client = await_api(*m_proc, socket(), "node.info", timeout, info);
    return m_client != nullptr;
}

int JuicedBootstrap::stop(std::chrono::milliseconds timeout) {
    m_client.reset();
    if (!m_proc) return -1;
    m_proc->signal(SIGTERM);
    return m_proc->wait(timeout);
}

nlohmann::json JuicedBootstrap::call(const std::string& method, const nlohmann::json& params) {
    return checked_call(m_client.get(), "bootstrap node", method, params, 10s);
}

Juiced::~Juiced() {
    m_client.reset();
    terminate(m_proc);
}

bool Juiced::start(std::chrono::milliseconds timeout) {
    m_client.reset();
    std::vector<std::string> args{"--data-dir",
                                  m_dir.string(),
                                  "--api-socket",
                                  socket().string(),
                                  "--network",
                                  std::to_string(m_network),
                                  "--bootstrap",
                                  m_bootstrap,
                                  "--no-lan-discovery",
                                  "--link-bind",
                                  link_bind,
                                  "--key-bits",
                                  "2048",
                                  "--no-passphrase",
                                  "--name",
                                  m_name};
    if (std::find(m_extra.begin(), m_extra.end(), "--log-level") == m_extra.end())
        args.insert(args.end(), {"--log-level", "debug"});
    args.insert(args.end(), m_extra.begin(), m_extra.end());
    ++m_starts;
    m_proc = spawn_juiced(wrapper, std::move(args), m_dir / "juiced.log");
    nlohmann::json me;
    m_client = await_api(*m_proc, socket(), "identity.get", timeout, me);
    if (m_client) m_id = me.value("id", std::string());
    if (!m_client) {
        error = "juiced " + m_name + " did not come up; log:\n" + log();
        return false;
    }
    return true;
}

int Juiced::stop(std::chrono::milliseconds timeout) {
    if (!m_proc || !m_proc->running()) return m_proc ? m_proc->wait(0ms) : 0;
    if (m_client) (void)m_client->call("daemon.shutdown", nlohmann::json::object(), 5s);
    m_client.reset();
    int code = m_proc->wait(timeout);
    if (code < 0) {
        m_proc->kill_now();
        return -1;
    }
    return code;
}

void Juiced::kill9() {
    m_client.reset();
    if (m_proc) m_proc->kill_now();
}

node::api::ApiClient Juiced::client() const {
    auto c = node::api::ApiClient::connect(socket(), 2s);
    if (!c) throw std::runtime_error("cannot connect to " + m_name + ": " + c.error().what());
    return std::move(*c);
}

nlohmann::json Juiced::call(const std::string& method, const nlohmann::json& params) {
    return checked_call(m_client.get(), m_name, method, params, 30s);
}

std::string Juiced::log() const {
    std::ifstream in(m_dir / "juiced.log");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

EventWatcher::EventWatcher(const Juiced& daemon, const std::vector<std::string>& types)
    : m_client(daemon.client()) {
    nlohmann::json params = nlohmann::json::object();
    if (!types.empty()) params["types"] = types;
    auto r = m_client.call("events.subscribe", params, 5s);
    if (!r || !r->ok()) throw std::runtime_error("events.subscribe failed on " + daemon.name());
}

std::optional<nlohmann::json> EventWatcher::wait_for(const std::function<bool(const nlohmann::json&)>& pred,
                                                     std::chrono::milliseconds timeout) {
    // Each event satisfies at most one wait, in arrival order; events that
    // matched nothing yet stay available to later waits.
    for (std::size_t i = 0; i < m_seen.size(); ++i)
        if (!m_used[i] && pred(m_seen[i])) {
            m_used[i] = true;
            return m_seen[i];
        }
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                          std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        auto ev = m_client.next_event(left);
        if (!ev || !ev->has_value()) return std::nullopt;
        m_seen.push_back(**ev);
        bool hit = pred(m_seen.back());
        m_used.push_back(hit);
        if (hit) return m_seen.back();
    }
}

}  // namespace juice::test

namespace juice::test {

nlohmann::json contact_entry(Juiced& d, const std::string& id) {
    for (auto& c : d.call("contacts.list"))
        if (c["id"] == id) return c;
    return nlohmann::json();
}

void befriend(Juiced& a, Juiced& b, std::chrono::milliseconds timeout) {
    EventWatcher eb(b, {"contact.*"});
    a.call("contacts.add", {{"id", b.id()}, {"message", "hi, it's " + a.name()}});
    auto req = eb.wait_for(
        [&](const nlohmann::json& e) {
            return e["type"] == "contact.request" && e.value("id", std::string()) == a.id();
        },
        timeout);
    if (!req) throw std::runtime_error(b.name() + " got no contact request from " + a.name());
    b.call("contacts.accept", {{"id", a.id()}});
    if (!wait_until([&] { return contact_entry(a, b.id())["linked"] == true; }, timeout))
        throw std::runtime_error("no link from " + a.name() + " to " + b.name() + " after the accept");
    if (contact_entry(a, b.id())["state"] != "mutual" || contact_entry(b, a.id())["state"] != "mutual")
        throw std::runtime_error(a.name() + " and " + b.name() + " are linked but not both mutual");
}

RawConnection::RawConnection(const fs::path& socket) {
    m_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (m_fd < 0) throw std::runtime_error("socket failed: " + std::string(strerror(errno)));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string path = socket.string();
    if (path.size() >= sizeof addr.sun_path) throw std::runtime_error("socket path too long: " + path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(m_fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
        int err = errno;
        ::close(m_fd);
        m_fd = -1;
        throw std::runtime_error("cannot connect to " + path + ": " + strerror(err));
    }
    ::fcntl(m_fd, F_SETFL, ::fcntl(m_fd, F_GETFL) | O_NONBLOCK);
}

RawConnection::~RawConnection() {
    if (m_fd >= 0) ::close(m_fd);
}

namespace {
int ms_left(std::chrono::steady_clock::time_point deadline) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<long long>(0, left.count()));
}
}  // namespace

bool RawConnection::send(std::string_view bytes, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!bytes.empty()) {
        ssize_t n = ::send(m_fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n > 0) {
            bytes.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
        pollfd p{m_fd, POLLOUT, 0};
        int left = ms_left(deadline);
        if (left == 0 || ::poll(&p, 1, left) < 0) return false;
        if (p.revents & (POLLERR | POLLHUP)) return false;
    }
    return true;
}

std::optional<std::string> RawConnection::read_line(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        if (auto nl = m_buf.find('\n'); nl != std::string::npos) {
            std::string line = m_buf.substr(0, nl);
            m_buf.erase(0, nl + 1);
            return line;
        }
        if (m_eof) return std::nullopt;
        char chunk[65536];
        ssize_t n = ::recv(m_fd, chunk, sizeof chunk, 0);
        if (n > 0) {
            m_buf.append(chunk, static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            m_eof = true;
            continue;
        }
        pollfd p{m_fd, POLLIN, 0};
        int left = ms_left(deadline);
        if (left == 0) return std::nullopt;
        (void)::poll(&p, 1, left);
    }
}

bool RawConnection::wait_closed(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!m_eof) {
        if (!read_line(std::chrono::milliseconds(ms_left(deadline))) && !m_eof) return false;
    }
    return true;
}

long proc_rss_kib(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

int proc_fd_count(int pid) {
    std::error_code ec;
    fs::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec);
    if (ec) return -1;
    int n = 0;
    for (; it != fs::directory_iterator(); it.increment(ec)) {
        if (ec) return -1;
        ++n;
    }
    return n;
}

double percentile(const std::vector<double>& sorted, double p) {
    if (sorted.empty()) return 0;
    return sorted[std::min(sorted.size() - 1,
                           static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5))];
}

nlohmann::json summarize_ms(std::vector<double> v) {
    if (v.empty()) return {{"n", 0}};
    std::sort(v.begin(), v.end());
    auto pct = [&](double p) { return percentile(v, p); };
    double sum = 0;
    for (double x : v) sum += x;
    return {{"n", v.size()},       {"p50_ms", pct(0.5)}, {"p95_ms", pct(0.95)},
            {"p99_ms", pct(0.99)}, {"max_ms", v.back()}, {"mean_ms", sum / static_cast<double>(v.size())}};
}

bool run_shell(const std::string& cmd) {
    int rc = std::system(cmd.c_str());
    return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

std::string shell_output(const std::string& cmd) {
    std::string out;
    if (FILE* f = ::popen(cmd.c_str(), "r")) {
        char buf[4096];
        std::size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
        ::pclose(f);
    }
    return out;
}

}  // namespace juice::test
