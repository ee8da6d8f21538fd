#include "juice/crypto/errors.hpp"
#include "juice/crypto/identity.hpp"

#include <opendht/crypto.h>
#include <sys/stat.h>
#include "identities.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <iterator>
#include <thread>

using namespace juice;
using namespace juice::crypto;
namespace fs = std::filesystem;

namespace {

using test::alice;
using test::bob;

struct TempDir {
    fs::path path;
    TempDir() {
        std::uint8_t rnd[8];
        random_bytes(rnd);
        path = fs::temp_directory_path() / ("juice-test-identity-" + to_hex(rnd));
    }
    ~TempDir() {
        std::error_code ec;
        fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
        fs::remove_all(path, ec);
    }
};

std::string read_all(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}
void write_all(const fs::path& p, const std::string& data) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << data;
}
unsigned mode_of(const fs::path& p) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return st.st_mode & 0777;
}

}  // namespace

TEST_CASE("identity: generate gives a self-signed certificate named after the user") {
    const auto& a = alice();
    CHECK_FALSE(a.id().is_zero());
    CHECK(a.certificate_name() == "Alice");
    CHECK(a.certificate_pem().rfind("-----BEGIN CERTIFICATE-----", 0) == 0);
    CHECK(a.private_key_pem().rfind("-----BEGIN PRIVATE KEY-----", 0) == 0);
    CHECK(a.gnutls_privkey() != nullptr);
    CHECK(a.gnutls_certificate() != nullptr);
    CHECK(a.id() != bob().id());

    auto from_der = user_id_of_certificate(a.certificate_der());
    REQUIRE(from_der);
    CHECK(*from_der == a.id());
    auto pem = a.certificate_pem();
    auto from_pem = user_id_of_certificate(Bytes(pem.begin(), pem.end()));
    REQUIRE(from_pem);
    CHECK(*from_pem == a.id());
}

TEST_CASE("identity: user_id_of_certificate rejects garbage") {
    auto r = user_id_of_certificate(Bytes{1, 2, 3, 4});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::corrupt_key);
    CHECK_FALSE(user_id_of_certificate(Bytes{}));
}

TEST_CASE("identity: the id is OpenDHT's PublicKey::getId() for the same key") {
    const auto& a = alice();
    auto key_pem = a.private_key_pem();
    dht::crypto::PrivateKey key{std::string_view(key_pem)};
    CHECK(key.getPublicKey().getId().toString() == a.id().hex());

    dht::crypto::Certificate cert(a.certificate_der());
    CHECK(cert.getId().toString() == a.id().hex());
    CHECK(cert.getName() == "Alice");
    CHECK(cert.isCA());

    // The daemon hands OpenDHT the key in memory, decrypted by us: OpenDHT
    // 2.4.12's PrivateKey(data, size, password) inverts its flags and cannot
    // import an encrypted PKCS#8 key. A key that went through our encrypted
    // file still gives OpenDHT the same id.
    TempDir dir;
    REQUIRE(a.save(dir.path, std::string("s3cret")));
    auto loaded = Identity::load(dir.path, std::string("s3cret"));
    REQUIRE(loaded);
    auto loaded_pem = loaded->private_key_pem();
    dht::crypto::PrivateKey from_file{std::string_view(loaded_pem)};
    CHECK(from_file.getPublicKey().getId().toString() == a.id().hex());
}

TEST_CASE("identity: save and load round trip, plain and encrypted") {
    const auto& a = alice();
    auto passphrase = GENERATE(std::optional<std::string>{}, std::optional<std::string>{""},
                               std::optional<std::string>{"correct horse"});
    TempDir tmp;
    auto dir = tmp.path / "data" / "juice";
    CHECK_FALSE(Identity::exists(dir));
    auto saved = a.save(dir, passphrase);
    REQUIRE(saved);
    CHECK(Identity::exists(dir));
    CHECK(mode_of(dir) == 0700);
    CHECK(mode_of(dir / "identity.key") == 0600);
    CHECK(mode_of(dir / "identity.crt") == 0600);
    // No temp files left behind.
    CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 2);

    bool encrypted = passphrase && !passphrase->empty();
    CHECK((read_all(dir / "identity.key").find("ENCRYPTED") != std::string::npos) == encrypted);

    auto loaded = Identity::load(dir, passphrase);
    REQUIRE(loaded);
    CHECK(loaded->id() == a.id());
    CHECK(loaded->certificate_pem() == a.certificate_pem());
    CHECK(loaded->certificate_name() == "Alice");
    CHECK(loaded->private_key_pem() == a.private_key_pem());
}

TEST_CASE("identity: an encrypted key needs the right passphrase") {
    TempDir tmp;
    REQUIRE(alice().save(tmp.path, std::string("right")));
    auto before = read_all(tmp.path / "identity.key");

    auto wrong = Identity::load(tmp.path, std::string("wrong"));
    REQUIRE_FALSE(wrong);
    CHECK(wrong.error().code == errc::wrong_passphrase);

    auto none = Identity::load(tmp.path, std::nullopt);
    REQUIRE_FALSE(none);
    CHECK(none.error().code == errc::passphrase_required);

    auto empty = Identity::load(tmp.path, std::string());
    REQUIRE_FALSE(empty);
    CHECK(empty.error().code == errc::passphrase_required);

    CHECK(read_all(tmp.path / "identity.key") == before);
    CHECK(Identity::load(tmp.path, std::string("right")));
}

