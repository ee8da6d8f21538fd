// juice: the command-line front-end of juiced. Every subcommand is one or a
// few local API calls (docs/API.md); `watch`, `chat` and `notify` stream events.
//
// Exit codes: 0 ok, 1 the daemon answered with an error, 2 usage,
// 3 the daemon is unreachable (not running, not answering, went away),
// 4 no desktop notification service (`juice notify`).
#include "juice/crypto/contact_uri.hpp"
#include "juice/node/api_client.hpp"
#include "notify/desktop.hpp"
#include "notify/notifier.hpp"

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

using juice::node::api::ApiClient;
using juice::node::api::client_errc;
using json = nlohmann::json;

constexpr int k_exit_ok = 0;
constexpr int k_exit_rpc = 1;
constexpr int k_exit_usage = 2;
constexpr int k_exit_unreachable = 3;
constexpr int k_exit_no_notifications = 4;

// Unwinds a subcommand to main(), which prints "error: <message>".
struct CliError {
    int code;
    std::string message;
};

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_signal(int) {
    g_stop = 1;
}

void install_stop_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR at once
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
}

// ---- text helpers -------------------------------------------------------------

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

bool is_hex(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(),
                                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && lower(std::string(s.substr(0, prefix.size()))) == prefix;
}

// Peer-provided text must not drive the terminal: control characters (C0
// except tab and newline, DEL, and C1 in UTF-8) become U+FFFD.
std::string clean(std::string_view s, bool keep_newlines = false) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c == '\n' && keep_newlines) {
            out.push_back('\n');
        } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
            out += "\xEF\xBF\xBD";
        } else if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
                   static_cast<unsigned char>(s[i + 1]) <= 0x9F) {
            out += "\xEF\xBF\xBD";
            ++i;
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    return out;
}

// Display width, counting UTF-8 code points (good enough for names and notes).
std::size_t width(std::string_view s) {
    std::size_t n = 0;
    for (char c : s)
        if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
    return n;
}

std::string truncate(const std::string& s, std::size_t max) {
    if (width(s) <= max) return s;
    std::string out;
    std::size_t n = 0;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80 && ++n > max - 1) break;
        out.push_back(s[i]);
    }
    return out + "…";
}

std::string pad(const std::string& s, std::size_t w) {
    auto have = width(s);
    return have >= w ? s : s + std::string(w - have, ' ');
}

// Any scalar as text; objects and arrays as compact JSON; null/missing as `fallback`.
std::string field(const json& j, const char* key, std::string fallback = {}) {
    if (!j.is_object()) return fallback;
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (it->is_string()) return it->get<std::string>();
    return it->dump();
}

long long field_ll(const json& j, const char* key, long long fallback = 0) {
    if (!j.is_object()) return fallback;
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) return fallback;
    return it->get<long long>();
}

bool field_bool(const json& j, const char* key) {
    if (!j.is_object()) return false;
    auto it = j.find(key);
    return it != j.end() && it->is_boolean() && it->get<bool>();
}

std::string short_id(const std::string& id) {
    return id.substr(0, 8);
}

long long now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string local_time(long long ms, const char* format) {
    std::time_t t = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[64];
    std::size_t n = std::strftime(buf, sizeof(buf), format, &tm);
    return std::string(buf, n);
}

std::string clock_of(long long ms) {
    return local_time(ms, "%H:%M:%S");
}
std::string day_of(long long ms) {
    return local_time(ms, "%Y-%m-%d");
}

std::string duration(long long seconds) {
    if (seconds < 0) seconds = 0;
    long long d = seconds / 86400, h = seconds / 3600 % 24, m = seconds / 60 % 60, s = seconds % 60;
    if (d) return fmt::format("{}d {}h", d, h);
    if (h) return fmt::format("{}h {}m", h, m);
    if (m) return fmt::format("{}m {}s", m, s);
    return fmt::format("{}s", s);
}

std::string ago(long long ms) {
    if (ms <= 0) return "never";
    long long seconds = (now_ms() - ms) / 1000;
    if (seconds < 60) return "just now";
    if (seconds < 3600) return fmt::format("{}m ago", seconds / 60);
    if (seconds < 86400) return fmt::format("{}h ago", seconds / 3600);
    if (seconds < 7 * 86400) return fmt::format("{}d ago", seconds / 86400);
    return day_of(ms);
}

std::string ticks(const std::string& state) {
    if (state == "queued") return "…";
    if (state == "sent") return "✓";
    if (state == "delivered") return "✓✓";
    if (state == "read") return "✓✓ read";
    return state;
}

// A state with its ticks: "✓✓ delivered".
std::string state_label(const std::string& state) {
    if (state == "read") return ticks(state);
    return ticks(state) == state ? state : ticks(state) + " " + state;
}

void print_json(const json& j) {
    std::cout << j.dump(-1, ' ', false, json::error_handler_t::replace) << '\n' << std::flush;
}

// ---- the connection -------------------------------------------------------------

struct Ctx {
    std::string socket;
    bool json_out = false;
    double timeout_s = 10;

    std::optional<ApiClient> client;
    std::map<std::string, std::string> names;  // id -> name, from contacts.list and events
    std::optional<json> contacts_cache;
    std::optional<std::string> my_id;

    std::chrono::milliseconds timeout() const {
        return std::chrono::milliseconds(static_cast<long long>(timeout_s * 1000));
    }

    static int exit_code_for(const juice::Error& e) {
        return e.code == client_errc::protocol ? k_exit_rpc : k_exit_unreachable;
    }

    ApiClient& api() {
        if (!client) {
            auto c = ApiClient::connect(socket, std::min(timeout(), std::chrono::milliseconds(5000)));
            if (!c) throw CliError{k_exit_unreachable, c.error().what()};
            client.emplace(std::move(c).value());
        }
        return *client;
    }

    json call(const std::string& method, const json& params = json::object()) {
        auto r = api().call(method, params, timeout());
        if (!r) throw CliError{exit_code_for(r.error()), r.error().what()};
        if (!r->ok()) throw CliError{k_exit_rpc, r->error->message};
        return r->result;
    }

    const json& contacts(bool refresh = false) {
        if (!contacts_cache || refresh) {
            json list = call("contacts.list");
            if (!list.is_array()) list = json::array();
            for (const auto& c : list) {
                auto id = field(c, "id");
                if (!id.empty()) names[id] = field(c, "name");
            }
            contacts_cache = std::move(list);
        }
        return *contacts_cache;
    }

