// The put guard (dht/src/put_guard.hpp) reads every datagram a juice node
// receives before OpenDHT does. Input: datagrams, each prefixed by a 2-byte
// big-endian length, all from one sender, fed to one guard that protects
// (key 0x11..., id 42). It must never crash, and it must drop the crash
// packet (an unsigned value with id 42 at that key) whatever came before.
#include "fuzz.hpp"
#include "put_guard.hpp"

#include <msgpack.hpp>

using juice::dht::PutGuard;

namespace {

// The known-bad packet: a put of an unsigned value with the protected id.
std::vector<std::uint8_t> crash_packet() {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_map(4);
    pk.pack("y"), pk.pack("q"), pk.pack("t"), pk.pack(1u), pk.pack("q"), pk.pack("put"), pk.pack("a");
    pk.pack_map(2);
    pk.pack("h");
    pk.pack_bin(20);
    pk.pack_bin_body(std::string(20, '\x11').data(), 20);
    pk.pack("values");
    pk.pack_array(1);
    pk.pack_map(2);
    pk.pack("id"), pk.pack(42u), pk.pack("dat");
    pk.pack_map(1);
    pk.pack("body");
    pk.pack_map(2);
    pk.pack("type"), pk.pack(0u), pk.pack("data");
    pk.pack_bin(1);
    pk.pack_bin_body("x", 1);
    return {buf.data(), buf.data() + buf.size()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    PutGuard guard;
    PutGuard::Key key;
    key.fill(0x11);
    guard.protect(key, 42);
    auto now = PutGuard::Clock::now();
    std::size_t pos = 0, count = 0;
    while (pos + 2 <= size && count < 64) {
        std::size_t len = std::size_t{data[pos]} << 8 | data[pos + 1];
        pos += 2;
        if (len > size - pos) len = size - pos;
        guard.inspect(std::span(data + pos, len), "10.0.0.1:4222", now);
        pos += len;
        ++count;
    }
    static const auto bad = crash_packet();
    JUICE_FUZZ_CHECK(!guard.inspect(bad, "10.0.0.1:4222", now));
    return 0;
}
