// Voice calls between real juiced daemons on loopback: signalling (ringing,
// accept, reject, busy, timeout, no voice, no audio device, link lost), and
// real audio: A plays speech made with espeak-ng, B records it, and the
// recording must be speech aligned with the source, directly and through a
// relay that drops 10% of the packets and adds jitter. A tshark capture of the
// call must decode as RTP whose payload is not plain Opus.
#include "audio_compare.hpp"
#include "call_flow.hpp"
#include "harness.hpp"
#include "udp_relay.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

using namespace juice::test;
using json = nlohmann::json;
namespace fs = std::filesystem;

TEST_CASE("calls: ring, reject, accept, hang up, busy, timeout", "[daemon][calls]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    // Over a TCP link (--ice off): the link drop below is a kill -9, which a
    // TCP link sees at once. Over ICE the link keepalive notices it within
    // 45 s; calls over ICE are tested in test_ice.cpp and the NAT lab.
    std::vector<std::string> args{"--audio", "null", "--ring-timeout", "2", "--ice", "off"};
    Juiced a("alice", dir.path(), boot, args), b("bob", dir.path(), boot, args),
        c("carol", dir.path(), boot, args);
    for (auto* x : {&a, &b, &c}) REQUIRE(x->start());
    befriend(a, b);
    befriend(c, b);
    EventWatcher ea(a, {"call.state"}), eb(b, {"call.state"}), ec(c, {"call.state"});

    // Rejected.
    auto id = a.call("calls.start", {{"to", b.id()}})["call_id"].get<std::string>();
    auto ring = ea.wait_for(call_state("ringing_out"), 5s);
    REQUIRE(ring);
    CHECK((*ring)["peer"] == b.id());
    auto in = eb.wait_for(call_state("ringing_in"), 5s);
    REQUIRE(in);
    CHECK((*in)["call_id"] == id);
    CHECK((*in)["peer"] == a.id());
    CHECK(call_of(b)["state"] == "ringing_in");
    b.call("calls.reject", {{"call_id", id}});
    CHECK(ea.wait_for(call_state("ended", "rejected"), 5s));
    CHECK(eb.wait_for(call_state("ended", "rejected"), 5s));
    CHECK(a.call("calls.list").empty());

    // Accepted: media flows both ways, then A hangs up.
    id = a.call("calls.start", {{"to", b.id()}})["call_id"].get<std::string>();
    REQUIRE(eb.wait_for(call_state("ringing_in"), 5s));
    b.call("calls.accept", {{"call_id", id}});
    REQUIRE(ea.wait_for(call_state("active"), 5s));
    REQUIRE(eb.wait_for(call_state("active"), 5s));
    REQUIRE(wait_until(
        [&] {
            auto sa = call_of(a)["stats"], sb = call_of(b)["stats"];
            return sa.value("packets_received", 0) > 50 && sb.value("packets_received", 0) > 50 &&
                   sa.value("rtt_ms", -1.0) >= 0;
        },
        10s, 50ms));
    auto stats = call_of(a)["stats"];
    CHECK(stats["rejected"] == 0);
    CHECK(stats["loss_in"].get<double>() < 0.05);
    CHECK(stats["bitrate"].get<int>() > 0);

    // Carol calls Bob while he is in a call: busy, and the call goes on.
    auto err = c.client().call("calls.start", {{"to", b.id()}}, 5s);
    REQUIRE(err);
    REQUIRE(err->ok());
    CHECK(ec.wait_for(call_state("ended", "busy"), 5s));
    CHECK(call_of(b)["state"] == "active");
    // And Alice cannot start a second call.
    auto second = a.client().call("calls.start", {{"to", b.id()}}, 5s);
    REQUIRE(second);
    REQUIRE_FALSE(second->ok());
    CHECK(second->error->reason == "busy");

    a.call("calls.hangup", {{"call_id", id}});
    CHECK(eb.wait_for(call_state("ended", "hangup"), 5s));
    CHECK(ea.wait_for(call_state("ended", "hangup"), 5s));

    // Unanswered: both sides end with "timeout" after --ring-timeout.
    id = c.call("calls.start", {{"to", b.id()}})["call_id"].get<std::string>();
    REQUIRE(eb.wait_for(call_state("ringing_in"), 5s));
    CHECK(ec.wait_for(call_state("ended", "timeout"), 10s));
    CHECK(eb.wait_for(call_state("ended", "timeout"), 10s));

    // Bad calls.
    auto bad = a.client().call("calls.accept", {{"call_id", std::string(32, '0')}}, 5s);
    REQUIRE(bad);
    REQUIRE_FALSE(bad->ok());
    CHECK(bad->error->reason == "unknown_call");
    bad = a.client().call("calls.start", {{"to", b.id()}, {"audio_in", 5}}, 5s);
    REQUIRE(bad);
    REQUIRE_FALSE(bad->ok());
    CHECK(bad->error->reason == "invalid_params");
    bad = a.client().call("calls.start",
                          {{"to", b.id()}, {"audio_in", (dir.path() / "missing.wav").string()}}, 5s);
    REQUIRE(bad);
    REQUIRE_FALSE(bad->ok());
    CHECK(bad->error->reason == "no_audio_device");
    CHECK(bad->error->message.find("missing.wav") != std::string::npos);
    CHECK(a.call("calls.list").empty());

    // The same through the CLI: juice dial / calls / answer / hangup.
    auto cli = [&](Juiced& d, std::vector<std::string> words, const std::string& log) {
        words.insert(words.begin(), {"--api-socket", d.socket().string()});
        Process p(JUICE_CLI_PATH, words, dir.path() / log);
        int rc = p.wait(15s);
        INFO(log << ": " << p.log());
        CHECK(rc == 0);
        return p.log();
    };
    auto out = cli(a, {"dial", "bob"}, "dial.log");
    CHECK(out.find("calling bob") != std::string::npos);
    REQUIRE(eb.wait_for(call_state("ringing_in"), 5s));
    CHECK(cli(b, {"calls"}, "calls.log").find("ringing_in") != std::string::npos);
    CHECK(cli(b, {"answer"}, "answer.log").find("answered call") != std::string::npos);
    REQUIRE(ea.wait_for(call_state("active"), 5s));
    REQUIRE(wait_until([&] { return call_of(b)["stats"].value("packets_received", 0) > 50; }, 10s, 50ms));
    CHECK(cli(b, {"calls"}, "calls2.log").find("loss in") != std::string::npos);
    CHECK(cli(a, {"hangup"}, "hangup.log").find("ended call") != std::string::npos);
    CHECK(eb.wait_for(call_state("ended", "hangup"), 5s));
    CHECK(ea.wait_for(call_state("ended", "hangup"), 5s));

    // The link drops during a call: both ends say link_lost.
    id = a.call("calls.start", {{"to", b.id()}})["call_id"].get<std::string>();
    REQUIRE(eb.wait_for(call_state("ringing_in"), 5s));
    b.call("calls.accept", {{"call_id", id}});
    REQUIRE(ea.wait_for(call_state("active"), 5s));
    b.kill9();
    CHECK(ea.wait_for(call_state("ended", "link_lost"), 10s));
    CHECK(a.call("calls.list").empty());
    for (auto* x : {&a, &c}) CHECK(x->stop() == 0);
}