    // Best effort: the name cache must not turn a display into an error.
    void load_names() {
        try {
            contacts();
        } catch (const CliError&) {
        }
    }

    std::string my_identity_id() {
        if (!my_id) {
            json me = call("identity.get");
            my_id = field(me, "id");
            names[*my_id] = field(me, "name", "me");
        }
        return *my_id;
    }

    // A contact's display name: its name, or its short id.
    std::string name_of(const std::string& id) {
        auto it = names.find(id);
        if (it != names.end() && !it->second.empty()) return clean(it->second);
        return id.empty() ? "?" : short_id(id);
    }
};

struct Contact {
    std::string id;
    std::string name;
};

std::string list_candidates(Ctx& ctx, const json& contacts, std::size_t max = 10) {
    std::vector<std::string> parts;
    for (const auto& c : contacts) {
        if (parts.size() == max) {
            parts.push_back("…");
            break;
        }
        auto id = field(c, "id");
        parts.push_back(fmt::format("{} ({})", ctx.name_of(id), short_id(id)));
    }
    return fmt::format("{}", fmt::join(parts, ", "));
}

// CONTACT: a 40-hex id, a juice: URI, a contact's name (case-insensitive,
// exact) or a unique id prefix of at least 4 hex digits.
Contact resolve(Ctx& ctx, const std::string& arg) {
    if (starts_with_ci(arg, "juice:")) {
        auto uri = juice::crypto::parse_contact(arg);
        if (!uri)
            throw CliError{k_exit_usage,
                           fmt::format("'{}' is not a valid contact URI: {}", arg, uri.error().what())};
        std::string id = uri->id.hex();
        ctx.load_names();
        return {id, ctx.names.count(id) ? ctx.names[id] : uri->name};
    }
    if (arg.size() == 40 && is_hex(arg)) {
        std::string id = lower(arg);
        ctx.load_names();
        return {id, ctx.names.count(id) ? ctx.names[id] : std::string()};
    }

    const json& contacts = ctx.contacts();
    const std::string wanted = lower(arg);
    json by_name = json::array();
    for (const auto& c : contacts)
        if (lower(field(c, "name")) == wanted) by_name.push_back(c);
    if (by_name.size() == 1) return {field(by_name[0], "id"), field(by_name[0], "name")};
    if (by_name.size() > 1)
        throw CliError{k_exit_rpc, fmt::format("'{}' names several contacts: {}. Use an id prefix instead",
                                               arg, list_candidates(ctx, by_name))};

    if (arg.size() >= 4 && is_hex(arg)) {
        json by_prefix = json::array();
        for (const auto& c : contacts)
            if (field(c, "id").starts_with(wanted)) by_prefix.push_back(c);
        if (by_prefix.size() == 1) return {field(by_prefix[0], "id"), field(by_prefix[0], "name")};
        if (by_prefix.size() > 1)
            throw CliError{k_exit_rpc,
                           fmt::format("id prefix '{}' matches several contacts: {}. Type more digits", arg,
                                       list_candidates(ctx, by_prefix))};
    }

    if (contacts.empty())
        throw CliError{k_exit_rpc,
                       fmt::format("no contact matches '{}': you have no contacts yet (add one with "
                                   "`juice add <id-or-uri>`)",
                                   arg)};
    json similar = json::array();
    for (const auto& c : contacts)
        if (!wanted.empty() && lower(field(c, "name")).find(wanted) != std::string::npos)
            similar.push_back(c);
    std::string hint = arg.size() < 4 && is_hex(arg) ? " (id prefixes need at least 4 hex digits)" : "";
    if (!similar.empty())
        throw CliError{k_exit_rpc, fmt::format("no contact matches '{}'{}; did you mean: {}", arg, hint,
                                               list_candidates(ctx, similar))};
    throw CliError{k_exit_rpc, fmt::format("no contact matches '{}'{}; your contacts: {}", arg, hint,
                                           list_candidates(ctx, contacts))};
}

// ---- events, for watch and chat --------------------------------------------------

std::string describe_event(Ctx& ctx, const json& e) {
    const std::string type = field(e, "type");
    if (type == "presence") {
        std::string who = ctx.name_of(field(e, "id"));
        std::string note = clean(field(e, "note"));
        if (e.contains("online") && !field_bool(e, "online")) return fmt::format("{} is offline", who);
        return fmt::format("{} is {}{}", who, clean(field(e, "status", "online")),
                           note.empty() ? "" : fmt::format(" — \"{}\"", note));
    }
    if (type == "link") {
        std::string reason = clean(field(e, "reason"));
        return fmt::format("link to {} {}{}", ctx.name_of(field(e, "id")),
                           field_bool(e, "up") ? "up" : "down", reason.empty() ? "" : " (" + reason + ")");
    }
    if (type == "message.received")
        return fmt::format("{}: {}", ctx.name_of(field(e, "from")), clean(field(e, "text")));
    if (type == "message.state") {
        std::string state = field(e, "state");
        return fmt::format("message {} to {}: {}", short_id(field(e, "msg_id")), ctx.name_of(field(e, "to")),
                           state_label(state));
    }
    if (type == "contact.request") {
        std::string id = field(e, "id");
        std::string message = clean(field(e, "message"));
        return fmt::format("contact request from {} ({}){} — accept with `juice accept {}`",
                           clean(field(e, "name", "?")), id, message.empty() ? "" : ": \"" + message + "\"",
                           short_id(id));
    }
    if (type == "contact.state")
        return fmt::format("contact {} is now {}", ctx.name_of(field(e, "id")), field(e, "state"));
    if (type == "typing")
        return fmt::format("{} {}", ctx.name_of(field(e, "from")),
                           field_bool(e, "typing") ? "is typing…" : "stopped typing");
    if (type == "call.state") {
        std::string reason = clean(field(e, "reason"));
        return fmt::format("call {} with {}: {}{}", short_id(field(e, "call_id")),
                           ctx.name_of(field(e, "peer")), field(e, "state"),
                           reason.empty() ? "" : " (" + reason + ")");
    }
    if (type == "node.state") {
        const json dht = e.value("dht", json());
        if (dht.is_object())
            return fmt::format("DHT {}, {} nodes", field(dht, "state", "?"), field(dht, "nodes", "?"));
        return fmt::format("DHT {}", clean(field(e, "dht", "?")));
    }
    if (type == "events_dropped")
        return fmt::format("({} events dropped: this client did not keep up)", field(e, "count", "?"));
    json rest = e;
    if (rest.is_object()) rest.erase("type");
    return fmt::format("{} {}", clean(type),
                       clean(rest.dump(-1, ' ', false, json::error_handler_t::replace)));
}

