#include "juice/node/frame.hpp"

#include <catch2/catch.hpp>
#include <msgpack.hpp>

using namespace juice;
using namespace juice::node;

namespace {

std::vector<Frame> sample_frames() {
    MessageId id = MessageId::random();
    return {
        HelloFrame{1, "Alice", {"text", "voice"}, "online", "at lunch 🍝"},
        HelloFrame{},
        MessageFrame{id, 1700000000123, "hello, Bob"},
        MessageFrame{id, -5, ""},
        MessageFrame{id, 1, std::string(k_max_text_bytes, 'x')},
        AckFrame{id},
        PresenceFrame{"away", "back soon"},
        PresenceFrame{"busy", ""},
        KeepaliveFrame{false},
        KeepaliveFrame{true},
        ByeFrame{"shutdown"},
        ByeFrame{},
        RequestFrame{"Alice", "hi, it's Alice 👋", 1700000000000},
        RequestFrame{"", std::string(k_max_request_bytes, 'm'), -1},
        AnswerFrame{true},
        AnswerFrame{false},
        ReceiptFrame{{id}},
        ReceiptFrame{std::vector<MessageId>(k_max_receipt_ids, id)},
        TypingFrame{true},
        TypingFrame{false},
        CallFrame{id, CallFrame::Op::offer, {{"", 40000}}, {}},
        CallFrame{
            id, CallFrame::Op::accept, {{"192.0.2.7", 1}, {"2001:db8::1", 65535}, {"", 5}, {"", 6}}, {}},
        CallFrame{id, CallFrame::Op::end, {}, "busy"},
        CallFrame{id, CallFrame::Op::end, {}, ""},
        CallFrame{
            id,
            CallFrame::Op::offer,
            {},
            {},
            IceParams{"abcd", std::string(22, 'p'), {{"1", 2130706431, "relay", "203.0.113.5", 49152}}}},
        CallFrame{id,
                  CallFrame::Op::accept,
                  {{"", 40000}},
                  {},
                  IceParams{std::string(32, 'U'), std::string(64, '+'),
                            std::vector<IceCandidateInfo>(k_max_ice_candidates,
                                                          {"f", 1, "srflx", "2001:db8::1", 1})}},
        IceFrame{id,
                 IceFrame::Op::offer,
                 1700000000000,
                 "abcd",
                 std::string(22, 'p'),
                 {{"1", 2130706431, "host", "192.168.1.10", 50000}},
                 ""},
        IceFrame{id, IceFrame::Op::answer, -5, std::string(32, 'U'), std::string(64, '+'),
                 std::vector<IceCandidateInfo>(k_max_ice_candidates, {std::string(32, 'f'), 0xffffffffu,
                                                                      "relay", "2001:db8::1", 65535}),
                 ""},
        IceFrame{id, IceFrame::Op::end, 0, "", "", {}, "no_path"},
    };
}

// A length-prefixed frame around an arbitrary body.
Bytes with_prefix(const Bytes& body) {
    auto n = static_cast<std::uint32_t>(body.size());
    Bytes out{static_cast<std::uint8_t>(n >> 24), static_cast<std::uint8_t>(n >> 16),
              static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n)};
    out.insert(out.end(), body.begin(), body.end());
    return out;
}

// Packs a map of string keys to values built by `fill`.
template <class Fill>
Bytes pack_map(std::uint32_t entries, Fill fill) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_map(entries);
    fill(pk);
    return Bytes(buf.data(), buf.data() + buf.size());
}

Result<Frame> decode(const Bytes& body) {
    return decode_frame_body(body);
}

frame_errc code_of(const Result<Frame>& r) {
    return static_cast<frame_errc>(r.error().code.value());
}

}  // namespace

TEST_CASE("frame: every type round trips") {
    for (const auto& frame : sample_frames()) {
        auto wire = encode_frame(frame);
        REQUIRE(wire.size() > 4);
        std::uint32_t len = std::uint32_t{wire[0]} << 24 | wire[1] << 16 | wire[2] << 8 | wire[3];
        CHECK(len == wire.size() - 4);
        auto back = decode_frame_body(std::span(wire).subspan(4));
        REQUIRE(back);
        CHECK(*back == frame);
    }
}