TEST_CASE("calls: no voice capability, no audio device", "[daemon][calls]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    // Bob runs --no-voice; Alice has no sound server (PULSE_SERVER points
    // nowhere) and no WAV default: --audio auto.
    Juiced a("alice", dir.path(), boot), b("bob", dir.path(), boot, {"--no-voice", "--audio", "null"}),
        c("carol", dir.path(), boot, {"--audio", "null"});
    ::setenv("PULSE_SERVER", "unix:/nonexistent/juice-test", 1);
    for (auto* x : {&a, &b, &c}) REQUIRE(x->start());
    ::unsetenv("PULSE_SERVER");
    befriend(a, b);
    befriend(a, c);
    REQUIRE(wait_until([&] { return !contact_entry(a, b.id())["caps"].empty(); }, 10s));
    CHECK(contact_entry(a, c.id())["caps"].dump().find("voice") != std::string::npos);

    auto r = a.client().call("calls.start", {{"to", b.id()}}, 5s);
    REQUIRE(r);
    REQUIRE_FALSE(r->ok());
    CHECK(r->error->reason == "no_voice");
    CHECK(r->error->message.find("voice") != std::string::npos);

    r = a.client().call("calls.start", {{"to", c.id()}}, 5s);
    REQUIRE(r);
    REQUIRE_FALSE(r->ok());
    CHECK(r->error->reason == "no_audio_device");
    INFO(r->error->message);
    CHECK(r->error->message.find("audio_in") != std::string::npos);  // says what to do instead

    // Carol calls Alice: Alice can ring, but accepting without a device ends
    // the call on both sides with no_audio_device, and Alice stays up.
    EventWatcher ea(a, {"call.state"}), ec(c, {"call.state"});
    auto id = c.call("calls.start", {{"to", a.id()}})["call_id"].get<std::string>();
    REQUIRE(ea.wait_for(call_state("ringing_in"), 5s));
    auto acc = a.client().call("calls.accept", {{"call_id", id}}, 5s);
    REQUIRE(acc);
    REQUIRE_FALSE(acc->ok());
    CHECK(acc->error->reason == "no_audio_device");
    CHECK(ec.wait_for(call_state("ended", "no_audio_device"), 5s));
    CHECK(ea.wait_for(call_state("ended", "no_audio_device"), 5s));
    // With WAV files instead, the call works.
    auto tone = dir.path() / "tone.wav", rec = dir.path() / "alice-hears.wav";
    REQUIRE(run_shell("sox -n -r 16000 -c 2 '" + tone.string() + "' synth 1 sine 440"));
    id = c.call("calls.start", {{"to", a.id()}})["call_id"].get<std::string>();
    REQUIRE(ea.wait_for(call_state("ringing_in"), 5s));
    a.call("calls.accept", {{"call_id", id}, {"audio_out", rec.string()}, {"audio_in", tone.string()}});
    REQUIRE(ec.wait_for(call_state("active"), 5s));
    REQUIRE(wait_until([&] { return call_of(c)["stats"].value("packets_received", 0) > 25; }, 10s, 50ms));
    c.call("calls.hangup", {{"call_id", id}});
    CHECK(ea.wait_for(call_state("ended", "hangup"), 5s));
    CHECK(fs::file_size(rec) > 44 + 48000);  // > 0.5 s of 16-bit audio
    for (auto* x : {&a, &b, &c}) CHECK(x->stop() == 0);
}

