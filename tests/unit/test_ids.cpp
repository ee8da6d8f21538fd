#include "juice/crypto/ids.hpp"

#include <catch2/catch.hpp>

using namespace juice;

TEST_CASE("hex round trip and rejects") {
    Bytes raw{0x00, 0x01, 0xab, 0xff};
    CHECK(to_hex(raw) == "0001abff");
    CHECK(from_hex("0001ABff") == raw);
    CHECK_FALSE(from_hex("abc"));
    CHECK_FALSE(from_hex("zz"));
    CHECK(from_hex("")->empty());
}

TEST_CASE("fixed ids parse only their exact length") {
    auto id = UserId::random();
    auto back = UserId::from_hex(id.hex());
    REQUIRE(back);
    CHECK(*back == id);
    CHECK_FALSE(UserId::from_hex(id.hex().substr(2)));
    CHECK_FALSE(MessageId::from_hex(id.hex()));
    CHECK(UserId{}.is_zero());
    CHECK_FALSE(id.is_zero());
    CHECK(MessageId::random() != MessageId::random());
}