// Keeps the name cache current as contacts come and go.
void learn_from_event(Ctx& ctx, const json& e) {
    const std::string type = field(e, "type");
    if (type == "contact.request" && !field(e, "id").empty()) ctx.names[field(e, "id")] = field(e, "name");
    if (type == "contact.state" && !ctx.names.count(field(e, "id"))) {
        try {
            ctx.contacts(true);
        } catch (const CliError&) {
        }
    }
}

// ---- subcommands -----------------------------------------------------------------

int cmd_id(Ctx& ctx) {
    json me = ctx.call("identity.get");
    if (ctx.json_out) return print_json(me), k_exit_ok;
    fmt::print("id:   {}\nname: {}\nuri:  {}\n", field(me, "id"), clean(field(me, "name")),
               field(me, "contact_uri"));
    return k_exit_ok;
}

int cmd_name(Ctx& ctx, const std::string& name) {
    json r = ctx.call("identity.set_name", {{"name", name}});
    if (ctx.json_out) return print_json(r), k_exit_ok;
    fmt::print("name set to {}\n", clean(name));
    return k_exit_ok;
}

std::string human_bytes(double b) {
    if (b < 1024) return fmt::format("{:.0f} B", b);
    if (b < 1024 * 1024) return fmt::format("{:.1f} KiB", b / 1024);
    if (b < 1024.0 * 1024 * 1024) return fmt::format("{:.1f} MiB", b / (1024 * 1024));
    return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
}

double field_d(const json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number() ? it->get<double>() : 0.0;
}

// The operator's view: DHT routing, storage, traffic and limits. Works on a
// user daemon and on a bootstrap node alike.
int print_stats(const json& info) {
    const json dht = info.value("dht", json::object());
    std::string mode = field(info, "mode", "user");
    fmt::print("juiced {} ({}), up {}, {} resident\n", field(info, "version", "?"),
               mode == "bootstrap" ? "bootstrap node" : "user daemon", duration(field_ll(info, "uptime_s")),
               human_bytes(field_d(info, "rss_bytes")));
    if (!field(info, "node_id").empty()) fmt::print("node id:     {}\n", field(info, "node_id"));
    fmt::print("dht:         {}, network {}, udp port {}\n", field(dht, "state", "?"),
               field(dht, "network", "?"), field(dht, "port", "?"));
    fmt::print("routing:     {} good nodes, {} dubious, network of ~{} nodes, {} searches\n",
               field(dht, "nodes", "0"), field(dht, "dubious_nodes", "0"),
               field(dht, "network_size_estimate", "0"), field(dht, "searches", "0"));
    fmt::print("storage:     {} values, {}\n", field(dht, "stored_values", "0"),
               human_bytes(field_d(dht, "stored_bytes")));
    fmt::print("traffic in:  {:.1f} packets/s, {}/s ({} packets, {} since start)\n",
               field_d(dht, "packets_in_per_s"), human_bytes(field_d(dht, "bytes_in_per_s")),
               field(dht, "packets_in", "0"), human_bytes(field_d(dht, "bytes_in")));
    fmt::print("traffic out: {:.1f} packets/s, {}/s ({} packets, {} since start)\n",
               field_d(dht, "packets_out_per_s"), human_bytes(field_d(dht, "bytes_out_per_s")),
               field(dht, "packets_out", "0"), human_bytes(field_d(dht, "bytes_out")));
    fmt::print("dropped:     {} rate-limited, {} crash puts refused\n",
               field(dht, "packets_rate_limited", "0"), field(dht, "puts_refused", "0"));
    if (auto l = info.find("limits"); l != info.end() && l->is_object())
        fmt::print(
            "limits:      {} packets/s per IP (0 = none), OpenDHT requests/s {} global, {} per IP (0 = "
            "its default)\n",
            field(*l, "max_packets_per_ip", "0"), field(*l, "max_requests_per_s", "0"),
            field(*l, "max_peer_requests_per_s", "0"));
    return k_exit_ok;
}

int cmd_stats(Ctx& ctx) {
    json info = ctx.call("node.info");
    if (ctx.json_out) return print_json(info), k_exit_ok;
    return print_stats(info);
}

int cmd_info(Ctx& ctx) {
    json info = ctx.call("node.info");
    if (ctx.json_out) return print_json(info), k_exit_ok;
    if (field(info, "mode") == "bootstrap") return print_stats(info);
    ctx.load_names();
    fmt::print("juiced {}, up {}\n", field(info, "version", "?"), duration(field_ll(info, "uptime_s")));
    const json dht = info.value("dht", json::object());
    std::string public_addr = field(dht, "public_addr");
    fmt::print("dht:         {}, {} nodes, network {}, port {}{}\n", field(dht, "state", "?"),
               field(dht, "nodes", "?"), field(dht, "network", "?"), field(dht, "port", "?"),
               public_addr.empty() ? "" : ", public address " + public_addr);
    fmt::print("api clients: {}\n", field(info, "api_clients", "?"));
    const json links = info.value("links", json::array());
    fmt::print("links:       {}\n", links.is_array() ? links.size() : 0);
    if (links.is_array()) {
        std::size_t w = 0;
        for (const auto& l : links) {
            if (!field(l, "name").empty()) ctx.names.try_emplace(field(l, "id"), field(l, "name"));
            w = std::max(w, width(ctx.name_of(field(l, "id"))));
        }
        for (const auto& l : links) {
            long long since = field_ll(l, "since");
            const std::string path = field(l, "path");
            fmt::print("  {}  {}  {}{}\n", pad(ctx.name_of(field(l, "id")), w), short_id(field(l, "id")),
                       since > 0 ? "up " + duration((now_ms() - since) / 1000) : "",
                       path.empty()
                           ? ""
                           : ", over " + path + (field(l, "relay").empty() ? "" : " " + field(l, "relay")));
        }
    }
    return k_exit_ok;
}

