#include "put_guard.hpp"

#include "identities.hpp"

#include <opendht/crypto.h>
#include <opendht/value.h>

#include <catch2/catch.hpp>
#include <msgpack.hpp>

#include <string>

using namespace std::chrono_literals;

using juice::dht::PutGuard;

namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;
using Bytes = std::vector<std::uint8_t>;

void str(Packer& pk, const std::string& s) {
    pk.pack_str(static_cast<std::uint32_t>(s.size()));
    pk.pack_str_body(s.data(), static_cast<std::uint32_t>(s.size()));
}

// A serialized value the way OpenDHT 2.4.12 packs one.
enum class Kind { signed_value, unsigned_value, encrypted, owner_without_sig };
Bytes value(std::uint64_t id, Kind kind) {
    msgpack::sbuffer buf;
    Packer pk(buf);
    pk.pack_map(2);
    str(pk, "id");
    pk.pack_uint64(id);
    str(pk, "dat");
    if (kind == Kind::encrypted) {
        pk.pack_bin(4);
        pk.pack_bin_body("\x01\x02\x03\x04", 4);
    } else {
        bool owner = kind != Kind::unsigned_value;
        pk.pack_map(kind == Kind::signed_value ? 2 : 1);
        str(pk, "body");
        pk.pack_map(owner ? 4 : 2);
        if (owner) {
            str(pk, "seq");
            pk.pack(1);
            str(pk, "owner");
            pk.pack_bin(3);
            pk.pack_bin_body("key", 3);
        }
        str(pk, "type");
        pk.pack(0x4a50);
        str(pk, "data");
        pk.pack_bin(2);
        pk.pack_bin_body("hi", 2);
        if (kind == Kind::signed_value) {
            str(pk, "sig");
            pk.pack_bin(3);
            pk.pack_bin_body("sig", 3);
        }
    }
    return Bytes(buf.data(), buf.data() + buf.size());
}

PutGuard::Key key_of(std::uint8_t b) {
    PutGuard::Key k{};
    k.fill(b);
    return k;
}

// A "put" query. Each entry of `inline_values` is embedded; each of `sizes`
// announces a value that follows in parts.
Bytes put(const PutGuard::Key& key, std::uint32_t tid, const std::vector<Bytes>& inline_values,
          const std::vector<std::size_t>& sizes = {}) {
    msgpack::sbuffer buf;
    Packer pk(buf);
    pk.pack_map(4);
    str(pk, "y");
    str(pk, "q");
    str(pk, "t");
    pk.pack(tid);
    str(pk, "q");
    str(pk, "put");
    str(pk, "a");
    pk.pack_map(3);
    str(pk, "id");
    pk.pack_bin(20);
    pk.pack_bin_body(std::string(20, 'n').data(), 20);
    str(pk, "h");
    pk.pack_bin(20);
    pk.pack_bin_body(reinterpret_cast<const char*>(key.data()), 20);
    str(pk, "values");
    pk.pack_array(static_cast<std::uint32_t>(inline_values.size() + sizes.size()));
    for (const auto& v : inline_values) buf.write(reinterpret_cast<const char*>(v.data()), v.size());
    for (auto s : sizes) pk.pack(s);
    return Bytes(buf.data(), buf.data() + buf.size());
}

// A "p" packet carrying bytes [offset, offset + n) of value `index`.
Bytes part(std::uint32_t tid, unsigned index, std::size_t offset, const Bytes& whole, std::size_t n) {
    msgpack::sbuffer buf;
    Packer pk(buf);
    pk.pack_map(3);
    str(pk, "y");
    str(pk, "p");
    str(pk, "t");
    pk.pack(tid);
    str(pk, "p");
    pk.pack_map(1);
    pk.pack(index);
    pk.pack_map(2);
    str(pk, "o");
    pk.pack(offset);
    str(pk, "d");
    pk.pack_bin(static_cast<std::uint32_t>(n));
    pk.pack_bin_body(reinterpret_cast<const char*>(whole.data() + offset), static_cast<std::uint32_t>(n));
    return Bytes(buf.data(), buf.data() + buf.size());
}

}  // namespace

TEST_CASE("put guard: an ownerless value reusing a signed value's id is dropped") {
    PutGuard g;
    auto now = PutGuard::Clock::now();
    auto k = key_of(1);
    CHECK(g.inspect(put(k, 1, {value(42, Kind::signed_value)}), "1.2.3.4:5", now));
    CHECK(g.protected_pairs() == 1);
    // The crash packet: same key, same id, no owner (unsigned or encrypted).
    CHECK_FALSE(g.inspect(put(k, 2, {value(42, Kind::unsigned_value)}), "6.6.6.6:6", now));
    CHECK_FALSE(g.inspect(put(k, 3, {value(42, Kind::encrypted)}), "6.6.6.6:6", now));
    CHECK(g.dropped() == 2);
    // Harmless: another id, another key, a signed edit, an owner that OpenDHT itself refuses.
    CHECK(g.inspect(put(k, 4, {value(43, Kind::unsigned_value)}), "6.6.6.6:6", now));
    CHECK(g.inspect(put(key_of(2), 5, {value(42, Kind::encrypted)}), "6.6.6.6:6", now));
    CHECK(g.inspect(put(k, 6, {value(42, Kind::signed_value)}), "6.6.6.6:6", now));
    CHECK(g.inspect(put(k, 7, {value(42, Kind::owner_without_sig)}), "6.6.6.6:6", now));
    CHECK(g.dropped() == 2);
}

