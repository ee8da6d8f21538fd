// Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<name>/)
// from juice's own encoders, so the seeds are real examples and can be made
// again after a format change:
//
//   build/tests/fuzz/juice_fuzz_seeds corpus tests/fuzz/corpus
//   build/tests/fuzz/juice_fuzz_seeds identity > tests/fuzz/test_identity.hpp   (new test key)
//
// Not run by the build or by ctest. Sealed values carry random AES keys, so
// a re-run changes those files' bytes (not what they test).
#include "juice/crypto/contact_uri.hpp"
#include "juice/crypto/identity.hpp"
#include "juice/dht/node.hpp"
#include "juice/dht/presence.hpp"
#include "juice/node/frame.hpp"
#include "juice/node/inbox.hpp"
#include "juice/node/media/rtp.hpp"
#include "juice/node/store.hpp"
#include "node_cache.hpp"
#include "test_identity.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <opendht/crypto.h>
#include <opendht/value.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

using namespace juice;
namespace fs = std::filesystem;

namespace {

template <typename T>
T must(Result<T> r) {
    if (!r) {
        std::cerr << "juice_fuzz_seeds: " << r.error().message << "\n";
        std::exit(1);
    }
    return std::move(*r);
}
void must(Result<void> r) {
    if (!r) {
        std::cerr << "juice_fuzz_seeds: " << r.error().message << "\n";
        std::exit(1);
    }
}

void write(const fs::path& dir, const std::string& name, std::span<const std::uint8_t> bytes) {
    fs::create_directories(dir);
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}
void write(const fs::path& dir, const std::string& name, std::string_view text) {
    write(dir, name, std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

MessageId mid(std::uint8_t b) {
    MessageId id;
    id.bytes.fill(b);
    return id;
}

std::vector<node::Frame> sample_frames() {
    return {
        node::HelloFrame{1, "Alice", {"text", "voice"}, "online", "at work"},
        node::MessageFrame{mid(1), 1700000000000, "hello \xc3\xa9\xe2\x82\xac \xf0\x9f\x98\x80"},
        node::MessageFrame{mid(2), -1, std::string(300, 'x')},
        node::AckFrame{mid(1)},
        node::PresenceFrame{"away", "back soon"},
        node::KeepaliveFrame{false},
        node::KeepaliveFrame{true},
        node::ByeFrame{"shutdown"},
        node::RequestFrame{"Bob", "hi, it's Bob", 1700000000001},
        node::AnswerFrame{true},
        node::ReceiptFrame{{mid(1), mid(2), mid(3)}},
        node::TypingFrame{true},
        node::CallFrame{mid(4), node::CallFrame::Op::offer, {{"", 40000}, {"192.0.2.1", 5004}}, {}},
        node::CallFrame{mid(4), node::CallFrame::Op::accept, {{"::1", 40002}}, {}},
        node::CallFrame{mid(4), node::CallFrame::Op::end, {}, "hangup"},
    };
}

void frames(const fs::path& dir) {
    int i = 0;
    Bytes stream;
    for (const auto& f : sample_frames()) {
        auto wire = node::encode_frame(f);
        stream.insert(stream.end(), wire.begin(), wire.end());
        // Bodies (decode_frame_body) and single framed frames (FrameDecoder).
        write(dir, "body-" + std::to_string(i), std::span(wire).subspan(4));
        write(dir, "framed-" + std::to_string(i), wire);
        ++i;
    }
    write(dir, "stream-all", stream);
}

Bytes record(std::span<const std::uint8_t> bytes) {
    Bytes out{static_cast<std::uint8_t>(bytes.size() >> 8), static_cast<std::uint8_t>(bytes.size())};
    out.insert(out.end(), bytes.begin(), bytes.end());
    return out;
}

void inbox(const fs::path& dir) {
    auto all = sample_frames();
    // One small bundle, and one with a big text cut into several chunks.
    std::vector<std::vector<node::Frame>> bundles = {
        {all[8]},
        {all[1], all[3], all[10]},
        {node::MessageFrame{mid(9), 5, std::string(60000, 'a')},
         node::MessageFrame{mid(8), 6, std::string(3000, 'b')}},
    };
    std::uint64_t id = 40;
    for (const auto& frames : bundles) {
        auto chunks = node::make_bundle(++id, frames);
        Bytes seq, seq_reversed;
        for (const auto& c : chunks) {
            // Seeds stay small: big chunks only as a record count, cut short.
            auto wire = node::encode_inbox_chunk(c);
            if (wire.size() > 4096) {
                auto small = c;
                small.data.resize(512);
                wire = node::encode_inbox_chunk(small);
            }
            auto r = record(wire);
            seq.insert(seq.end(), r.begin(), r.end());
            seq_reversed.insert(seq_reversed.begin(), r.begin(), r.end());
        }
        write(dir, "bundle-" + std::to_string(id), seq);
        write(dir, "bundle-rev-" + std::to_string(id), seq_reversed);
        // A bundle's own bytes (decode_bundle on the whole input).
        Bytes whole;
        for (const auto& f : frames) {
            auto w = node::encode_frame(f);
            if (w.size() < 4096) whole.insert(whole.end(), w.begin(), w.end());
        }
        write(dir, "frames-" + std::to_string(id), whole);
    }
}

void presence(const fs::path& dir) {
    juice::dht::PresenceRecord a;
    a.name = "Alice";
    a.note = "at work";
    a.caps = {"text", "voice"};
    a.device = "laptop";
    a.addrs = {{"192.168.1.2", 4711, "host"}, {"2001:db8::1", 4711, "host"}, {"203.0.113.9", 4711, "public"}};
    a.ts = 1700000000000;
    write(dir, "full", juice::dht::encode_presence(a));
    juice::dht::PresenceRecord b;
    b.status = "offline";
    b.ts = 1;
    write(dir, "minimal", juice::dht::encode_presence(b));
}

void contacts(const fs::path& dir) {
    crypto::ContactUri uri;
    for (std::size_t i = 0; i < uri.id.bytes.size(); ++i) uri.id.bytes[i] = static_cast<std::uint8_t>(i * 13);
    uri.name = "Alice Smith";
    write(dir, "named", crypto::format_contact_uri(uri));
    uri.name = "Zo\xc3\xab & \xe2\x82\xac?=%";
    write(dir, "escaped", crypto::format_contact_uri(uri));
    uri.name.clear();
    write(dir, "unnamed", crypto::format_contact_uri(uri));
    write(dir, "bare", uri.id.hex());
    write(dir, "spaces", "  JUICE:" + uri.id.hex() + "?c=0000&name=a+b  ");
}

std::string identity_input(const std::string& key, const std::string& crt,
                           const std::optional<std::string>& passphrase) {
    std::string s = key + '\0' + crt;
    if (passphrase) s += '\0' + *passphrase;
    return s;
}

std::string read_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void identities(const fs::path& dir, const crypto::Identity& other) {
    const std::string key = fuzz::k_recipient_key_pem, crt = fuzz::k_recipient_crt_pem;
    write(dir, "plain", identity_input(key, crt, std::nullopt));
    write(dir, "plain-with-passphrase", identity_input(key, crt, "secret"));
    write(dir, "mismatch", identity_input(key, other.certificate_pem(), std::nullopt));
    // An encrypted key, as save() writes it.
    auto tmp = fs::temp_directory_path() / ("juice-seeds-" + std::to_string(::getpid()));
    fs::remove_all(tmp);
    must(must(crypto::Identity::from_pem(key, crt, std::nullopt)).save(tmp, "secret"));
    write(dir, "encrypted", identity_input(read_text(tmp / "identity.key"), crt, "secret"));
    write(dir, "encrypted-wrong", identity_input(read_text(tmp / "identity.key"), crt, "wrong"));
    write(dir, "encrypted-none", identity_input(read_text(tmp / "identity.key"), crt, std::nullopt));
    fs::remove_all(tmp);
}

void sealed(const fs::path& dir, const crypto::Identity& sender) {
    auto sender_pem = sender.private_key_pem();
    ::dht::crypto::PrivateKey from(::dht::Blob(sender_pem.begin(), sender_pem.end()), "");
    const std::string crt = fuzz::k_recipient_crt_pem;
    ::dht::crypto::Certificate to_cert(::dht::Blob(crt.begin(), crt.end()));
    auto to = to_cert.getPublicKey();
    auto seal = [&](const Bytes& payload, std::uint16_t type, const ::dht::crypto::PublicKey& key) {
        ::dht::Value inner(type, ::dht::Blob(payload.begin(), payload.end()), 7);
        auto v = inner.encrypt(from, key);
        return Bytes(v.cypher.begin(), v.cypher.end());
    };
    auto chunks = node::make_bundle(1, {sample_frames()[8]});
    write(dir, "request", seal(node::encode_inbox_chunk(chunks.at(0)), juice::dht::k_inbox_type_id, to));
    chunks = node::make_bundle(2, {sample_frames()[1], sample_frames()[10]});
    write(dir, "messages", seal(node::encode_inbox_chunk(chunks.at(0)), juice::dht::k_inbox_type_id, to));
    write(dir, "other-type", seal({1, 2, 3}, 0x1234, to));
    write(dir, "empty-payload", seal({}, juice::dht::k_inbox_type_id, to));
    // Sealed to someone else (the sender itself): does not open for us.
    write(dir, "not-for-us", seal({1, 2, 3}, juice::dht::k_inbox_type_id, from.getPublicKey()));
}

void node_cache(const fs::path& dir) {
    std::vector<::dht::NodeExport> nodes;
    for (int i = 0; i < 3; ++i) {
        ::dht::NodeExport n{};
        n.id = ::dht::InfoHash::get("node" + std::to_string(i));
        if (i < 2) {
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(static_cast<std::uint16_t>(4222 + i));
            inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
            std::memcpy(&n.ss, &a, sizeof a);
            n.sslen = sizeof a;
        } else {
            sockaddr_in6 a{};
            a.sin6_family = AF_INET6;
            a.sin6_port = htons(4222);
            inet_pton(AF_INET6, "2001:db8::2", &a.sin6_addr);
            std::memcpy(&n.ss, &a, sizeof a);
            n.sslen = sizeof a;
        }
        nodes.push_back(n);
    }
    write(dir, "three", juice::dht::detail::encode_node_cache(nodes));
    write(dir, "empty", juice::dht::detail::encode_node_cache({}));
}

void store(const fs::path& dir) {
    auto tmp = fs::temp_directory_path() / ("juice-seeds-db-" + std::to_string(::getpid()));
    fs::remove_all(tmp);
    {
        auto s = must(node::Store::open(tmp / "juice.db"));
        node::ContactRecord c;
        c.id.bytes.fill(7);
        c.name = "Bob";
        c.state = node::ContactState::mutual;
        c.added = 1;
        must(s->put_contact(c));
        for (std::uint8_t i = 1; i <= 3; ++i) {
            node::MessageRecord m{
                mid(i), c.id, UserId{}, "hi " + std::to_string(i), i, node::MessageState::delivered};
            must(s->add_message(m));
        }
        must(s->set_setting("name", "Alice"));
    }
    write(dir, "small", read_text(tmp / "juice.db"));
    { auto s = must(node::Store::open(tmp / "empty.db")); }
    write(dir, "empty-schema", read_text(tmp / "empty.db"));
    fs::remove_all(tmp);
}

// RTP packets with the optional header parts added by hand (build_rtp makes
// only the plain 12-byte header): CSRC count, extension words, padding bytes.
Bytes rtp_packet(const node::media::RtpHeader& h, const Bytes& payload, std::uint8_t csrcs,
                 std::uint16_t ext_words, std::uint8_t padding) {
    auto plain = node::media::build_rtp(h, payload);
    Bytes out(plain.begin(), plain.begin() + 12);
    out[0] = static_cast<std::uint8_t>(out[0] | csrcs | (ext_words ? 0x10 : 0) | (padding ? 0x20 : 0));
    for (std::uint8_t i = 0; i < csrcs; ++i) out.insert(out.end(), {0x00, 0x00, 0x10, i});
    if (ext_words) {
        out.insert(out.end(), {0xbe, 0xde, static_cast<std::uint8_t>(ext_words >> 8),
                               static_cast<std::uint8_t>(ext_words)});
        for (std::uint16_t i = 0; i < ext_words; ++i) out.insert(out.end(), {0x10, 0x7f, 0x00, 0x00});
    }
    out.insert(out.end(), payload.begin(), payload.end());
    if (padding) {
        out.insert(out.end(), static_cast<std::size_t>(padding - 1), std::uint8_t{0});
        out.push_back(padding);
    }
    return out;
}

void rtp(const fs::path& dir) {
    using namespace node::media;
    Bytes opus(60);
    for (std::size_t i = 0; i < opus.size(); ++i) opus[i] = static_cast<std::uint8_t>(i * 37);
    const RtpHeader h{111, true, 4711, 960 * 5, 0x1234abcd};
    write(dir, "rtp-plain", build_rtp(h, opus));
    write(dir, "rtp-empty-payload", build_rtp(RtpHeader{111, false, 65535, 0xffffffff, 1}, {}));
    write(dir, "rtp-csrc", rtp_packet(h, opus, 2, 0, 0));
    write(dir, "rtp-extension", rtp_packet(h, opus, 0, 1, 0));
    write(dir, "rtp-padding", rtp_packet(h, opus, 0, 0, 4));
    write(dir, "rtp-all", rtp_packet(h, opus, 3, 2, 7));

    const ReportBlock block{0x55667788, 25, 10, 0x0001000a, 32, 0x7e800000, 0x00018000};
    const ReportBlock negative{0x01020304, 0, -3, 0x00020005, 480, 0, 0};
    const RtcpReport sr{0x1234abcd, SenderInfo{0x83aa7e8000000001ull, 960 * 50, 50, 3000}, {block}};
    const RtcpReport rr{0x0badcafe, std::nullopt, {block, negative}};
    const RtcpReport rr_empty{0x0badcafe, std::nullopt, {}};
    write(dir, "rtcp-sr", build_rtcp(sr));
    write(dir, "rtcp-rr", build_rtcp(rr));
    write(dir, "rtcp-rr-empty", build_rtcp(rr_empty));
    // A compound packet: SR, SDES (CNAME "alice"), RR, BYE; the SDES and BYE
    // are skipped by parse_rtcp.
    const Bytes sdes{0x81, 0xca, 0x00, 0x03, 0x12, 0x34, 0xab, 0xcd,
                     0x01, 0x05, 'a',  'l',  'i',  'c',  'e',  0x00};
    const Bytes bye{0x81, 0xcb, 0x00, 0x01, 0x12, 0x34, 0xab, 0xcd};
    Bytes compound;
    for (const Bytes& part : {build_rtcp(sr), sdes, build_rtcp(rr), bye})
        compound.insert(compound.end(), part.begin(), part.end());
    write(dir, "rtcp-compound", compound);
    // An RR followed by a last RR padded by 4 bytes (RFC 3550 6.4.1).
    Bytes padded = build_rtcp(rr);
    Bytes last = build_rtcp(rr_empty);
    last[0] |= 0x20;
    last[3] = static_cast<std::uint8_t>(last[3] + 1);
    last.insert(last.end(), {0, 0, 0, 4});
    padded.insert(padded.end(), last.begin(), last.end());
    write(dir, "rtcp-padded", padded);

    // ReceiverStats records (2-byte seq, 4-byte timestamp, 4-byte arrival):
    // a stream with jitter, a loss, a reordering, a duplicate and a wrap.
    Bytes stats;
    std::uint32_t arrival = 100000;
    for (std::uint32_t seq : {65530u, 65531u, 65533u, 65532u, 65534u, 65534u, 65535u, 0u, 1u, 3u, 2u, 4u}) {
        const std::uint32_t ts = (seq < 1000 ? seq + 65536 : seq) * 960;
        arrival += 960 + (seq % 3) * 40;
        const std::uint16_t seq16 = static_cast<std::uint16_t>(seq);
        stats.push_back(static_cast<std::uint8_t>(seq16 >> 8));
        stats.push_back(static_cast<std::uint8_t>(seq16));
        for (std::uint32_t v : {ts, arrival})
            for (int shift = 24; shift >= 0; shift -= 8)
                stats.push_back(static_cast<std::uint8_t>(v >> shift));
    }
    write(dir, "stats-stream", stats);
}

void api(const fs::path& dir) {
    write(dir, "echo",
          R"({"jsonrpc":"2.0","id":1,"method":"echo","params":{"a":[1,2,{"b":null}]}})"
          "\n");
    write(dir, "get",
          R"({"jsonrpc":"2.0","id":"x","method":"get","params":{"text":"hi","limit":3}})"
          "\n"
          R"({"jsonrpc":"2.0","id":2,"method":"get","params":{"text":5}})"
          "\n");
    write(dir, "batch",
          R"([{"jsonrpc":"2.0","id":1,"method":"later"},{"jsonrpc":"2.0","method":"drop"},)"
          R"({"jsonrpc":"2.0","id":3,"method":"twice","params":{}},{"jsonrpc":"2.0","id":4,"method":"nope"}])"
          "\n");
    write(dir, "errors",
          "{not json}\n[]\n{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"echo\"}\r\n"
          R"({"jsonrpc":"2.0","id":5,"method":"throw"})"
          "\n"
          R"({"jsonrpc":"2.0","id":6,"method":"fail","params":[1]})"
          "\n");
    write(dir, "utf8",
          "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":{\"t\":\"\xff\xfe\"}}\n");
}

std::string c_string(const std::string& pem) {
    std::string out;
    for (char ch : pem) {
        if (ch == '\n')
            out += "\\n\"\n    \"";
        else
            out += ch;
    }
    return "\"" + out + "\"";
}

}  // namespace

// Datagrams for the put guard, each prefixed by its 2-byte length: puts of
// signed, unsigned and encrypted values (packed by OpenDHT itself), inline and
// in parts, plus a ping.
void put_guard(const fs::path& dir, const crypto::Identity& sender) {
    using Packer = msgpack::packer<msgpack::sbuffer>;
    auto pem = sender.private_key_pem();
    ::dht::crypto::PrivateKey key(::dht::Blob(pem.begin(), pem.end()), "");
    auto value_bytes = [&](std::uint64_t id, int kind) {
        ::dht::Value v(0, ::dht::Blob{'d', 'a', 't', 'a'}, id);
        if (kind == 1) v.sign(key);
        msgpack::sbuffer b;
        if (kind == 2)
            msgpack::pack(b, v.encrypt(key, key.getPublicKey()));
        else
            msgpack::pack(b, v);
        return std::string(b.data(), b.size());
    };
    auto put = [&](std::uint32_t tid, const std::vector<std::string>& inline_values,
                   const std::vector<std::size_t>& sizes) {
        msgpack::sbuffer buf;
        Packer pk(buf);
        pk.pack_map(4);
        pk.pack("y"), pk.pack("q"), pk.pack("t"), pk.pack(tid), pk.pack("q"), pk.pack("put"), pk.pack("a");
        pk.pack_map(2);
        pk.pack("h");
        pk.pack_bin(20);
        pk.pack_bin_body(std::string(20, '\x11').data(), 20);
        pk.pack("values");
        pk.pack_array(static_cast<std::uint32_t>(inline_values.size() + sizes.size()));
        for (const auto& v : inline_values) buf.write(v.data(), v.size());
        for (auto n : sizes) pk.pack(n);
        return std::string(buf.data(), buf.size());
    };
    auto part = [](std::uint32_t tid, unsigned index, std::size_t offset, const std::string& d) {
        msgpack::sbuffer buf;
        Packer pk(buf);
        pk.pack_map(3);
        pk.pack("y"), pk.pack("p"), pk.pack("t"), pk.pack(tid), pk.pack("p");
        pk.pack_map(1);
        pk.pack(index);
        pk.pack_map(2);
        pk.pack("o"), pk.pack(offset), pk.pack("d");
        pk.pack_bin(static_cast<std::uint32_t>(d.size()));
        pk.pack_bin_body(d.data(), static_cast<std::uint32_t>(d.size()));
        return std::string(buf.data(), buf.size());
    };
    auto framed = [](const std::vector<std::string>& datagrams) {
        std::string out;
        for (const auto& d : datagrams) {
            out.push_back(static_cast<char>(d.size() >> 8));
            out.push_back(static_cast<char>(d.size()));
            out += d;
        }
        return out;
    };
    auto signed7 = value_bytes(7, 1), plain7 = value_bytes(7, 0), sealed9 = value_bytes(9, 2);
    write(dir, "signed-then-unsigned", framed({put(1, {signed7}, {}), put(2, {plain7}, {})}));
    write(dir, "encrypted", framed({put(3, {sealed9}, {})}));
    write(dir, "in-parts",
          framed({put(4, {}, {signed7.size(), plain7.size()}), part(4, 0, 0, signed7),
                  part(4, 1, 0, plain7.substr(0, 5)), part(4, 1, 5, plain7.substr(5))}));
    msgpack::sbuffer ping;
    Packer pk(ping);
    pk.pack_map(4);
    pk.pack("y"), pk.pack("q"), pk.pack("t"), pk.pack(5u), pk.pack("q"), pk.pack("ping"), pk.pack("a");
    pk.pack_map(0);
    write(dir, "ping", framed({std::string(ping.data(), ping.size())}));
}

int main(int argc, char** argv) {
    std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "identity") {
        auto id = must(crypto::Identity::generate(2048, "Fuzz recipient"));
        std::cout << "// A fixed identity for the fuzz targets and their seeds (made by\n"
                     "// `juice_fuzz_seeds identity`). TEST ONLY: the private key is public.\n"
                     "#pragma once\n\nnamespace juice::fuzz {\n\ninline constexpr const char* "
                     "k_recipient_key_pem =\n    "
                  << c_string(id.private_key_pem())
                  << ";\n\ninline constexpr const char* k_recipient_crt_pem =\n    "
                  << c_string(id.certificate_pem()) << ";\n\n}  // namespace juice::fuzz\n";
        return 0;
    }
    if (mode != "corpus" || argc < 3) {
        std::cerr << "usage: juice_fuzz_seeds corpus DIR | identity > test_identity.hpp\n";
        return 2;
    }
    fs::path root = argv[2];
    auto sender = must(crypto::Identity::generate(2048, "Fuzz sender"));
    frames(root / "frame");
    inbox(root / "inbox");
    presence(root / "presence");
    contacts(root / "contact");
    identities(root / "identity", sender);
    sealed(root / "sealed", sender);
    node_cache(root / "node_cache");
    store(root / "store");
    api(root / "api");
    put_guard(root / "put_guard", sender);
    rtp(root / "rtp");
    std::cout << "seeds written to " << root << "\n";
    return 0;
}
