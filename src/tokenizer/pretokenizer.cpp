#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace trit::engine {

// GPT-2 (and every pre-tokenizer name trit does not know: deepseek, falcon, starcoder, ...
// fall back to it, which splits digits and some punctuation differently from their own).
const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3 (tokenizer.json's Split regex): case-insensitive contractions, letters with one
// leading non-letter, numbers in groups of up to three digits, punctuation runs with the
// newlines that follow them, newline runs, and whitespace not followed by a word.
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen 2: as llama 3 with single digits.
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string pretokenizer_pattern(std::string_view pre, bool* ignore_merges) {
  if (ignore_merges) *ignore_merges = false;
  if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "falcon3" ||
      pre == "falcon-h1" || pre == "pixtral") {
    if (ignore_merges) *ignore_merges = true;
    return kLlama3Pattern;
  }
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") return kQwen2Pattern;
  return kGpt2Pattern;  // "default", "gpt2" and unknown names
}

struct RegexSplitter::Impl {
  pcre2_code* code = nullptr;
};

RegexSplitter::RegexSplitter(const std::string& pattern) : impl_(std::make_unique<Impl>()) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (!impl_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    fail("pre-tokenizer regex: ", reinterpret_cast<const char*>(msg), " at offset ", err_offset);
  }
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);  // interpreted when JIT is unavailable
}

RegexSplitter::~RegexSplitter() {
  if (impl_ && impl_->code) pcre2_code_free(impl_->code);
}

void RegexSplitter::split(std::string_view text, std::vector<std::string_view>& words) const {
  if (text.empty()) return;
  // PCRE2 in UTF mode needs valid UTF-8: match on a copy where each stray byte is U+FFFD, and
  // map the boundaries back to the original bytes.
  std::string clean;
  std::vector<size_t> to_orig;  // clean offset -> text offset (only when a copy is made)
  std::string_view subject = text;
  if (!unicode::is_valid_utf8(text)) {
    clean.reserve(text.size() + 16);
    to_orig.reserve(text.size() + 16);
    size_t pos = 0;
    uint32_t cp = 0;
    while (pos < text.size()) {
      size_t len = unicode::decode_utf8(text, pos, cp);
      if (len == 0) {
        clean += "\xEF\xBF\xBD";
        to_orig.insert(to_orig.end(), 3, pos);
        len = 1;
      } else {
        clean.append(text.substr(pos, len));
        for (size_t k = 0; k < len; ++k) to_orig.push_back(pos + k);
      }
      pos += len;
    }
    to_orig.push_back(text.size());
    subject = clean;
  }
  auto orig = [&](size_t off) { return to_orig.empty() ? off : to_orig[off]; };
  auto emit = [&](size_t begin, size_t end) {
    const size_t b = orig(begin), e = orig(end);
    if (e > b) words.push_back(text.substr(b, e - b));
  };

  pcre2_match_data* md = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  if (!md) fail("pre-tokenizer regex: out of memory");
  const auto* subj = reinterpret_cast<PCRE2_SPTR>(subject.data());
  const size_t n = subject.size();
  size_t off = 0;
  while (off < n) {
    int rc = pcre2_match(impl_->code, subj, n, off, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
      // JIT stack exhausted (very long runs): the interpreter keeps its stack on the heap.
      rc = pcre2_match(impl_->code, subj, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) {
      emit(off, n);
      break;
    }
    if (rc < 0) {
      pcre2_match_data_free(md);
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      fail("pre-tokenizer regex: ", reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t begin = ov[0], end = ov[1];
    if (begin > off) emit(off, begin);  // text no alternative matched stays one word
    if (end <= begin) end = begin + unicode::utf8_len(static_cast<uint8_t>(subject[begin]));
    end = std::min(end, n);
    emit(begin, end);
    off = end;
  }
  pcre2_match_data_free(md);
}

}  // namespace trit::engine
