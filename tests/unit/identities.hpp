// Test identities shared by the unit tests. Key generation is slow, so each
// is made once per test process (2048-bit keys).
#pragma once

#include "juice/crypto/identity.hpp"

namespace juice::test {

inline const crypto::Identity& alice() {
    static const crypto::Identity id = *crypto::Identity::generate(2048, "Alice");
    return id;
}
inline const crypto::Identity& bob() {
    static const crypto::Identity id = *crypto::Identity::generate(2048, "Bob");
    return id;
}
// Same name as Bob, different key: must never pass as Bob.
inline const crypto::Identity& fake_bob() {
    static const crypto::Identity id = *crypto::Identity::generate(2048, "Bob");
    return id;
}

}  // namespace juice::test
