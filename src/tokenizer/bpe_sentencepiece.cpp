// SentencePiece-style BPE ("llama" in GGUF; the 1bitLLM models): spaces become U+2581, a space
// goes before the text, adjacent pieces merge while the joined text is a token (the highest
// score first), and characters without a token fall back to <0xXX> byte tokens.
#include <algorithm>

#include "core/error.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab.h"

namespace trit::engine::tok {

namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581

class SentencePieceBpe final : public VocabTokenizer {
 public:
  SentencePieceBpe(const TokenizerData& d, std::string_view where)
      : VocabTokenizer(d), scores_(d.scores), add_space_prefix_(d.add_space_prefix) {
    parse_merges(d.merges, where);  // checked only: SentencePiece merges by score
    byte_tokens_ = byte_tokens();
    strip_leading_space_ = add_space_prefix_;
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos,
                              bool parse_special) const override {
    std::vector<int32_t> out;
    if (add_bos && bos_ >= 0) out.push_back(bos_);
    std::vector<Fragment> fragments;
    partition(text, parse_special, fragments);
    bool after_special = true;  // text at the start or after a special token gets the space
    std::string escaped;
    Work work;
    for (const Fragment& f : fragments) {
      if (f.special >= 0) {
        out.push_back(f.special);
        after_special = true;
        continue;
      }
      escaped.clear();
      if (add_space_prefix_ && after_special) escaped += kSpaceMarker;
      for (char c : f.text) {
        if (c == ' ') {
          escaped += kSpaceMarker;
        } else {
          escaped += c;
        }
      }
      encode_piece(escaped, work, out);
      after_special = false;
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
    for (size_t pos = 0; pos < text.size();) {
      if (text.compare(pos, kSpaceMarker.size(), kSpaceMarker) == 0) {
        out += ' ';
        pos += kSpaceMarker.size();
      } else {
        out += text[pos++];
      }
    }
    return out;
  }

  std::string_view model_name() const override { return "llama"; }

 private:
  struct Symbol {
    int32_t start, len;  // bytes of the escaped text; len 0: merged into its left neighbour
    int32_t prev, next;
  };
  struct Candidate {
    float score;
    int32_t left, right, len;
  };
  struct Work {
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
  };

  // Heap order: the highest score on top, then the leftmost pair.
  static bool worse(const Candidate& a, const Candidate& b) {
    return a.score != b.score ? a.score < b.score : a.left > b.left;
  }

  void push_candidate(std::string_view s, Work& w, int32_t left, int32_t right) const {
    const Symbol& l = w.symbols[left];
    const Symbol& r = w.symbols[right];
    const int32_t id = lookup(s.substr(l.start, l.len + r.len));
    if (id < 0) return;
    w.heap.push_back({scores_.empty() ? 0.0f : scores_[id], left, right, l.len + r.len});
    std::push_heap(w.heap.begin(), w.heap.end(), worse);
  }

  void encode_piece(std::string_view s, Work& w, std::vector<int32_t>& out) const {
    w.symbols.clear();
    uint32_t cp = 0;
    for (size_t pos = 0; pos < s.size();) {
      // A well-formed character is one symbol, any other byte one of its own: a lead byte's
      // length alone would swallow the start of the character after it (a space's U+2581
      // after invalid UTF-8 came back as its three bytes, not as a space).
      const size_t len = std::max<size_t>(unicode::decode_utf8(s, pos, cp), 1);
      const auto i = static_cast<int32_t>(w.symbols.size());
      w.symbols.push_back({static_cast<int32_t>(pos), static_cast<int32_t>(len), i - 1, i + 1});
      pos += len;
    }
    if (w.symbols.empty()) return;
    w.symbols.back().next = -1;
    w.heap.clear();
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(w.symbols.size()); ++i) {
      push_candidate(s, w, i, i + 1);
    }
    while (!w.heap.empty()) {
      std::pop_heap(w.heap.begin(), w.heap.end(), worse);
      const Candidate c = w.heap.back();
      w.heap.pop_back();
      Symbol& l = w.symbols[c.left];
      Symbol& r = w.symbols[c.right];
      // Stale when either side has merged since the pair was queued.
      if (l.len == 0 || r.len == 0 || l.len + r.len != c.len || l.next != c.right) continue;
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) w.symbols[r.next].prev = c.left;
      if (l.prev >= 0) push_candidate(s, w, l.prev, c.left);
      if (l.next >= 0) push_candidate(s, w, c.left, l.next);
    }
    for (int32_t i = 0; i >= 0; i = w.symbols[i].next) {
      const std::string_view piece = s.substr(w.symbols[i].start, w.symbols[i].len);
      const int32_t id = lookup(piece);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      // Byte fallback; a character whose bytes are not all tokens becomes one unknown token.
      const bool spelled = std::all_of(piece.begin(), piece.end(), [&](char c) {
        return byte_tokens_[static_cast<uint8_t>(c)] >= 0;
      });
      if (spelled) {
        for (char c : piece) out.push_back(byte_tokens_[static_cast<uint8_t>(c)]);
      } else if (unk_ >= 0) {
        out.push_back(unk_);
      }
    }
  }

  std::vector<float> scores_;
  bool add_space_prefix_;
  std::array<int32_t, 256> byte_tokens_{};
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_bpe(const TokenizerData& data,
                                                  std::string_view where) {
  return std::make_unique<SentencePieceBpe>(data, where);
}

}  // namespace trit::engine::tok
