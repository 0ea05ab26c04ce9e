// Byte-level BPE ("gpt2" in GGUF; llama-3 and BitNet b1.58 2B4T): a regex splits text into
// words, each byte of a word becomes its GPT-2 character, and merges apply by rank.
#include <algorithm>

#include "core/error.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace trit::engine::tok {

namespace {

class ByteLevelBpe final : public VocabTokenizer {
 public:
  ByteLevelBpe(const TokenizerData& d, std::string_view where)
      : VocabTokenizer(d), splitter_(pretokenizer_pattern(d.pre, &ignore_merges_)) {
    const auto pairs = parse_merges(d.merges, where);
    merges_.reserve(pairs.size());
    std::string joined;
    for (size_t rank = 0; rank < pairs.size(); ++rank) {
      const auto [l, r] = pairs[rank];
      joined.assign(tokens_[l]).append(tokens_[r]);
      const int32_t id = lookup(joined);
      // A merge whose result is no token can never apply (Hugging Face refuses such files).
      if (id < 0) continue;
      merges_.emplace(pair_key(l, r), Merge{static_cast<int32_t>(rank), id});  // first rank wins
    }
    for (int b = 0; b < 256; ++b) {
      byte_ids_[b] = lookup(unicode::byte_to_unicode(static_cast<uint8_t>(b)));
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos,
                              bool parse_special) const override {
    std::vector<int32_t> out;
    if (add_bos && bos_ >= 0) out.push_back(bos_);
    std::vector<Fragment> fragments;
    partition(text, parse_special, fragments);
    std::vector<std::string_view> words;
    Work work;
    for (const Fragment& f : fragments) {
      if (f.special >= 0) {
        out.push_back(f.special);
        continue;
      }
      words.clear();
      splitter_.split(f.text, words);
      for (std::string_view w : words) encode_word(w, work, out);
    }
    return out;
  }

  std::string token_to_piece(int32_t id, bool special) const override {
    check_id(id);
    const std::string& text = tokens_[id];
    switch (type_of(id)) {
      case kControl:
        return special ? text : std::string();
      case kUnknown:
        return special ? text : std::string("\xE2\x96\x85");  // U+2585, as llama.cpp shows it
      case kUserDefined:
        return text;
      case kByte: {
        const int b = parse_byte_token(text);
        if (b >= 0) return std::string(1, static_cast<char>(b));
        return text;
      }
      default:
        break;
    }
    std::string out;
    out.reserve(text.size());
    size_t pos = 0;
    uint32_t cp = 0;
    while (pos < text.size()) {
      size_t len = unicode::decode_utf8(text, pos, cp);
      if (len == 0) {  // not UTF-8: keep the byte
        out += text[pos++];
        continue;
      }
      const int b = unicode::unicode_to_byte(cp);
      if (b >= 0) {
        out += static_cast<char>(b);
      } else {
        out.append(text, pos, len);  // a character outside GPT-2's table stands for itself
      }
      pos += len;
    }
    return out;
  }

  std::string_view model_name() const override { return "gpt2"; }

 private:
  struct Merge {
    int32_t rank;
    int32_t id;  // the merged token
  };
  struct Symbol {
    int32_t id;  // -1: a byte without a token; -2: merged into its left neighbour
    int32_t prev, next;
  };
  struct Candidate {
    int32_t rank, left, right, left_id, right_id, result;
  };
  // Buffers reused across the words of one encode call.
  struct Work {
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
    std::string mapped;
  };

  static uint64_t pair_key(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }

  void push_candidate(Work& w, int32_t left, int32_t right) const {
    const Symbol& l = w.symbols[left];
    const Symbol& r = w.symbols[right];
    if (l.id < 0 || r.id < 0) return;
    auto it = merges_.find(pair_key(l.id, r.id));
    if (it == merges_.end()) return;
    w.heap.push_back({it->second.rank, left, right, l.id, r.id, it->second.id});
    std::push_heap(w.heap.begin(), w.heap.end(), worse);
  }

  // Heap order: the lowest rank on top, then the leftmost pair.
  static bool worse(const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
  }

  void encode_word(std::string_view word, Work& w, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges_ || word.size() == 1) {
      w.mapped.clear();
      for (char c : word) w.mapped += unicode::byte_to_unicode(static_cast<uint8_t>(c));
      const int32_t id = lookup(w.mapped);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    const auto n = static_cast<int32_t>(word.size());
    w.symbols.resize(n);
    for (int32_t i = 0; i < n; ++i) {
      w.symbols[i] = {byte_ids_[static_cast<uint8_t>(word[i])], i - 1, i + 1 < n ? i + 1 : -1};
    }
    w.heap.clear();
    for (int32_t i = 0; i + 1 < n; ++i) push_candidate(w, i, i + 1);
    while (!w.heap.empty()) {
      std::pop_heap(w.heap.begin(), w.heap.end(), worse);
      const Candidate c = w.heap.back();
      w.heap.pop_back();
      Symbol& l = w.symbols[c.left];
      Symbol& r = w.symbols[c.right];
      // Stale when either side has merged since the pair was queued.
      if (l.id != c.left_id || r.id != c.right_id || l.next != c.right) continue;
      l.id = c.result;
      l.next = r.next;
      if (r.next >= 0) w.symbols[r.next].prev = c.left;
      r.id = -2;
      if (l.prev >= 0) push_candidate(w, l.prev, c.left);
      if (l.next >= 0) push_candidate(w, c.left, l.next);
    }
    for (int32_t i = 0; i >= 0; i = w.symbols[i].next) {
      const int32_t id = w.symbols[i].id;
      if (id >= 0) {
        out.push_back(id);
      } else if (unk_ >= 0) {
        out.push_back(unk_);  // a byte the vocabulary cannot spell
      }
    }
  }

  bool ignore_merges_ = false;  // set while splitter_ is built: declared before it
  RegexSplitter splitter_;
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> rank and result
  std::array<int32_t, 256> byte_ids_{};         // the token of each byte's character, or -1
};

}  // namespace

std::unique_ptr<Tokenizer> make_byte_level_bpe(const TokenizerData& data, std::string_view where) {
  return std::make_unique<ByteLevelBpe>(data, where);
}

}  // namespace trit::engine::tok
