// The gcc build's stand-in for libFuzzer: runs LLVMFuzzerTestOneInput on
// every file named on the command line or found (recursively) in a named
// directory: the seed corpus and tests/fuzz/crashes/<name>/ regressions.
// A crash or a failed property aborts, which fails the ctest.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace fs = std::filesystem;

namespace {

void run_file(const fs::path& path, std::size_t& count) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.eof() && in.fail()) {
        std::fprintf(stderr, "cannot read %s\n", path.c_str());
        std::exit(1);
    }
    std::fprintf(stderr, "replay %s (%zu bytes)\n", path.c_str(), buf.size());
    // A copy of exactly the input's size, so reads past the end stay visible
    // to a sanitizer build.
    std::vector<std::uint8_t> input(buf.begin(), buf.end());
    LLVMFuzzerTestOneInput(input.empty() ? nullptr : input.data(), input.size());
    ++count;
}

}  // namespace

int main(int argc, char** argv) {
    std::size_t count = 0;
    for (int i = 1; i < argc; ++i) {
        fs::path p = argv[i];
        if (fs::is_directory(p)) {
            std::vector<fs::path> files;
            for (const auto& e : fs::recursive_directory_iterator(p))
                if (e.is_regular_file() && e.path().filename() != "README.md") files.push_back(e.path());
            std::sort(files.begin(), files.end());
            for (const auto& f : files) run_file(f, count);
        } else if (fs::exists(p)) {
            run_file(p, count);
        }
        // A missing path is fine: crashes/<name>/ exists only once a target found something.
    }
    std::printf("replayed %zu inputs\n", count);
    return 0;
}
