// Training data: each row kind to exact tokens and loss masks (with a byte-level tokenizer, so
// every expected sequence is spelled out by hand), prompt masking, truncation and dropping with
// their warnings, every error with its line, folders and files, and batches with resume.
#include "data/dataset.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "support/errors.h"
#include "support/files.h"
#include "tokenizer/tokenizer.h"

namespace trit::engine {
namespace {

using Strings = std::vector<std::string>;

constexpr int32_t kBos = 256, kEos = 257, kEot = 258, kImStart = 259, kImEnd = 260, kAB = 261;

// GPT-2's byte-to-character table: printable bytes stand for themselves, the rest map to
// U+0100 and up in order.
std::vector<std::string> gpt2_byte_chars() {
  auto keep = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; };
  std::vector<std::string> out;
  int k = 0;
  for (int b = 0; b < 256; ++b) {
    const int cp = keep(b) ? b : 256 + k++;
    std::string s;
    if (cp < 0x80) {
      s += char(cp);
    } else {
      s += char(0xc0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3f));
    }
    out.push_back(s);
  }
  return out;
}

// Byte b is token b; then the control tokens above. With the merge, "a" "b" inside a word
// becomes the token "ab" (id 261), to test boundaries that a merge straddles.
std::unique_ptr<Tokenizer> byte_tokenizer(bool with_merge = false) {
  TokenizerData d;
  d.model = "gpt2";
  d.pre = "default";
  d.tokens = gpt2_byte_chars();
  d.token_types.assign(256, 1);
  for (const char* s :
       {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>"}) {
    d.tokens.emplace_back(s);
    d.token_types.push_back(3);
  }
  d.tokens.emplace_back("ab");
  d.token_types.push_back(1);
  if (with_merge) d.merges = {"a b"};
  d.bos = kBos;
  d.eos = kEos;
  d.eot = kEot;
  d.add_bos = true;
  return Tokenizer::create(d, "test tokenizer");
}

std::vector<int32_t> bytes(std::string_view s) {
  std::vector<int32_t> out;
  for (char c : s) out.push_back(int32_t(static_cast<uint8_t>(c)));
  return out;
}

// A piece of an expected example: its tokens, and whether they are targets.
struct Seg {
  std::vector<int32_t> ids;
  bool target;
};
Seg ctx_(std::vector<int32_t> ids) {
  return {std::move(ids), false};
}
Seg tgt(std::vector<int32_t> ids) {
  return {std::move(ids), true};
}

Example expected(std::initializer_list<Seg> segs) {
  Example ex;
  for (const Seg& s : segs) {
    ex.tokens.insert(ex.tokens.end(), s.ids.begin(), s.ids.end());
    ex.loss_mask.insert(ex.loss_mask.end(), s.ids.size(), s.target ? 1 : 0);
  }
  if (!ex.loss_mask.empty()) ex.loss_mask[0] = 0;
  return ex;
}

void expect_example(const Example& got, const Example& want) {
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.loss_mask, want.loss_mask);
}

class DatasetTest : public ::testing::Test {
 protected:
  std::unique_ptr<Tokenizer> tok_ = byte_tokenizer();
  ChatTemplate bitnet_ = ChatTemplate::builtin("bitnet");
  ChatTemplate chatml_ = ChatTemplate::builtin("chatml");
  std::vector<std::string> warnings_;
  WarnFn warn_ = [this](const std::string& m) { warnings_.push_back(m); };

  Dataset parse(std::string_view content, DatasetOptions opt = {}) {
    return parse_jsonl(content, "d.jsonl", *tok_, bitnet_, opt, warn_);
  }
  // The message of the error parsing `content` throws.
  std::string error_of(std::string_view content, DatasetOptions opt = {}) {
    return test::error_or_none([&] { parse(content, opt); });
  }
};

