// The text of generated tokens as it may be shown while generation goes on: whole UTF-8
// characters only, and nothing that may be the start of a stop string until it is known not
// to be one. A stop string ends the text before it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace trit::engine {

class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stop = {});
  // Adds a token's bytes and returns the text that is now safe to show (often empty). Once a
  // stop string has appeared, stopped() is true: the text before it has been returned, the
  // rest is dropped and later pushes return nothing.
  std::string push(std::string_view bytes);
  // At the end: what was held back (the start of a stop string that did not come, an
  // incomplete character), which is then shown too.
  std::string finish();
  bool stopped() const { return stopped_; }
  const std::string& text() const { return text_; }  // everything returned so far

 private:
  std::string emit(size_t n);  // moves pending_[0, n) to the text

  std::vector<std::string> stop_;
  std::string pending_;  // received, not yet returned
  std::string text_;
  bool stopped_ = false;
};

// The length of the longest prefix of s that ends on a UTF-8 character boundary (an
// incomplete multi-byte sequence at the end is left out).
size_t utf8_complete_prefix(std::string_view s);

}  // namespace trit::engine