int cmd_status(Ctx& ctx, const std::string& status, const std::vector<std::string>& note_words) {
    json params{{"status", status}};
    std::string note = fmt::format("{}", fmt::join(note_words, " "));
    if (!note_words.empty()) params["note"] = note;
    json r = ctx.call("presence.set", params);
    if (ctx.json_out) return print_json(r), k_exit_ok;
    fmt::print("status: {}{}\n", status, note.empty() ? "" : " — \"" + clean(note) + "\"");
    return k_exit_ok;
}

int cmd_add(Ctx& ctx, const std::string& target, const std::string& name, const std::string& message) {
    json params = json::object();
    if (starts_with_ci(target, "juice:"))
        params["uri"] = target;
    else if (target.size() == 40 && is_hex(target))
        params["id"] = lower(target);
    else
        throw CliError{
            k_exit_usage,
            fmt::format("'{}' is neither a 40-hex user id nor a juice: contact URI (ask your buddy for "
                        "the output of `juice id`)",
                        target)};
    if (!name.empty()) params["name"] = name;
    if (!message.empty()) params["message"] = message;
    json r = ctx.call("contacts.add", params);
    if (ctx.json_out) return print_json(r), k_exit_ok;
    std::string id = field(r, "id");
    std::string state = field(r, "state");
    if (state == "mutual")
        fmt::print("{} ({}) is now a contact\n", name.empty() ? short_id(id) : clean(name), id);
    else
        fmt::print("added {} ({}); state: {} (you link up once they add you too)\n",
                   name.empty() ? short_id(id) : clean(name), id, state);
    return k_exit_ok;
}

int cmd_contacts(Ctx& ctx) {
    const json& list = ctx.contacts();
    if (ctx.json_out) return print_json(list), k_exit_ok;
    if (list.empty()) {
        fmt::print("no contacts yet; add one with `juice add <id-or-uri>` (share yours: `juice id`)\n");
        return k_exit_ok;
    }
    std::vector<std::array<std::string, 7>> rows;
    rows.push_back({"NAME", "ID", "STATE", "STATUS", "ONLINE", "NOTE", "LAST SEEN"});
    for (const auto& c : list) {
        const bool online = field_bool(c, "online");
        const bool linked = field_bool(c, "linked");
        rows.push_back({truncate(clean(field(c, "name", "-")), 24), short_id(field(c, "id")),
                        field(c, "state", "-"), online ? field(c, "status", "online") : "offline",
                        linked ? "linked" : (online ? "online" : "-"), truncate(clean(field(c, "note")), 32),
                        online ? "now" : ago(field_ll(c, "last_seen"))});
    }
    std::array<std::size_t, 7> w{};
    for (const auto& row : rows)
        for (std::size_t i = 0; i < row.size(); ++i) w[i] = std::max(w[i], width(row[i]));
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i)
            line += i + 1 == row.size() ? row[i] : pad(row[i], w[i]) + "  ";
        fmt::print("{}\n", line);
    }
    return k_exit_ok;
}

// juice doctor: node.nat (NAT kind, candidates, TURN) and each contact's link.
int cmd_doctor(Ctx& ctx) {
    ctx.timeout_s = std::max(ctx.timeout_s, 20.0);  // the checks take up to ~10 s
    if (!ctx.json_out)
        fmt::print(
            "checking your NAT (STUN tests, and gathering candidates as a link would, up to 10 s)...\n");
    json nat = ctx.call("node.nat");
    const json& contacts = ctx.contacts();
    if (ctx.json_out) return print_json({{"nat", nat}, {"contacts", contacts}}), k_exit_ok;
    const json probe = nat.value("probe", json::object());
    const std::string kind = field(nat, "nat", "unknown");
    std::string how = field(probe, "mapping");
    if (probe.contains("port_preserved"))
        how += field_bool(probe, "port_preserved") ? ", keeps ports" : ", changes ports";
    fmt::print("NAT:          {}{}\n", kind, how.empty() || how == "unknown" ? "" : " (" + how + ")");
    if (!field(probe, "error").empty()) fmt::print("              ({})\n", field(probe, "error"));
    const std::string pub = field(nat, "public_ip");
    fmt::print("public IP:    {}\n",
               pub.empty() ? "not reported by the DHT yet" : pub + " (as DHT nodes see you)");
    for (const auto& t : probe.value("tests", json::array()))
        fmt::print("STUN test:    {} from {} saw you at {}\n", field(t, "server"), field(probe, "local"),
                   field(t, "mapped").empty() ? "(no answer)" : field(t, "mapped"));
    std::string cands;
    for (const auto& c : nat.value("candidates", json::array()))
        cands += (cands.empty() ? "" : ", ") + field(c, "type") + " " + field(c, "address");
    if (field_bool(nat, "ice")) fmt::print("candidates:   {}\n", cands.empty() ? "none gathered" : cands);
    const json turn = nat.value("turn", json::object());
    fmt::print("TURN:         {}\n", !field_bool(turn, "configured") ? "not configured"
                                     : field_bool(turn, "ok")        ? "works, relay " + field(turn, "relay")
                                                                     : "configured, but gave no relay");
    const json links = nat.value("links", json::object());
    fmt::print("links:        {} direct, {} relayed, {} over TCP, {} failed\n", field(links, "direct", "0"),
               field(links, "relayed", "0"), field(links, "tcp", "0"), field(links, "failed", "0"));
    fmt::print("reachability: {}\n", field(nat, "reachability"));
    for (const auto& a : nat.value("advice", json::array()))
        fmt::print("advice:       {}\n", a.get<std::string>());
    for (const auto& c : contacts) {
        if (field(c, "state") != "mutual") continue;
        std::string how_linked = field_bool(c, "linked") ? "linked over " + field(c, "link_path", "?")
                                 : !field(c, "link_error").empty() ? "not linked: " + field(c, "link_error")
                                 : field_bool(c, "online")         ? "online, not linked yet"
                                                                   : "offline";
        fmt::print("contact:      {} ({}): {}\n", clean(field(c, "name", "-")), short_id(field(c, "id")),
                   how_linked);
    }
    return k_exit_ok;
}

int cmd_simple_contact(Ctx& ctx, const std::string& method, const std::string& verb, const std::string& arg) {
    Contact c = resolve(ctx, arg);
    json r = ctx.call(method, {{"id", c.id}});
    if (ctx.json_out) return print_json(r), k_exit_ok;
    fmt::print("{} {} ({})\n", verb, c.name.empty() ? short_id(c.id) : clean(c.name), c.id);
    return k_exit_ok;
}

