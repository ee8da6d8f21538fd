#include "audio_compare.hpp"

#include "harness.hpp"

#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

namespace juice::test::audio {

namespace {

int samples_per(int rate, int ms) {
    if (rate <= 0 || ms <= 0)
        throw std::invalid_argument("audio: rate and window/frame length must be positive");
    return std::max(1, static_cast<int>(static_cast<long long>(rate) * ms / 1000));
}

// Mean square of each whole frame of `n` samples (a partial last frame is
// dropped: it would weigh a few samples like a full frame).
std::vector<double> frame_energies(std::span<const float> x, int n) {
    std::vector<double> e(x.size() / static_cast<std::size_t>(n));
    for (std::size_t f = 0; f < e.size(); ++f) {
        double sum = 0;
        for (int i = 0; i < n; ++i) {
            const double v = x[f * static_cast<std::size_t>(n) + static_cast<std::size_t>(i)];
            sum += v * v;
        }
        e[f] = sum / n;
    }
    return e;
}

// The activity threshold on mean-square frame energy (see active_fraction).
double activity_threshold(std::vector<double> energies) {
    if (energies.empty()) return std::numeric_limits<double>::infinity();
    const auto k = static_cast<std::size_t>(0.95 * static_cast<double>(energies.size() - 1));
    std::nth_element(energies.begin(), energies.begin() + static_cast<std::ptrdiff_t>(k), energies.end());
    const double relative = energies[k] * std::pow(10.0, k_activity_relative_db / 10.0);
    const double absolute = std::pow(10.0, k_activity_floor_dbfs / 10.0);
    return std::max(relative, absolute);
}

// Pearson correlation of a[i] and b[i + lag] over the overlap; 0 when either
// side is constant there (no shape to correlate).
double pearson_at(const std::vector<double>& a, const std::vector<double>& b, long lag, long* overlap,
                  long from = 0, long to = -1) {
    const long na = to < 0 ? static_cast<long>(a.size()) : std::min(to, static_cast<long>(a.size()));
    const long nb = static_cast<long>(b.size());
    const long lo = std::max(from, -lag), hi = std::min(na, nb - lag);
    *overlap = std::max(0L, hi - lo);
    if (hi - lo < 2) return 0.0;
    double ma = 0, mb = 0;
    for (long i = lo; i < hi; ++i) {
        ma += a[static_cast<std::size_t>(i)];
        mb += b[static_cast<std::size_t>(i + lag)];
    }
    ma /= static_cast<double>(hi - lo);
    mb /= static_cast<double>(hi - lo);
    double sab = 0, saa = 0, sbb = 0, sa2 = 0, sb2 = 0;
    for (long i = lo; i < hi; ++i) {
        const double x = a[static_cast<std::size_t>(i)], y = b[static_cast<std::size_t>(i + lag)];
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
        sa2 += x * x;
        sb2 += y * y;
    }
    // "Constant" relative to its own level: a steady tone's envelope varies
    // only by rounding, and correlating rounding noise means nothing.
    if (saa <= 1e-9 * sa2 || sbb <= 1e-9 * sb2 || saa <= 0 || sbb <= 0) return 0.0;
    return sab / std::sqrt(saa * sbb);
}

// Whether a linear RMS envelope ever rises above the activity floor. Pearson
// correlation is blind to scale, so without this check the dither of a
// "silent" recording (-90 dBFS) would be correlated like speech.
bool has_signal(std::span<const double> linear_envelope) {
    const double floor = std::pow(10.0, k_activity_floor_dbfs / 20.0);
    return std::any_of(linear_envelope.begin(), linear_envelope.end(), [&](double v) { return v > floor; });
}

std::vector<float> decimate(std::span<const float> x, int factor) {
    std::vector<float> out(x.size() / static_cast<std::size_t>(factor));
    for (std::size_t i = 0; i < out.size(); ++i) {
        float sum = 0;
        for (int k = 0; k < factor; ++k)
            sum += x[i * static_cast<std::size_t>(factor) + static_cast<std::size_t>(k)];
        out[i] = sum / static_cast<float>(factor);
    }
    return out;
}

struct Best {
    bool found = false;
    long lag = 0;
    double r = 0.0;
};

// The lag in [from, to] with the highest normalized cross-correlation of
// a[i] and b[i + lag] over their overlap (at least `min_overlap` samples).
Best best_ncc(std::span<const float> a, std::span<const float> b, long from, long to, long min_overlap) {
    const long na = static_cast<long>(a.size()), nb = static_cast<long>(b.size());
    Best best;
    for (long lag = from; lag <= to; ++lag) {
        const long lo = std::max(0L, -lag), hi = std::min(na, nb - lag);
        if (hi - lo < std::max(1L, min_overlap)) continue;
        double sab = 0, saa = 0, sbb = 0;
        for (long i = lo; i < hi; ++i) {
            const double x = a[static_cast<std::size_t>(i)];
            const double y = b[static_cast<std::size_t>(i + lag)];
            sab += x * y;
            saa += x * x;
            sbb += y * y;
        }
        const double r = (saa > 0 && sbb > 0) ? sab / std::sqrt(saa * sbb) : 0.0;
        if (!best.found || r > best.r) best = Best{true, lag, r};
    }
    return best;
}

void mark(std::string& out, const char* what, double value, const char* op, double limit) {
    char line[160];
    std::snprintf(line, sizeof line, "%s = %.3f, want %s %.3f\n", what, value, op, limit);
    out += line;
}

}  // namespace

std::vector<float> read_mono(const std::filesystem::path& path, int* rate) {
    SF_INFO info{};
    SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
    if (!f) throw std::runtime_error("read_mono: cannot read " + path.string() + ": " + sf_strerror(nullptr));
    if (info.channels <= 0 || info.samplerate <= 0) {
        sf_close(f);
        throw std::runtime_error("read_mono: " + path.string() + " has no audio channels");
    }
    std::vector<float> mono;
    std::vector<float> buf(4096 * static_cast<std::size_t>(info.channels));
    while (true) {
        const sf_count_t got = sf_readf_float(f, buf.data(), 4096);
        if (got <= 0) break;
        for (sf_count_t i = 0; i < got; ++i) {
            double sum = 0;
            for (int c = 0; c < info.channels; ++c)
                sum += buf[static_cast<std::size_t>(i * info.channels + c)];
            mono.push_back(static_cast<float>(sum / info.channels));
        }
    }
    const int err = sf_error(f);
    std::string msg = err ? sf_strerror(f) : "";
    sf_close(f);
    if (err) throw std::runtime_error("read_mono: error reading " + path.string() + ": " + msg);
    if (rate) *rate = info.samplerate;
    return mono;
}

void write_mono(const std::filesystem::path& path, std::span<const float> samples, int rate) {
    SF_INFO info{};
    info.samplerate = rate;
    info.channels = 1;
    info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
    if (!f)
        throw std::runtime_error("write_mono: cannot create " + path.string() + ": " + sf_strerror(nullptr));
    // Clip rather than wrap: libsndfile's float->int16 conversion would
    // otherwise overflow on |x| > 1.
    sf_command(f, SFC_SET_CLIPPING, nullptr, SF_TRUE);
    const sf_count_t n = sf_writef_float(f, samples.data(), static_cast<sf_count_t>(samples.size()));
    sf_close(f);
    if (n != static_cast<sf_count_t>(samples.size()))
        throw std::runtime_error("write_mono: short write to " + path.string());
}

std::vector<double> envelope(std::span<const float> samples, int rate, int window_ms, EnvelopeScale scale) {
    std::vector<double> e = frame_energies(samples, samples_per(rate, window_ms));
    for (double& v : e) {
        if (scale == EnvelopeScale::linear)
            v = std::sqrt(v);
        else
            v = std::max(k_envelope_floor_dbfs, 10.0 * std::log10(std::max(v, 1e-30)));
    }
    return e;
}

Alignment align_envelopes(const std::vector<double>& a, const std::vector<double>& b, int max_lag_windows,
                          int samples_per_window) {
    Alignment best;
    best.correlation = -1.0;
    const long min_overlap = std::max<long>(2, static_cast<long>(std::min(a.size(), b.size())) / 2);
    bool found = false;
    for (long lag = -max_lag_windows; lag <= max_lag_windows; ++lag) {
        long overlap = 0;
        const double r = pearson_at(a, b, lag, &overlap);
        if (overlap < min_overlap) continue;
        // Ties go to the smallest |lag| (the loop visits lags in order, so
        // only a strictly better or equally good but nearer lag wins).
        if (!found || r > best.correlation ||
            (r == best.correlation && std::labs(lag) < std::labs(best.lag_windows))) {
            best.correlation = r;
            best.lag_windows = static_cast<int>(lag);
            found = true;
        }
    }
    if (!found) best = Alignment{};
    best.lag_samples = best.lag_windows * samples_per_window;
    return best;
}

Alignment align(std::span<const float> reference, std::span<const float> test, int rate, int max_lag_ms,
                int window_ms) {
    const int spw = samples_per(rate, window_ms);
    const std::vector<double> env_ref = envelope(reference, rate, window_ms);
    const std::vector<double> env_test = envelope(test, rate, window_ms);
    if (!has_signal(env_ref) || !has_signal(env_test)) return Alignment{};
    Alignment a = align_envelopes(env_ref, env_test, max_lag_ms / window_ms, spw);
    // Refine to the sample: the envelope lag is only good to a window (and
    // segmental SNR needs the waveforms on top of each other). Normalized
    // cross-correlation of the waveforms within +-1 window of the coarse
    // lag: first on both signals decimated by 4 (mean of 4 samples: a crude
    // low-pass that keeps speech's main energy), then at full rate within
    // +-2 decimated samples of that. 1/12 of the work of a full-rate search.
    constexpr int k_decim = 4;
    const std::vector<float> ref_d = decimate(reference, k_decim), test_d = decimate(test, k_decim);
    const long centre_d = a.lag_samples / k_decim;
    const long reach_d = spw / k_decim + 1;
    const Best coarse = best_ncc(ref_d, test_d, centre_d - reach_d, centre_d + reach_d, spw / k_decim);
    const long centre = coarse.found ? coarse.lag * k_decim : a.lag_samples;
    const Best fine = best_ncc(reference, test, centre - 2 * k_decim, centre + 2 * k_decim, spw);
    const long best_lag = fine.found ? fine.lag : a.lag_samples;
    const double best = fine.found ? fine.r : 0.0;
    a.lag_samples = static_cast<int>(best_lag);
    a.waveform_correlation = best;
    // The envelope correlation at the exact lag: at the window-quantized lag
    // the windows straddle different samples (a 37 ms shift scores ~0.98
    // there, 1.000 here). Keep the better of the two: both are correlations
    // at a lag within range.
    const std::vector<float> shifted = aligned_segment(test, a.lag_samples, reference.size());
    long overlap = 0;
    const double exact = pearson_at(env_ref, envelope(shifted, rate, window_ms), 0, &overlap);
    a.correlation = std::max(a.correlation, exact);
    return a;
}

PiecewiseAlignment align_piecewise(std::span<const float> reference, std::span<const float> test, int rate,
                                   int lag_samples, int segment_ms, int max_drift_ms, int window_ms) {
    const int spw = samples_per(rate, window_ms);
    const long seg = std::max(2, segment_ms / window_ms);
    const long drift = std::max(0, max_drift_ms / window_ms);
    const std::vector<double> a = envelope(reference, rate, window_ms);
    // The test cut so that its window `drift + i` sits exactly (to the
    // sample) on the reference's window i at lag_samples: searching from
    // there in whole windows loses nothing to window quantization at the
    // global lag.
    const std::vector<double> b = envelope(aligned_segment(test, lag_samples - static_cast<int>(drift) * spw,
                                                           reference.size() + 2 * drift * spw),
                                           rate, window_ms);
    PiecewiseAlignment p;
    if (!has_signal(b)) return p;
    std::vector<double> rs;
    for (long from = 0; from + seg / 2 <= static_cast<long>(a.size()); from += seg) {
        const long to = std::min(from + seg, static_cast<long>(a.size()));
        // A silent stretch of the reference has no shape to match: skip it.
        if (!has_signal(
                std::span(a).subspan(static_cast<std::size_t>(from), static_cast<std::size_t>(to - from))))
            continue;
        double best = 0.0;  // anticorrelation counts as no match
        long best_lag = drift;
        for (long lag = 0; lag <= 2 * drift; ++lag) {
            long overlap = 0;
            const double r = pearson_at(a, b, lag, &overlap, from, to);
            if (r > best || (r == best && std::labs(lag - drift) < std::labs(best_lag - drift))) {
                best = r;
                best_lag = lag;
            }
        }
        rs.push_back(best);
        const int lag = lag_samples + static_cast<int>((best_lag - drift) * spw);
        if (rs.size() == 1) p.min_lag_samples = p.max_lag_samples = lag;
        p.min_lag_samples = std::min(p.min_lag_samples, lag);
        p.max_lag_samples = std::max(p.max_lag_samples, lag);
    }
    p.segments = static_cast<int>(rs.size());
    if (rs.empty()) return p;
    p.min_correlation = *std::min_element(rs.begin(), rs.end());
    double sum = 0;
    for (double r : rs) sum += r;
    p.mean_correlation = sum / static_cast<double>(rs.size());
    return p;
}

std::vector<float> aligned_segment(std::span<const float> test, int lag_samples, std::size_t length) {
    std::vector<float> out(length, 0.0f);
    for (std::size_t i = 0; i < length; ++i) {
        const long t = static_cast<long>(i) + lag_samples;
        if (t >= 0 && t < static_cast<long>(test.size())) out[i] = test[static_cast<std::size_t>(t)];
    }
    return out;
}

double segmental_snr(std::span<const float> reference, std::span<const float> test, int rate, int lag_samples,
                     int frame_ms) {
    const int n = samples_per(rate, frame_ms);
    const std::vector<double> energies = frame_energies(reference, n);
    const double threshold = activity_threshold(energies);
    double sum = 0;
    int frames = 0;
    for (std::size_t f = 0; f < energies.size(); ++f) {
        if (!(energies[f] > threshold)) continue;
        double sig = 0, noise = 0;
        for (int i = 0; i < n; ++i) {
            const long r = static_cast<long>(f) * n + i;
            const long t = r + lag_samples;
            // Test audio missing at this point counts as silence (a short
            // recording must not score well).
            const double y =
                (t >= 0 && t < static_cast<long>(test.size())) ? test[static_cast<std::size_t>(t)] : 0.0;
            const double x = reference[static_cast<std::size_t>(r)];
            sig += x * x;
            noise += (x - y) * (x - y);
        }
        const double snr = noise > 0 ? 10.0 * std::log10(sig / noise) : k_segsnr_max_db;
        sum += std::clamp(snr, k_segsnr_min_db, k_segsnr_max_db);
        ++frames;
    }
    return frames ? sum / frames : std::numeric_limits<double>::quiet_NaN();
}

double active_fraction(std::span<const float> samples, int rate) {
    const std::vector<double> e = frame_energies(samples, samples_per(rate, 20));
    if (e.empty()) return 0.0;
    const double threshold = activity_threshold(e);
    const auto active = std::count_if(e.begin(), e.end(), [&](double v) { return v > threshold; });
    return static_cast<double>(active) / static_cast<double>(e.size());
}

Comparison compare(std::span<const float> reference, std::span<const float> test, int rate, int max_lag_ms) {
    Comparison c;
    c.alignment = align(reference, test, rate, max_lag_ms);
    c.segmental_snr_db = segmental_snr(reference, test, rate, c.alignment.lag_samples);
    c.reference_active = active_fraction(reference, rate);
    c.piecewise = align_piecewise(reference, test, rate, c.alignment.lag_samples);
    c.test_active = active_fraction(aligned_segment(test, c.alignment.lag_samples, reference.size()), rate);
    return c;
}

std::string check(const Comparison& c, const Thresholds& t) {
    std::string out;
    // Written as !(x >= limit) so that NaN fails.
    if (!(c.alignment.correlation >= t.min_correlation))
        mark(out, "envelope correlation", c.alignment.correlation, ">=", t.min_correlation);
    if (!(c.piecewise.mean_correlation >= t.min_piecewise_correlation))
        mark(out, "piecewise correlation", c.piecewise.mean_correlation, ">=", t.min_piecewise_correlation);
    if (!(c.alignment.waveform_correlation >= t.min_waveform_correlation))
        mark(out, "waveform correlation", c.alignment.waveform_correlation, ">=", t.min_waveform_correlation);
    if (t.min_segmental_snr_db > -100.0 && !(c.segmental_snr_db >= t.min_segmental_snr_db))
        mark(out, "segmental SNR dB", c.segmental_snr_db, ">=", t.min_segmental_snr_db);
    const double min_active = t.min_active_ratio * c.reference_active;
    if (!(c.test_active >= min_active)) mark(out, "active fraction", c.test_active, ">=", min_active);
    if (!(c.test_active <= t.max_active)) mark(out, "active fraction", c.test_active, "<=", t.max_active);
    return out;
}

std::string describe(const Comparison& c) {
    char line[400];
    std::snprintf(
        line, sizeof line,
        "lag %d samples, envelope corr %.3f, piecewise corr %.3f (min %.3f, %d segments, lag %d..%d), "
        "waveform corr %.3f, segmental SNR %.2f dB, active %.2f (reference %.2f)",
        c.alignment.lag_samples, c.alignment.correlation, c.piecewise.mean_correlation,
        c.piecewise.min_correlation, c.piecewise.segments, c.piecewise.min_lag_samples,
        c.piecewise.max_lag_samples, c.alignment.waveform_correlation, c.segmental_snr_db, c.test_active,
        c.reference_active);
    return line;
}

void make_speech(const std::filesystem::path& out, const std::string& text, int repeats) {
    auto raw = out;
    raw += ".espeak.wav";
    // Single quotes around every argument; none of ours contain one.
    std::string cmd = "espeak-ng -s 150 -w '" + raw.string() + "' '" + text + "' && sox '" + raw.string() +
                      "' -r 48000 -c 1 -b 16 '" + out.string() + "'";
    if (repeats > 1) cmd += " repeat " + std::to_string(repeats - 1);
    bool ok = text.find('\'') == std::string::npos && run_shell(cmd);
    std::error_code ec;
    std::filesystem::remove(raw, ec);
    if (!ok)
        throw std::runtime_error(
            "cannot make speech with espeak-ng and sox (Debian packages espeak-ng, sox)");
}

}  // namespace juice::test::audio
