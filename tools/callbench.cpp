// juice-callbench: measures the call media pipeline (node/media/session.hpp)
// on loopback and prints JSON on stdout (progress on stderr); with --plot DIR
// it also writes a gnuplot PNG of quality against loss. It asserts nothing.
//
// Two real MediaSessions in this process — the same code juiced runs per
// call: Opus, RTP, SRTP (libsrtp2), UDP sockets, speexdsp's jitter buffer,
// RTCP reports and adaptation — talk over 127.0.0.1. Caller A plays a speech
// file (espeak-ng, or --speech); B records into memory. Between them (A->B)
// sits the test kit's UdpRelay, which drops and delays packets.
//
// Measured:
//   delay    capture of a frame at A -> playout of that frame at B (the
//            frame's RTP timestamp links the two; both sessions share this
//            process's steady clock). Covers encode, SRTP, the network hop,
//            the jitter buffer, decode and the 20 ms playout clock; not the
//            sound card's own buffers.
//   cpu      process CPU time / wall time while one call runs both ways
//            (no relay): the cost of one call on one core.
//   quality  B's recording against (a) the loss-free decode (the same run
//            with loss 0, jitter 0) and (b) the source, as the Pearson
//            correlation of 10 ms RMS envelopes at the best lag, and as
//            segmental SNR. See docs/MEASUREMENTS.md for why envelopes.
#include "audio_compare.hpp"
#include "harness.hpp"
#include "juice/node/media/session.hpp"
#include "udp_relay.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <thread>

using namespace juice;
using namespace juice::node::media;
using json = nlohmann::json;
using clk = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

void progress(const std::string& s) {
    std::cerr << "juice-callbench: " << s << std::endl;
}

double cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

class MemorySink : public AudioSink {
public:
    explicit MemorySink(std::shared_ptr<std::vector<float>> out) : m_out(std::move(out)) {}
    void write(std::span<const std::int16_t, k_frame_samples> in) override {
        for (auto s : in) m_out->push_back(static_cast<float>(s) / 32768.0f);
    }

private:
    std::shared_ptr<std::vector<float>> m_out;
};

struct Run {
    std::vector<float> recording;
    std::vector<double> delays_ms;
    double cpu_percent = 0;
    CallStats a, b;
};

