// Judging a call recording against the audio that was sent: "is this the
// same speech, roughly in time, and not silence or noise?" — not a
// perceptual quality score (no PESQ/POLQA here).
//
// Typical use in a call test: the source is speech from espeak-ng,
//     espeak-ng -w raw.wav "some sentences"; sox raw.wav -r 48000 -c 1 -b 16 speech.wav
// played into a call; the far end records; then
//     int r1 = 0, r2 = 0;
//     auto ref = read_mono(speech, &r1), rec = read_mono(recording, &r2);
//     REQUIRE(r1 == r2);
//     Comparison c = compare(ref, rec, r1, 2000);  // lags up to +-2 s
//     INFO(describe(c));
//     CHECK(check(c, k_clean_call).empty());
//
// All functions are pure (no I/O except read_mono/write_mono), take float
// samples in -1..1 and may be called from any thread. Lags: a positive
// lag means the test signal is late, i.e. test[n + lag] lines up with
// reference[n].
//
// ---------------------------------------------------------------------------
// Calibration. Debian 12 tools: espeak-ng 1.51, sox 14.4.2, opus-tools 0.2,
// libopus 1.3.1. 8 espeak-ng sentences of 4.1-5.9 s at 48 kHz mono, each
// compared with compare(max_lag_ms 1000); impaired cases with 2-5 random
// seeds each; min / median / max over all runs ("env" = alignment
// .correlation, "piecewise" = piecewise.mean_correlation, "wave" =
// alignment.waveform_correlation, "segSNR" in dB):
//
//                                  env          piecewise    wave       segSNR
//  (a) itself delayed 37 ms        1.000        1.000        1.000      35 (max)
//  (b) opusenc --bitrate 32 +      .994/.998    .994/.998    .967/.986  12.2/15.5/16.3
//      opusdec (lag found -2 samples; the same when delayed 123 ms or padded
//      with 0.5 s / 1 s of silence)
//      libopus VOIP mode, 12 kbps  .990/.993    .990/.993    .890/.933  5.1/6.4/7.1
//      libopus VOIP mode, 32 kbps  .994/.998    .994/.998    .935/.963  7.1/8.2/9.0
//      (VOIP mode is SILK-based and not waveform-matching: lower SNR)
//  (c) another sentence           .19/.28/.48  .15/.36/.52  .018/.077  -4.1/-3.1/-1.8
//      (56 pairs, also with the other one through Opus)
//  (d) silence                     0            0            0          0.0
//      white noise (sox)           .12/.15/.20  .09/.12/.18  <= .010    -7.7/-5.2/-4.6
//  (e) opusenc 32k, 10% of 20 ms   .82/.91/.96  .83/.91/.96  .88/.94    10.3/13.8/15.1
//      frames zeroed
//      ... 10% frames replaced by  .93/.97/.99  .92/.97/.99  .81/.89    9.8/13.5/15.0
//      the previous one
//  more: opusdec --packet-loss 10  .81/.95/.97  .88/.93/.97  .79/.86    8.5/11.2/11.9
//      libopus VOIP 12k, 10% PLC   .83/.90      .88/.91      .62/.84    3.0/4.6/5.9
//      20% frames zeroed           .70/.82/.90  .70/.82/.91  .81/.88    9.0/12.1/14.0
//      time warp (20 ms frames inserted/dropped, as an adaptive jitter buffer):
//        +3 -3 frames              .80/.90/.96  .92/.95/.99  .29/.57    1.8/6.7/11.6
//        10% PLC, +3 frames        .55/.74/.92  .83/.91/.94  .10/.42    -1.6/2.7/10.0
//        10% zeroed, +6 -2 frames  .41/.67/.83  .70/.84/.91  .07/.41    -2.8/3.9/9.0
//  UdpRelay, 10% loss, 20 ms + U[0,30] ms, libopus VOIP 32k, real time:
//      fixed 60 ms playout + PLC   .53/.90/.94  .80/.92/.95  .44/.80    4.5/5.3/6.3
//      fixed 60 ms, holes          .52/.84/.92  .73/.84/.91  .42/.80    4.4/5.2/6.2
//      adaptive playout + PLC      .69/.84/.90  .79/.88/.92  .25/.42    -0.4/1.8/3.4
//  Opus + white noise -40/-30 dBFS >= .99/.98    >= .99/.98   .96/.91    9.7/4.2 (min)
//
//  Active fraction (20 ms frames): espeak-ng speech .79/.87/.91. Of a
//  recording, relative to its reference's: decoded 1.00-1.05, 10% / 20%
//  zeroed frames >= 0.89 / 0.79, relay runs >= 0.98; unrelated speech
//  0.54-1.13 (so it is only a sanity check); white noise 1.00 absolute,
//  silence 0.00; speech plus noise at -40 dBFS 1.00 (the noise is within
//  40 dB of the speech peaks).
//
// What that says:
// - With a constant delay the envelope correlation separates "same speech"
//   (Opus in any mode >= 0.99) from "other speech" (<= 0.48). Loss pulls it
//   down unevenly (a lost loud syllable weighs a lot): 0.52 in one relay run.
// - A single global lag cannot follow a jitter buffer that stretches or
//   shrinks playout: then waveform correlation and segmental SNR collapse
//   (0.07, -2.8 dB) and the envelope correlation falls into the range of
//   unrelated speech (0.41). The piecewise correlation (1 s segments, each
//   re-aligned within +-120 ms) is the robust one: matching speech >= 0.70
//   in every impaired case, unrelated speech <= 0.52.
// - Segmental SNR tells matching speech from unrelated speech (<= -1.8 dB)
//   or silence (0 dB) on a fixed-delay path even at 12 kbps VOIP with 10%
//   loss (>= 3.0 dB), but its level depends on the codec mode (5-20 dB
//   clean), so it is a floor, not a quality score.
// - More speech separates better (more segments averaged): use >= 4 s.
// Hence the two presets at the end of this header.
// ---------------------------------------------------------------------------
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace juice::test::audio {

// Reads a sound file (any format libsndfile reads: WAV, FLAC, Ogg/Vorbis,
// Ogg/Opus with libsndfile >= 1.0.29) and mixes it to mono floats in -1..1.
// Sets *rate (if not null) to the sample rate. Throws std::runtime_error
// naming the file and libsndfile's reason when it cannot be read.
std::vector<float> read_mono(const std::filesystem::path& path, int* rate);

// Writes mono 16-bit PCM WAV (clipping beyond -1..1), e.g. to keep the
// aligned recording of a failing test for listening. Throws
// std::runtime_error on failure.
void write_mono(const std::filesystem::path& path, std::span<const float> samples, int rate);

// Envelope scale. Linear is the default because it measured better (see the
// calibration): a lost frame (a hole) or background noise moves a quiet
// window's dB value by tens of dB but its linear RMS by little, so with dB
// envelopes 10% zeroed frames dropped the correlation to 0.68 (linear 0.82)
// and -30 dBFS noise to 0.79 (linear 0.98), while unrelated speech scored
// higher (up to 0.52; linear 0.48). dB envelopes are floored at
// k_envelope_floor_dbfs so that silence is a finite value.
enum class EnvelopeScale { linear, decibel };

inline constexpr double k_envelope_floor_dbfs = -60.0;
// Speech activity: a frame is active when its energy is above the 95th
// percentile frame energy minus 40 dB, and above -80 dBFS in any case (so
// that the dither of a silent file is not "active").
inline constexpr double k_activity_relative_db = -40.0;
inline constexpr double k_activity_floor_dbfs = -80.0;
// Per-frame clamp of segmental SNR (the classic range: a silent frame of the
// test scores 0 dB, an inverted one -6 dB, anything below -10 is as bad).
inline constexpr double k_segsnr_min_db = -10.0;
inline constexpr double k_segsnr_max_db = 35.0;

// RMS per consecutive window of `window_ms` (no overlap; a partial last
// window is dropped), linear amplitude by default.
std::vector<double> envelope(std::span<const float> samples, int rate, int window_ms = 10,
                             EnvelopeScale scale = EnvelopeScale::linear);

struct Alignment {
    int lag_samples = 0;       // test[n + lag_samples] lines up with reference[n]
    double correlation = 0.0;  // Pearson correlation of the envelopes, -1..1
    int lag_windows = 0;       // the envelope lag, in windows
    // Normalized cross-correlation of the waveforms at lag_samples (only
    // set by align()).
    double waveform_correlation = 0.0;
};

// Pearson correlation of envelope `a` (reference) and `b` (test) at each lag
// in [-max_lag_windows, +max_lag_windows], over the overlapping windows
// only; lags where the overlap is under half the shorter envelope are not
// considered (a few windows can correlate by chance). Returns the best lag
// (ties to the smaller |lag|); lag_samples = lag_windows *
// samples_per_window. A constant envelope correlates 0. With no admissible
// lag: all zeros.
Alignment align_envelopes(const std::vector<double>& a, const std::vector<double>& b, int max_lag_windows,
                          int samples_per_window);

// The whole alignment of a recording: envelope alignment within
// +-max_lag_ms, then refined to the sample by waveform cross-correlation
// within +-1 window, then the envelope correlation recomputed at that exact
// lag (the better of that and the window-quantized one is reported). If
// either signal never rises above k_activity_floor_dbfs: all zeros. Cost:
// about 10 ms for 5 s at 48 kHz (-O2).
Alignment align(std::span<const float> reference, std::span<const float> test, int rate,
                int max_lag_ms = 1000, int window_ms = 10);

// Alignment that follows a drifting delay (an adaptive jitter buffer that
// stretches or shrinks playout): the reference is cut into `segment_ms`
// pieces; each piece with any signal is aligned on its own within
// +-max_drift_ms of `lag_samples` (from align()); reports the mean and the
// worst per-segment correlation (negative counts as 0) and the range of the
// per-segment lags (max - min shows how much the delay moved).
struct PiecewiseAlignment {
    double mean_correlation = 0.0;
    double min_correlation = 0.0;
    int segments = 0;  // segments with signal; 0: nothing to compare
    int min_lag_samples = 0, max_lag_samples = 0;
};
PiecewiseAlignment align_piecewise(std::span<const float> reference, std::span<const float> test, int rate,
                                   int lag_samples, int segment_ms = 1000, int max_drift_ms = 120,
                                   int window_ms = 10);

// test[lag_samples .. lag_samples + length), zero where test has no samples.
std::vector<float> aligned_segment(std::span<const float> test, int lag_samples, std::size_t length);

// Classic segmental SNR in dB: mean over the reference's active frames
// (see k_activity_*) of 10 log10(sum ref^2 / sum (ref - test)^2), each
// frame clamped to [k_segsnr_min_db, k_segsnr_max_db], comparing
// reference[n] with test[n + lag_samples] (test samples outside the
// recording count as 0). No gain compensation: a level change is an error.
// NaN when the reference has no active frame (a NaN fails every comparison).
double segmental_snr(std::span<const float> reference, std::span<const float> test, int rate, int lag_samples,
                     int frame_ms = 20);

// Share (0..1) of 20 ms frames that are active (see k_activity_*). Speech:
// ~0.8-0.9 for espeak-ng; constant noise: 1.0; silence: 0.0.
double active_fraction(std::span<const float> samples, int rate);

struct Comparison {
    Alignment alignment;
    PiecewiseAlignment piecewise;
    double segmental_snr_db = 0.0;
    double reference_active = 0.0;
    // Active fraction of the recording over the stretch aligned with the
    // reference (so leading/trailing silence of a recording does not count).
    double test_active = 0.0;
};

// align + align_piecewise + segmental_snr + active fractions; both signals at
// `rate` (resample beforehand: sox -r 48000).
Comparison compare(std::span<const float> reference, std::span<const float> test, int rate,
                   int max_lag_ms = 1000);

// Pass marks for check(). A field at its default does not constrain.
struct Thresholds {
    double min_correlation = -1.0;            // alignment.correlation
    double min_piecewise_correlation = -1.0;  // piecewise.mean_correlation
    double min_waveform_correlation = -1.0;   // alignment.waveform_correlation
    double min_segmental_snr_db = -100.0;
    // test_active must be within [min_active_ratio * reference_active,
    // max_active]: not (mostly) silence, not constant noise.
    double min_active_ratio = 0.0;
    double max_active = 1.0;
};

// A clean loopback call (Opus at >= 12 kbps in any mode, no loss, fixed
// delay). Measured: env >= 0.990, piecewise >= 0.990, wave >= 0.890, segSNR
// >= 5.1 dB, active 1.00-1.05 x reference; unrelated speech <= 0.48 / 0.52 /
// 0.08 / -1.8 dB; silence and noise lower still.
inline constexpr Thresholds k_clean_call{.min_correlation = 0.90,
                                         .min_piecewise_correlation = 0.90,
                                         .min_waveform_correlation = 0.70,
                                         .min_segmental_snr_db = 3.0,
                                         .min_active_ratio = 0.8,
                                         .max_active = 0.97};

// Through the UdpRelay with 10% loss and 30 ms jitter, whatever the jitter
// buffer does: the piecewise correlation (matching speech >= 0.70 in the
// worst measured case, unrelated <= 0.52) and the activity check (>= 0.79 x
// reference even with 20% holes). If the implementation keeps a fixed
// playout delay (know it; do not infer it from the piecewise lags: single
// segments jumped by up to 120 ms even then), add min_segmental_snr_db = 1.5
// (measured >= 3.0 dB at fixed delay; unrelated <= -1.8, silence 0). Do not
// use min_correlation or min_waveform_correlation here (down to 0.41 / 0.07).
inline constexpr Thresholds k_lossy_call{
    .min_piecewise_correlation = 0.62, .min_active_ratio = 0.6, .max_active = 0.97};

// Empty when `c` meets every threshold in `t`; otherwise one line per
// failed mark, with the value and the mark (for INFO/FAIL messages).
std::string check(const Comparison& c, const Thresholds& t);

// One line with every number of `c`, for logs and benchmark output.
std::string describe(const Comparison& c);

// Speech for call tests and benchmarks: `text` read by espeak-ng at 150
// words/min, converted by sox to 48 kHz mono 16-bit, written to `out` and
// repeated `repeats` times in all. Throws std::runtime_error (naming the
// Debian packages espeak-ng and sox) when either fails.
void make_speech(const std::filesystem::path& out, const std::string& text, int repeats = 1);

}  // namespace juice::test::audio