TEST_CASE("put guard: a signed and an ownerless value with one id in the same put are dropped") {
    PutGuard g;
    auto k = key_of(3);
    CHECK_FALSE(g.inspect(put(k, 1, {value(7, Kind::signed_value), value(7, Kind::unsigned_value)}), "a:1",
                          PutGuard::Clock::now()));
}

TEST_CASE("put guard: our own signed values are protected without a packet") {
    PutGuard g;
    auto k = key_of(4);
    g.protect(k, 99);
    CHECK_FALSE(g.inspect(put(k, 1, {value(99, Kind::unsigned_value)}), "a:1", PutGuard::Clock::now()));
}

TEST_CASE("put guard: values in parts are reassembled and checked") {
    PutGuard g;
    auto now = PutGuard::Clock::now();
    auto k = key_of(5);
    g.protect(k, 1234);
    auto bad = value(1234, Kind::unsigned_value);
    auto good = value(555, Kind::encrypted);
    // The header passes (nothing to judge yet); parts of the good value pass;
    // the part that completes the bad value is dropped, and so is the rest.
    CHECK(g.inspect(put(k, 77, {}, {good.size(), bad.size()}), "6.6.6.6:6", now));
    CHECK(g.inspect(part(77, 0, 0, good, good.size()), "6.6.6.6:6", now));
    CHECK(g.inspect(part(77, 1, 0, bad, 10), "6.6.6.6:6", now));
    CHECK(g.inspect(part(77, 1, 20, bad, 5), "6.6.6.6:6", now));  // out of order: ignored, like OpenDHT
    CHECK_FALSE(g.inspect(part(77, 1, 10, bad, bad.size() - 10), "6.6.6.6:6", now));
    CHECK_FALSE(g.inspect(part(77, 1, 0, bad, 1), "6.6.6.6:6", now));
    // Parts from another address, or of an unknown put, are not ours to judge.
    CHECK(g.inspect(part(77, 1, 10, bad, bad.size() - 10), "7.7.7.7:7", now));
    CHECK(g.inspect(part(78, 0, 0, bad, bad.size()), "6.6.6.6:6", now));
    // A signed value in parts becomes protected once complete.
    auto signed_big = value(4321, Kind::signed_value);
    CHECK(g.inspect(put(k, 80, {}, {signed_big.size()}), "8.8.8.8:8", now));
    CHECK(g.inspect(part(80, 0, 0, signed_big, signed_big.size()), "8.8.8.8:8", now));
    CHECK_FALSE(g.inspect(put(k, 81, {value(4321, Kind::encrypted)}), "6.6.6.6:6", now));
}

TEST_CASE("put guard: bounded partial state, and garbage passes to OpenDHT untouched") {
    PutGuard g;
    auto now = PutGuard::Clock::now();
    auto k = key_of(6);
    // One sender can have k_max_partials_per_sender puts in parts followed at once.
    for (std::uint32_t t = 0; t < PutGuard::k_max_partials_per_sender; ++t)
        CHECK(g.inspect(put(k, t, {}, {100}), "a:1", now));
    // One more cannot be followed, so it is refused rather than let through unchecked.
    CHECK_FALSE(g.inspect(put(k, 1000, {}, {100}), "a:1", now));
    CHECK(g.dropped_untracked() == 1);
    CHECK(g.dropped() == 0);  // not a crash put
    // Other senders have their own room.
    CHECK(g.inspect(put(k, 1000, {}, {100}), "z:1", now));
    // Over 1 MiB announced in parts: refused. A single size over OpenDHT's
    // value limit is skipped by OpenDHT itself, so it passes untracked.
    CHECK_FALSE(g.inspect(put(k, 1001, {}, std::vector<std::size_t>(20, 60000)), "b:1", now + 11s));
    CHECK(g.inspect(put(k, 1003, {}, {70000}), "b:1", now + 11s));
    // After the time-out the slots are free again.
    CHECK(g.inspect(put(k, 1002, {}, {100}), "a:1", now + PutGuard::k_partial_ttl + 1s));
    // The global cap holds across many senders.
    PutGuard h;
    for (std::size_t i = 0; i < PutGuard::k_max_partials; ++i)
        REQUIRE(h.inspect(put(k, 1, {}, {100}), "s:" + std::to_string(i), now));
    CHECK_FALSE(h.inspect(put(k, 1, {}, {100}), "last:1", now));
    CHECK(h.partials() == PutGuard::k_max_partials);
    for (const Bytes& junk :
         {Bytes{}, Bytes{0xc1}, Bytes{0x90}, Bytes(100, 0xff), Bytes{0x81, 0xa1, 'y', 0x01}})
        CHECK(g.inspect(junk, "c:1", now));
}

