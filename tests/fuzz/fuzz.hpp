// Shared by the fuzz targets. Each fuzz_<name>.cpp defines
// LLVMFuzzerTestOneInput; with JUICE_FUZZ=ON (clang) libFuzzer drives it,
// otherwise replay_main.cpp replays the corpus under ctest.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

// A property every input must keep. Failing aborts, so libFuzzer records the
// input and the replay test fails (unlike assert, it is never compiled out).
#define JUICE_FUZZ_CHECK(cond)                                                                    \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n", __FILE__, __LINE__, #cond); \
            std::abort();                                                                         \
        }                                                                                         \
    } while (0)

namespace juice::fuzz {

// With JUICE_FUZZ_VERBOSE set, says what an input did (to check seeds:
// JUICE_FUZZ_VERBOSE=1 build/tests/fuzz/fuzz_sealed tests/fuzz/corpus/sealed).
inline void note(std::string_view what) {
    static const bool on = std::getenv("JUICE_FUZZ_VERBOSE") != nullptr;
    if (on) std::fprintf(stderr, "  -> %.*s\n", static_cast<int>(what.size()), what.data());
}

inline std::span<const std::uint8_t> bytes(const std::uint8_t* data, std::size_t size) {
    return {data, size};
}
inline std::string_view text(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

}  // namespace juice::fuzz
