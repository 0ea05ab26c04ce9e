// UTF-8 helpers and GPT-2's byte <-> unicode table, used by the tokenizers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace trit::engine::unicode {

// Length of the UTF-8 sequence that starts with `lead` (1 for bytes that cannot start one).
int utf8_len(uint8_t lead);

// Decodes the well-formed UTF-8 character at s[pos] (no overlong forms, no surrogates, at most
// U+10FFFF, exactly what PCRE2 accepts). Returns its length in bytes and sets cp, or returns 0
// when the bytes there are not a valid character.
size_t decode_utf8(std::string_view s, size_t pos, uint32_t& cp);

// True when the whole string is valid UTF-8.
bool is_valid_utf8(std::string_view s);

void append_utf8(std::string& out, uint32_t cp);

// GPT-2's reversible map from bytes to printable characters: the byte-level BPE vocabulary
// spells every byte as one of these characters (space is "Ġ", newline is "Ċ").
const std::string& byte_to_unicode(uint8_t b);  // the UTF-8 of the mapped character
int unicode_to_byte(uint32_t cp);               // -1 when cp is not in the table

}  // namespace trit::engine::unicode