// One call: A plays `speech` to B through a relay with `loss` and `jitter`
// (no relay when `direct`), until the file has ended plus a second.
Run run_call(const fs::path& speech, double loss, int jitter_ms, std::uint64_t seed, bool direct,
             int bitrate) {
    auto a = MediaSession::bind("127.0.0.1", 0);
    auto b = MediaSession::bind("127.0.0.1", 0);
    if (!a || !b) throw std::runtime_error("cannot bind UDP sockets");
    std::unique_ptr<test::UdpRelay> relay;
    if (!direct) {
        test::UdpRelayOptions ro;
        ro.target_port = (*b)->local_port();
        ro.loss = loss;
        ro.jitter = std::chrono::milliseconds(jitter_ms);
        ro.seed = seed;
        relay = std::make_unique<test::UdpRelay>(ro);
    }
    Bytes keys(k_srtp_keying_bytes);
    std::mt19937_64 rng(seed);
    for (auto& k : keys) k = static_cast<std::uint8_t>(rng());

    // Written by the media threads, read after stop() joined them.
    std::map<std::uint32_t, clk::time_point> captured;
    std::vector<std::pair<std::uint32_t, clk::time_point>> played;
    auto recording = std::make_shared<std::vector<float>>();

    SessionOptions oa;
    oa.tls_client = true;
    oa.keying_material = keys;
    oa.remote = {asio::ip::make_address("127.0.0.1"), relay ? relay->port() : (*b)->local_port()};
    auto src = open_wav_source(speech.string());
    if (!src) throw std::runtime_error(src.error().what());
    oa.source = std::move(*src);
    oa.bitrate = bitrate;
    oa.on_capture = [&](std::uint32_t ts, clk::time_point t) { captured[ts] = t; };
    SessionOptions ob;
    ob.tls_client = false;
    ob.keying_material = keys;
    ob.remote = {asio::ip::make_address("127.0.0.1"), (*a)->local_port()};
    ob.sink = std::make_unique<MemorySink>(recording);
    ob.bitrate = bitrate;
    ob.on_playout = [&](std::uint32_t ts, clk::time_point t, Playout kind) {
        if (kind != Playout::concealed) played.emplace_back(ts, t);
    };

    double cpu0 = cpu_seconds();
    auto t0 = clk::now();
    if (auto r = (*b)->start(std::move(ob)); !r) throw std::runtime_error(r.error().what());
    if (auto r = (*a)->start(std::move(oa)); !r) throw std::runtime_error(r.error().what());
    auto deadline = clk::now() + std::chrono::minutes(5);
    while (!(*a)->stats().source_ended && clk::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    std::this_thread::sleep_for(std::chrono::seconds(1));
    Run run;
    run.a = (*a)->stats();
    run.b = (*b)->stats();
    (*a)->stop();
    (*b)->stop();
    double wall = std::chrono::duration<double>(clk::now() - t0).count();
    run.cpu_percent = 100.0 * (cpu_seconds() - cpu0) / wall;
    for (const auto& [ts, t] : played) {
        auto it = captured.find(ts);
        if (it != captured.end())
            run.delays_ms.push_back(std::chrono::duration<double, std::milli>(t - it->second).count());
    }
    run.recording = std::move(*recording);
    return run;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : s + ",") {
        if (c == ',') {
            if (!cur.empty()) out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"juice-callbench: delay, CPU and quality of the call media pipeline (JSON on stdout)"};
    std::string speech_arg, losses = "0,5,10,20", jitters = "0,30", plot_dir;
    int repeats = 3, bitrate = 32000;
    app.add_option("--speech", speech_arg, "a WAV file to play (default: ~20 s made with espeak-ng)");
    app.add_option("--loss", losses, "loss percentages to test, comma-separated")->capture_default_str();
    app.add_option("--jitter", jitters, "jitter values in ms, comma-separated")->capture_default_str();
    app.add_option("--repeats", repeats, "runs per condition (different loss patterns)")
        ->check(CLI::Range(1, 20))
        ->capture_default_str();
    app.add_option("--bitrate", bitrate, "Opus bitrate on a clean path")->capture_default_str();
    app.add_option("--plot", plot_dir, "write quality.dat and quality.png (gnuplot) into this directory");
    CLI11_PARSE(app, argc, argv);

    json out{{"tool", "juice-callbench"}};
    try {
        test::TempDir dir;
        fs::path speech = speech_arg;
        if (speech.empty()) {
            progress("making speech with espeak-ng");
            speech = dir.path() / "speech.wav";
            test::audio::make_speech(
                speech,
                "The quick brown fox jumps over the lazy dog. Juice is a peer to peer buddy chat. "
                "Each user runs a small daemon that publishes a signed presence record into a distributed "
                "hash table, finds its buddies there, and connects straight to them. Calls use the Opus "
                "codec over secure RTP, with forward error correction and an adaptive jitter buffer. "
                "One, two, three, four, five, six, seven, eight, nine, ten.");
        }
        int rate = 0;
        auto source = test::audio::read_mono(speech, &rate);
        out["speech_seconds"] = static_cast<double>(source.size()) / rate;

        // CPU per call is noisy on a VM (wake-ups cost more than the codec):
        // the median of `repeats` direct calls.
        std::vector<double> cpu;
        Run direct;
        for (int r = 0; r < repeats; ++r) {
            progress("direct call " + std::to_string(r + 1) + ": delay and CPU");
            direct = run_call(speech, 0, 0, 1, true, bitrate);
            cpu.push_back(direct.cpu_percent);
        }
        std::sort(cpu.begin(), cpu.end());
        out["direct"] = {{"delay", test::summarize_ms(direct.delays_ms)},
                         {"cpu_percent_of_one_core", cpu[cpu.size() / 2]},
                         {"cpu_percent_runs", cpu},
                         {"packets_sent", direct.a.packets_sent},
                         {"bytes_sent", direct.a.bytes_sent},
                         {"kbit_per_s_on_wire", direct.a.bytes_sent * 8.0 / 1000.0 /
                                                    (static_cast<double>(source.size()) / rate + 1)}};

        progress("loss-free reference decode");
        auto reference = run_call(speech, 0, 0, 1, false, bitrate).recording;
        auto ref_vs_src = test::audio::compare(source, reference, 48000, 2000);
        out["reference_vs_source"] = {{"envelope_correlation", ref_vs_src.alignment.correlation},
                                      {"segmental_snr_db", ref_vs_src.segmental_snr_db}};

        json grid = json::array();
        std::ofstream dat;
        if (!plot_dir.empty()) {
            fs::create_directories(plot_dir);
            dat.open(fs::path(plot_dir) / "quality.dat");
            dat << "# loss_percent jitter_ms corr_vs_lossfree corr_vs_source segsnr_vs_lossfree "
                   "delay_p95_ms\n";
        }
        for (const auto& jtxt : split(jitters)) {
            int jitter = std::stoi(jtxt);
            for (const auto& ltxt : split(losses)) {
                double loss = std::stod(ltxt) / 100.0;
                std::vector<double> corr_ref, corr_src, snr_ref, delays;
                double loss_seen = 0, recovered = 0, concealed = 0, buffer = 0;
                for (int r = 0; r < repeats; ++r) {
                    progress("loss " + ltxt + "%, jitter " + jtxt + " ms, run " + std::to_string(r + 1));
                    auto run =
                        run_call(speech, loss, jitter, 100 + static_cast<std::uint64_t>(r), false, bitrate);
                    auto vs_ref = test::audio::compare(reference, run.recording, 48000, 2000);
                    auto vs_src = test::audio::compare(source, run.recording, 48000, 2000);
                    corr_ref.push_back(vs_ref.alignment.correlation);
                    corr_src.push_back(vs_src.alignment.correlation);
                    snr_ref.push_back(vs_ref.segmental_snr_db);
                    delays.insert(delays.end(), run.delays_ms.begin(), run.delays_ms.end());
                    loss_seen += run.b.loss_in / repeats;
                    recovered += static_cast<double>(run.b.frames_recovered) / repeats;
                    concealed += static_cast<double>(run.b.frames_concealed) / repeats;
                    buffer += run.b.buffer_ms / repeats;
                }
                auto mean = [](const std::vector<double>& v) {
                    double s = 0;
                    for (double x : v) s += x;
                    return v.empty() ? 0 : s / static_cast<double>(v.size());
                };
                auto d = test::summarize_ms(delays);
                json row{{"loss_percent", std::stod(ltxt)},
                         {"jitter_ms", jitter},
                         {"loss_seen", loss_seen},
                         {"frames_recovered_fec", recovered},
                         {"frames_concealed", concealed},
                         {"buffer_ms", buffer},
                         {"corr_vs_lossfree", mean(corr_ref)},
                         {"corr_vs_source", mean(corr_src)},
                         {"corr_vs_source_relative", mean(corr_src) / ref_vs_src.alignment.correlation},
                         {"segsnr_vs_lossfree_db", mean(snr_ref)},
                         {"delay", d}};
                grid.push_back(row);
                if (dat)
                    dat << ltxt << ' ' << jitter << ' ' << mean(corr_ref) << ' ' << mean(corr_src) << ' '
                        << mean(snr_ref) << ' ' << d.value("p95_ms", 0.0) << '\n';
            }
            if (dat) dat << "\n\n";  // a gnuplot data block per jitter value
        }
        out["quality"] = grid;
        if (dat) {
            dat.close();
            auto png = fs::path(plot_dir) / "call-quality.png";
            std::ofstream gp(dir.path() / "plot.gp");
            gp << "set terminal pngcairo size 800,500\nset output '" << png.string() << "'\n"
               << "set title 'juice call quality against packet loss (Opus 32 kbit/s, FEC, speexdsp jitter "
                  "buffer)'\n"
               << "set xlabel 'packet loss (%)'\nset ylabel 'envelope correlation with the loss-free "
                  "decode'\n"
               << "set yrange [0.5:1.02]\nset grid\nset key bottom left\n"
               << "plot '" << (fs::path(plot_dir) / "quality.dat").string()
               << "' index 0 using 1:3 with linespoints lw 2 title 'jitter " << split(jitters).at(0)
               << " ms'";
            if (split(jitters).size() > 1)
                gp << ", '' index 1 using 1:3 with linespoints lw 2 title 'jitter " << split(jitters).at(1)
                   << " ms'";
            gp << "\n";
            gp.close();
            if (!test::run_shell("gnuplot '" + (dir.path() / "plot.gp").string() + "'"))
                progress("gnuplot failed (Debian package gnuplot-nox); the data is in quality.dat");
            else
                out["plot"] = png.string();
        }
    } catch (const std::exception& e) {
        std::cerr << "juice-callbench: " << e.what() << "\n";
        out["error"] = e.what();
        std::cout << out.dump(2) << std::endl;
        return 1;
    }
    std::cout << out.dump(2) << std::endl;
    return 0;
}