TEST_CASE("frame: the decoder reassembles frames fed byte by byte") {
    auto frames = sample_frames();
    Bytes stream;
    for (const auto& f : frames) {
        auto w = encode_frame(f);
        stream.insert(stream.end(), w.begin(), w.end());
    }
    FrameDecoder dec;
    std::vector<Frame> got;
    for (auto byte : stream) {
        dec.feed(std::span(&byte, 1));
        while (auto r = dec.next()) {
            REQUIRE(*r);
            got.push_back(**r);
        }
    }
    CHECK(got == frames);
    CHECK(dec.buffered() == 0);
}

TEST_CASE("frame: several frames in one buffer, and a partial one kept") {
    Bytes stream;
    for (const auto& f : sample_frames()) {
        auto w = encode_frame(f);
        stream.insert(stream.end(), w.begin(), w.end());
    }
    auto extra = encode_frame(ByeFrame{"removed"});
    stream.insert(stream.end(), extra.begin(), extra.end() - 3);
    FrameDecoder dec;
    dec.feed(stream);
    std::size_t n = 0;
    while (auto r = dec.next()) {
        REQUIRE(*r);
        ++n;
    }
    CHECK(n == sample_frames().size());
    CHECK(dec.buffered() == extra.size() - 3);
    dec.feed(std::span(extra).last(3));
    auto last = dec.next();
    REQUIRE(last);
    REQUIRE(*last);
    CHECK(std::get<ByeFrame>(**last).reason == "removed");
    CHECK_FALSE(dec.next());
}

TEST_CASE("frame: bad length prefixes kill the stream") {
    auto len = GENERATE(std::uint32_t{0}, std::uint32_t(k_max_frame_size + 1), std::uint32_t{0xffffffff});
    FrameDecoder dec;
    Bytes prefix{static_cast<std::uint8_t>(len >> 24), static_cast<std::uint8_t>(len >> 16),
                 static_cast<std::uint8_t>(len >> 8), static_cast<std::uint8_t>(len)};
    dec.feed(prefix);
    auto r = dec.next();
    REQUIRE(r);
    REQUIRE_FALSE(*r);
    CHECK(code_of(*r) == frame_errc::oversized);
    // The stream stays failed, even if good frames follow.
    dec.feed(encode_frame(KeepaliveFrame{}));
    auto again = dec.next();
    REQUIRE(again);
    CHECK_FALSE(*again);
}

TEST_CASE("frame: the largest allowed size is accepted by the decoder") {
    // A message close to the cap still fits: 64 KiB text is far below 256 KiB.
    auto wire = encode_frame(MessageFrame{MessageId::random(), 0, std::string(k_max_text_bytes, 'y')});
    REQUIRE_FALSE(wire.empty());
    FrameDecoder dec;
    dec.feed(wire);
    auto r = dec.next();
    REQUIRE(r);
    CHECK(*r);
    // decode_frame_body rejects empty and oversized bodies itself.
    CHECK(code_of(decode(Bytes{})) == frame_errc::oversized);
    CHECK(code_of(decode(Bytes(k_max_frame_size + 1, 0xc0))) == frame_errc::oversized);
}

TEST_CASE("frame: bodies that are not a proper map are malformed") {
    auto body = GENERATE(Bytes{0xc0},                          // nil
                         Bytes{0x93, 1, 2, 3},                 // array
                         Bytes{0xa3, 'a', 'b', 'c'},           // string
                         Bytes{0xc1},                          // never-used byte
                         Bytes{0x82, 0xa1, 't'},               // truncated map
                         Bytes{0xdf, 0xff, 0xff, 0xff, 0xff},  // map claiming 4G entries
                         Bytes{0xdd, 0xff, 0xff, 0xff, 0xff},  // array claiming 4G entries
                         Bytes{0x80, 0x80});                   // trailing bytes
    auto r = decode(body);
    REQUIRE_FALSE(r);
    CHECK(code_of(r) == frame_errc::malformed);
}