int cmd_send(Ctx& ctx, const std::string& arg, const std::vector<std::string>& words) {
    std::string text;
    if (words.size() == 1 && words[0] == "-") {
        text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
        if (!text.empty() && text.back() == '\n') text.pop_back();
    } else {
        text = fmt::format("{}", fmt::join(words, " "));
    }
    if (text.empty()) throw CliError{k_exit_usage, "nothing to send: the message is empty"};
    Contact c = resolve(ctx, arg);
    json r = ctx.call("messages.send", {{"to", c.id}, {"text", text}});
    if (ctx.json_out) return print_json(r), k_exit_ok;
    fmt::print("{}\n", field(r, "msg_id"));
    return k_exit_ok;
}

// ---- voice calls ----------------------------------------------------------

// WAV paths are opened by juiced, whose working directory differs from ours.
json audio_params(const std::string& in, const std::string& out) {
    json p = json::object();
    if (!in.empty()) p["audio_in"] = std::filesystem::absolute(in).string();
    if (!out.empty()) p["audio_out"] = std::filesystem::absolute(out).string();
    return p;
}

// The call a command means: the one given (an id or a prefix), else the only
// call there is (for `answer`: the only ringing incoming call).
std::string pick_call(Ctx& ctx, const std::string& arg, bool ringing_in_only) {
    json list = ctx.call("calls.list");
    std::vector<std::string> ids;
    for (const auto& c : list.is_array() ? list : json::array()) {
        std::string id = field(c, "call_id");
        if (!arg.empty() ? id.rfind(arg, 0) == 0 : (!ringing_in_only || field(c, "state") == "ringing_in"))
            ids.push_back(id);
    }
    if (ids.size() == 1) return ids[0];
    if (ids.empty())
        throw CliError{k_exit_usage, arg.empty()
                                         ? (ringing_in_only ? "no call is ringing" : "there is no call")
                                         : "no call matches " + arg};
    throw CliError{k_exit_usage, "several calls match; give a call id (see `juice calls`)"};
}

int cmd_dial(Ctx& ctx, const std::string& arg, const std::string& in, const std::string& out) {
    Contact c = resolve(ctx, arg);
    json params = audio_params(in, out);
    params["to"] = c.id;
    json r = ctx.call("calls.start", params);
    if (ctx.json_out) return print_json(r), k_exit_ok;
    fmt::print("calling {} (call {}); `juice hangup` ends it\n",
               c.name.empty() ? short_id(c.id) : clean(c.name), field(r, "call_id"));
    return k_exit_ok;
}

int cmd_answer(Ctx& ctx, const std::string& arg, const std::string& in, const std::string& out) {
    std::string id = pick_call(ctx, arg, true);
    json params = audio_params(in, out);
    params["call_id"] = id;
    json r = ctx.call("calls.accept", params);
    if (ctx.json_out) return print_json(r), k_exit_ok;
    fmt::print("answered call {}\n", id);
    return k_exit_ok;
}

int cmd_hangup(Ctx& ctx, const std::string& arg) {
    std::string id = pick_call(ctx, arg, false);
    json r = ctx.call("calls.hangup", {{"call_id", id}});
    if (ctx.json_out) return print_json(r), k_exit_ok;
    fmt::print("ended call {}\n", id);
    return k_exit_ok;
}

int cmd_calls(Ctx& ctx) {
    json list = ctx.call("calls.list");
    if (ctx.json_out) return print_json(list), k_exit_ok;
    if (!list.is_array() || list.empty()) return fmt::print("no calls\n"), k_exit_ok;
    ctx.load_names();
    for (const auto& c : list) {
        fmt::print("{}  {}  {}\n", short_id(field(c, "call_id")), ctx.name_of(field(c, "peer")),
                   field(c, "state"));
        const json st = c.value("stats", json::object());
        if (st.is_object() && st.contains("packets_received"))
            fmt::print(
                "    loss in {:.1f}% out {:.1f}%, jitter {:.1f} ms, buffer {:.0f} ms, rtt {:.0f} ms, {} "
                "kbit/s\n",
                st.value("loss_in", 0.0) * 100, st.value("loss_out", 0.0) * 100, st.value("jitter_ms", 0.0),
                st.value("buffer_ms", 0.0), st.value("rtt_ms", -1.0), st.value("bitrate", 0) / 1000);
    }
    return k_exit_ok;
}

// One history line: `[12:03:45] Alice: hi  ✓✓` (ticks on our own messages).
void print_message(Ctx& ctx, const json& m, const std::string& me, std::string* last_day) {
    long long ts = field_ll(m, "ts");
    if (last_day) {
        std::string day = day_of(ts);
        if (day != *last_day && !(last_day->empty() && day == day_of(now_ms())))
            fmt::print("-- {} --\n", day);
        *last_day = day;
    }
    const std::string from = field(m, "from");
    const bool mine = from == me;
    std::string text = clean(field(m, "text"), true);
    for (std::size_t pos = 0; (pos = text.find('\n', pos)) != std::string::npos; pos += 12)
        text.insert(pos + 1, 11, ' ');
    fmt::print("[{}] {}: {}{}\n", clock_of(ts), mine ? ctx.name_of(me) : ctx.name_of(from), text,
               mine ? "  " + ticks(field(m, "state")) : "");
}

int cmd_history(Ctx& ctx, const std::string& arg, int limit, std::optional<long long> before) {
    Contact c = resolve(ctx, arg);
    json params{{"with", c.id}, {"limit", limit}};
    if (before) params["before"] = *before;
    json list = ctx.call("messages.history", params);
    if (ctx.json_out) return print_json(list), k_exit_ok;
    std::string me = ctx.my_identity_id();
    if (!list.is_array() || list.empty()) {
        fmt::print("no messages with {} yet\n", ctx.name_of(c.id));
        return k_exit_ok;
    }
    std::string last_day;
    for (const auto& m : list) print_message(ctx, m, me, &last_day);
    return k_exit_ok;
}