TEST_F(DatasetTest, TextRowPredictsEveryTokenAfterTheFirst) {
  const Dataset d = parse(R"({"text": "Hi there"})");
  ASSERT_EQ(d.examples.size(), 1u);
  expect_example(d.examples[0], expected({ctx_({kBos}), tgt(bytes("Hi there")), tgt({kEos})}));
  EXPECT_EQ(d.kind, "text");
  EXPECT_EQ(d.n_rows, 1);
  EXPECT_EQ(d.n_tokens, 10);
  EXPECT_EQ(d.n_targets, 9);
  EXPECT_EQ(d.max_len, 10);
  EXPECT_TRUE(warnings_.empty());
}

TEST_F(DatasetTest, TextRowEosOnlyOnceAndOptional) {
  // Special tokens in the text are parsed; an eos already at the end is not doubled.
  expect_example(make_text_example("a<|eot_id|>b<|end_of_text|>", *tok_, {}),
                 expected({ctx_({kBos}), tgt({'a', kEot, 'b', kEos})}));
  DatasetOptions no_eos;
  no_eos.add_eos = false;
  expect_example(make_text_example("ab", *tok_, no_eos), expected({ctx_({kBos}), tgt({'a', 'b'})}));
}

TEST_F(DatasetTest, CompletionRowWithAndWithoutPromptMasking) {
  const std::string row = R"({"prompt": "Q: 2+2?\n", "completion": "A: 4"})";
  expect_example(parse(row).examples.at(0),
                 expected({ctx_({kBos}), tgt(bytes("Q: 2+2?\nA: 4")), tgt({kEos})}));
  DatasetOptions mask;
  mask.mask_prompt = true;
  const Dataset d = parse(row, mask);
  EXPECT_EQ(d.kind, "completions");
  expect_example(d.examples.at(0), expected({ctx_({kBos}), ctx_(bytes("Q: 2+2?\n")),
                                             tgt(bytes("A: 4")), tgt({kEos})}));
}

TEST_F(DatasetTest, CompletionBoundaryInsideAMergedToken) {
  // "xa" + "b" tokenises as x, ab: the merged token holds completion text, so it is a target.
  auto merging = byte_tokenizer(true);
  ASSERT_EQ(merging->encode("xab", false, false), (std::vector<int32_t>{'x', kAB}));
  DatasetOptions mask;
  mask.mask_prompt = true;
  expect_example(make_completion_example("xa", "b", *merging, bitnet_, mask),
                 expected({ctx_({kBos, 'x'}), tgt({kAB, kEos})}));
}

TEST_F(DatasetTest, CompletionAsChatFollowsMlxLm) {
  DatasetOptions opt;
  opt.completions_as_chat = true;
  opt.mask_prompt = true;
  // "User: Q<|eot_id|>Assistant: A<|eot_id|>", no eos added to chat.
  expect_example(make_completion_example("Q", "A", *tok_, bitnet_, opt),
                 expected({ctx_({kBos}), ctx_(bytes("User: Q")), ctx_({kEot}),
                           ctx_(bytes("Assistant: ")), tgt({'A', kEot})}));
}

TEST_F(DatasetTest, ChatWithoutMaskingPredictsEverything) {
  const Dataset d = parse(
      R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})");
  EXPECT_EQ(d.kind, "chat");
  expect_example(d.examples.at(0), expected({ctx_({kBos}), tgt(bytes("User: Hi")), tgt({kEot}),
                                             tgt(bytes("Assistant: Yo")), tgt({kEot})}));
}

