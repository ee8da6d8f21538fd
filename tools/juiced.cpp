// juiced: the juice daemon. Parses flags, loads or creates the identity, and
// runs node::Daemon until SIGINT/SIGTERM or daemon.shutdown. With
// --bootstrap-node it runs node::BootstrapNode instead: no identity, only a
// DHT node for others to join through (docs/OPERATORS.md).
//
// Exit codes: 0 clean shutdown; 1 runtime failure (port in use, database
// damaged, ...); 2 bad flags; 3 identity problem (no passphrase, wrong
// passphrase, damaged key file).
#include "juice/crypto/errors.hpp"
#include "juice/crypto/identity.hpp"
#include "juice/node/api.hpp"
#include "juice/node/bootstrap.hpp"
#include "juice/node/daemon.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <cstdio>

#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

namespace {

using juice::crypto::Identity;

constexpr int k_exit_runtime = 1;
constexpr int k_exit_identity = 3;

std::optional<std::string> prompt_hidden(const std::string& prompt) {
    std::fprintf(stderr, "%s", prompt.c_str());
    std::fflush(stderr);
    termios old{};
    bool tty = tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        termios quiet = old;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    std::string line;
    bool ok = static_cast<bool>(std::getline(std::cin, line));
    if (tty) tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::fprintf(stderr, "\n");
    if (!ok) return std::nullopt;
    return line;
}

struct PassphraseSource {
    std::string file;
    bool none = false;
};

// Where the passphrase comes from, in order: --passphrase-file, the
// JUICE_PASSPHRASE environment variable, a prompt on a terminal. Without any
// of them (and without --no-passphrase) the daemon refuses to go on.
std::optional<std::string> get_passphrase(const PassphraseSource& src, bool creating, std::string& error) {
    if (src.none) return std::string{};
    if (!src.file.empty()) {
        std::ifstream in(src.file);
        if (!in) {
            error = "cannot read the passphrase file " + src.file;
            return std::nullopt;
        }
        std::string pass;
        std::getline(in, pass);
        if (!pass.empty() && pass.back() == '\r') pass.pop_back();
        if (pass.empty()) {
            error = "the passphrase file " + src.file + " is empty";
            return std::nullopt;
        }
        return pass;
    }
    if (const char* env = std::getenv("JUICE_PASSPHRASE"); env && *env) return std::string(env);
    if (isatty(STDIN_FILENO)) {
        auto p1 =
            prompt_hidden(creating ? "New passphrase to protect your key: " : "Passphrase for your key: ");
        if (!p1 || p1->empty()) {
            error = "no passphrase entered";
            return std::nullopt;
        }
        if (creating) {
            auto p2 = prompt_hidden("Repeat the passphrase: ");
            if (!p2 || *p2 != *p1) {
                error = "the two passphrases differ";
                return std::nullopt;
            }
        }
        return p1;
    }
    error =
        "a passphrase is needed to protect your key, and there is no terminal to ask for it: use "
        "--passphrase-file FILE, set JUICE_PASSPHRASE, or run with --no-passphrase to store the key "
        "unencrypted";
    return std::nullopt;
}

std::optional<Identity> load_or_create(const std::filesystem::path& dir, const PassphraseSource& src,
                                       unsigned bits, const std::string& name, int& exit_code) {
    exit_code = k_exit_identity;
    std::string error;
    if (Identity::exists(dir)) {
        // An unencrypted key needs no passphrase: try that first when the
        // user gave none, so --no-passphrase is not needed every start.
        std::optional<std::string> pass;
        if (src.none || (src.file.empty() && !std::getenv("JUICE_PASSPHRASE"))) {
            auto plain = Identity::load(dir, std::nullopt);
            if (plain) return *plain;
            if (plain.error().code != juice::crypto::errc::passphrase_required || src.none) {
                std::cerr << "juiced: cannot load your identity from " << dir << ": " << plain.error().what()
                          << "\n";
                return std::nullopt;
            }
        }
        pass = get_passphrase(src, false, error);
        if (!pass) {
            std::cerr << "juiced: " << error << "\n";
            return std::nullopt;
        }
        auto id = Identity::load(dir, *pass);
        if (!id) {
            std::cerr << "juiced: cannot load your identity from " << dir << ": " << id.error().what()
                      << "\n";
            return std::nullopt;
        }
        return *id;
    }
    auto pass = get_passphrase(src, true, error);
    if (!pass) {
        std::cerr << "juiced: " << error << "\n";
        return std::nullopt;
    }
    std::cerr << "juiced: creating your identity (" << bits << "-bit RSA key) in " << dir << "\n";
    bool tty = isatty(STDERR_FILENO);
    auto id = Identity::generate(bits, name, [tty](std::chrono::milliseconds elapsed) {
        auto s = std::chrono::duration_cast<std::chrono::seconds>(elapsed).count();
        static long last = -1;
        if (tty) {
            static const char spin[] = "|/-\\";
            std::fprintf(stderr, "\r  generating key %c %lds", spin[(elapsed.count() / 250) % 4], s);
        } else if (s != last) {
            std::fprintf(stderr, "  generating key... %lds\n", s);
        }
        last = s;
        std::fflush(stderr);
    });
    if (tty) std::fprintf(stderr, "\r  generating key: done          \n");
    if (!id) {
        std::cerr << "juiced: key generation failed: " << id.error().what() << "\n";
        return std::nullopt;
    }
    if (auto r = id->save(dir, *pass); !r) {
        std::cerr << "juiced: cannot save your identity: " << r.error().what() << "\n";
        return std::nullopt;
    }
    if (pass->empty()) std::cerr << "juiced: warning: your key is stored unencrypted (--no-passphrase)\n";
    exit_code = 0;
    return *id;
}

int run_bootstrap_node(const CLI::App& app, const juice::node::Config& cfg, const std::string& data_dir,
                       std::uint32_t rate_limit_ip, std::int64_t max_requests, std::int64_t max_peer_requests,
                       std::uint16_t dht_port) {
    for (const char* user_only : {"--name",
                                  "--key-bits",
                                  "--passphrase-file",
                                  "--no-passphrase",
                                  "--link-port",
                                  "--link-bind",
                                  "--ice",
                                  "--stun",
                                  "--turn",
                                  "--turn-user",
                                  "--turn-password-file",
                                  "--sync",
                                  "--inbox-refresh",
                                  "--presence-refresh",
                                  "--presence-dormant-after",
                                  "--presence-poll",
                                  "--no-voice",
                                  "--audio",
                                  "--audio-in",
                                  "--audio-out",
                                  "--media-port",
                                  "--media-announce",
                                  "--call-bitrate",
                                  "--ring-timeout"})
        if (app.count(user_only))
            spdlog::warn("{} is ignored with --bootstrap-node (a bootstrap node has no identity or contacts)",
                         user_only);
    juice::node::BootstrapConfig b;
    b.data_dir = data_dir;
    if (app.count("--api-socket")) b.api_socket = app.get_option("--api-socket")->as<std::string>();
    if (app.count("--port")) b.dht_port = dht_port;
    b.network = cfg.network;
    b.bootstrap = cfg.bootstrap;
    if (b.bootstrap.empty() && cfg.network == 0) b.bootstrap.push_back(juice::node::k_default_bootstrap);
    b.lan_discovery = false;  // a server has no LAN peers worth finding
    if (app.count("--rate-limit-ip")) b.max_packets_per_ip = rate_limit_ip;
    b.max_requests_per_s = max_requests;
    b.max_peer_requests_per_s = max_peer_requests;
    b.metrics_port = cfg.metrics_port;
    b.metrics_bind = cfg.metrics_bind;
    juice::node::BootstrapNode node(std::move(b));
    if (auto r = node.start(); !r) {
        std::cerr << "juiced: " << r.error().what() << "\n";
        return k_exit_runtime;
    }
    node.run();
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"juiced: the juice peer-to-peer buddy chat daemon"};
    juice::node::Config cfg;
    std::string data_dir = cfg.data_dir.string();
    std::string api_socket = juice::node::api::default_socket_path().string();
    unsigned key_bits = 4096;
    std::string name;
    PassphraseSource pass;
    std::string log_level = "info";
    std::string sync = "normal";
    std::uint16_t dht_port = 0, link_port = 0;
    bool no_lan = false;
    unsigned inbox_refresh_s = 240;
    unsigned presence_refresh_s = 1800;
    unsigned presence_dormant_s = 600, presence_poll_s = 7200;
    bool no_voice = false;
    unsigned ring_timeout_s = 45;
    bool bootstrap_node = false;
    std::uint32_t rate_limit_ip = 0;
    std::int64_t max_requests = 0, max_peer_requests = 0;

