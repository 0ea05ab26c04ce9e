// Token spellings for tokenizer tests.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "tokenizer/unicode.h"

namespace trit::engine::test {

// GPT-2's spelling of a raw byte string (byte-level BPE: "Ġ" for a space, ...).
inline std::string spell(std::string_view raw) {
  std::string out;
  for (char c : raw) out += unicode::byte_to_unicode(static_cast<uint8_t>(c));
  return out;
}

}  // namespace trit::engine::test
