// A call flow for integration tests: A calls B with speech made by
// espeak-ng, B records it, and the recording is compared with the source.
// Used by the loopback call tests, the ICE tests and the NAT lab.
#pragma once

#include "audio_compare.hpp"
#include "harness.hpp"

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

namespace juice::test {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

inline auto call_state(const std::string& state, const std::string& reason = {}) {
    return [=](const json& e) {
        return e["type"] == "call.state" && e["state"] == state &&
               (reason.empty() || e.value("reason", std::string()) == reason);
    };
}

// About 12 s of English speech as a 48 kHz mono WAV.
inline fs::path make_speech(const fs::path& dir) {
    auto out = dir / "speech.wav";
    audio::make_speech(out,
                       "Hello Bob, this is Alice calling from juice. The weather is lovely today, and the "
                       "birds are singing in the garden. Can you hear me clearly? Seven, eight, nine, ten.");
    return out;
}

inline json call_of(Juiced& d) {
    auto list = d.call("calls.list");
    return list.empty() ? json() : list[0];
}

struct CallResult {
    audio::Comparison cmp;  // the recording against the source
    json caller_stats, callee_stats;
};

// A calls B (B already a contact), A plays `speech`, B records into `rec`;
// the call ends once A's file has been played (plus a second to drain).
inline CallResult speech_call(Juiced& a, Juiced& b, const fs::path& speech, const fs::path& rec) {
    EventWatcher ea(a, {"call.state"}), eb(b, {"call.state"});
    auto id =
        a.call("calls.start", {{"to", b.id()}, {"audio_in", speech.string()}})["call_id"].get<std::string>();
    REQUIRE(eb.wait_for(call_state("ringing_in"), 10s));
    b.call("calls.accept", {{"call_id", id}, {"audio_out", rec.string()}});
    REQUIRE(ea.wait_for(call_state("active"), 10s));
    REQUIRE(wait_until([&] { return call_of(a)["stats"].value("source_ended", false); }, 30s, 100ms));
    // The speech's tail is still in flight and in B's jitter buffer: wait
    // until B has taken 25 more packets (0.5 s of the silence sent after it).
    auto heard = call_of(b)["stats"].value("packets_received", 0);
    REQUIRE(
        wait_until([&] { return call_of(b)["stats"].value("packets_received", 0) > heard + 25; }, 10s, 50ms));
    CallResult r;
    r.caller_stats = call_of(a)["stats"];
    r.callee_stats = call_of(b)["stats"];
    a.call("calls.hangup", {{"call_id", id}});
    REQUIRE(eb.wait_for(call_state("ended", "hangup"), 10s));
    REQUIRE(ea.wait_for(call_state("ended", "hangup"), 10s));

    int rate_s = 0, rate_r = 0;
    auto src = audio::read_mono(speech, &rate_s);
    auto got = audio::read_mono(rec, &rate_r);
    REQUIRE(rate_s == 48000);
    REQUIRE(rate_r == 48000);
    REQUIRE(got.size() > src.size() / 2);
    // Lag search up to 2 s: the recording starts when B accepts, before A's
    // first frame arrives.
    r.cmp = audio::compare(src, got, rate_r, 2000);
    UNSCOPED_INFO("caller " << r.caller_stats.dump() << "\ncallee " << r.callee_stats.dump());
    UNSCOPED_INFO(audio::describe(r.cmp));
    return r;
}

}  // namespace juice::test