TEST_CASE("put guard: a put is forgotten once its last part arrived") {
    // Every signed presence record travels in parts: a storage node follows
    // many at once. Completed ones must free their slot at once, not after
    // the TTL (a busy node dropped real puts when they did not).
    PutGuard g;
    auto now = PutGuard::Clock::now();
    auto k = key_of(8);
    auto v = value(42, Kind::signed_value);
    for (std::uint32_t t = 0; t < 10 * PutGuard::k_max_partials_per_sender; ++t) {
        REQUIRE(g.inspect(put(k, t, {}, {v.size()}), "busy:1", now));
        REQUIRE(g.inspect(part(t, 0, 0, v, 10), "busy:1", now));
        REQUIRE(g.inspect(part(t, 0, 10, v, v.size() - 10), "busy:1", now));
    }
    CHECK(g.partials() == 0);
    CHECK(g.dropped_untracked() == 0);
    // A put whose first value is complete but the second is not stays followed.
    auto w = value(43, Kind::encrypted);
    CHECK(g.inspect(put(k, 999, {}, {v.size(), w.size()}), "busy:1", now));
    CHECK(g.inspect(part(999, 0, 0, v, v.size()), "busy:1", now));
    CHECK(g.partials() == 1);
    CHECK(g.inspect(part(999, 1, 0, w, w.size()), "busy:1", now));
    CHECK(g.partials() == 0);
}

TEST_CASE("put guard: packets OpenDHT reads the same way are read the same way") {
    // bin instead of str for "y"/"q", the arguments under "r", a 4-byte tid,
    // a repeated top-level key (the last one counts, as in OpenDHT).
    PutGuard g;
    auto now = PutGuard::Clock::now();
    auto k = key_of(7);
    g.protect(k, 5);
    auto bad = value(5, Kind::unsigned_value);
    auto build = [&](bool bin_strings, const char* args_key, bool dup_y) {
        msgpack::sbuffer buf;
        Packer pk(buf);
        pk.pack_map(dup_y ? 5 : 4);
        auto text = [&](const std::string& s) {
            if (bin_strings) {
                pk.pack_bin(static_cast<std::uint32_t>(s.size()));
                pk.pack_bin_body(s.data(), static_cast<std::uint32_t>(s.size()));
            } else {
                str(pk, s);
            }
        };
        if (dup_y) {
            str(pk, "y");
            str(pk, "r");  // overridden by the later "y"
        }
        str(pk, "y");
        text("q");
        str(pk, "t");
        pk.pack_bin(4);
        pk.pack_bin_body("\0\0\0\7", 4);
        str(pk, "q");
        text("put");
        str(pk, args_key);
        pk.pack_map(2);
        str(pk, "h");
        pk.pack_bin(20);
        pk.pack_bin_body(reinterpret_cast<const char*>(k.data()), 20);
        str(pk, "values");
        pk.pack_array(1);
        buf.write(reinterpret_cast<const char*>(bad.data()), bad.size());
        return Bytes(buf.data(), buf.data() + buf.size());
    };
    CHECK_FALSE(g.inspect(build(true, "a", false), "x:1", now));
    CHECK_FALSE(g.inspect(build(false, "r", false), "x:1", now));
    CHECK_FALSE(g.inspect(build(false, "a", true), "x:1", now));
}

TEST_CASE("put guard: values serialized by OpenDHT itself are classified right") {
    // Ties the guard to the real wire format (not to this file's idea of it).
    auto pem = juice::test::alice().private_key_pem();
    ::dht::crypto::PrivateKey key(::dht::Blob(pem.begin(), pem.end()), "");
    auto pem_b = juice::test::bob().certificate_pem();
    ::dht::crypto::Certificate bob_cert(::dht::Blob(pem_b.begin(), pem_b.end()));
    auto pack = [](const ::dht::Value& v) {
        msgpack::sbuffer buf;
        msgpack::pack(buf, v);
        return Bytes(buf.data(), buf.data() + buf.size());
    };
    ::dht::Value signed_value(0, ::dht::Blob{'s'}, 77);
    signed_value.sign(key);
    ::dht::Value plain(0, ::dht::Blob{'p'}, 77);
    ::dht::Value to_seal(0, ::dht::Blob{'e'}, 77);
    auto sealed = to_seal.encrypt(key, bob_cert.getPublicKey());

    PutGuard g;
    auto now = PutGuard::Clock::now();
    auto k = key_of(9);
    CHECK(g.inspect(put(k, 1, {pack(signed_value)}), "a:1", now));
    CHECK(g.protected_pairs() == 1);
    CHECK_FALSE(g.inspect(put(k, 2, {pack(plain)}), "a:1", now));
    CHECK_FALSE(g.inspect(put(k, 3, {pack(sealed)}), "a:1", now));
    CHECK(g.inspect(put(k, 4, {pack(signed_value)}), "a:1", now));  // a signed re-put is fine
}