TEST_CASE("frame: truncated msgpack is malformed") {
    auto wire = encode_frame(HelloFrame{1, "Alice", {"text"}, "online", "note"});
    Bytes body(wire.begin() + 4, wire.end());
    for (std::size_t cut = 1; cut < body.size(); ++cut) {
        INFO("cut at " << cut);
        auto r = decode_frame_body(std::span(body).first(cut));
        REQUIRE_FALSE(r);
        CHECK(code_of(r) == frame_errc::malformed);
    }
}

TEST_CASE("frame: missing or mistyped fields are malformed") {
    auto id = MessageId::random();
    auto str = [](auto& pk, std::string_view s) {
        pk.pack_str(static_cast<std::uint32_t>(s.size()));
        pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
    };
    auto bin = [](auto& pk, const std::uint8_t* p, std::uint32_t n) {
        pk.pack_bin(n);
        pk.pack_bin_body(reinterpret_cast<const char*>(p), n);
    };
    auto header = [&](auto& pk, std::string_view type) {
        str(pk, "t");
        str(pk, type);
        str(pk, "v");
        pk.pack(1);
    };
    std::vector<std::pair<std::string, Bytes>> cases = {
        {"no t", pack_map(1, [&](auto& pk) { str(pk, "v"), pk.pack(1); })},
        {"no v", pack_map(1, [&](auto& pk) { str(pk, "t"), str(pk, "ka"); })},
        {"t not a string",
         pack_map(2, [&](auto& pk) { str(pk, "t"), pk.pack(5), str(pk, "v"), pk.pack(1); })},
        {"v a string",
         pack_map(2, [&](auto& pk) { str(pk, "t"), str(pk, "ka"), str(pk, "v"), str(pk, "1"); })},
        {"v zero", pack_map(2, [&](auto& pk) { str(pk, "t"), str(pk, "ka"), str(pk, "v"), pk.pack(0); })},
        {"msg without id", pack_map(4,
                                    [&](auto& pk) {
                                        header(pk, "msg");
                                        str(pk, "ts"), pk.pack(1);
                                        str(pk, "b"), str(pk, "x");
                                    })},
        {"msg id of 15 bytes", pack_map(5,
                                        [&](auto& pk) {
                                            header(pk, "msg");
                                            str(pk, "i"), bin(pk, id.bytes.data(), 15);
                                            str(pk, "ts"), pk.pack(1);
                                            str(pk, "b"), str(pk, "x");
                                        })},
        {"msg id as a string", pack_map(5,
                                        [&](auto& pk) {
                                            header(pk, "msg");
                                            str(pk, "i"), str(pk, id.hex());
                                            str(pk, "ts"), pk.pack(1);
                                            str(pk, "b"), str(pk, "x");
                                        })},
        {"msg ts as a float", pack_map(5,
                                       [&](auto& pk) {
                                           header(pk, "msg");
                                           str(pk, "i"), bin(pk, id.bytes.data(), 16);
                                           str(pk, "ts"), pk.pack(1.5);
                                           str(pk, "b"), str(pk, "x");
                                       })},
        {"msg ts above int64", pack_map(5,
                                        [&](auto& pk) {
                                            header(pk, "msg");
                                            str(pk, "i"), bin(pk, id.bytes.data(), 16);
                                            str(pk, "ts"), pk.pack(std::uint64_t{1} << 63);
                                            str(pk, "b"), str(pk, "x");
                                        })},
        {"msg body as binary", pack_map(5,
                                        [&](auto& pk) {
                                            header(pk, "msg");
                                            str(pk, "i"), bin(pk, id.bytes.data(), 16);
                                            str(pk, "ts"), pk.pack(1);
                                            str(pk, "b"), bin(pk, id.bytes.data(), 3);
                                        })},
        {"msg body not UTF-8", pack_map(5,
                                        [&](auto& pk) {
                                            header(pk, "msg");
                                            str(pk, "i"), bin(pk, id.bytes.data(), 16);
                                            str(pk, "ts"), pk.pack(1);
                                            str(pk, "b"), str(pk, "\xff\xfe");
                                        })},
        {"msg body too long", pack_map(5,
                                       [&](auto& pk) {
                                           header(pk, "msg");
                                           str(pk, "i"), bin(pk, id.bytes.data(), 16);
                                           str(pk, "ts"), pk.pack(1);
                                           str(pk, "b"), str(pk, std::string(k_max_text_bytes + 1, 'x'));
                                       })},
        {"ack id missing", pack_map(2, [&](auto& pk) { header(pk, "ack"); })},
        {"hello without protocol", pack_map(3,
                                            [&](auto& pk) {
                                                header(pk, "hello");
                                                str(pk, "n"), str(pk, "x");
                                            })},
        {"hello protocol negative", pack_map(3,
                                             [&](auto& pk) {
                                                 header(pk, "hello");
                                                 str(pk, "p"), pk.pack(-1);
                                             })},
        {"hello name too long", pack_map(4,
                                         [&](auto& pk) {
                                             header(pk, "hello");
                                             str(pk, "p"), pk.pack(1);
                                             str(pk, "n"), str(pk, std::string(k_max_name_bytes + 1, 'n'));
                                         })},
        {"hello caps not an array", pack_map(4,
                                             [&](auto& pk) {
                                                 header(pk, "hello");
                                                 str(pk, "p"), pk.pack(1);
                                                 str(pk, "c"), str(pk, "text");
                                             })},
        {"hello caps of ints", pack_map(4,
                                        [&](auto& pk) {
                                            header(pk, "hello");
                                            str(pk, "p"), pk.pack(1);
                                            str(pk, "c"), pk.pack_array(1), pk.pack(3);
                                        })},
        {"hello too many caps", pack_map(4,
                                         [&](auto& pk) {
                                             header(pk, "hello");
                                             str(pk, "p"), pk.pack(1);
                                             str(pk, "c"), pk.pack_array(17);
                                             for (int i = 0; i < 17; ++i) str(pk, "c");
                                         })},
        {"presence without status", pack_map(3,
                                             [&](auto& pk) {
                                                 header(pk, "presence");
                                                 str(pk, "nt"), str(pk, "x");
                                             })},
        {"presence note too long", pack_map(4,
                                            [&](auto& pk) {
                                                header(pk, "presence");
                                                str(pk, "s"), str(pk, "away");
                                                str(pk, "nt"),
                                                    str(pk, std::string(k_max_note_bytes + 1, 'n'));
                                            })},
        {"ka reply as int", pack_map(3,
                                     [&](auto& pk) {
                                         header(pk, "ka");
                                         str(pk, "r"), pk.pack(1);
                                     })},
        {"bye reason as nil", pack_map(3,
                                       [&](auto& pk) {
                                           header(pk, "bye");
                                           str(pk, "r"), pk.pack_nil();
                                       })},
        {"a duplicate key", pack_map(4,
                                     [&](auto& pk) {
                                         header(pk, "bye");
                                         str(pk, "r"), str(pk, "a");
                                         str(pk, "r"), str(pk, "b");
                                     })},
        {"nesting too deep", pack_map(3,
                                      [&](auto& pk) {
                                          header(pk, "ka");
                                          str(pk, "deep");
                                          for (int i = 0; i < 20; ++i) pk.pack_array(1);
                                          pk.pack(1);
                                      })},
    };
    for (const auto& [name, body] : cases) {
        INFO(name);
        auto r = decode(body);
        REQUIRE_FALSE(r);
        CHECK(code_of(r) == frame_errc::malformed);
        CHECK_FALSE(r.error().message.empty());
    }
}