TEST_F(DatasetTest, ChatMaskingBitnetTargetsEachAssistantTurnWithItsEot) {
  DatasetOptions mask;
  mask.mask_prompt = true;
  const std::vector<ChatMessage> chat = {{"system", "Be brief."},    {"user", "Hi"},
                                         {"assistant", "  Hello! "},  // trimmed by the template
                                         {"user", "2+2?"},           {"assistant", "4"},
                                         {"user", "Thanks"}};
  expect_example(make_chat_example(chat, *tok_, bitnet_, mask),
                 expected({ctx_({kBos}), ctx_(bytes("System: Be brief.")), ctx_({kEot}),
                           ctx_(bytes("User: Hi")), ctx_({kEot}), ctx_(bytes("Assistant: ")),
                           tgt(bytes("Hello!")), tgt({kEot}), ctx_(bytes("User: 2+2?")),
                           ctx_({kEot}), ctx_(bytes("Assistant: ")), tgt(bytes("4")), tgt({kEot}),
                           ctx_(bytes("User: Thanks")), ctx_({kEot})}));
}

TEST_F(DatasetTest, ChatMaskingChatmlStopsAtImEnd) {
  DatasetOptions mask;
  mask.mask_prompt = true;
  const std::vector<ChatMessage> chat = {
      {"user", "Hi"}, {"assistant", "Yo"}, {"tool", "42"}, {"assistant", "ok"}};
  // The newline after <|im_end|> is the template's, not the model's: it is no target.
  expect_example(
      make_chat_example(chat, *tok_, chatml_, mask),
      expected({ctx_({kBos}), ctx_({kImStart}), ctx_(bytes("user\nHi")), ctx_({kImEnd}),
                ctx_(bytes("\n")), ctx_({kImStart}), ctx_(bytes("assistant\n")), tgt(bytes("Yo")),
                tgt({kImEnd}), ctx_(bytes("\n")), ctx_({kImStart}), ctx_(bytes("tool\n42")),
                ctx_({kImEnd}), ctx_(bytes("\n")), ctx_({kImStart}), ctx_(bytes("assistant\n")),
                tgt(bytes("ok")), tgt({kImEnd}), ctx_(bytes("\n"))}));
}

TEST_F(DatasetTest, TruncationKeepsTheStartAndWarnsOnce) {
  DatasetOptions opt;
  opt.ctx = 4;
  const Dataset d = parse(
      "{\"text\": \"ab\"}\n{\"text\": \"abcdefgh\"}\n\n{\"text\": \"abc\"}\n{\"text\": "
      "\"xyzxyz\"}\n",
      opt);
  ASSERT_EQ(d.examples.size(), 4u);
  expect_example(d.examples[1], expected({ctx_({kBos}), tgt(bytes("abcd"))}));
  expect_example(d.examples[2], expected({ctx_({kBos}), tgt(bytes("abc")), tgt({kEos})}));
  EXPECT_EQ(d.n_truncated, 2);
  EXPECT_EQ(d.n_dropped, 0);
  EXPECT_EQ(d.max_len, 5);
  EXPECT_EQ(warnings_, Strings{"d.jsonl: 2 of 4 examples were longer than 5 tokens (context "
                               "4 plus one for the last target) and were truncated (the "
                               "first at line 2)"});
}

TEST_F(DatasetTest, ExamplesWithoutTargetsAreDroppedWithAWarning) {
  DatasetOptions opt;
  opt.ctx = 6;
  opt.mask_prompt = true;
  opt.add_eos = false;
  const Dataset d = parse(R"({"prompt": "p", "completion": "c"}
{"prompt": "only prompt", "completion": ""}
{"prompt": "a long prompt", "completion": "cut off"}
{"prompt": "abcde", "completion": "fg"}
)",
                          opt);
  ASSERT_EQ(d.examples.size(), 2u);
  expect_example(d.examples[0], expected({ctx_({kBos, 'p'}), tgt({'c'})}));
  expect_example(d.examples[1], expected({ctx_({kBos}), ctx_(bytes("abcde")), tgt({'f'})}));
  EXPECT_EQ(d.n_rows, 4);
  EXPECT_EQ(d.n_dropped, 2);
  EXPECT_EQ(d.n_truncated, 3);  // all but the first
  EXPECT_EQ(d.n_targets, 2);
  ASSERT_EQ(warnings_.size(), 2u);
  EXPECT_EQ(warnings_[1],
            "d.jsonl: 2 of 4 examples had no target tokens and were dropped (1 with nothing to "
            "predict, 1 whose targets all lay beyond the first 7 tokens; the first at line 2)");
}