int cmd_watch(Ctx& ctx, const std::vector<std::string>& types) {
    json params = json::object();
    if (!types.empty()) params["types"] = types;
    ctx.call("events.subscribe", params);
    ctx.load_names();
    install_stop_handlers();
    while (!g_stop) {
        auto e = ctx.api().next_event(std::chrono::milliseconds(250));
        if (!e) {
            if (e.error().code == client_errc::closed) {
                std::cerr << "juiced closed the connection\n";
                return k_exit_ok;
            }
            throw CliError{Ctx::exit_code_for(e.error()), e.error().what()};
        }
        if (!*e) continue;
        const json& event = **e;
        learn_from_event(ctx, event);
        if (ctx.json_out) {
            print_json(event);
        } else {
            long long ts = field_ll(event, "ts", now_ms());
            fmt::print("[{}] {}\n", clock_of(ts), describe_event(ctx, event));
            std::fflush(stdout);
        }
    }
    return k_exit_ok;
}

int cmd_chat(Ctx& ctx, const std::string& arg) {
    Contact c = resolve(ctx, arg);
    const std::string me = ctx.my_identity_id();
    const std::string who = ctx.name_of(c.id);
    const bool interactive = ::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO);

    auto mark_read = [&](const std::string& msg_id) {
        if (msg_id.empty()) return;
        auto r = ctx.api().call("messages.mark_read", {{"with", c.id}, {"up_to", msg_id}}, ctx.timeout());
        (void)r;  // best effort: reading must not fail on receipts
    };

    json history = ctx.call("messages.history", {{"with", c.id}, {"limit", 20}});
    std::string last_received;
    if (history.is_array()) {
        std::string last_day;
        for (const auto& m : history) {
            if (ctx.json_out)
                print_json(m);
            else
                print_message(ctx, m, me, &last_day);
            if (field(m, "from") == c.id) last_received = field(m, "msg_id");
        }
    }
    mark_read(last_received);
    ctx.call("events.subscribe", {{"types", {"message.received", "message.state", "presence", "link"}}});
    if (!ctx.json_out)
        std::cerr << fmt::format(
            "-- chatting with {} ({}); type a message and press Enter, /quit to leave --\n", who,
            short_id(c.id));
    install_stop_handlers();

    std::map<std::string, std::string> sent_texts;  // msg_id -> text, for tick lines
    auto handle_event = [&](const json& e) {
        learn_from_event(ctx, e);
        const std::string type = field(e, "type");
        if (ctx.json_out) {
            print_json(e);
            if (type == "message.received" && field(e, "from") == c.id) mark_read(field(e, "msg_id"));
            return;
        }
        const std::string now = clock_of(field_ll(e, "ts", now_ms()));
        if (type == "message.received") {
            if (field(e, "from") == c.id) {
                print_message(ctx, e, me, nullptr);
                mark_read(field(e, "msg_id"));
            } else {
                fmt::print("[{}] (new message from {}: `juice chat {}`)\n", now,
                           ctx.name_of(field(e, "from")), short_id(field(e, "from")));
            }
        } else if (type == "message.state" && field(e, "to") == c.id) {
            std::string text = sent_texts.count(field(e, "msg_id")) ? sent_texts[field(e, "msg_id")] : "";
            fmt::print("[{}] {}{}\n", now, state_label(field(e, "state")),
                       text.empty() ? "" : ": " + truncate(clean(text), 40));
        } else if ((type == "presence" && field(e, "id") == c.id) ||
                   (type == "link" && field(e, "id") == c.id) || type == "events_dropped") {
            fmt::print("[{}] {}\n", now, describe_event(ctx, e));
        }
        std::fflush(stdout);
    };

    auto send_line = [&](std::string line) -> bool {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line == "/quit" || line == "/exit") return false;
        if (line == "/help") {
            fmt::print("type a line to send it; /quit (or Ctrl-D) leaves\n");
            return true;
        }
        if (line.find_first_not_of(" \t") == std::string::npos) return true;
        json r = ctx.call("messages.send", {{"to", c.id}, {"text", line}});
        if (ctx.json_out) {
            print_json(r);
            return true;
        }
        sent_texts[field(r, "msg_id")] = line;
        if (interactive) fmt::print("\x1b[1A\x1b[2K");  // replace the echoed input with the formatted line
        print_message(
            ctx, json{{"from", me}, {"text", line}, {"ts", field_ll(r, "ts", now_ms())}, {"state", "queued"}},
            me, nullptr);
        std::fflush(stdout);
        return true;
    };

    std::string input;
    bool stdin_open = true;
    while (!g_stop && stdin_open) {
        // Drain what the client already buffered: poll() only sees new bytes.
        for (;;) {
            auto e = ctx.api().next_event(std::chrono::milliseconds(0));
            if (!e) {
                if (e.error().code == client_errc::closed) {
                    std::cerr << "juiced closed the connection\n";
                    return k_exit_unreachable;
                }
                throw CliError{Ctx::exit_code_for(e.error()), e.error().what()};
            }
            if (!*e) break;
            handle_event(**e);
        }
        pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {ctx.api().fd(), POLLIN, 0}};
        int rc = ::poll(fds, 2, -1);
        if (rc < 0) {
            if (errno == EINTR) continue;
            throw CliError{k_exit_rpc, fmt::format("poll failed: {}", std::strerror(errno))};
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[4096];
            ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                stdin_open = false;
                if (!input.empty()) send_line(std::move(input));
                break;
            }
            input.append(buf, static_cast<std::size_t>(n));
            for (std::size_t nl; (nl = input.find('\n')) != std::string::npos;) {
                std::string line = input.substr(0, nl);
                input.erase(0, nl + 1);
                if (!send_line(std::move(line))) return k_exit_ok;
            }
        }
    }
    return k_exit_ok;
}

struct NotifyFlags {
    long long window_ms = 400;
    long long min_interval_ms = 3000;
    bool dry_run = false;
};