TEST_CASE("frame: unknown types are skipped, unknown keys ignored") {
    auto str = [](auto& pk, std::string_view s) {
        pk.pack_str(static_cast<std::uint32_t>(s.size()));
        pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
    };
    SECTION("an unknown type, even of a newer version") {
        auto body = pack_map(3, [&](auto& pk) {
            str(pk, "t"), str(pk, "file-offer");
            str(pk, "v"), pk.pack(7);
            str(pk, "size"), pk.pack(12345);
        });
        auto r = decode(body);
        REQUIRE(r);
        REQUIRE(std::holds_alternative<UnknownFrame>(*r));
        CHECK(std::get<UnknownFrame>(*r).type == "file-offer");
        // And through the stream decoder, which keeps going afterwards.
        FrameDecoder dec;
        dec.feed(with_prefix(body));
        dec.feed(encode_frame(KeepaliveFrame{true}));
        auto first = dec.next();
        REQUIRE(first);
        REQUIRE(*first);
        CHECK(std::holds_alternative<UnknownFrame>(**first));
        auto second = dec.next();
        REQUIRE(second);
        REQUIRE(*second);
        CHECK(std::get<KeepaliveFrame>(**second).reply);
    }
    SECTION("extra keys of any type, and non-string keys") {
        auto body = pack_map(6, [&](auto& pk) {
            str(pk, "t"), str(pk, "presence");
            str(pk, "v"), pk.pack(1);
            str(pk, "s"), str(pk, "busy");
            str(pk, "mood"), pk.pack_array(2), pk.pack(1), pk.pack_nil();
            pk.pack(42), str(pk, "int key");
            str(pk, "extra"), pk.pack_map(1), str(pk, "k"), pk.pack(true);
        });
        auto r = decode(body);
        REQUIRE(r);
        CHECK(std::get<PresenceFrame>(*r) == PresenceFrame{"busy", ""});
    }
    SECTION("a known type of a newer version is unsupported") {
        auto body = pack_map(3, [&](auto& pk) {
            str(pk, "t"), str(pk, "ka");
            str(pk, "v"), pk.pack(2);
            str(pk, "r"), pk.pack(true);
        });
        auto r = decode(body);
        REQUIRE_FALSE(r);
        CHECK(code_of(r) == frame_errc::unsupported);
    }
}