TEST_CASE("identity: save never overwrites an existing key") {
    TempDir tmp;
    REQUIRE(alice().save(tmp.path, std::nullopt));
    auto key_before = read_all(tmp.path / "identity.key");
    auto crt_before = read_all(tmp.path / "identity.crt");
    auto again = bob().save(tmp.path, std::nullopt);
    REQUIRE_FALSE(again);
    CHECK(again.error().code == errc::io_error);
    CHECK(read_all(tmp.path / "identity.key") == key_before);
    CHECK(read_all(tmp.path / "identity.crt") == crt_before);
    CHECK(Identity::load(tmp.path, std::nullopt)->id() == alice().id());
}

TEST_CASE("identity: a missing identity is not_found") {
    TempDir tmp;
    auto r = Identity::load(tmp.path, std::nullopt);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::not_found);
    CHECK_FALSE(Identity::exists(tmp.path));
}

TEST_CASE("identity: damaged files are corrupt_key and are left untouched") {
    auto passphrase = GENERATE(std::optional<std::string>{}, std::optional<std::string>{"pw"});
    TempDir tmp;
    REQUIRE(alice().save(tmp.path, passphrase));
    const auto key_path = tmp.path / "identity.key";
    const auto crt_path = tmp.path / "identity.crt";
    const auto good_key = read_all(key_path);
    const auto good_crt = read_all(crt_path);

    auto expect_corrupt = [&](const fs::path& file, const std::string& content) {
        write_all(file, content);
        auto r = Identity::load(tmp.path, passphrase);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == errc::corrupt_key);
        CHECK_FALSE(r.error().message.empty());
        CHECK(read_all(file) == content);
        write_all(key_path, good_key);
        write_all(crt_path, good_crt);
    };
    SECTION("truncated key") {
        expect_corrupt(key_path, good_key.substr(0, good_key.size() / 2));
    }
    SECTION("key cut after the header") {
        expect_corrupt(key_path, good_key.substr(0, 40));
    }
    SECTION("empty key") {
        expect_corrupt(key_path, "");
    }
    SECTION("garbage key") {
        expect_corrupt(key_path, std::string(3000, '\x9c'));
    }
    SECTION("garbage inside the PEM armour") {
        auto bad = good_key;
        auto begin = bad.find('\n') + 1;
        for (std::size_t i = begin; i < begin + 200; ++i)
            if (bad[i] != '\n') bad[i] = '!';
        expect_corrupt(key_path, bad);
    }
    SECTION("truncated certificate") {
        expect_corrupt(crt_path, good_crt.substr(0, good_crt.size() / 2));
    }
    SECTION("garbage certificate") {
        expect_corrupt(crt_path, "hello\n");
    }
    SECTION("missing certificate") {
        fs::remove(crt_path);
        auto r = Identity::load(tmp.path, passphrase);
        REQUIRE_FALSE(r);
        CHECK(r.error().code == errc::corrupt_key);
        write_all(crt_path, good_crt);
    }
    // The good files still load after every section restored them.
    CHECK(Identity::load(tmp.path, passphrase));
}

TEST_CASE("identity: a certificate of another key is key_mismatch") {
    TempDir tmp;
    REQUIRE(alice().save(tmp.path, std::nullopt));
    write_all(tmp.path / "identity.crt", bob().certificate_pem());
    auto r = Identity::load(tmp.path, std::nullopt);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == errc::key_mismatch);
}

TEST_CASE("identity: generate rejects bad parameters") {
    auto small = Identity::generate(1024, "x");
    REQUIRE_FALSE(small);
    CHECK(small.error().code == errc::generate_failed);
    auto long_name = Identity::generate(2048, std::string(65, 'a'));
    REQUIRE_FALSE(long_name);
    CHECK(long_name.error().code == errc::generate_failed);
}

TEST_CASE("identity: generate calls progress from another thread while it works") {
    std::atomic<int> calls{0};
    std::atomic<bool> other_thread{true};
    std::atomic<long> last_ms{-1};
    const auto caller = std::this_thread::get_id();
    auto start = std::chrono::steady_clock::now();
    // 4096 bits: long enough (about a second or more) that progress must tick.
    auto id = Identity::generate(4096, "Slow", [&](std::chrono::milliseconds elapsed) {
        if (std::this_thread::get_id() == caller) other_thread = false;
        if (elapsed.count() < last_ms) other_thread = false;  // elapsed must grow
        last_ms = elapsed.count();
        ++calls;
    });
    auto took = std::chrono::steady_clock::now() - start;
    REQUIRE(id);
    CHECK(other_thread);
    if (took > std::chrono::milliseconds(400)) CHECK(calls >= 1);
    CHECK(id->certificate_name() == "Slow");
}
