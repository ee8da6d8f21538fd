// Links through real NATs: tools/natlab.sh builds an "internet" with a
// bootstrap node and coturn (STUN + TURN), and two homes behind iptables NAT
// routers with the same private subnet. Needs root, so hidden from the
// default run: `juice_integration "[nat]"`, or -DJUICE_NAT_TESTS=ON.
// Each case says which path the link took and how long it took from the
// contact's arrival, sends messages both ways, makes a short speech call
// (and says what it cost at the TURN server), and checks what node.nat and
// `juice doctor` tell each side (docs/NAT.md has the measured numbers).
#include "call_flow.hpp"
#include "harness.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <fstream>
#include <sstream>

using namespace juice::test;
using json = nlohmann::json;
using clk = std::chrono::steady_clock;

namespace {

std::string natlab() {
#ifdef JUICE_SOURCE_DIR
    return std::string(JUICE_SOURCE_DIR) + "/tools/natlab.sh";
#else
    return "tools/natlab.sh";
#endif
}

// The lab, built in the constructor and torn down in the destructor.
class Lab {
public:
    explicit Lab(const std::filesystem::path& dir) : m_dir(dir) {
        m_env = "JUICE_NAT_PREFIX=" + ns("") + " ";
        run_shell(m_env + natlab() + " down >/dev/null 2>&1");
        m_up = run_shell(m_env + natlab() + " up >" + (dir / "natlab.log").string() + " 2>&1") &&
               run_shell(m_env + natlab() + " turn " + (dir / "turn").string() + " >>" +
                         (dir / "natlab.log").string() + " 2>&1");
        std::ofstream(dir / "turn-pass") << "lab-secret\n";
    }
    ~Lab() {
        run_shell(m_env + natlab() + " down >/dev/null 2>&1");
        run_shell("pkill -F " + (m_dir / "turn" / "turn.pid").string() + " >/dev/null 2>&1");
    }
    bool up() const { return m_up; }
    bool nat(const std::string& router, const std::string& type) {
        return run_shell(m_env + natlab() + " nat " + router + " " + type);
    }
    // A namespace of this lab (the prefix is in m_env).
    static std::string ns(const std::string& name) {
        return "jn" + std::to_string(::getpid() % 10000) + "-" + name;
    }
    std::vector<std::string> exec(const std::string& name) const { return {"ip", "netns", "exec", ns(name)}; }
    std::filesystem::path turn_pass() const { return m_dir / "turn-pass"; }
    // Bytes in + out of the TURN server's interface so far (0 if unknown).
    std::uint64_t turn_bytes() const {
        const auto f = m_dir / "turn-bytes";
        if (!run_shell("ip netns exec " + ns("turn") +
                       " sh -c 'cat /sys/class/net/eth0/statistics/rx_bytes "
                       "/sys/class/net/eth0/statistics/tx_bytes' >" +
                       f.string()))
            return 0;
        std::ifstream in(f);
        std::uint64_t rx = 0, tx = 0;
        in >> rx >> tx;
        return rx + tx;
    }

private:
    std::filesystem::path m_dir;
    std::string m_env;
    bool m_up = false;
};

struct Case {
    std::string a_nat, b_nat;
    bool stun;  // else the public address comes from the DHT
    bool turn;
    std::string expect;  // "direct", "relay", "any", "fail"
};

double ms_since(clk::time_point t0) {
    return std::chrono::duration<double, std::milli>(clk::now() - t0).count();
}

// What node.nat and `juice doctor` tell the user behind `nat` ("cone" or
// "symmetric"), and how `contact` is shown.
void check_doctor(Juiced& d, const std::string& nat, const Case& c, const std::string& contact,
                  const std::filesystem::path& dir) {
    auto r = d.client().call("node.nat", json::object(), 30s);
    REQUIRE(r);
    REQUIRE(r->ok());
    const json& n = r->result;
    INFO(n.dump());
    // Without a STUN or TURN server the mapping cannot be tested.
    CHECK(n["nat"] == (c.stun || c.turn ? nat : std::string("unknown")));
    CHECK(n["public_ip"].get<std::string>().rfind("203.0.113.1", 0) == 0);  // .11 or .12, from the DHT
    CHECK(n["turn"]["ok"] == c.turn);
    if (c.turn) CHECK(n["turn"]["relay"].get<std::string>().rfind("203.0.113.5:", 0) == 0);
    if (nat == "symmetric" && !c.turn) CHECK(n["advice"].dump().find("TURN") != std::string::npos);

    Process p(JUICE_CLI_PATH, {"--api-socket", d.socket().string(), "doctor"},
              dir / ("doctor-" + d.id() + ".log"));
    REQUIRE(p.wait(40s) == 0);
    const std::string out = p.log();
    WARN("juice doctor behind a " << nat << " NAT:\n" << out);
    CHECK(out.find("NAT:          " + n["nat"].get<std::string>()) != std::string::npos);
    CHECK(out.find(contact) != std::string::npos);
}

void run_case(const Case& c) {
    // JUICE_NAT_ONLY="cone/cone +STUN" (a name as the warnings print it)
    // runs one case, by hand, while debugging.
    const std::string name = c.a_nat + "/" + c.b_nat + (c.stun ? " +STUN" : "") + (c.turn ? " +TURN" : "");
    if (const char* only = std::getenv("JUICE_NAT_ONLY"); only && name != only) return;
    INFO(name);
    TempDir dir;
    Lab lab(dir.path());
    REQUIRE(lab.up());
    REQUIRE(lab.nat("rA", c.a_nat));
    REQUIRE(lab.nat("rB", c.b_nat));
    auto net = random_network_id();
    JuicedBootstrap boot(dir.path() / "boot", net);
    boot.wrapper = lab.exec("boot");
    boot.host = "203.0.113.2";
    REQUIRE(boot.start());

    // STUN from the same coturn (with TURN, its allocation gives the
    // server-reflexive address too). Without either, the DHT's report of
    // our public IP gives it.
    std::vector<std::string> args{"--ice", "on", "--audio", "null"};
    if (c.stun) args.insert(args.end(), {"--stun", "203.0.113.3:3478"});
    if (c.turn)
        for (const auto& s : {"--turn", "203.0.113.3:3478", "--turn-user", "juice", "--turn-password-file"})
            args.emplace_back(s);
    if (c.turn) args.push_back(lab.turn_pass().string());
    Juiced a("alice", dir.path(), boot.address(), net, args), b("bob", dir.path(), boot.address(), net, args);
    a.wrapper = lab.exec("a");
    a.link_bind = "192.168.1.10";
    b.wrapper = lab.exec("b");
    b.link_bind = "192.168.1.20";
    REQUIRE(a.start());
    REQUIRE(b.start());
    // The dialer is the lower id; watch its events.
    Juiced& dialer = a.id() < b.id() ? a : b;
    Juiced& other = a.id() < b.id() ? b : a;
    // JUICE_NAT_LOGS=DIR keeps the case's full logs there, for a human.
    struct KeepLogs {
        Juiced &dialer, &other;
        std::filesystem::path turn_log;
        ~KeepLogs() {
            const char* keep = std::getenv("JUICE_NAT_LOGS");
            if (!keep) return;
            std::ofstream(std::string(keep) + "/dialer.log") << dialer.log();
            std::ofstream(std::string(keep) + "/other.log") << other.log();
            std::error_code ec;
            for (const auto& f : {turn_log, turn_log.parent_path().parent_path() / "rec.wav",
                                  turn_log.parent_path().parent_path() / "speech.wav"})
                std::filesystem::copy_file(f, std::string(keep) + "/" + f.filename().string(),
                                           std::filesystem::copy_options::overwrite_existing, ec);
        }
    } keep_logs{dialer, other, dir.path() / "turn" / "turn.log"};
    EventWatcher ed(dialer), eo(other);

    // Contacts through the inbox (no link is needed for that).
    a.call("contacts.add", {{"id", b.id()}, {"message", "hi"}});
    REQUIRE(wait_until([&] { return contact_entry(b, a.id())["state"] == "pending_in"; }, 30s));
    b.call("contacts.accept", {{"id", a.id()}});
    auto t_online = eo.wait_for(
        [&](const json& e) {
            return e["type"] == "presence" && e["id"] == dialer.id() && e["online"] == true;
        },
        30s);
    auto t0 = clk::now();
    REQUIRE(t_online);

    if (c.expect == "fail") {
        auto failed = ed.wait_for(
            [&](const json& e) { return e["type"] == "link.failed" && e["id"] == other.id(); }, 60s);
        REQUIRE(failed);
        WARN(name << ": link.failed '" << (*failed)["reason"] << "' after " << ms_since(t0) << " ms");
        CHECK((*failed)["reason"] == "no_path");
        CHECK(contact_entry(dialer, other.id())["linked"] == false);
        CHECK(contact_entry(dialer, other.id())["link_error"] == "no_path");
        check_doctor(dialer, &dialer == &a ? c.a_nat : c.b_nat, c, "not linked: no_path", dir.path());
        // Messages still go through the DHT inbox.
        auto m = dialer.call("messages.send", {{"to", other.id()}, {"text", "through the inbox"}});
        REQUIRE(ed.wait_for(
            [&](const json& e) {
                return e["type"] == "message.state" && e["msg_id"] == m["msg_id"] &&
                       e["state"] == "delivered";
            },
            60s));
        return;
    }

    auto up = ed.wait_for(
        [&](const json& e) { return e["type"] == "link" && e["id"] == other.id() && e["up"] == true; }, 60s);
    if (!up) {
        auto lines = [](const std::string& log, const std::string& what) {
            std::string out;
            std::istringstream in(log);
            for (std::string l; std::getline(in, l);)
                if (l.find(what) != std::string::npos) out += l + "\n";
            return out;
        };
        std::ifstream t(dir.path() / "turn" / "turn.log");
        std::string turn_log((std::istreambuf_iterator<char>(t)), {});
        WARN("dialer:\n"
             << lines(dialer.log(), std::getenv("NAT_GREP") ? std::getenv("NAT_GREP") : "ice") << "other:\n"
             << lines(other.log(), std::getenv("NAT_GREP") ? std::getenv("NAT_GREP") : "ice")
             << "turn log tail:\n"
             << turn_log.substr(turn_log.size() > 3000 ? turn_log.size() - 3000 : 0));
    }
    REQUIRE(up);
    const double took = ms_since(t0);
    const std::string path = (*up)["path"];
    WARN(name << ": linked over '" << path << "' (" << (*up)["local"] << " -> " << (*up)["remote"] << ") "
              << took << " ms after the contact came online"
              << ", ICE setup " << up->value("setup_ms", -1) << " ms");
    if (c.expect == "direct") CHECK((path == "srflx" || path == "prflx" || path == "host"));
    if (c.expect == "relay") CHECK(path == "relay");
    CHECK(path != "tcp");
    CHECK(contact_entry(dialer, other.id())["link_path"] == path);
    auto info = dialer.call("node.info");
    REQUIRE(info["links"].size() == 1);
    CHECK(info["links"][0]["path"] == path);
    check_doctor(a, c.a_nat, c, "linked over " + path, dir.path());
    check_doctor(b, c.b_nat, c, "linked over ", dir.path());

    // Messages both ways over the link.
    for (auto* from : {&dialer, &other}) {
        Juiced& to = from == &dialer ? other : dialer;
        EventWatcher ef(*from);
        for (int i = 0; i < 5; ++i) {
            auto m = from->call("messages.send", {{"to", to.id()}, {"text", "nat " + std::to_string(i)}});
            REQUIRE(ef.wait_for(
                [&](const json& e) {
                    return e["type"] == "message.state" && e["msg_id"] == m["msg_id"] &&
                           e["state"] == "delivered";
                },
                20s));
        }
    }
    CHECK(a.call("messages.history", {{"with", b.id()}}).size() == 10);

    // A short call: speech from the dialer, recorded on the other side. Its
    // audio takes an ICE session of its own, through the same kind of path.
    auto speech = make_speech(dir.path());
    const auto turn0 = lab.turn_bytes();
    const auto tc = clk::now();
    auto r = speech_call(dialer, other, speech, dir.path() / "rec.wav");
    const double secs = ms_since(tc) / 1000;
    const auto relayed = lab.turn_bytes() - turn0;
    const double rtp =
        (r.caller_stats.value("bytes_sent", 0.0) + r.callee_stats.value("bytes_sent", 0.0)) / secs;
    WARN(name << ": call audio over '" << r.caller_stats["path"] << "' (" << r.caller_stats["remote"] << "), "
              << secs << " s; SRTP both ways " << rtp / 1000 << " KB/s; the TURN server's interface carried "
              << relayed / secs / 1000 << " KB/s (" << relayed / 1000 << " KB); " << audio::describe(r.cmp));
    CHECK(audio::check(r.cmp, audio::k_clean_call) == "");
    if (c.expect == "relay") CHECK(r.caller_stats["path"] == "relay");
    if (c.expect == "direct") CHECK(r.caller_stats["path"] != "relay");
    CHECK(a.stop() == 0);
    CHECK(b.stop() == 0);
}

}  // namespace

TEST_CASE("nat: direct through cone NATs, relayed through symmetric ones, a clear failure without a path",
          "[.][nat]") {
    if (::geteuid() != 0) {
        WARN("not root: the NAT lab needs ip netns and iptables; skipped");
        return;
    }
    // A port-restricted cone cannot take a check from a symmetric NAT's
    // unpredictable port, so cone/symmetric ends relayed too.
    // cone/cone with TURN: a relay is there, and must lose to the direct path.
    auto c =
        GENERATE(Case{"cone", "cone", true, false, "direct"}, Case{"cone", "cone", false, false, "direct"},
                 Case{"cone", "cone", false, true, "direct"}, Case{"cone", "symmetric", false, true, "relay"},
                 Case{"symmetric", "symmetric", false, true, "relay"},
                 Case{"symmetric", "symmetric", true, false, "fail"});
    run_case(c);
}
