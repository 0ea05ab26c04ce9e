// Pre-tokenizers of byte-level BPE: a regular expression (PCRE2, Unicode classes) splits text
// into words before merges apply.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace trit::engine {

// The regular expression of a tokenizer.ggml.pre name: the llama-3 pattern for "llama3",
// "llama-bpe" and their kin, single-digit numbers for "qwen2", GPT-2's for everything else.
// Sets ignore_merges for the llama-3 family (a word that is a token is taken whole).
std::string pretokenizer_pattern(std::string_view pre, bool* ignore_merges = nullptr);

extern const char* const kGpt2Pattern;
extern const char* const kLlama3Pattern;
extern const char* const kQwen2Pattern;

class RegexSplitter {
 public:
  // Throws trit::Error when the pattern does not compile.
  explicit RegexSplitter(const std::string& pattern);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Appends the words of text (views into text) in order; together they cover every byte.
  // Bytes that are not valid UTF-8 take part as if they were U+FFFD and come back unchanged.
  void split(std::string_view text, std::vector<std::string_view>& words) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trit::engine