TEST_CASE("frame: frames that could not be decoded are not encoded") {
    CHECK(encode_frame(UnknownFrame{"x"}).empty());
    CHECK(encode_frame(MessageFrame{MessageId::random(), 0, std::string(k_max_text_bytes + 1, 'x')}).empty());
    CHECK(encode_frame(HelloFrame{1, std::string(k_max_name_bytes + 1, 'n'), {}, "", ""}).empty());
    CHECK(encode_frame(HelloFrame{1, "", std::vector<std::string>(17, "c"), "", ""}).empty());
    CHECK(encode_frame(PresenceFrame{"online", "\xc3"}).empty());  // cut UTF-8
    CHECK(encode_frame(ByeFrame{std::string(65, 'r')}).empty());
    CHECK(encode_frame(RequestFrame{"", std::string(k_max_request_bytes + 1, 'm'), 0}).empty());
    CHECK(encode_frame(ReceiptFrame{}).empty());
    CHECK(encode_frame(ReceiptFrame{std::vector<MessageId>(k_max_receipt_ids + 1)}).empty());
    MessageId id = MessageId::random();
    CHECK(encode_frame(CallFrame{id, CallFrame::Op::offer, {}, {}}).empty());  // an offer needs media
    CHECK(encode_frame(CallFrame{id, CallFrame::Op::offer, {{"", 0}}, {}}).empty());
    CHECK(encode_frame(CallFrame{id, CallFrame::Op::accept, std::vector<MediaAddress>(5, {"", 9}), {}})
              .empty());
    CHECK(encode_frame(CallFrame{id, CallFrame::Op::end, {}, std::string(33, 'r')}).empty());
    // Through NATs an offer carries ICE parameters instead, and they must be good ones.
    CHECK_FALSE(
        encode_frame(CallFrame{id,
                               CallFrame::Op::offer,
                               {},
                               {},
                               IceParams{"abcd", std::string(22, 'p'), {{"1", 1, "host", "10.0.0.1", 1}}}})
            .empty());
    CHECK(
        encode_frame(CallFrame{id, CallFrame::Op::offer, {}, {}, IceParams{"abcd", std::string(22, 'p'), {}}})
            .empty());
    CHECK(encode_frame(CallFrame{id,
                                 CallFrame::Op::accept,
                                 {},
                                 {},
                                 IceParams{"ab", std::string(22, 'p'), {{"1", 1, "host", "10.0.0.1", 1}}}})
              .empty());
}