// Desktop notifications for messages, contact requests and contacts coming
// online, until juiced goes away or a signal; the rules and the rate limit
// are juice::notify::Notifier's. The notification service is checked first:
// without one there is nothing to do.
int cmd_notify(Ctx& ctx, const NotifyFlags& flags) {
    namespace jn = juice::notify;
    using Clock = jn::Clock;

    std::optional<jn::DesktopSink> sink;
    if (!flags.dry_run) {
        auto opened = jn::DesktopSink::open("juice", ctx.timeout());
        if (!opened) {
            std::cerr << "juice notify: " << opened.error().what() << '\n';
            return k_exit_no_notifications;
        }
        sink.emplace(std::move(opened).value());
    }

    install_stop_handlers();
    // Subscribe before reading the list: changes in between are then queued
    // events, newer than the list, and nothing is missed.
    ctx.call("events.subscribe",
             {{"types", {"message.received", "contact.request", "presence", "contact.state"}}});
    jn::Notifier notifier(jn::NotifierOptions{std::chrono::milliseconds(flags.window_ms),
                                              std::chrono::milliseconds(flags.min_interval_ms)});
    notifier.set_contacts(ctx.call("contacts.list"), jn::ContactsUpdate::initial, Clock::now());

    std::cerr << fmt::format(
        "juice notify: {} for messages, contact requests and contacts coming online (bursts within {} ms "
        "are one notification, at most one every {} ms); Ctrl-C stops\n",
        sink ? fmt::format("showing notifications through {} {}", clean(sink->server().name),
                           clean(sink->server().version))
             : std::string("dry run, printing notifications"),
        flags.window_ms, flags.min_interval_ms);

    bool failing = false;  // warn once per outage of the service, not per notification
    auto show = [&](const jn::Notification& n) {
        if (!sink) {
            if (ctx.json_out) {
                print_json({{"summary", n.summary},
                            {"body", n.body},
                            {"urgency", std::string(jn::to_string(n.urgency))},
                            {"category", n.category},
                            {"replace_key", n.replace_key}});
            } else {
                std::string body = n.body;
                for (std::size_t pos = 0; (pos = body.find('\n', pos)) != std::string::npos; pos += 2)
                    body.replace(pos, 1, "; ");
                fmt::print("[{}] {}{}\n", clock_of(now_ms()), n.summary, body.empty() ? "" : " — " + body);
                std::fflush(stdout);
            }
            return;
        }
        auto shown = sink->show(n);
        if (!shown && !failing)
            std::cerr << "juice notify: warning: " << shown.error().what()
                      << " (did the notification service stop? juice notify keeps trying)\n";
        if (shown && failing) std::cerr << "juice notify: notifications are shown again\n";
        failing = !shown;
    };
    auto refresh = [&](jn::ContactsUpdate mode) {
        // Best effort: without a fresh list, names fall back on short ids; a
        // lost connection shows up at the next read.
        auto r = ctx.api().call("contacts.list", json::object(), ctx.timeout());
        if (r && r->ok()) notifier.set_contacts(r->result, mode, Clock::now());
    };

    while (!g_stop) {
        const auto now = Clock::now();
        if (auto n = notifier.poll(now)) show(*n);
        // Wake up when the held notification is due, and at least every 250 ms
        // to run GLib's callbacks and see signals.
        auto wait = std::chrono::milliseconds(250);
        if (auto due = notifier.next_due())
            wait = std::clamp(std::chrono::ceil<std::chrono::milliseconds>(*due - now),
                              std::chrono::milliseconds(0), wait);
        auto e = ctx.api().next_event(wait);
        if (!e) {
            if (e.error().code == client_errc::closed) {
                if (auto n = notifier.flush(Clock::now())) show(*n);
                std::cerr << "juice notify: juiced closed the connection; stopping\n";
                return k_exit_ok;
            }
            throw CliError{Ctx::exit_code_for(e.error()), e.error().what()};
        }
        if (*e) {
            switch (notifier.on_event(**e, Clock::now())) {
                case jn::Followup::none:
                    break;
                case jn::Followup::refresh_names:
                    refresh(jn::ContactsUpdate::names);
                    break;
                case jn::Followup::resync:
                    refresh(jn::ContactsUpdate::resync);
                    break;
            }
        }
        if (sink) sink->pump();
    }
    std::cerr << "juice notify: stopped\n";
    return k_exit_ok;
}

int cmd_call(Ctx& ctx, const std::string& method, const std::string& params_text) {
    json params = json::object();
    if (!params_text.empty()) {
        try {
            params = json::parse(params_text);
        } catch (const json::exception& e) {
            throw CliError{k_exit_usage, fmt::format("PARAMS is not valid JSON: {}", e.what())};
        }
    }
    print_json(ctx.call(method, params));
    return k_exit_ok;
}

int cmd_shutdown(Ctx& ctx) {
    auto r = ctx.api().call("daemon.shutdown", json::object(), ctx.timeout());
    // The daemon may close the connection before the answer gets out: that is success too.
    if (!r && r.error().code != client_errc::closed)
        throw CliError{Ctx::exit_code_for(r.error()), r.error().what()};
    if (r && !r->ok()) throw CliError{k_exit_rpc, r->error->message};
    if (ctx.json_out) return print_json(r ? r->result : json::object()), k_exit_ok;
    fmt::print("juiced is shutting down\n");
    return k_exit_ok;
}

}  // namespace

