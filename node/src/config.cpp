#include "juice/node/config.hpp"

#include <cstdlib>

namespace juice::node {

std::filesystem::path Config::default_data_dir() {
    if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg)
        return std::filesystem::path(xdg) / "juice";
    if (const char* home = std::getenv("HOME"); home && *home)
        return std::filesystem::path(home) / ".local" / "share" / "juice";
    return std::filesystem::path("juice-data");
}

}  // namespace juice::node
