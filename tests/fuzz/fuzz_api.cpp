// API lines: LineSplitter on the input as a byte stream, then dispatch_line
// on every line with a small fake method table (answering at once, later,
// twice, never, or by throwing). Every answer must be one line of valid JSON.
#include "api_internal.hpp"
#include "fuzz.hpp"

#include <spdlog/spdlog.h>

#include <map>
#include <stdexcept>

using namespace juice::node::api;
using namespace juice::node::api::detail;

namespace {

struct Methods {
    std::map<std::string, Handler> table;
    std::vector<Reply> later;

    Methods() {
        table["echo"] = [](const json& params, Reply reply) { reply.result(params); };
        table["get"] = [](const json& params, Reply reply) {
            // Reads fields the way real handlers do; wrong types throw json exceptions.
            auto text = params.at("text").get<std::string>();
            auto n = params.value("limit", 10);
            reply.result({{"text", text}, {"n", n}});
        };
        table["fail"] = [](const json&, Reply reply) { reply.error(RpcError::app("nope", "it fails")); };
        table["throw"] = [](const json&, Reply) { throw std::runtime_error("bug"); };
        table["twice"] = [](const json& params, Reply reply) {
            reply.result(params);
            reply.error(RpcError::invalid_params("too late"));
        };
        table["later"] = [this](const json&, Reply reply) { later.push_back(std::move(reply)); };
        table["drop"] = [](const json&, Reply) {};
    }
};

void check_line(const std::string& line) {
    JUICE_FUZZ_CHECK(line.find('\n') == std::string::npos);
    JUICE_FUZZ_CHECK(json::accept(line));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    // The server logs handler failures; millions of log lines only slow the fuzzer.
    static const bool quiet = [] {
        spdlog::set_level(spdlog::level::off);
        return true;
    }();
    (void)quiet;
    auto input = juice::fuzz::text(data, size);
    Methods methods;
    auto lookup = [&methods](const std::string& m) -> Handler {
        auto it = methods.table.find(m);
        return it == methods.table.end() ? Handler{} : it->second;
    };
    auto send = [](std::string line) { check_line(line); };

    // Small line limit so the too_long path is reached too.
    LineSplitter splitter(4096);
    std::size_t pos = 0;
    while (pos < input.size()) {
        auto n = std::min<std::size_t>(input.size() - pos, 1 + (pos * 7 + input.size()) % 300);
        for (auto& piece : splitter.feed(input.substr(pos, n))) {
            JUICE_FUZZ_CHECK(piece.too_long || piece.line.size() <= 4096);
            if (!piece.too_long) dispatch_line(piece.line, lookup, send);
        }
        pos += n;
    }
    // The whole input as one line, too (what a client gets with no '\n' at all).
    dispatch_line(input, lookup, send);
    for (auto& r : methods.later) r.result({{"late", true}});
    return 0;
}