TEST_F(DatasetTest, ChatWithoutAssistantTurnIsDroppedUnderMasking) {
  DatasetOptions mask;
  mask.mask_prompt = true;
  const Dataset d = parse(R"({"messages": [{"role": "user", "content": "a"}]}
{"messages": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]})",
                          mask);
  EXPECT_EQ(d.examples.size(), 1u);
  EXPECT_EQ(d.n_dropped, 1);
  EXPECT_EQ(warnings_, Strings{"d.jsonl: 1 of 2 examples had no target tokens and were "
                               "dropped (1 with nothing to predict; the first at line 1)"});
}

TEST_F(DatasetTest, NothingLeftIsAnError) {
  DatasetOptions mask;
  mask.mask_prompt = true;
  EXPECT_EQ(error_of(R"({"messages": [{"role": "user", "content": "a"}]})", mask),
            "d.jsonl: no examples left: all 1 had no target tokens (nothing to predict, or "
            "everything to predict lay beyond the first 513 tokens)");
}

TEST_F(DatasetTest, ErrorsNameFileAndLine) {
  const std::string ok = "{\"text\": \"x\"}\n\n";  // lines 1 and 2 (blank)
  EXPECT_TRUE(error_of(ok + "{\"text\": \"x\"\n").starts_with("d.jsonl:3: not valid JSON ("))
      << error_of(ok + "{\"text\": \"x\"\n");
  EXPECT_EQ(error_of(R"({"prompt": "p"})"),
            "d.jsonl:1: 'completion' is missing (the row has 'prompt')");
  EXPECT_EQ(error_of(R"({"completion": "c"})"),
            "d.jsonl:1: 'prompt' is missing (the row has 'completion')");
  EXPECT_EQ(error_of(ok + R"({"input": "a", "output": "b"})"),
            "d.jsonl:3: the row has none of 'text', 'prompt'/'completion' or 'messages' (it has "
            "'input', 'output')");
  EXPECT_EQ(error_of("{}"),
            "d.jsonl:1: the row has none of 'text', 'prompt'/'completion' or 'messages' (it is "
            "empty)");
  EXPECT_EQ(error_of("[1, 2]"), "d.jsonl:1: a row must be a JSON object, not array");
  EXPECT_EQ(error_of(R"({"text": "a", "messages": []})"),
            "d.jsonl:1: the row has both 'text' and 'messages'; a row is one of 'text', "
            "'prompt'/'completion' or 'messages'");
  EXPECT_EQ(error_of(R"({"text": 5})"), "d.jsonl:1: 'text' must be a string, not number");
  EXPECT_EQ(error_of(R"({"prompt": "p", "completion": null})"),
            "d.jsonl:1: 'completion' must be a string, not null");
  EXPECT_EQ(error_of(R"({"messages": {"role": "user"}})"),
            "d.jsonl:1: 'messages' must be an array, not object");
  EXPECT_EQ(error_of(R"({"messages": []})"), "d.jsonl:1: 'messages' is empty");
  EXPECT_EQ(error_of(R"({"messages": ["hi"]})"),
            "d.jsonl:1: messages[0] must be an object, not string");
  EXPECT_EQ(error_of(R"({"messages": [{"content": "hi"}]})"),
            "d.jsonl:1: messages[0] has no 'role'");
  EXPECT_EQ(error_of(R"({"messages": [{"role": 1, "content": "hi"}]})"),
            "d.jsonl:1: messages[0].role must be a string, not number");
  EXPECT_EQ(
      error_of(
          ok +
          R"({"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]})"),
      "d.jsonl:3: messages[1].role is 'bot'; it must be system, user, assistant or tool");
  EXPECT_EQ(error_of(R"({"messages": [{"role": "user"}]})"),
            "d.jsonl:1: messages[0] has no 'content'");
  EXPECT_EQ(error_of(R"({"messages": [{"role": "user", "content": ["a"]}]})"),
            "d.jsonl:1: messages[0].content must be a string, not array");
  EXPECT_EQ(error_of(ok + R"({"prompt": "p", "completion": "c"})"),
            "d.jsonl:3: a 'prompt'/'completion' row in a file of 'text' rows (line 1); one file "
            "holds one kind of row");
  EXPECT_EQ(error_of(ok + "{\"text\": \"caf\xe9\"}"),
            "d.jsonl:3: invalid UTF-8 (byte 0xe9 at column 14)");
  EXPECT_EQ(error_of(""), "d.jsonl: no rows (the file is empty)");
  EXPECT_EQ(error_of("\n  \n\r\n"), "d.jsonl: no rows (the file is empty)");
  DatasetOptions mask;
  mask.mask_prompt = true;
  EXPECT_EQ(error_of(ok, mask),
            "d.jsonl:1: prompt masking needs 'prompt'/'completion' or 'messages' rows; this file "
            "has 'text' rows, which have no prompt");
  DatasetOptions zero;
  zero.ctx = 0;
  EXPECT_EQ(error_of(ok, zero), "d.jsonl: the context length must be at least 1, not 0");
}

