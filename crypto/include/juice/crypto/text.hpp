// UTF-8 checks shared by every decoder that accepts text from outside
// (contact URIs, link frames). Strict: no overlong forms, no surrogates,
// nothing above U+10FFFF.
#pragma once

#include <cstddef>
#include <string_view>

namespace juice {

// Length in bytes (1..4) of the valid UTF-8 sequence starting at s[i], or 0
// if none starts there. Precondition: i < s.size().
std::size_t utf8_sequence(std::string_view s, std::size_t i);

bool valid_utf8(std::string_view s);

}  // namespace juice