TEST_CASE("frame: ice frames with bad credentials or candidates are neither encoded nor decoded") {
    const MessageId id = MessageId::random();
    const IceCandidateInfo good{"1", 1, "host", "10.0.0.1", 1};
    auto offer = [&](std::string u, std::string p, std::vector<IceCandidateInfo> c) {
        return IceFrame{id, IceFrame::Op::offer, 0, std::move(u), std::move(p), std::move(c), ""};
    };
    CHECK_FALSE(encode_frame(offer("abcd", std::string(22, 'p'), {good})).empty());
    CHECK(encode_frame(offer("abc", std::string(22, 'p'), {good})).empty());   // ufrag too short
    CHECK(encode_frame(offer("ab d", std::string(22, 'p'), {good})).empty());  // not an ICE char
    CHECK(encode_frame(offer("abcd", std::string(21, 'p'), {good})).empty());  // pwd too short
    CHECK(encode_frame(offer("abcd", std::string(22, 'p'), {})).empty());      // no candidate
    CHECK(encode_frame(offer("abcd", std::string(22, 'p'), std::vector(k_max_ice_candidates + 1, good)))
              .empty());
    CHECK(encode_frame(offer("abcd", std::string(22, 'p'), {{"1", 1, "turn", "10.0.0.1", 1}})).empty());
    CHECK(encode_frame(offer("abcd", std::string(22, 'p'), {{"1", 1, "host", "10.0.0.1", 0}})).empty());
    CHECK(encode_frame(offer("abcd", std::string(22, 'p'), {{"", 1, "host", "10.0.0.1", 1}})).empty());
    CHECK(encode_frame(IceFrame{id, IceFrame::Op::end, 0, "", "", {}, std::string(33, 'r')}).empty());

    // The decoder refuses what the encoder would not write.
    auto body = [&](auto fill_candidate, std::string u = "abcd") {
        return pack_map(7, [&](auto& pk) {
            pk.pack(std::string("t"));
            pk.pack(std::string("ice"));
            pk.pack(std::string("v"));
            pk.pack(1);
            pk.pack(std::string("s"));
            pk.pack_bin(16);
            pk.pack_bin_body(reinterpret_cast<const char*>(id.bytes.data()), 16);
            pk.pack(std::string("o"));
            pk.pack(std::string("offer"));
            pk.pack(std::string("ts"));
            pk.pack(0);
            pk.pack(std::string("u"));
            pk.pack(u);
            pk.pack(std::string("c"));
            fill_candidate(pk);
        });
    };
    // (no "p": the password is required)
    auto no_pwd = decode(body([](auto& pk) {
        pk.pack_array(1);
        pk.pack_array(5);
        pk.pack(std::string("1"));
        pk.pack(1);
        pk.pack(std::string("host"));
        pk.pack(std::string("10.0.0.1"));
        pk.pack(1);
    }));
    REQUIRE_FALSE(no_pwd);
    CHECK(code_of(no_pwd) == frame_errc::malformed);
    auto wire = encode_frame(offer("abcd", std::string(22, 'p'), {good}));
    auto ok = decode(Bytes(wire.begin() + 4, wire.end()));
    REQUIRE(ok);
    CHECK(std::get<IceFrame>(*ok).candidates == std::vector{good});
}