int main(int argc, char** argv) {
    Ctx ctx;
    ctx.socket = juice::node::api::default_socket_path().string();

    CLI::App app{
        "juice: talk to your juiced (identity, contacts, messages, live events).\n"
        "CONTACT is a 40-hex id, a juice: URI, a contact's name or a unique id prefix (4+ hex digits)."};
    app.require_subcommand(1, 1);
    app.fallthrough();  // global flags may follow the subcommand
    app.footer(
        "Exit codes: 0 ok, 1 juiced answered with an error, 2 usage, 3 juiced unreachable,\n"
        "4 no desktop notification service (notify).\n"
        "Start the daemon with `juiced`; the API is described in docs/API.md.");
    app.add_option("--api-socket", ctx.socket, "juiced's API socket")->capture_default_str();
    app.add_flag("--json", ctx.json_out, "print raw JSON results, one per line (for scripts)");
    app.add_option("--timeout", ctx.timeout_s, "seconds to wait for juiced's answers")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);

    std::function<int()> action;
    auto on = [&](CLI::App* sub, std::function<int()> f) { sub->callback([&action, f] { action = f; }); };

    on(app.add_subcommand("id", "show your id, name and contact URI (share the URI with buddies)"),
       [&] { return cmd_id(ctx); });

    std::string new_name;
    auto* name = app.add_subcommand("name", "set the name your buddies see");
    name->add_option("NAME", new_name, "the new name")->required();
    on(name, [&] { return cmd_name(ctx, new_name); });

    on(app.add_subcommand("info", "show the daemon's version, DHT state, uptime, clients and links"),
       [&] { return cmd_info(ctx); });
    on(app.add_subcommand("stats", "show DHT routing, storage and traffic stats (also for a bootstrap node)"),
       [&] { return cmd_stats(ctx); });

    std::string status;
    std::vector<std::string> note;
    auto* status_cmd = app.add_subcommand("status", "set your presence: online, away, busy or invisible");
    status_cmd->add_option("STATUS", status, "online|away|busy|invisible")
        ->required()
        ->check(CLI::IsMember({"online", "away", "busy", "invisible"}));
    status_cmd->add_option("NOTE", note, "an optional note, e.g. \"back at 3\"");
    on(status_cmd, [&] { return cmd_status(ctx, status, note); });

    std::string add_target, add_name, add_message;
    auto* add = app.add_subcommand("add", "send a contact request");
    add->add_option("ID_OR_URI", add_target, "the buddy's 40-hex id or juice: URI")->required();
    add->add_option("--name", add_name, "the name to show for this contact");
    add->add_option("--message", add_message, "a note sent with the request");
    on(add, [&] { return cmd_add(ctx, add_target, add_name, add_message); });

    on(app.add_subcommand("contacts", "list your contacts"), [&] { return cmd_contacts(ctx); });

    std::string contact_arg;
    struct Simple {
        const char* name;
        const char* method;
        const char* verb;
        const char* help;
    };
    for (const Simple& s : {Simple{"accept", "contacts.accept", "accepted", "accept a contact request"},
                            Simple{"reject", "contacts.reject", "rejected", "reject a contact request"},
                            Simple{"remove", "contacts.remove", "removed", "remove a contact"},
                            Simple{"block", "contacts.block", "blocked", "block a contact"}}) {
        auto* sub = app.add_subcommand(s.name, s.help);
        sub->add_option("CONTACT", contact_arg, "name, id prefix, id or URI")->required();
        std::string method = s.method, verb = s.verb;
        on(sub,
           [&ctx, &contact_arg, method, verb] { return cmd_simple_contact(ctx, method, verb, contact_arg); });
    }

    std::vector<std::string> text;
    auto* send = app.add_subcommand("send", "send a message (prints its id); TEXT `-` reads stdin");
    send->add_option("CONTACT", contact_arg, "name, id prefix, id or URI")->required();
    send->add_option("TEXT", text, "the message")->required();
    on(send, [&] { return cmd_send(ctx, contact_arg, text); });

    int limit = 20;
    std::optional<long long> before;
    auto* history = app.add_subcommand("history", "show the messages exchanged with a contact");
    history->add_option("CONTACT", contact_arg, "name, id prefix, id or URI")->required();
    history->add_option("-n,--limit", limit, "how many messages")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    history->add_option("--before", before, "only messages before this seq (paging, from --json output)");
    on(history, [&] { return cmd_history(ctx, contact_arg, limit, before); });

    std::vector<std::string> types;
    auto* watch = app.add_subcommand("watch", "print events as they happen (Ctrl-C to stop)");
    watch->add_option("-t,--type", types, "only this event type (repeatable; `message.*` matches a family)");
    on(watch, [&] { return cmd_watch(ctx, types); });

    auto* chat = app.add_subcommand("chat", "chat with a contact interactively (/quit or Ctrl-D to leave)");
    chat->add_option("CONTACT", contact_arg, "name, id prefix, id or URI")->required();
    on(chat, [&] { return cmd_chat(ctx, contact_arg); });

    NotifyFlags notify_flags;
    auto* notify = app.add_subcommand(
        "notify",
        "show desktop notifications for messages, contact requests and contacts coming online (Ctrl-C to "
        "stop)");
    notify
        ->add_option("--window", notify_flags.window_ms,
                     "ms to hold the first event of a burst, so it is one notification")
        ->capture_default_str()
        ->check(CLI::Range(0LL, 600000LL));
    notify
        ->add_option("--min-interval", notify_flags.min_interval_ms,
                     "at least this many ms between two notifications")
        ->capture_default_str()
        ->check(CLI::Range(0LL, 3600000LL));
    notify->add_flag("--dry-run", notify_flags.dry_run,
                     "print each notification as one line (JSON with --json) instead of showing it");
    on(notify, [&] { return cmd_notify(ctx, notify_flags); });

    std::string audio_in, audio_out, call_arg;
    auto* dial = app.add_subcommand("dial", "start a voice call (prints the call id)");
    dial->add_option("CONTACT", contact_arg, "name, id prefix, id or URI")->required();
    dial->add_option("--in", audio_in, "play this WAV file instead of the microphone");
    dial->add_option("--out", audio_out, "record what you hear into this WAV file instead of the speaker");
    on(dial, [&] { return cmd_dial(ctx, contact_arg, audio_in, audio_out); });
    auto* answer = app.add_subcommand("answer", "accept a ringing call (the only one, or CALL)");
    answer->add_option("CALL", call_arg, "call id or prefix");
    answer->add_option("--in", audio_in, "play this WAV file instead of the microphone");
    answer->add_option("--out", audio_out, "record what you hear into this WAV file instead of the speaker");
    on(answer, [&] { return cmd_answer(ctx, call_arg, audio_in, audio_out); });
    auto* hangup = app.add_subcommand("hangup", "end (or decline) a call (the only one, or CALL)");
    hangup->add_option("CALL", call_arg, "call id or prefix");
    on(hangup, [&] { return cmd_hangup(ctx, call_arg); });
    on(app.add_subcommand("calls", "list calls with live audio stats"), [&] { return cmd_calls(ctx); });
    on(app.add_subcommand("doctor",
                          "tell what NAT you are behind, whether TURN works and how each contact links"),
       [&] { return cmd_doctor(ctx); });

    std::string raw_method, raw_params;
    auto* call =
        app.add_subcommand("call", "call any API method and print its JSON result (see docs/API.md)");
    call->add_option("METHOD", raw_method, "e.g. node.info")->required();
    call->add_option("PARAMS", raw_params, "a JSON object, e.g. '{\"id\":\"...\"}'");
    on(call, [&] { return cmd_call(ctx, raw_method, raw_params); });

    on(app.add_subcommand("shutdown", "stop juiced"), [&] { return cmd_shutdown(ctx); });

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int rc = app.exit(e);
        return rc == 0 ? k_exit_ok : k_exit_usage;
    }

    try {
        return action ? action() : k_exit_usage;
    } catch (const CliError& e) {
        std::cerr << "error: " << e.message << '\n';
        return e.code;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << '\n';
        return k_exit_rpc;
    }
}