TEST_F(DatasetTest, CrlfBomHugeLinesAndExtraKeys) {
  const std::string big(300000, 'z');
  DatasetOptions opt;
  opt.ctx = 3;
  const Dataset d = parse(
      "\xef\xbb\xbf{\"text\": \"ab\", \"id\": 7}\r\n\r\n{\"text\": \"" + big + "\"}\r\n", opt);
  ASSERT_EQ(d.examples.size(), 2u);
  expect_example(d.examples[0], expected({ctx_({kBos}), tgt({'a', 'b', kEos})}));
  expect_example(d.examples[1], expected({ctx_({kBos}), tgt(bytes("zzz"))}));
  EXPECT_EQ(d.n_truncated, 1);
}

TEST_F(DatasetTest, FolderWithSplits) {
  test::TempDir dir;
  test::write_file(dir.file("train.jsonl"), "{\"text\": \"a\"}\n{\"text\": \"b\"}\n");
  test::write_file(dir.file("valid.jsonl"), "{\"text\": \"c\"}\n");
  test::write_file(dir.file("test.jsonl"), "{\"text\": \"d\"}\n");
  const DatasetSplits s = load_dataset(dir.path(), *tok_, bitnet_, {}, warn_);
  EXPECT_TRUE(s.has_valid);
  EXPECT_TRUE(s.has_test);
  EXPECT_EQ(s.train.examples.size(), 2u);
  EXPECT_EQ(s.train.source, dir.file("train.jsonl"));
  expect_example(s.valid.examples.at(0), expected({ctx_({kBos}), tgt({'c', kEos})}));
  expect_example(s.test.examples.at(0), expected({ctx_({kBos}), tgt({'d', kEos})}));
  EXPECT_TRUE(warnings_.empty());

  std::filesystem::remove(dir.file("valid.jsonl"));
  std::filesystem::remove(dir.file("test.jsonl"));
  const DatasetSplits t = load_dataset(dir.path(), *tok_, bitnet_, {}, warn_);
  EXPECT_FALSE(t.has_valid);
  EXPECT_FALSE(t.has_test);
  EXPECT_EQ(warnings_, Strings{dir.path() + ": no valid.jsonl, so there is no validation loss"});

  // Errors from a split's file name that file.
  test::write_file(dir.file("valid.jsonl"), "{\"text\": \"c\"}\n{\"text\": 1}\n");
  try {
    load_dataset(dir.path(), *tok_, bitnet_, {}, warn_);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              dir.file("valid.jsonl") + ":2: 'text' must be a string, not number");
  }
  std::filesystem::remove(dir.file("train.jsonl"));
  try {
    load_dataset(dir.path(), *tok_, bitnet_, {}, warn_);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), dir.path() +
                                         ": no train.jsonl (a data folder holds "
                                         "train.jsonl, valid.jsonl and optionally "
                                         "test.jsonl)");
  }
}

