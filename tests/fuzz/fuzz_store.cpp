// The SQLite database file: the input is written as juice.db in a temp
// directory, then Store::open, list_contacts and each contact's history.
// SQLite is robust on its own; what is checked here is juice's header checks
// and its handling of damaged files (errors, never a crash).
#include "fuzz.hpp"
#include "juice/node/store.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace juice;
namespace fs = std::filesystem;

namespace {

fs::path scratch_dir() {
    static const fs::path dir = [] {
        fs::path base = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
        auto d = base / ("juice-fuzz-store-" + std::to_string(::getpid()));
        fs::create_directories(d);
        return d;
    }();
    return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 1 << 20) return 0;
    const auto dir = scratch_dir();
    const auto file = dir / "juice.db";
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"})
        fs::remove(dir / ("juice.db" + std::string(suffix)), ec);
    {
        std::ofstream out(file, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    }
    auto store = node::Store::open(file, node::Store::Sync::normal);
    if (!store) {
        JUICE_FUZZ_CHECK(!store.error().message.empty());
        fuzz::note(store.error().message);
        return 0;
    }
    auto contacts = (*store)->list_contacts();
    fuzz::note(contacts ? std::to_string(contacts->size()) + " contacts" : contacts.error().message);
    if (contacts) {
        for (const auto& c : *contacts) (void)(*store)->history(c.id, 50);
    }
    (void)(*store)->inbox_values();
    (void)(*store)->get_setting("name");
    return 0;
}
