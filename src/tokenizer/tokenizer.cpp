// The shared vocabulary, Tokenizer::create and reading tokenizer.ggml.* from a GGUF file.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/gguf.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/vocab.h"

namespace trit::engine {

namespace tok {

namespace {

// Texts that end a turn in the vocabularies trit meets (llama-3, ChatML, SentencePiece).
constexpr std::string_view kEndTexts[] = {"<|eot_id|>", "<|end_of_text|>", "<|im_end|>",
                                          "<|eom_id|>", "</s>"};

void check_length(size_t have, size_t n_tokens, std::string_view where, std::string_view key) {
  if (have != 0 && have != n_tokens) {
    fail(where, ": ", key, ": ", have, " entries for ", n_tokens, " tokens");
  }
}

void check_special(int32_t id, size_t n_tokens, std::string_view where, std::string_view key) {
  if (id < -1 || static_cast<int64_t>(id) >= static_cast<int64_t>(n_tokens)) {
    fail(where, ": ", key, ": ", id, " is out of range (", n_tokens, " tokens)");
  }
}

}  // namespace

int parse_byte_token(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

void validate(const TokenizerData& d, std::string_view where) {
  const size_t n = d.tokens.size();
  if (n == 0) fail(where, ": tokenizer.ggml.tokens: no tokens");
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    fail(where, ": tokenizer.ggml.tokens: ", n, " tokens are too many");
  }
  check_length(d.token_types.size(), n, where, "tokenizer.ggml.token_type");
  check_length(d.scores.size(), n, where, "tokenizer.ggml.scores");
  check_special(d.bos, n, where, "tokenizer.ggml.bos_token_id");
  check_special(d.eos, n, where, "tokenizer.ggml.eos_token_id");
  check_special(d.eot, n, where, "tokenizer.ggml.eot_token_id");
  check_special(d.eom, n, where, "tokenizer.ggml.eom_token_id");
  check_special(d.unk, n, where, "tokenizer.ggml.unknown_token_id");
  check_special(d.pad, n, where, "tokenizer.ggml.padding_token_id");
}

VocabTokenizer::VocabTokenizer(const TokenizerData& d) : tokens_(d.tokens), types_(d.token_types) {
  const auto n = static_cast<int32_t>(tokens_.size());
  for (auto& t : types_) {
    if (t == kUndefined) t = kNormal;
  }
  ids_.reserve(tokens_.size());
  for (int32_t i = 0; i < n; ++i) ids_.emplace(tokens_[i], i);  // the first of duplicates wins

  bos_ = d.bos;
  eos_ = d.eos;
  add_bos_ = d.add_bos;
  unk_ = d.unk;
  if (unk_ < 0) {
    auto it = std::find(types_.begin(), types_.end(), kUnknown);
    if (it != types_.end()) unk_ = static_cast<int32_t>(it - types_.begin());
  }

  for (int32_t id : {d.eos, d.eot, d.eom}) {
    if (id >= 0) eog_ids_.push_back(id);
  }
  for (std::string_view text : kEndTexts) {
    const int32_t id = lookup(text);
    if (id >= 0 && (types_.empty() || types_[id] == kControl)) eog_ids_.push_back(id);
  }
  std::sort(eog_ids_.begin(), eog_ids_.end());
  eog_ids_.erase(std::unique(eog_ids_.begin(), eog_ids_.end()), eog_ids_.end());

  for (int32_t i = 0; i < static_cast<int32_t>(types_.size()); ++i) {
    const int32_t t = types_[i];
    if ((t == kControl || t == kUserDefined || t == kUnknown) && !tokens_[i].empty()) {
      specials_[static_cast<uint8_t>(tokens_[i][0])].push_back(i);
    }
  }
  for (auto& list : specials_) {
    std::stable_sort(list.begin(), list.end(),
                     [&](int32_t a, int32_t b) { return tokens_[a].size() > tokens_[b].size(); });
  }
}

std::optional<int32_t> VocabTokenizer::find_token(std::string_view text) const {
  const int32_t id = lookup(text);
  if (id < 0) return std::nullopt;
  return id;
}

void VocabTokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    fail("tokenizer: token id ", id, " is out of range (", vocab_size(), " tokens)");
  }
}

void VocabTokenizer::partition(std::string_view text, bool parse_special,
                               std::vector<Fragment>& out) const {
  size_t raw_start = 0, pos = 0;
  while (pos < text.size()) {
    int32_t hit = -1;
    for (int32_t id : specials_[static_cast<uint8_t>(text[pos])]) {
      if (!parse_special && types_[id] != kUserDefined) continue;
      const std::string& t = tokens_[id];
      if (t.size() <= text.size() - pos &&
          std::memcmp(text.data() + pos, t.data(), t.size()) == 0) {
        hit = id;  // the lists are sorted longest first
        break;
      }
    }
    if (hit < 0) {
      ++pos;
      continue;
    }
    if (pos > raw_start) out.push_back({text.substr(raw_start, pos - raw_start), -1});
    out.push_back({{}, hit});
    pos += tokens_[hit].size();
    raw_start = pos;
  }
  if (raw_start < text.size()) out.push_back({text.substr(raw_start), -1});
}

std::vector<std::pair<int32_t, int32_t>> VocabTokenizer::parse_merges(
    const std::vector<std::string>& merges, std::string_view where) const {
  std::vector<std::pair<int32_t, int32_t>> out;
  out.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string_view m = merges[i];
    // The separator is the first space after the first byte, so a left token " " still parses.
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
    if (sp == std::string_view::npos) {
      fail(where, ": tokenizer.ggml.merges[", i, "]: '", m,
           "' is not two tokens separated by a space");
    }
    const std::string_view left = m.substr(0, sp), right = m.substr(sp + 1);
    const int32_t l = lookup(left);
    if (l < 0)
      fail(where, ": tokenizer.ggml.merges[", i, "]: '", m, "' names unknown token '", left, "'");
    const int32_t r = lookup(right);
    if (r < 0)
      fail(where, ": tokenizer.ggml.merges[", i, "]: '", m, "' names unknown token '", right, "'");
    out.emplace_back(l, r);
  }
  return out;
}