    app.set_version_flag("--version", std::string("juiced ") + juice::node::k_version);
    app.add_option("--data-dir", data_dir, "identity, database and node cache")->capture_default_str();
    app.add_option("--api-socket", api_socket, "local API socket")->capture_default_str();
    app.add_option("--port", dht_port, "UDP port of the DHT node (0 = any)")->capture_default_str();
    app.add_option("--link-port", link_port, "TCP port for direct links (0 = any)")->capture_default_str();
    app.add_option("--link-bind", cfg.link_bind, "listen for links on this address only (default: all)");
    std::string ice_mode = "on", turn_password_file;
    app.add_option("--ice", ice_mode,
                   "links through NATs with ICE (candidates sent in DHT signals, TLS over the chosen path); "
                   "peers without it, and failed attempts, use TCP")
        ->check(CLI::IsMember({"on", "off"}))
        ->capture_default_str();
    app.add_option("--stun", cfg.stun, "IP:PORT of a STUN server for ICE (server-reflexive candidates)");
    app.add_option("--turn", cfg.turn, "IP:PORT of a TURN server (UDP) for ICE relayed candidates");
    app.add_option("--turn-user", cfg.turn_user, "TURN user name");
    app.add_option("--turn-password-file", turn_password_file,
                   "file holding the TURN password (first line; never put it on the command line)")
        ->check(CLI::ExistingFile);
    app.add_option("--network", cfg.network, "OpenDHT network id (0 = public network)")
        ->capture_default_str();
    app.add_option("--bootstrap", cfg.bootstrap, "HOST:PORT of a DHT node to join through (repeatable)");
    app.add_flag("--no-lan-discovery", no_lan, "do not look for DHT nodes on the LAN by multicast");
    app.add_flag("--bootstrap-node", bootstrap_node,
                 "run a bootstrap node for others to join through: no identity, no contacts; UDP port 4222 "
                 "unless --port; API at " +
                     juice::node::default_bootstrap_socket_path().string() + " unless --api-socket");
    app.add_option("--rate-limit-ip", rate_limit_ip,
                   "drop DHT datagrams from one IP above this many per second (0 = no limit; bootstrap node "
                   "default 200)");
    app.add_option("--max-requests", max_requests,
                   "bootstrap node: OpenDHT's request limit per second (0 = its default 8192, -1 = none)")
        ->check(CLI::Range(std::int64_t{-1}, std::int64_t{1} << 30));
    app.add_option(
           "--max-peer-requests", max_peer_requests,
           "bootstrap node: OpenDHT's request limit per second per IP (0 = its default 1024, -1 = none)")
        ->check(CLI::Range(std::int64_t{-1}, std::int64_t{1} << 30));
    app.add_option("--metrics-port", cfg.metrics_port,
                   "serve Prometheus metrics at http://127.0.0.1:PORT/metrics (0 = off)")
        ->capture_default_str();
    app.add_option("--metrics-bind", cfg.metrics_bind,
                   "address for --metrics-port (keep it on loopback unless a firewall guards it)")
        ->capture_default_str();
    app.add_option("--key-bits", key_bits, "RSA key size for a new identity")
        ->check(CLI::Range(2048u, 8192u))
        ->capture_default_str();
    app.add_option("--name", name, "display name for a new identity (default: $USER)");
    auto* pf = app.add_option("--passphrase-file", pass.file, "read the key passphrase from this file");
    app.add_flag("--no-passphrase", pass.none, "store or use the key without a passphrase")->excludes(pf);
    app.add_option("--sync", sync,
                   "database durability: normal (survives a crash of juiced) or full (also survives power "
                   "loss; slower)")
        ->check(CLI::IsMember({"full", "normal"}))
        ->capture_default_str();
    app.add_option(
           "--inbox-refresh", inbox_refresh_s,
           "seconds between re-puts of undelivered mail in contacts' DHT inboxes (stock DHT nodes keep "
           "it 10 minutes)")
        ->check(CLI::Range(1u, 540u))
        ->capture_default_str();
    app.add_option("--presence-refresh", presence_refresh_s,
                   "seconds between fresh presence records when nothing changed (each costs every watching "
                   "buddy about 4 KB)")
        ->check(CLI::Range(60u, 86400u))
        ->capture_default_str();
    app.add_option(
           "--presence-dormant-after", presence_dormant_s,
           "seconds a contact must look offline before its DHT listen sleeps (it wakes when the contact "
           "knocks, links or is found by a poll); 0 = always listen")
        ->check(CLI::Range(0u, 86400u))
        ->capture_default_str();
    app.add_option("--presence-poll", presence_poll_s,
                   "seconds between DHT gets of a sleeping contact's presence (0 = never)")
        ->check(CLI::Range(0u, 86400u))
        ->capture_default_str();
    app.add_flag("--no-voice", no_voice, "do not offer or accept voice calls");
    app.add_option("--audio", cfg.audio,
                   "sound for calls without WAV files: auto or pulse (the PulseAudio device), null (silence)")
        ->check(CLI::IsMember({"auto", "pulse", "null"}))
        ->capture_default_str();
    app.add_option("--audio-in", cfg.audio_in,
                   "default WAV file to play into calls instead of the microphone");
    app.add_option("--audio-out", cfg.audio_out,
                   "default WAV file to record calls into instead of the speaker");
    app.add_option("--media-port", cfg.media_port, "UDP port for call audio (0 = a free port per call)")
        ->capture_default_str();
    app.add_option("--media-announce", cfg.media_announce,
                   "IP:PORT contacts should send call audio to (a port forward or a relay)");
    app.add_option("--call-bitrate", cfg.call_bitrate, "Opus bitrate of calls on a clean path, bit/s")
        ->check(CLI::Range(6000, 128000))
        ->capture_default_str();
    app.add_option("--ring-timeout", ring_timeout_s, "seconds a call rings before it ends unanswered")
        ->check(CLI::Range(1u, 600u))
        ->capture_default_str();
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    // Everything juiced writes (key, database, node cache, socket) is the
    // user's private data.
    umask(077);