TEST_F(DatasetTest, SingleFiles) {
  test::TempDir dir;
  test::write_file(
      dir.file("chat.jsonl"),
      R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})");
  const DatasetSplits s = load_dataset(dir.file("chat.jsonl"), *tok_, chatml_, {}, warn_);
  EXPECT_FALSE(s.has_valid);
  EXPECT_FALSE(s.has_test);
  expect_example(s.train.examples.at(0),
                 expected({ctx_({kBos}), tgt({kImStart}), tgt(bytes("user\na")), tgt({kImEnd}),
                           tgt(bytes("\n")), tgt({kImStart}), tgt(bytes("assistant\nb")),
                           tgt({kImEnd}), tgt(bytes("\n"))}));

  auto error_for = [&](const std::string& path, DatasetOptions opt = {}) {
    return test::error_or_none([&] { load_dataset(path, *tok_, chatml_, opt, warn_); });
  };
  test::write_file(dir.file("data.csv"), "a,b\n");
  EXPECT_EQ(error_for(dir.file("data.csv")),
            dir.file("data.csv") +
                ": a data file must be .jsonl (one JSON object a line) or .txt (plain text)");
  EXPECT_EQ(error_for(dir.file("nothing.jsonl")),
            dir.file("nothing.jsonl") + ": no such file or folder");
  test::write_file(dir.file("empty.txt"), " \n\n");
  EXPECT_EQ(error_for(dir.file("empty.txt")),
            dir.file("empty.txt") + ": no text (the file is empty)");
  test::write_file(dir.file("bad.txt"), "fine\nstill fine\nno\xc3(\n");
  EXPECT_EQ(error_for(dir.file("bad.txt")),
            dir.file("bad.txt") + ":3: invalid UTF-8 (byte 0xc3 at column 3)");
  DatasetOptions mask;
  mask.mask_prompt = true;
  test::write_file(dir.file("ok.txt"), "text");
  EXPECT_EQ(error_for(dir.file("ok.txt"), mask),
            dir.file("ok.txt") +
                ": prompt masking needs 'prompt'/'completion' or 'messages' rows "
                "(a .jsonl file); plain text has no prompt");
}

TEST_F(DatasetTest, TextFileIsCutIntoOverlappingWindows) {
  test::TempDir dir;
  test::write_file(dir.file("book.txt"), "abcdefghij");  // bos + 10 bytes + eos = 12 tokens
  DatasetOptions opt;
  opt.ctx = 4;
  const Dataset d = load_data_file(dir.file("book.txt"), *tok_, bitnet_, opt, warn_);
  EXPECT_EQ(d.kind, "plain text");
  ASSERT_EQ(d.examples.size(), 3u);
  expect_example(d.examples[0], expected({ctx_({kBos}), tgt(bytes("abcd"))}));
  expect_example(d.examples[1], expected({ctx_(bytes("d")), tgt(bytes("efgh"))}));
  expect_example(d.examples[2], expected({ctx_(bytes("h")), tgt({'i', 'j', kEos})}));
  EXPECT_EQ(d.n_targets, 11);  // every token but the first, once
  EXPECT_EQ(d.n_truncated, 0);
  EXPECT_TRUE(warnings_.empty());

  // Exactly ctx + 1 tokens: one window, no one-token remainder.
  test::write_file(dir.file("short.txt"), "abc");
  opt.ctx = 4;
  const Dataset e = load_text_file(dir.file("short.txt"), *tok_, opt, warn_);
  ASSERT_EQ(e.examples.size(), 1u);
  expect_example(e.examples[0], expected({ctx_({kBos}), tgt({'a', 'b', 'c', kEos})}));
}