TEST_CASE("calls: speech arrives intact and aligned, directly and through 10% loss with jitter",
          "[daemon][calls][audio]") {
    TempDir dir;
    DhtBootstrap boot(random_network_id(), dir.path());
    auto speech = make_speech(dir.path());
    // Bob's media port is fixed so the capture and the relay can find it;
    // in the second call Bob announces the relay instead of himself.
    int bob_media = free_udp_port();
    // The UDP media path of a TCP link (--ice off): the audio goes to the
    // port each side names, so a relay can stand in for Bob's.
    Juiced a("alice", dir.path(), boot, {"--audio", "null", "--ice", "off"}),
        b("bob", dir.path(), boot,
          {"--audio", "null", "--ice", "off", "--media-port", std::to_string(bob_media)});
    REQUIRE(a.start());
    REQUIRE(b.start());
    befriend(a, b);

    // 1. Direct, with a packet capture of Bob's media port.
    bool capture = ::geteuid() == 0 && run_shell("command -v tshark >/dev/null");
    auto pcap = dir.path() / "call.pcap";
    std::unique_ptr<Process> dumpcap;
    if (capture) {
        dumpcap = std::make_unique<Process>(
            "/usr/bin/tshark",
            std::vector<std::string>{"-i", "lo", "-f", "udp port " + std::to_string(bob_media), "-w",
                                     pcap.string()},
            dir.path() / "tshark.log");
        REQUIRE(wait_until([&] { return dumpcap->log().find("Capturing on") != std::string::npos; }, 10s));
    } else {
        WARN("not root or no tshark: the packet capture check is skipped");
    }
    auto direct = speech_call(a, b, speech, dir.path() / "direct.wav");
    // Thresholds calibrated in audio_compare.hpp: a clean call must match
    // the source as closely as Opus alone does (envelope correlation >= 0.9;
    // unrelated speech scores <= 0.48, silence and noise lower).
    CHECK(audio::check(direct.cmp, audio::k_clean_call) == "");
    CHECK(direct.callee_stats["frames_concealed"].get<int>() < 10);

    if (capture) {
        dumpcap->signal(SIGINT);
        CHECK(dumpcap->wait(10s) >= 0);
        // Decode Bob's port as RTP: version, payload type, SSRC, payload.
        auto out = shell_output(
            "tshark -r '" + pcap.string() + "' -d udp.port==" + std::to_string(bob_media) +
            ",rtp -Y rtp -T fields -e rtp.version -e rtp.p_type -e rtp.ssrc -e rtp.payload 2>/dev/null");
        std::istringstream lines(out);
        std::string line;
        std::size_t rtp = 0, opus_toc = 0;
        std::set<std::string> ssrcs;
        while (std::getline(lines, line)) {
            std::istringstream f(line);
            std::string version, pt, ssrc, payload;
            if (!(f >> version >> pt >> ssrc >> payload)) continue;
            if (version != "2" || pt != "111") continue;
            ++rtp;
            ssrcs.insert(ssrc);
            // Plain Opus from our encoder starts with a TOC byte for one
            // 20 ms mono frame (RFC 6716 §3.1: config c with c % 4 == 1 for
            // SILK/hybrid or 3 for CELT, s = 0, code 0): 9 of the 256 values.
            // Under SRTP the first payload byte is keystream: ~3.5% match.
            auto first = std::stoi(payload.substr(0, 2), nullptr, 16);
            int config = first >> 3;
            bool twenty_ms = (config < 12 && config % 4 == 1) || config == 13 || config == 15 ||
                             (config >= 16 && config % 4 == 3);
            if (twenty_ms && (first & 0x07) == 0) ++opus_toc;
        }
        INFO(out.substr(0, 2000));
        // A->B speech for ~6 s at 50 packets/s, plus B->A silence.
        CHECK(rtp > 300);
        CHECK(ssrcs.size() == 2);
        CHECK(static_cast<double>(opus_toc) / static_cast<double>(std::max<std::size_t>(rtp, 1)) < 0.15);
    }

    // 2. Through a relay that drops 10% and adds up to 30 ms of jitter on
    // the way to Bob. Bob restarts announcing the relay.
    REQUIRE(b.stop() == 0);
    UdpRelayOptions ro;
    ro.target_port = static_cast<std::uint16_t>(bob_media);
    ro.loss = 0.10;
    ro.jitter = 30ms;
    ro.seed = 7;
    UdpRelay relay(ro);
    Juiced b2("bob", dir.path(), boot,
              {"--audio", "null", "--ice", "off", "--media-port", std::to_string(bob_media),
               "--media-announce", "127.0.0.1:" + std::to_string(relay.port())});
    // Same data dir as b: the same identity, contacts and history.
    REQUIRE(b2.data_dir() == b.data_dir());
    REQUIRE(b2.start());
    REQUIRE(wait_until([&] { return contact_entry(a, b2.id())["linked"] == true; }, 20s));
    auto lossy = speech_call(a, b2, speech, dir.path() / "lossy.wav");
    auto rs = relay.stats();
    INFO("relay forwarded " << rs.to_target.forwarded << ", dropped " << rs.to_target.dropped_loss);
    CHECK(rs.to_target.dropped_loss > 20);
    double loss_in = lossy.callee_stats["loss_in"].get<double>();
    CHECK(loss_in > 0.05);
    CHECK(loss_in < 0.16);
    CHECK(lossy.callee_stats["frames_recovered"].get<int>() > 0);  // in-band FEC at work
    CHECK(lossy.caller_stats["expected_loss"].get<int>() > 0);     // Alice heard about the loss
    // Through loss and jitter the jitter buffer may stretch playout, so the
    // segment-wise alignment judges it (matching speech >= 0.70 in the
    // worst calibrated case, unrelated <= 0.52).
    CHECK(audio::check(lossy.cmp, audio::k_lossy_call) == "");
    CHECK(lossy.cmp.piecewise.mean_correlation > 0.8);  // measured 0.97: FEC and PLC keep it close
    for (auto* x : {&a, &b2}) CHECK(x->stop() == 0);
}