    auto logger = spdlog::stderr_color_mt("juiced");
    spdlog::set_default_logger(logger);
    spdlog::set_level(spdlog::level::from_str(log_level));
    spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");

    if (bootstrap_node)
        return run_bootstrap_node(app, cfg, data_dir, rate_limit_ip, max_requests, max_peer_requests,
                                  dht_port);

    cfg.ice = ice_mode == "on";
    for (const auto* ep : {&cfg.stun, &cfg.turn}) {
        if (!ep->empty() && !juice::node::parse_ip_port(*ep)) {
            std::cerr << "juiced: '" << *ep << "' is not IP:PORT (a numeric IP address and a port)\n";
            return 2;
        }
    }
    if (!cfg.turn.empty() && (cfg.turn_user.empty() || turn_password_file.empty())) {
        std::cerr << "juiced: --turn needs --turn-user and --turn-password-file\n";
        return 2;
    }
    if (!turn_password_file.empty()) {
        std::ifstream in(turn_password_file);
        if (!std::getline(in, cfg.turn_password) || cfg.turn_password.empty()) {
            std::cerr << "juiced: no password in " << turn_password_file << "\n";
            return 2;
        }
    }
    if ((!cfg.stun.empty() || !cfg.turn.empty()) && !cfg.ice)
        spdlog::warn("--stun and --turn only matter with --ice on");
    cfg.data_dir = data_dir;
    cfg.api_socket = api_socket;
    cfg.max_packets_per_ip = rate_limit_ip;
    cfg.dht_port = dht_port;
    cfg.link_port = link_port;
    cfg.lan_discovery = !no_lan;
    cfg.inbox_refresh = std::chrono::seconds(inbox_refresh_s);
    cfg.presence_refresh = std::chrono::seconds(presence_refresh_s);
    cfg.presence_dormant_after = std::chrono::seconds(presence_dormant_s);
    cfg.presence_poll = std::chrono::seconds(presence_poll_s);
    cfg.voice = !no_voice;
    cfg.ring_timeout = std::chrono::seconds(ring_timeout_s);
    cfg.sync = sync == "normal" ? juice::node::Store::Sync::normal : juice::node::Store::Sync::full;
    if (name.empty()) {
        const char* user = std::getenv("USER");
        name = user && *user ? user : "juice user";
    }
    cfg.default_name = name;

    int code = 0;
    auto identity = load_or_create(cfg.data_dir, pass, key_bits, name, code);
    if (!identity) return code;

    juice::node::Daemon daemon(cfg, *identity);
    if (auto r = daemon.start(); !r) {
        std::cerr << "juiced: " << r.error().what() << "\n";
        return k_exit_runtime;
    }
    daemon.run();
    return 0;
}
