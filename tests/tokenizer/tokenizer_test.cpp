// Tokenizers on small vocabularies built by hand, with results worked out by hand.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <random>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "support/errors.h"
#include "support/tokens.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode.h"

namespace trit::engine {
namespace {

using test::spell;

using Ids = std::vector<int32_t>;

// A byte-level vocabulary: ids 0..255 are the bytes (in byte order), then one token per merge
// (given in raw bytes, " " between the sides), then the extra tokens with their types.
struct ByteVocab {
  TokenizerData d;
  explicit ByteVocab(std::string pre = "gpt2") {
    d.model = "gpt2";
    d.pre = std::move(pre);
    for (int b = 0; b < 256; ++b) {
      d.tokens.push_back(spell(std::string(1, static_cast<char>(b))));
      d.token_types.push_back(1);
    }
  }
  std::unordered_map<std::string, int32_t> index;
  int32_t merge(std::string_view left, std::string_view right) {
    d.merges.push_back(spell(left) + " " + spell(right));
    std::string joined = spell(left) + spell(right);
    auto it = index.find(joined);
    return it != index.end() ? it->second : add(std::move(joined), 1);
  }
  int32_t add(std::string text, int32_t type) {
    index.emplace(text, static_cast<int32_t>(d.tokens.size()));
    d.tokens.push_back(std::move(text));
    d.token_types.push_back(type);
    return static_cast<int32_t>(d.tokens.size() - 1);
  }
  std::unique_ptr<Tokenizer> build() const { return Tokenizer::create(d, "test.gguf"); }
};

Ids bytes_of(std::string_view s) {
  Ids out;
  for (char c : s) out.push_back(static_cast<uint8_t>(c));
  return out;
}

std::vector<std::string> split(const std::string& pattern, std::string_view text) {
  RegexSplitter splitter(pattern);
  std::vector<std::string_view> words;
  splitter.split(text, words);
  return std::vector<std::string>(words.begin(), words.end());
}

using Words = std::vector<std::string>;

TEST(TokenizerUnicode, ByteTableIsGpt2s) {
  EXPECT_EQ(unicode::byte_to_unicode(' '), "\xC4\xA0");   // Ġ U+0120
  EXPECT_EQ(unicode::byte_to_unicode('\n'), "\xC4\x8A");  // Ċ U+010A
  EXPECT_EQ(unicode::byte_to_unicode('A'), "A");
  EXPECT_EQ(unicode::byte_to_unicode(0xE9), "\xC3\xA9");  // é stands for itself
  EXPECT_EQ(unicode::byte_to_unicode(0xAD), "\xC5\x83");  // the soft hyphen is U+0143
  std::set<std::string> seen;
  for (int b = 0; b < 256; ++b) {
    const std::string& u = unicode::byte_to_unicode(static_cast<uint8_t>(b));
    seen.insert(u);
    uint32_t cp = 0;
    ASSERT_EQ(unicode::decode_utf8(u, 0, cp), u.size());
    EXPECT_EQ(unicode::unicode_to_byte(cp), b);
  }
  EXPECT_EQ(seen.size(), 256u);
  EXPECT_EQ(unicode::unicode_to_byte(0x4E2D), -1);
}

TEST(TokenizerUnicode, Utf8Validation) {
  EXPECT_TRUE(unicode::is_valid_utf8("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  EXPECT_FALSE(unicode::is_valid_utf8("\xFF"));
  EXPECT_FALSE(unicode::is_valid_utf8("\xC0\x80"));          // overlong
  EXPECT_FALSE(unicode::is_valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(unicode::is_valid_utf8("\xE6\x97"));          // truncated
  EXPECT_FALSE(unicode::is_valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
}

TEST(TokenizerRegex, Llama3Splits) {
  const std::string re = pretokenizer_pattern("llama-bpe");
  EXPECT_EQ(re, kLlama3Pattern);
  EXPECT_EQ(split(re, "I'm here"), (Words{"I", "'m", " here"}));
  EXPECT_EQ(split(re, "HE'LL we've"), (Words{"HE", "'LL", " we", "'ve"}));
  EXPECT_EQ(split(re, "1234567"), (Words{"123", "456", "7"}));
  EXPECT_EQ(split(re, "x=12345;"), (Words{"x", "=", "123", "45", ";"}));
  EXPECT_EQ(split(re, "a,b!!\n\nc"), (Words{"a", ",b", "!!\n\n", "c"}));
  EXPECT_EQ(split(re, "hello   world"), (Words{"hello", "  ", " world"}));
  EXPECT_EQ(split(re, "line1\n\nline2"), (Words{"line", "1", "\n\n", "line", "2"}));
  EXPECT_EQ(split(re, "hi  "), (Words{"hi", "  "}));
  EXPECT_EQ(split(re, "x \n y"), (Words{"x", " \n", " y"}));
  EXPECT_EQ(split(re, "h\xC3\xA9llo \xD0\xBC\xD0\xB8\xD1\x80 \xE6\x97\xA5\xE6\x9C\xAC"),
            (Words{"h\xC3\xA9llo", " \xD0\xBC\xD0\xB8\xD1\x80", " \xE6\x97\xA5\xE6\x9C\xAC"}));
  EXPECT_EQ(split(re, "ok \xF0\x9F\x98\x80\xF0\x9F\x98\x80!"),
            (Words{"ok", " \xF0\x9F\x98\x80\xF0\x9F\x98\x80!"}));
  EXPECT_EQ(split(re, "\tfoo"), (Words{"\tfoo"}));
  EXPECT_EQ(split(re, ""), (Words{}));
}

TEST(TokenizerRegex, Gpt2Splits) {
  const std::string re = pretokenizer_pattern("default");
  EXPECT_EQ(re, kGpt2Pattern);
  EXPECT_EQ(pretokenizer_pattern("no-such-pre"), kGpt2Pattern);
  EXPECT_EQ(split(re, "I'm here"), (Words{"I", "'m", " here"}));
  EXPECT_EQ(split(re, "I'M"), (Words{"I", "'", "M"}));  // case-sensitive contractions
  EXPECT_EQ(split(re, "1234567"), (Words{"1234567"}));
  EXPECT_EQ(split(re, "a, b"), (Words{"a", ",", " b"}));
  // Whitespace before a word leaves its last character to the word's own match.
  EXPECT_EQ(split(re, "x\n\ny"), (Words{"x", "\n", "\n", "y"}));
}

TEST(TokenizerRegex, InvalidUtf8KeepsItsBytes) {
  const std::string re = kLlama3Pattern;
  // A stray byte counts as U+FFFD (a symbol), so it leads the following letters.
  EXPECT_EQ(split(re,
                  "a\xFF"
                  "b"),
            (Words{"a",
                   "\xFF"
                   "b"}));
  EXPECT_EQ(split(re, "\xE6\x97 x"), (Words{"\xE6\x97", " x"}));
  const std::string text = "ok\xC0\x80 \xFF\xFE\xF0\x9F\x98 end\xE2";
  std::string joined;
  for (const auto& w : split(re, text)) joined += w;
  EXPECT_EQ(joined, text);
}

TEST(TokenizerByteLevel, HelloWorld) {
  ByteVocab v;
  const int32_t he = v.merge("h", "e");
  const int32_t ll = v.merge("l", "l");
  const int32_t hell = v.merge("he", "ll");
  const int32_t hello = v.merge("hell", "o");
  const int32_t sp_w = v.merge(" ", "w");
  const int32_t orr = v.merge("o", "r");
  const int32_t sp_wor = v.merge(" w", "or");
  const int32_t sp_worl = v.merge(" wor", "l");
  const int32_t sp_world = v.merge(" worl", "d");
  EXPECT_EQ(he, 256);
  EXPECT_EQ(sp_world, 264);
  (void)ll, (void)hell, (void)sp_w, (void)orr, (void)sp_wor, (void)sp_worl;
  auto tok = v.build();
  EXPECT_EQ(tok->model_name(), "gpt2");
  EXPECT_EQ(tok->vocab_size(), 265);
  EXPECT_EQ(tok->encode("hello world", false, false), (Ids{hello, sp_world}));
  // Two words: " hello" is no token, so the space stays a byte and "hello" merges.
  EXPECT_EQ(tok->encode("hello hello", false, false), (Ids{hello, ' ', hello}));
  EXPECT_EQ(tok->encode("help", false, false), (Ids{he, 'l', 'p'}));
  EXPECT_EQ(tok->decode({hello, sp_world}), "hello world");
  EXPECT_EQ(tok->token_to_piece(sp_world), " world");
  EXPECT_EQ(tok->find_token(spell(" world")), sp_world);
  EXPECT_FALSE(tok->find_token("nope").has_value());
}

TEST(TokenizerByteLevel, MergesApplyByRank) {
  ByteVocab v;
  const int32_t lo = v.merge("l", "o");    // rank 0
  const int32_t ll = v.merge("l", "l");    // rank 1
  const int32_t he = v.merge("h", "e");    // rank 2
  const int32_t hel = v.merge("he", "l");  // rank 3
  auto tok = v.build();
  // h e l l o: "lo" (rank 0) first, so "ll" never forms; then "he", then "he l".
  EXPECT_EQ(tok->encode("hello", false, false), (Ids{hel, lo}));
  // l l l: the leftmost of equal pairs merges first.
  EXPECT_EQ(tok->encode("lll", false, false), (Ids{ll, 'l'}));
  EXPECT_EQ(tok->encode("llll", false, false), (Ids{ll, ll}));
  (void)he;

  // The same merges in another order give another split.
  ByteVocab w;
  const int32_t ll2 = w.merge("l", "l");
  w.merge("l", "o");
  const int32_t he2 = w.merge("h", "e");
  auto tok2 = w.build();
  EXPECT_EQ(tok2->encode("hello", false, false), (Ids{he2, ll2, 'o'}));
}

TEST(TokenizerByteLevel, IgnoreMergesTakesWholeWords) {
  // llama-3 takes a word that is a token whole even when no merge path reaches it.
  ByteVocab v("llama-bpe");
  v.merge("a", "b");
  const int32_t abc = v.add(spell("abc"), 1);
  auto tok = v.build();
  EXPECT_EQ(tok->encode("abc", false, false), (Ids{abc}));
  EXPECT_EQ(tok->encode("abcd", false, false), (Ids{256, 'c', 'd'}));

  ByteVocab g("gpt2");
  g.merge("a", "b");
  g.add(spell("abc"), 1);
  EXPECT_EQ(g.build()->encode("abc", false, false), (Ids{256, 'c'}));
}

TEST(TokenizerByteLevel, SpecialTokens) {
  ByteVocab v("llama-bpe");
  const int32_t bos = v.add("<|begin_of_text|>", 3);
  const int32_t eot = v.add("<|eot_id|>", 3);
  const int32_t eot_long = v.add("<|eot_id|>!", 3);  // longest match wins
  const int32_t user = v.add("<tool>", 4);
  v.d.bos = bos;
  v.d.add_bos = true;
  auto tok = v.build();
  EXPECT_EQ(tok->bos(), bos);
  EXPECT_TRUE(tok->add_bos_default());

  EXPECT_EQ(tok->encode("hi<|eot_id|>", false, true), (Ids{'h', 'i', eot}));
  EXPECT_EQ(tok->encode("<|eot_id|>!x", false, true), (Ids{eot_long, 'x'}));
  EXPECT_EQ(tok->encode("<|eot_id|><|eot_id|>", true, true), (Ids{bos, eot, eot}));
  // Without parse_special the text is plain characters ("<|" is punctuation, "eot" letters...).
  const Ids plain = tok->encode("<|eot_id|>", false, false);
  EXPECT_EQ(plain, bytes_of("<|eot_id|>"));
  // User-defined tokens are always matched.
  EXPECT_EQ(tok->encode("a<tool>b", false, false), (Ids{'a', user, 'b'}));

  // Control tokens show their text only with special = true.
  EXPECT_EQ(tok->decode({bos, 'h', 'i', eot}), "hi");
  EXPECT_EQ(tok->decode({bos, 'h', 'i', eot}, true), "<|begin_of_text|>hi<|eot_id|>");
  EXPECT_EQ(tok->token_to_piece(user), "<tool>");
  EXPECT_THROW(tok->token_to_piece(100000), Error);
  EXPECT_THROW(tok->token_to_piece(-1), Error);
}

TEST(TokenizerByteLevel, EndOfGeneration) {
  ByteVocab v;
  const int32_t eos = v.add("<|end_of_text|>", 3);
  const int32_t eot = v.add("<|eot_id|>", 3);
  const int32_t im_end = v.add("<|im_end|>", 3);
  const int32_t eom = v.add("<|eom_id|>", 3);
  const int32_t user_end = v.add("</s>", 4);  // not a control token: no end
  const int32_t custom = v.add("<stop>", 3);
  v.d.eos = eos;
  v.d.eot = custom;
  auto tok = v.build();
  EXPECT_EQ(tok->eos(), eos);
  for (int32_t id : {eos, eot, im_end, eom, custom})
    EXPECT_TRUE(tok->is_end_of_generation(id)) << id;
  EXPECT_FALSE(tok->is_end_of_generation(user_end));
  EXPECT_FALSE(tok->is_end_of_generation('a'));
  EXPECT_FALSE(tok->is_end_of_generation(-1));
}

TEST(TokenizerByteLevel, RoundTrips) {
  ByteVocab v("llama-bpe");
  for (auto [l, r] : std::vector<std::pair<std::string, std::string>>{{" ", "t"},
                                                                      {"h", "e"},
                                                                      {" t", "he"},
                                                                      {"\xC3", "\xA9"},
                                                                      {"\xF0", "\x9F"},
                                                                      {"\xF0\x9F", "\x98"},
                                                                      {"\xF0\x9F\x98", "\x80"},
                                                                      {"\n", "\n"},
                                                                      {"1", "2"},
                                                                      {" ", " "}}) {
    v.merge(l, r);
  }
  v.add("<|eot_id|>", 3);
  auto tok = v.build();
  const std::vector<std::string> texts = {
      "",
      "the theme",
      "  leading and trailing  ",
      "\n\n\tTabs\r\nand CRLF\n",
      "caf\xC3\xA9 na\xC3\xAFve r\xC3\xA9sum\xC3\xA9",
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE6\x96\x87",
      "emoji \xF0\x9F\x98\x80\xF0\x9F\x98\x80 and \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
      "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, \xD0\xBC\xD0\xB8\xD1\x80!",
      "numbers 1234567890 3.14159 -42",
      "it's I'M we'll they'd YOU'VE",
      "invalid \xFF\xFE bytes \xC0 and \xE6\x97",
      std::string("nul \0 byte", 10),
      "<|eot_id|> as text",
  };
  for (const auto& s : texts) {
    EXPECT_EQ(tok->decode(tok->encode(s, false, false)), s) << s;
    EXPECT_EQ(tok->decode(tok->encode(s, true, true), true), s) << s;  // no bos set: none added
  }
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::string s;
    const int n = static_cast<int>(rng() % 40);
    for (int i = 0; i < n; ++i) s += static_cast<char>(rng() % 256);
    ASSERT_EQ(tok->decode(tok->encode(s, false, false)), s);
  }
}

TEST(TokenizerByteLevel, LongRunsRoundTrip) {
  ByteVocab v("llama-bpe");
  v.merge(" ", " ");
  v.merge("a", "a");
  v.merge("1", "1");
  auto tok = v.build();
  for (const std::string& run :
       {std::string(100000, ' '), std::string(100000, 'a'), std::string(100000, '1'),
        std::string(100000, '!'), std::string(50000, '\n') + std::string(50000, ' ') + "x",
        std::string(30000, ' ') + std::string(30000, '\t') + "y"}) {
    const Ids ids = tok->encode(run, false, false);
    EXPECT_EQ(tok->decode(ids), run);
  }
  EXPECT_EQ(tok->encode(std::string(6, 'a'), false, false), (Ids{256 + 1, 256 + 1, 256 + 1}));
}

// SentencePiece vocabulary: <unk> <s> </s>, the 256 byte tokens, then pieces with scores.
struct SpmVocab {
  TokenizerData d;
  SpmVocab() {
    d.model = "llama";
    d.pre = "default";
    add("<unk>", 2, 0);
    add("<s>", 3, 0);
    add("</s>", 3, 0);
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) add(std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">", 6, 0);
    d.unk = 0;
    d.bos = 1;
    d.eos = 2;
    d.add_bos = true;
  }
  int32_t add(std::string text, int32_t type, float score) {
    d.tokens.push_back(std::move(text));
    d.token_types.push_back(type);
    d.scores.push_back(score);
    return static_cast<int32_t>(d.tokens.size() - 1);
  }
  int32_t piece(std::string text, float score) { return add(std::move(text), 1, score); }
  std::unique_ptr<Tokenizer> build() const { return Tokenizer::create(d, "spm.gguf"); }
};

#define SP "\xE2\x96\x81"  // U+2581

TEST(TokenizerSentencePiece, MergesByScore) {
  SpmVocab v;
  const int32_t sp = v.piece(SP, -10);
  const int32_t a = v.piece("a", -10);
  const int32_t b = v.piece("b", -10);
  const int32_t c = v.piece("c", -10);
  const int32_t ab = v.piece("ab", -1);
  const int32_t bc = v.piece("bc", -0.5f);
  const int32_t sp_a = v.piece(SP "a", -2);
  auto tok = v.build();
  EXPECT_EQ(tok->model_name(), "llama");
  EXPECT_EQ(v.d.tokens.size(), 266u);
  // "▁abc": bc (-0.5) beats ab (-1) and ▁a (-2); then ▁a; "▁abc" and "abc" are no tokens.
  EXPECT_EQ(tok->encode("abc", false, false), (Ids{sp_a, bc}));
  EXPECT_EQ(tok->encode("abc", true, false), (Ids{1, sp_a, bc}));
  // Spaces become ▁ pieces.
  // "▁ab▁c": ab (-1) beats ▁a (-2), and "▁ab" is no token.
  EXPECT_EQ(tok->encode("ab c", false, false), (Ids{sp, ab, sp, c}));
  (void)a, (void)b;

  SpmVocab w;  // ab above bc this time
  w.piece(SP, -10);
  w.piece("a", -10);
  w.piece("b", -10);
  const int32_t c2 = w.piece("c", -10);
  const int32_t ab2 = w.piece("ab", -0.5f);
  w.piece("bc", -1);
  const int32_t sp_ab2 = w.piece(SP "ab", -3);
  auto tok2 = w.build();
  // ab first, then ▁ab (the only pair left that is a token).
  EXPECT_EQ(tok2->encode("abc", false, false), (Ids{sp_ab2, c2}));
  (void)ab2;
}

TEST(TokenizerSentencePiece, ByteFallbackAndDecode) {
  SpmVocab v;
  const int32_t sp = v.piece(SP, -10);
  const int32_t h = v.piece("h", -10);
  const int32_t i = v.piece("i", -10);
  const int32_t sp_h = v.piece(SP "h", -1);
  const int32_t sp_hi = v.piece(SP "hi", -2);
  auto tok = v.build();
  EXPECT_EQ(tok->encode("hi", false, false), (Ids{sp_hi}));
  // é is no piece: its two bytes, <0xC3> and <0xA9>, are ids 3 + byte.
  EXPECT_EQ(tok->encode("h\xC3\xA9", false, false), (Ids{sp_h, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok->encode("\xC3\xA9", false, false), (Ids{sp, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok->token_to_piece(sp_hi), " hi");
  EXPECT_EQ(tok->token_to_piece(3 + 0x41), "A");
  // decode drops the space the encoder put in front, also after a bos token.
  EXPECT_EQ(tok->decode({sp_hi}), "hi");
  EXPECT_EQ(tok->decode({1, sp_hi}), "hi");
  EXPECT_EQ(tok->decode({1, sp_hi}, true), "<s> hi");
  EXPECT_EQ(tok->decode({sp_hi, sp_hi}), "hi hi");
  (void)h, (void)i;

  const std::vector<std::string> texts = {
      "hi",     " hi",       "hi  there ", "h\xC3\xA9llo w\xC3\xB6rld", "\xF0\x9F\x98\x80 ok",
      "\n\t x", "x\xFF\xFEy"};
  for (const auto& s : texts) {
    EXPECT_EQ(tok->decode(tok->encode(s, true, false)), s) << s;
    EXPECT_EQ(tok->decode(tok->encode(s, false, false)), s) << s;
  }
}

TEST(TokenizerSentencePiece, SpecialTokensAndUnknown) {
  SpmVocab v;
  const int32_t sp_hi = v.piece(SP "hi", -1);
  v.piece(SP "h", -2);
  v.piece(SP, -10);
  v.piece("h", -10);
  v.piece("i", -10);
  auto tok = v.build();
  // After a special token the text gets its space again (as llama.cpp does).
  EXPECT_EQ(tok->encode("hi</s>hi", false, true), (Ids{sp_hi, 2, sp_hi}));
  EXPECT_TRUE(tok->is_end_of_generation(2));

  // Without byte tokens, an unknown character becomes <unk>.
  TokenizerData d;
  d.model = "llama";
  d.tokens = {"<unk>", "<s>", "</s>", SP, "a"};
  d.token_types = {2, 3, 3, 1, 1};
  d.scores = {0, 0, 0, -1, -1};
  auto t2 = Tokenizer::create(d, "t.gguf");
  EXPECT_EQ(t2->encode("a\xC3\xA9"
                       "a",
                       false, false),
            (Ids{3, 4, 0, 4}));
  EXPECT_EQ(t2->bos(), -1);
  d.add_space_prefix = false;
  EXPECT_EQ(Tokenizer::create(d, "t.gguf")->encode("a a", false, false), (Ids{4, 3, 4}));
}

// The message of the error Tokenizer::create throws for d ("(no error)" when it throws none).
std::string create_error(const TokenizerData& d) {
  return test::error_or_none([&] { Tokenizer::create(d, "m.gguf"); });
}

TEST(TokenizerValidation, MalformedDataNamesTheField) {
  ByteVocab v;
  v.merge("a", "b");
  v.d.merges.push_back(spell("a") + " zz");
  EXPECT_EQ(create_error(v.d), "m.gguf: tokenizer.ggml.merges[1]: 'a zz' names unknown token 'zz'");
  v.d.merges.back() = "abc";
  EXPECT_EQ(create_error(v.d),
            "m.gguf: tokenizer.ggml.merges[1]: 'abc' is not two tokens separated by a space");
  v.d.merges.pop_back();
  EXPECT_EQ(create_error(v.d), "(no error)");

  TokenizerData bad = v.d;
  bad.bos = 1000;
  EXPECT_EQ(create_error(bad),
            "m.gguf: tokenizer.ggml.bos_token_id: 1000 is out of range (257 tokens)");
  bad = v.d;
  bad.pad = -2;
  EXPECT_NE(create_error(bad).find("tokenizer.ggml.padding_token_id: -2"), std::string::npos);
  bad = v.d;
  bad.eot = 257;
  EXPECT_NE(create_error(bad).find("tokenizer.ggml.eot_token_id"), std::string::npos);
  bad = v.d;
  bad.token_types.pop_back();
  EXPECT_EQ(create_error(bad), "m.gguf: tokenizer.ggml.token_type: 256 entries for 257 tokens");
  bad = v.d;
  bad.scores = {1.0f, 2.0f};
  EXPECT_EQ(create_error(bad), "m.gguf: tokenizer.ggml.scores: 2 entries for 257 tokens");
  bad = v.d;
  bad.tokens.clear();
  bad.token_types.clear();
  EXPECT_EQ(create_error(bad), "m.gguf: tokenizer.ggml.tokens: no tokens");
  bad = v.d;
  bad.model = "bert";
  EXPECT_NE(create_error(bad).find("m.gguf: tokenizer.ggml.model: 'bert' is not supported"),
            std::string::npos);
}

// A llama-3-sized vocabulary over 16 letters: every string of up to 4 letters is a token, then
// strings of 5 up to 128k tokens in all. Each token has one merge (prefix + last letter), and
// other splits of the same tokens fill the list to 200k merges, as in llama-3's list.
TEST(TokenizerByteLevel, LargeVocabularyLoadsAndEncodesQuickly) {
  const std::string letters = "etaoinshrdlucmfw";
  ByteVocab v("llama-bpe");
  auto& d = v.d;
  d.tokens.reserve(128000);
  d.merges.reserve(200000);
  for (char c : letters) v.merge(" ", std::string(1, c));
  std::vector<std::string> by_len[6];
  for (char c : letters) by_len[1].push_back(std::string(1, c));
  for (int len = 2; len <= 4; ++len) {
    for (const auto& prefix : by_len[len - 1]) {
      for (char c : letters) {
        by_len[len].push_back(prefix + c);
        v.merge(prefix, std::string(1, c));
      }
    }
  }
  for (uint32_t i = 0; d.tokens.size() < 127999; ++i) {
    const uint32_t code = (i * 7919u) % (1u << 20);  // distinct 5-letter strings
    std::string t;
    for (int k = 0; k < 5; ++k) t += letters[(code >> (4 * k)) & 15];
    v.merge(t.substr(0, 4), t.substr(4));
  }
  for (int len = 3; len <= 4 && d.merges.size() < 200000; ++len) {
    for (const auto& t : by_len[len]) {
      for (int k = 1; k < len - 1 && d.merges.size() < 200000; ++k) {
        d.merges.push_back(spell(t.substr(0, k)) + " " + spell(t.substr(k)));
      }
    }
  }
  v.add("<|eot_id|>", 3);
  std::mt19937 rng(1234);
  std::string text;
  while (text.size() < 10000) {
    text += ' ';
    const int len = 1 + static_cast<int>(rng() % 9);
    for (int i = 0; i < len; ++i) text += letters[rng() % 16];
    if (rng() % 10 == 0) text += ".\n";
    if (rng() % 50 == 0) text += "<|eot_id|>";
  }
  std::cout << "[ vocab    ] " << d.tokens.size() << " tokens, " << d.merges.size() << " merges\n";

  const auto t0 = std::chrono::steady_clock::now();
  auto tok = Tokenizer::create(d, "big.gguf");
  const auto t1 = std::chrono::steady_clock::now();
  const Ids ids = tok->encode(text, false, true);
  const auto t2 = std::chrono::steady_clock::now();
  EXPECT_EQ(tok->decode(ids, true), text);
  EXPECT_EQ(tok->vocab_size(), 128000);
  EXPECT_LT(ids.size(), text.size() / 2);
  using ms = std::chrono::duration<double, std::milli>;
  std::cout << "[ timing   ] load " << ms(t1 - t0).count() << " ms, encode " << text.size()
            << " bytes to " << ids.size() << " tokens " << ms(t2 - t1).count() << " ms\n";
}

}  // namespace
}  // namespace trit::engine