// A dataset of `n` examples of different lengths: example i is bos then i % 5 + 1 copies of 'a' + i
// (no eos), all targets.
Dataset numbered_dataset(int n) {
  Dataset d;
  d.source = "numbered";
  for (int i = 0; i < n; ++i) {
    Example ex;
    ex.tokens.push_back(kBos);
    ex.tokens.insert(ex.tokens.end(), size_t(i % 5 + 1), 'a' + i);
    ex.loss_mask.assign(ex.tokens.size(), 1);
    ex.loss_mask[0] = 0;
    d.examples.push_back(ex);
  }
  return d;
}

TEST(DatasetBatch, PaddingAndMasks) {
  Dataset d;
  d.source = "tiny";
  d.examples.push_back(expected({ctx_({kBos, 'p'}), tgt({'c', kEos})}));  // 4 tokens
  d.examples.push_back(expected({ctx_({kBos}), tgt({'x'})}));             // 2 tokens
  const std::vector<int64_t> idx = {0, 1};
  const Batch b = make_batch(d, idx);
  EXPECT_EQ(b.B, 2);
  EXPECT_EQ(b.T, 3);
  EXPECT_EQ(b.tokens, (std::vector<int32_t>{kBos, 'p', 'c', kBos, 0, 0}));
  EXPECT_EQ(b.targets, (std::vector<int32_t>{-1, 'c', kEos, 'x', -1, -1}));
  EXPECT_EQ(b.mask, (std::vector<float>{0, 1, 1, 1, 0, 0}));
  EXPECT_EQ(b.lengths, (std::vector<int32_t>{3, 1}));
  EXPECT_EQ(b.indices, idx);
  EXPECT_EQ(b.n_targets, 3);

  const std::vector<int64_t> second = {1};
  const Batch p = make_batch(d, second, 4);  // padded to a fixed length
  EXPECT_EQ(p.T, 4);
  EXPECT_EQ(p.tokens, (std::vector<int32_t>{kBos, 0, 0, 0}));
  EXPECT_EQ(p.targets, (std::vector<int32_t>{'x', -1, -1, -1}));
  EXPECT_EQ(p.mask, (std::vector<float>{1, 0, 0, 0}));
  EXPECT_THROW(make_batch(d, idx, 2), Error);
}

// The examples a batch holds, by index.
std::vector<int64_t> run(BatchIterator& it, int batches) {
  std::vector<int64_t> out;
  for (int i = 0; i < batches; ++i) {
    const Batch b = it.next();
    out.insert(out.end(), b.indices.begin(), b.indices.end());
  }
  return out;
}