std::array<int32_t, 256> VocabTokenizer::byte_tokens() const {
  std::array<int32_t, 256> out;
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const char text[7] = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>', 0};
    out[b] = lookup(std::string_view(text, 6));
  }
  return out;
}

}  // namespace tok

std::unique_ptr<Tokenizer> Tokenizer::create(const TokenizerData& data, std::string_view where) {
  tok::validate(data, where);
  if (data.model == "gpt2") return tok::make_byte_level_bpe(data, where);
  if (data.model == "llama") return tok::make_sentencepiece_bpe(data, where);
  fail(where, ": tokenizer.ggml.model: '", data.model,
       "' is not supported (trit reads \"gpt2\" and \"llama\" tokenizers)");
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool special) const {
  std::string out;
  bool strip = strip_leading_space_;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string piece = token_to_piece(ids[i], special);
    if (strip) {
      if (i == 0 && ids[i] == bos_ && !special) continue;  // the space follows the bos token
      if (!piece.empty() && piece[0] == ' ') piece.erase(0, 1);
      strip = false;
    }
    out += piece;
  }
  return out;
}

bool Tokenizer::is_end_of_generation(int32_t id) const {
  return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

namespace {

std::vector<int32_t> read_int_array(const GgufFile& file, std::string_view key) {
  const GgufValue* v = file.find(key);
  const bool ok = v->type == GgufType::ARRAY && v->arr.item_type != GgufType::F32 &&
                  v->arr.item_type != GgufType::F64 && v->arr.item_type != GgufType::STRING &&
                  v->arr.item_type != GgufType::ARRAY && v->arr.item_type != GgufType::BOOL;
  if (!ok) {
    fail(file.path(), ": ", key, ": expected an array of integers, found ",
         gguf_type_name(v->type == GgufType::ARRAY ? v->arr.item_type : v->type));
  }
  std::vector<int32_t> out;
  out.reserve(v->arr.ints.size());
  for (int64_t x : v->arr.ints) {
    // Values outside int32 are no known type; they act as normal tokens.
    out.push_back(x < 0 || x > 1000 ? tok::kNormal : static_cast<int32_t>(x));
  }
  return out;
}

std::vector<float> read_float_array(const GgufFile& file, std::string_view key) {
  const GgufValue* v = file.find(key);
  const bool ok = v->type == GgufType::ARRAY &&
                  (v->arr.item_type == GgufType::F32 || v->arr.item_type == GgufType::F64);
  if (!ok) {
    fail(file.path(), ": ", key, ": expected an array of f32, found ",
         gguf_type_name(v->type == GgufType::ARRAY ? v->arr.item_type : v->type));
  }
  return std::vector<float>(v->arr.floats.begin(), v->arr.floats.end());
}

// A special token id: absent -> fallback; present but out of range -> error naming the key.
int32_t read_id(const GgufFile& file, std::string_view key, size_t n_tokens, int32_t fallback) {
  if (!file.has(key)) return fallback < static_cast<int64_t>(n_tokens) ? fallback : -1;
  const int64_t v = file.get_int(key);
  if (v < -1 || v >= static_cast<int64_t>(n_tokens)) {
    fail(file.path(), ": ", key, ": ", v, " is out of range (", n_tokens, " tokens)");
  }
  return static_cast<int32_t>(v);
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& file) {
  if (!file.has("tokenizer.ggml.model")) return nullptr;
  TokenizerData d;
  d.model = file.get_string("tokenizer.ggml.model");
  if (d.model == "none" || d.model == "no_vocab") return nullptr;
  d.pre = file.get_string_or("tokenizer.ggml.pre", "default");
  d.tokens = file.get_array("tokenizer.ggml.tokens", GgufType::STRING).strings;
  const size_t n = d.tokens.size();
  if (file.has("tokenizer.ggml.token_type")) {
    d.token_types = read_int_array(file, "tokenizer.ggml.token_type");
  }
  if (file.has("tokenizer.ggml.scores")) d.scores = read_float_array(file, "tokenizer.ggml.scores");
  if (file.has("tokenizer.ggml.merges")) {
    d.merges = file.get_array("tokenizer.ggml.merges", GgufType::STRING).strings;
  }
  // SentencePiece vocabularies put <unk>, <s>, </s> first when the file does not say.
  const bool spm = d.model == "llama";
  d.bos = read_id(file, "tokenizer.ggml.bos_token_id", n, spm ? 1 : -1);
  d.eos = read_id(file, "tokenizer.ggml.eos_token_id", n, spm ? 2 : -1);
  d.unk = read_id(file, "tokenizer.ggml.unknown_token_id", n, spm ? 0 : -1);
  d.eot = read_id(file, "tokenizer.ggml.eot_token_id", n, -1);
  d.eom = read_id(file, "tokenizer.ggml.eom_token_id", n, -1);
  d.pad = read_id(file, "tokenizer.ggml.padding_token_id", n, -1);
  bool llama3_pre = false;
  pretokenizer_pattern(d.pre, &llama3_pre);
  d.add_bos = file.get_bool_or("tokenizer.ggml.add_bos_token", spm || llama3_pre);
  d.add_space_prefix = file.get_bool_or("tokenizer.ggml.add_space_prefix", true);
  return create(d, file.path());
}

}  // namespace trit::engine