TEST_CASE("frame: request, answer, receipt, typing and call reject bad fields") {
    auto str = [](auto& pk, std::string_view s) {
        pk.pack_str(static_cast<std::uint32_t>(s.size()));
        pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
    };
    auto header = [&](auto& pk, std::string_view type) {
        str(pk, "t");
        str(pk, type);
        str(pk, "v");
        pk.pack(1);
    };
    // A call frame with op `o` and a valid id, plus `extra` more entries.
    auto call = [&](std::string_view o, std::uint32_t extra, auto more) {
        return pack_map(4 + extra, [&](auto& pk) {
            header(pk, "call"), str(pk, "o"), str(pk, o);
            str(pk, "i"), pk.pack_bin(16), pk.pack_bin_body("0123456789abcdef", 16);
            more(pk);
        });
    };
    std::vector<std::pair<std::string, Bytes>> cases = {
        {"req without ts", pack_map(3, [&](auto& pk) { header(pk, "req"), str(pk, "n"), str(pk, "A"); })},
        {"req ts a string", pack_map(3, [&](auto& pk) { header(pk, "req"), str(pk, "ts"), str(pk, "1"); })},
        {"req message too long", pack_map(4,
                                          [&](auto& pk) {
                                              header(pk, "req");
                                              str(pk, "ts"), pk.pack(1);
                                              str(pk, "m"),
                                                  str(pk, std::string(k_max_request_bytes + 1, 'm'));
                                          })},
        {"ans without a", pack_map(2, [&](auto& pk) { header(pk, "ans"); })},
        {"ans a an int", pack_map(3, [&](auto& pk) { header(pk, "ans"), str(pk, "a"), pk.pack(1); })},
        {"rcpt empty", pack_map(3, [&](auto& pk) { header(pk, "rcpt"), str(pk, "i"), pk.pack_array(0); })},
        {"rcpt id too short", pack_map(3,
                                       [&](auto& pk) {
                                           header(pk, "rcpt"), str(pk, "i"), pk.pack_array(1);
                                           pk.pack_bin(3), pk.pack_bin_body("abc", 3);
                                       })},
        {"rcpt not an array", pack_map(3, [&](auto& pk) { header(pk, "rcpt"), str(pk, "i"), str(pk, "x"); })},
        {"rcpt too many", pack_map(3,
                                   [&](auto& pk) {
                                       header(pk, "rcpt"), str(pk, "i");
                                       pk.pack_array(k_max_receipt_ids + 1);
                                       for (std::size_t i = 0; i <= k_max_receipt_ids; ++i)
                                           pk.pack_bin(16), pk.pack_bin_body("0123456789abcdef", 16);
                                   })},
        {"typ without y", pack_map(2, [&](auto& pk) { header(pk, "typ"); })},
        {"call without id", pack_map(3, [&](auto& pk) { header(pk, "call"), str(pk, "o"), str(pk, "end"); })},
        {"call unknown op", call("dance", 0, [](auto&) {})},
        {"offer without media", call("offer", 0, [](auto&) {})},
        {"offer ice without candidates",
         call("offer", 2,
              [&](auto& pk) { str(pk, "u"), str(pk, "abcd"), str(pk, "p"), str(pk, std::string(22, 'p')); })},
        {"offer ice with a bad candidate", call("offer", 3,
                                                [&](auto& pk) {
                                                    str(pk, "u"), str(pk, "abcd"), str(pk, "p"),
                                                        str(pk, std::string(22, 'p'));
                                                    str(pk, "c"), pk.pack_array(1), pk.pack_array(5),
                                                        str(pk, "1"), pk.pack(1), str(pk, "turn"),
                                                        str(pk, "10.0.0.1"), pk.pack(1);
                                                })},
        {"offer media port 0",
         call("offer", 1,
              [&](auto& pk) { str(pk, "m"), pk.pack_array(1), pk.pack_array(2), str(pk, ""), pk.pack(0); })},
        {"offer media port too big", call("offer", 1,
                                          [&](auto& pk) {
                                              str(pk, "m"), pk.pack_array(1), pk.pack_array(2),
                                                  str(pk, "::1"), pk.pack(70000);
                                          })},
        {"offer media not a pair",
         call("offer", 1, [&](auto& pk) { str(pk, "m"), pk.pack_array(1), str(pk, "1.2.3.4:5"); })},
        {"offer ip too long", call("offer", 1,
                                   [&](auto& pk) {
                                       str(pk, "m"), pk.pack_array(1), pk.pack_array(2),
                                           str(pk, std::string(46, '1')), pk.pack(5);
                                   })},
    };
    for (const auto& [what, body] : cases) {
        INFO(what);
        auto r = decode(body);
        REQUIRE_FALSE(r);
        CHECK(code_of(r) == frame_errc::malformed);
    }
}

TEST_CASE("frame: error codes have readable messages") {
    CHECK(make_error_code(frame_errc::oversized).message().find("size") != std::string::npos);
    CHECK(std::string(frame_error_category().name()) == "juice.frame");
    std::error_code ec = frame_errc::malformed;
    CHECK(ec == frame_errc::malformed);
}