TEST(DatasetBatch, EpochsArePermutationsDeterministicBySeed) {
  const Dataset d = numbered_dataset(10);
  BatchIterator a(d, 4, 42), b(d, 4, 42), c(d, 4, 43);
  EXPECT_EQ(a.batches_per_epoch(), 3);
  std::vector<int64_t> sizes;
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> seen;
    for (int i = 0; i < 3; ++i) {
      const Batch x = a.next(), y = b.next();
      EXPECT_EQ(x.indices, y.indices);
      EXPECT_EQ(x.tokens, y.tokens);
      sizes.push_back(x.B);
      seen.insert(seen.end(), x.indices.begin(), x.indices.end());
    }
    EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 10u) << "epoch " << epoch;
    EXPECT_EQ(a.epoch(), epoch);
  }
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 2, 4, 4, 2, 4, 4, 2}));
  EXPECT_NE(BatchIterator::epoch_order(10, 42, 0, true),
            BatchIterator::epoch_order(10, 42, 1, true));
  EXPECT_NE(BatchIterator::epoch_order(10, 42, 0, true),
            BatchIterator::epoch_order(10, 43, 0, true));
  EXPECT_NE(run(c, 3), BatchIterator::epoch_order(10, 42, 0, true));
  // Pinned: checkpoints rely on this order staying the same across versions and platforms.
  EXPECT_EQ(BatchIterator::epoch_order(10, 42, 0, true),
            (std::vector<int64_t>{9, 6, 2, 0, 1, 4, 3, 8, 5, 7}));
  EXPECT_EQ(BatchIterator::epoch_order(4, 42, 0, false), (std::vector<int64_t>{0, 1, 2, 3}));

  BatchIterator in_order(d, 3, 1, /*shuffle=*/false);
  EXPECT_EQ(run(in_order, 4), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  // A dataset smaller than the batch: the whole of it each step.
  BatchIterator small(d, 32, 1);
  EXPECT_EQ(small.next().B, 10);
  EXPECT_EQ(small.next().B, 10);
}

TEST(DatasetBatch, RestoreContinuesWithTheSameBatches) {
  const Dataset d = numbered_dataset(7);
  for (int taken : {0, 1, 2, 3, 5}) {  // mid-epoch, at an epoch's end, in the next epoch
    BatchIterator a(d, 3, 99);
    run(a, taken);
    const std::string saved = nlohmann::json(a.state()).dump();
    std::vector<Batch> want;
    for (int i = 0; i < 6; ++i) want.push_back(a.next());

    BatchIterator b(d, 3, 12345);  // the seed comes from the state
    b.restore(nlohmann::json::parse(saved).get<BatchState>());
    for (int i = 0; i < 6; ++i) {
      const Batch got = b.next();
      EXPECT_EQ(got.indices, want[size_t(i)].indices) << "after " << taken << ", batch " << i;
      EXPECT_EQ(got.tokens, want[size_t(i)].tokens);
      EXPECT_EQ(got.targets, want[size_t(i)].targets);
      EXPECT_EQ(got.mask, want[size_t(i)].mask);
    }
    EXPECT_EQ(b.epoch(), a.epoch());
  }
}

TEST(DatasetBatch, StateJsonAndRestoreErrors) {
  const Dataset d = numbered_dataset(7);
  BatchIterator a(d, 3, 0xfedcba9876543210ull);
  a.next();
  const nlohmann::json j = a.state();
  EXPECT_EQ(
      j.dump(),
      R"({"batch":3,"epoch":0,"index":3,"n_examples":7,"seed":18364758544493064720,"shuffle":true})");
  EXPECT_EQ(j.get<BatchState>().seed, 0xfedcba9876543210ull);

  auto restore_error = [&](const BatchState& s) {
    BatchIterator it(d, 3, 1);
    return test::error_or_none([&] { it.restore(s); });
  };
  BatchState s = a.state();
  s.n_examples = 8;
  EXPECT_EQ(restore_error(s),
            "resume: numbered has 7 examples, the checkpoint's data had 8 (the data or the options "
            "that shape it changed)");
  s = a.state();
  s.batch = 4;
  EXPECT_EQ(restore_error(s), "resume: the batch size is 3, the checkpoint's was 4");
  s = a.state();
  s.index = 8;
  EXPECT_NE(restore_error(s).find("out of range"), std::string::npos);

  nlohmann::json missing = j;
  missing.erase("index");
  try {
    (void)missing.get<BatchState>();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "data position: 'index' is missing");
  }
  nlohmann::json wrong = j;
  wrong["epoch"] = "one";
  EXPECT_THROW((void)wrong.get<BatchState>(), Error);
  EXPECT_THROW(BatchIterator(d, 0, 1), Error);
  EXPECT_THROW(BatchIterator(Dataset{}, 1, 1), Error);
}

}  // namespace
}  // namespace trit::engine
