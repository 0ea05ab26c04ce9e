// What the two BPE tokenizers share: the token list with its types, text -> id lookup, special
// tokens found in text, and the end-of-generation set.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace trit::engine::tok {

enum TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// The byte of a token spelled "<0xXX>", or -1.
int parse_byte_token(std::string_view text);

// Checks lengths and special ids of the data; throws trit::Error naming `where` and the key.
void validate(const TokenizerData& data, std::string_view where);

class VocabTokenizer : public Tokenizer {
 public:
  explicit VocabTokenizer(const TokenizerData& data);

  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }
  std::optional<int32_t> find_token(std::string_view text) const override;

 protected:
  // A piece of text to tokenise, or a special token found in the text (special >= 0).
  struct Fragment {
    std::string_view text;
    int32_t special = -1;
  };
  // Splits text at special tokens, longest match first: user-defined tokens always, control
  // and unknown tokens only with parse_special.
  void partition(std::string_view text, bool parse_special, std::vector<Fragment>& out) const;

  int32_t type_of(int32_t id) const { return types_.empty() ? kNormal : types_[id]; }
  int32_t lookup(std::string_view text) const {
    auto it = ids_.find(text);
    return it == ids_.end() ? -1 : it->second;
  }
  // Throws when id is not a token of this vocabulary.
  void check_id(int32_t id) const;
  // The merges as pairs of token ids, in priority order; throws naming the merge index when one
  // does not split in two known tokens.
  std::vector<std::pair<int32_t, int32_t>> parse_merges(const std::vector<std::string>& merges,
                                                        std::string_view where) const;
  // The token spelled "<0xXX>" for each byte, or -1.
  std::array<int32_t, 256> byte_tokens() const;

  std::vector<std::string> tokens_;
  std::vector<int32_t> types_;  // empty when the file has none (every token normal)
  std::unordered_map<std::string_view, int32_t> ids_;  // views into tokens_
  int32_t unk_ = -1;

 private:
  std::array<std::vector<int32_t>, 256> specials_;  // by first byte, longest first
};

std::unique_ptr<Tokenizer> make_byte_level_bpe(const TokenizerData& data, std::string_view where);
std::unique_ptr<Tokenizer> make_sentencepiece_bpe(const TokenizerData& data,
                                                  std::string_view where);

}  // namespace trit::engine::tok
