#include "juice/node/inbox.hpp"

#include <catch2/catch.hpp>
#include <msgpack.hpp>

using namespace juice;
using namespace juice::node;
using namespace std::chrono_literals;

namespace {

std::vector<Frame> many_messages(std::size_t n, std::size_t text_bytes) {
    std::vector<Frame> out;
    for (std::size_t i = 0; i < n; ++i)
        out.push_back(
            MessageFrame{MessageId::random(), static_cast<std::int64_t>(i), std::string(text_bytes, 'a')});
    return out;
}

}  // namespace

TEST_CASE("inbox: a chunk round trips, and bad chunks are refused") {
    InboxChunk c{0xfedcba9876543210ULL, 2, 3, {1, 2, 3}};
    auto wire = encode_inbox_chunk(c);
    auto back = decode_inbox_chunk(wire);
    REQUIRE(back);
    CHECK(*back == c);

    auto pack = [](auto fill) {
        msgpack::sbuffer buf;
        msgpack::packer<msgpack::sbuffer> pk(buf);
        fill(pk);
        return Bytes(buf.data(), buf.data() + buf.size());
    };
    std::vector<std::pair<std::string, Bytes>> bad = {
        {"empty", {}},
        {"not msgpack", {0xc1}},
        {"not a map", pack([](auto& pk) { pk.pack(5); })},
        {"index not below count", encode_inbox_chunk({1, 3, 3, {1}})},
        {"count zero", encode_inbox_chunk({1, 0, 0, {1}})},
        {"count over the cap", encode_inbox_chunk({1, 0, k_max_bundle_chunks + 1, {1}})},
        {"missing data", pack([](auto& pk) {
             pk.pack_map(4);
             pk.pack("v"), pk.pack(1), pk.pack("b"), pk.pack(1), pk.pack("i"), pk.pack(0), pk.pack("n"),
                 pk.pack(1);
         })},
        {"version 2", pack([](auto& pk) {
             pk.pack_map(5);
             pk.pack("v"), pk.pack(2), pk.pack("b"), pk.pack(1), pk.pack("i"), pk.pack(0), pk.pack("n"),
                 pk.pack(1);
             pk.pack("d"), pk.pack_bin(1), pk.pack_bin_body("x", 1);
         })},
        {"a key twice", pack([](auto& pk) {
             pk.pack_map(6);
             pk.pack("v"), pk.pack(1), pk.pack("b"), pk.pack(1), pk.pack("i"), pk.pack(0), pk.pack("n"),
                 pk.pack(1);
             pk.pack("d"), pk.pack_bin(1), pk.pack_bin_body("x", 1);
             pk.pack("n"), pk.pack(1);
         })},
        {"too large", Bytes(k_max_chunk_data + 1024, 0x90)},
    };
    for (const auto& [what, bytes] : bad) {
        INFO(what);
        CHECK_FALSE(decode_inbox_chunk(bytes));
    }
}

TEST_CASE("inbox: a bundle splits into chunks and reassembles in any order") {
    // ~3 chunks of messages, the largest message allowed among them.
    auto frames = many_messages(3, 40 * 1024);
    frames.push_back(MessageFrame{MessageId::random(), 9, std::string(k_max_text_bytes, 'z')});
    frames.push_back(AckFrame{MessageId::random()});
    auto chunks = make_bundle(77, frames);
    REQUIRE(chunks.size() >= 3);
    for (const auto& c : chunks) {
        CHECK(c.bundle == 77);
        CHECK(c.count == chunks.size());
        CHECK(c.data.size() <= k_max_chunk_data);
        CHECK(encode_inbox_chunk(c).size() <= 60 * 1024);  // fits a sealed inbox value
    }
    BundleAssembler asm_;
    UserId from = UserId::random();
    auto t = BundleAssembler::Clock::now();
    std::optional<Bytes> done;
    // Last chunk first, a repeat in the middle: still one bundle.
    for (std::size_t i = chunks.size(); i-- > 0;) {
        CHECK_FALSE(done);
        done = asm_.add(from, chunks[i], t);
        if (i == chunks.size() - 1) CHECK_FALSE(asm_.add(from, chunks[i], t));
    }
    REQUIRE(done);
    auto decoded = decode_bundle(*done);
    REQUIRE(decoded);
    CHECK(*decoded == frames);
    CHECK(asm_.partial() == 0);
    // A single-chunk bundle passes straight through.
    auto one = make_bundle(5, {AckFrame{MessageId::random()}});
    REQUIRE(one.size() == 1);
    CHECK(asm_.add(from, one[0], t));
}

TEST_CASE("inbox: the assembler is bounded and forgets old partial bundles") {
    BundleAssembler asm_;
    UserId from = UserId::random();
    auto t = BundleAssembler::Clock::now();
    for (std::uint64_t b = 0; b < BundleAssembler::k_max_partial + 10; ++b)
        CHECK_FALSE(asm_.add(from, InboxChunk{b, 0, 2, {1}}, t));
    CHECK(asm_.partial() == BundleAssembler::k_max_partial);
    // Much later: every partial bundle has expired.
    CHECK_FALSE(asm_.add(from, InboxChunk{9999, 0, 2, {1}}, t + BundleAssembler::k_partial_ttl + 1s));
    CHECK(asm_.partial() == 1);
    // Chunks of one bundle that disagree on the count are ignored.
    CHECK_FALSE(asm_.add(from, InboxChunk{9999, 1, 3, {2}}, t + BundleAssembler::k_partial_ttl + 1s));
    // The same bundle id from another sender is another bundle.
    CHECK_FALSE(
        asm_.add(UserId::random(), InboxChunk{9999, 1, 2, {2}}, t + BundleAssembler::k_partial_ttl + 1s));
    CHECK(asm_.partial() == 2);
}

TEST_CASE("inbox: too much for one bundle, bad frames and garbage") {
    CHECK(make_bundle(1, many_messages(k_max_bundle_chunks + 1, k_max_text_bytes)).empty());
    CHECK(make_bundle(1, {}).empty());
    CHECK(make_bundle(1, {UnknownFrame{"x"}}).empty());
    CHECK_FALSE(decode_bundle(Bytes{0, 0, 0}));
    CHECK_FALSE(decode_bundle(Bytes{0xff, 0xff, 0xff, 0xff, 1}));
    // A good frame followed by garbage keeps the good frame.
    auto good = encode_frame(AckFrame{MessageId::random()});
    Bytes mixed = good;
    mixed.insert(mixed.end(), {0, 0, 0, 2, 0xc1, 0xc1});
    auto r = decode_bundle(mixed);
    REQUIRE(r);
    CHECK(r->size() == 1);
}
