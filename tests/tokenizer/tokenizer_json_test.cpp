// tokenizer.json + tokenizer_config.json -> GGUF -> Tokenizer::from_gguf, and malformed input.
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/chat_template.h"
#include "io/gguf.h"
#include "support/errors.h"
#include "support/files.h"
#include "support/tokens.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace trit::engine {
namespace {

using test::spell;

using nlohmann::json;
using Ids = std::vector<int32_t>;

class TokenizerJson : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir_.file(name);
    test::write_file(path, text);
    return path;
  }
  // Converts, writes a GGUF with the keys and opens it again.
  std::unique_ptr<GgufFile> convert(const std::string& tokenizer_json, const std::string& config,
                                    const std::string& arch = "bitnet") {
    GgufWriter w;
    w.set_string("general.architecture", arch);
    tokenizer_json_to_gguf(tokenizer_json, config, w);
    const std::string path = dir_.file("model.gguf");
    w.write(path);
    return GgufFile::open(path);
  }
  std::string error_of(const std::string& tokenizer_json, const std::string& config = "") {
    return test::error_or_none([&] {
      GgufWriter w;
      tokenizer_json_to_gguf(tokenizer_json, config, w);
    });
  }

  test::TempDir dir_;
};

// A llama-3-style byte-level tokenizer.json: 256 byte tokens, a few merges (both spellings),
// special added tokens after the vocabulary.
json llama3_style() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[spell(std::string(1, static_cast<char>(b)))] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"},   {"he", "ll"},  {"hell", "o"}, {" ", "w"},
      {"o", "r"}, {" w", "or"}, {" wor", "l"}, {" worl", "d"}};
  json merge_list = json::array();
  int next = 256;
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto& [l, r] = merges[i];
    vocab[spell(l + r)] = next++;
    if (i % 2 == 0) {
      merge_list.push_back(spell(l) + " " + spell(r));
    } else {
      merge_list.push_back(json::array({spell(l), spell(r)}));
    }
  }
  json j;
  j["version"] = "1.0";
  j["added_tokens"] = json::array({
      {{"id", 265}, {"content", "<|begin_of_text|>"}, {"special", true}},
      {{"id", 266}, {"content", "<|end_of_text|>"}, {"special", true}},
      {{"id", 267}, {"content", "<|eot_id|>"}, {"special", true}},
      {{"id", 268}, {"content", "<tool>"}, {"special", false}},
  });
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array({{{"type", "Split"},
                     {"pattern", {{"Regex", kLlama3Pattern}}},
                     {"behavior", "Isolated"},
                     {"invert", false}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  j["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       json::array({{{"type", "ByteLevel"}},
                    {{"type", "TemplateProcessing"},
                     {"single", json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}}}},
                                             {{"Sequence", {{"id", "A"}}}}})}}})}};
  j["decoder"] = {{"type", "ByteLevel"}};
  j["model"] = {{"type", "BPE"}, {"ignore_merges", true}, {"vocab", vocab}, {"merges", merge_list}};
  return j;
}

const char* const kBitnetTemplate =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}{% if "
    "loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor "
    "%}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}";

TEST_F(TokenizerJson, ByteLevelRoundTripThroughGguf) {
  const std::string tj = write("tokenizer.json", llama3_style().dump());
  json config;
  config["bos_token"] = "<|begin_of_text|>";
  config["eos_token"] = {{"content", "<|eot_id|>"}, {"lstrip", false}};
  config["chat_template"] = json::array({{{"name", "tool_use"}, {"template", "{{ tools }}"}},
                                         {{"name", "default"}, {"template", kBitnetTemplate}}});
  const std::string cj = write("tokenizer_config.json", config.dump());
  auto file = convert(tj, cj);

  EXPECT_EQ(file->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(file->get_string("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(file->get_int("tokenizer.ggml.bos_token_id"), 265);
  EXPECT_EQ(file->get_int("tokenizer.ggml.eos_token_id"), 267);
  EXPECT_TRUE(file->get_bool_or("tokenizer.ggml.add_bos_token", false));
  EXPECT_EQ(file->get_string("tokenizer.chat_template"), kBitnetTemplate);
  const auto& tokens = file->get_array("tokenizer.ggml.tokens", GgufType::STRING).strings;
  ASSERT_EQ(tokens.size(), 269u);
  EXPECT_EQ(tokens[264], spell(" world"));
  const auto& types = file->get_array("tokenizer.ggml.token_type", GgufType::I32).ints;
  EXPECT_EQ(types[0], 1);
  EXPECT_EQ(types[267], 3);
  EXPECT_EQ(types[268], 4);
  const auto& merges = file->get_array("tokenizer.ggml.merges", GgufType::STRING).strings;
  ASSERT_EQ(merges.size(), 9u);
  EXPECT_EQ(merges[1], "l l");
  EXPECT_EQ(merges[4], spell(" ") + " w");

  auto tok = Tokenizer::from_gguf(*file);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->model_name(), "gpt2");
  EXPECT_EQ(tok->bos(), 265);
  EXPECT_TRUE(tok->add_bos_default());
  EXPECT_EQ(tok->encode("hello world<|eot_id|>", true, true), (Ids{265, 259, 264, 267}));
  EXPECT_EQ(tok->encode("hello<tool> world", false, false), (Ids{259, 268, 264}));
  EXPECT_TRUE(tok->is_end_of_generation(267));
  EXPECT_TRUE(tok->is_end_of_generation(266));
  EXPECT_FALSE(tok->is_end_of_generation(265));
  EXPECT_EQ(tok->decode({265, 259, 264, 267}), "hello world");

  // The same tokenizer built directly.
  TokenizerData d;
  d.model = "gpt2";
  d.pre = "llama-bpe";
  d.tokens = tokens;
  for (int64_t t : types) d.token_types.push_back(static_cast<int32_t>(t));
  d.merges = merges;
  d.bos = 265;
  auto direct = Tokenizer::create(d, "direct");
  for (const std::string s : {"hello world", "hell, world!\n", "we're 12345 \xF0\x9F\x98\x80"}) {
    EXPECT_EQ(tok->encode(s, false, true), direct->encode(s, false, true)) << s;
    EXPECT_EQ(tok->decode(tok->encode(s, false, true)), s);
  }

  const ChatTemplate ct = ChatTemplate::for_model(*file);
  EXPECT_EQ(ct.name(), "bitnet");
}

TEST_F(TokenizerJson, Gpt2StyleWithoutSplit) {
  // GPT-2's own layout: a ByteLevel pre-tokenizer with its built-in regex, no post-processor.
  json vocab = json::object();
  const char* toks[] = {"a",
                        "b",
                        "c",
                        "ab",
                        "\xC4\xA0",
                        ("\xC4\xA0"
                         "a")};  // "Ġa": the split keeps \xA0 from running into the a
  for (int i = 0; i < 6; ++i) vocab[toks[i]] = i;
  const json j = {
      {"added_tokens", {{{"id", 6}, {"content", "<|endoftext|>"}, {"special", true}}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b", "\xC4\xA0 a"}}}}};
  const std::string tj = write("tokenizer.json", j.dump());
  const std::string cj = write("tokenizer_config.json", R"({"eos_token": "<|endoftext|>"})");
  auto file = convert(tj, cj, "gpt2");
  EXPECT_EQ(file->get_string("tokenizer.ggml.pre"), "gpt2");
  EXPECT_FALSE(file->get_bool_or("tokenizer.ggml.add_bos_token", true));
  EXPECT_FALSE(file->has("tokenizer.ggml.bos_token_id"));
  auto tok = Tokenizer::from_gguf(*file);
  ASSERT_TRUE(tok);
  EXPECT_FALSE(tok->add_bos_default());
  EXPECT_EQ(tok->eos(), 6);
  EXPECT_EQ(tok->encode("ab a c<|endoftext|>", true, true), (Ids{3, 5, 4, 2, 6}));
  EXPECT_EQ(tok->decode({3, 5, 4, 2, 6}, true), "ab a c<|endoftext|>");
}

const char* const kSpmJson = R"({
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "<unk>", "special": true},
    {"id": 1, "content": "<s>", "special": true},
    {"id": 2, "content": "</s>", "special": true}
  ],
  "normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "\u2581"},
    {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {
    "type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true,
    "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "<0xC3>": 4, "<0xA9>": 5,
              "\u2581": 6, "h": 7, "i": 8, "\u2581h": 9, "\u2581hi": 10, "e": 11, "y": 12,
              "ey": 13, "\u2581hey": 14},
    "merges": ["\u2581 h", "\u2581h i", "e y", "\u2581h ey"]
  }
})";

TEST_F(TokenizerJson, SentencePieceStyle) {
  const std::string tj = write("tokenizer.json", kSpmJson);
  auto file = convert(tj, "", "llama");
  EXPECT_EQ(file->get_string("tokenizer.ggml.model"), "llama");
  EXPECT_TRUE(file->get_bool_or("tokenizer.ggml.add_space_prefix", false));
  EXPECT_EQ(file->get_int("tokenizer.ggml.unknown_token_id"), 0);
  EXPECT_EQ(file->get_int("tokenizer.ggml.eos_token_id"), 2);
  const auto& types = file->get_array("tokenizer.ggml.token_type", GgufType::I32).ints;
  EXPECT_EQ(types, (std::vector<int64_t>{2, 3, 3, 6, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1}));
  const auto& scores = file->get_array("tokenizer.ggml.scores", GgufType::F32).floats;
  EXPECT_EQ(scores[9], 0.0);    // "▁h": merge 0
  EXPECT_EQ(scores[10], -1.0);  // "▁hi": merge 1
  EXPECT_EQ(scores[14], -3.0);
  EXPECT_EQ(scores[7], -5.0);  // no merge makes "h"

  auto tok = Tokenizer::from_gguf(*file);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->model_name(), "llama");
  EXPECT_TRUE(tok->add_bos_default());
  EXPECT_EQ(tok->encode("hi hey", true, false), (Ids{1, 10, 14}));
  EXPECT_EQ(tok->encode("\xC3\xA9\n", false, false), (Ids{6, 4, 5, 3}));
  EXPECT_EQ(tok->decode({1, 10, 14}), "hi hey");
  EXPECT_EQ(tok->decode({6, 4, 5, 3}), "\xC3\xA9\n");
  EXPECT_TRUE(tok->is_end_of_generation(2));
  EXPECT_EQ(ChatTemplate::for_model(*file).name(), "chatml");
}

// A byte that starts no valid character is a symbol of its own: its lead-byte length must not
// swallow the start of the space marker after it (found by fuzzing: "\xC3 " came back with
// the marker's three bytes instead of the space).
TEST_F(TokenizerJson, SentencePieceInvalidUtf8KeepsTheSpaceAfterIt) {
  auto file = convert(write("tokenizer.json", kSpmJson), "", "llama");
  auto tok = Tokenizer::from_gguf(*file);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode("\xC3 ", false, false), (Ids{6, 4, 6}));  // ▁ <0xC3> ▁
  EXPECT_EQ(tok->decode(tok->encode("\xC3 ", false, false)), "\xC3 ");
  EXPECT_EQ(tok->encode("\xC3\xA9 ", false, false), (Ids{6, 4, 5, 6}));  // é is one symbol
}

TEST_F(TokenizerJson, MalformedInputNamesTheField) {
  EXPECT_NE(error_of(dir_.file("absent.json")).find("absent.json: cannot open"), std::string::npos);
  EXPECT_NE(error_of(write("bad.json", "{\"model\": ")).find("bad.json: not valid JSON"),
            std::string::npos);

  json j = llama3_style();
  j["model"].erase("vocab");
  EXPECT_NE(error_of(write("t1.json", j.dump())).find("t1.json: model.vocab: missing"),
            std::string::npos);

  j = llama3_style();
  j["model"]["merges"][1] = "l zz";
  EXPECT_NE(error_of(write("t2.json", j.dump()))
                .find("t2.json: model.merges[1]: 'l zz' names unknown token 'zz'"),
            std::string::npos);

  j = llama3_style();
  j["model"]["merges"][0] = 42;
  EXPECT_NE(error_of(write("t3.json", j.dump())).find("t3.json: model.merges[0]: expected"),
            std::string::npos);

  j = llama3_style();
  j["model"]["type"] = "Unigram";
  EXPECT_NE(error_of(write("t4.json", j.dump())).find("model.type: 'Unigram' is not supported"),
            std::string::npos);

  j = llama3_style();
  j["model"]["vocab"]["dup"] = 5;
  EXPECT_NE(error_of(write("t5.json", j.dump())).find("t5.json: model.vocab: "), std::string::npos);
  EXPECT_NE(error_of(write("t5.json", j.dump())).find("both have id 5"), std::string::npos);

  // An id far past the tokens given (found by fuzzing: millions of placeholders to build).
  j = llama3_style();
  j["model"]["vocab"]["far"] = 2544838;
  EXPECT_NE(
      error_of(write("t8.json", j.dump())).find("t8.json: token ids run to 2544838 but only "),
      std::string::npos);
  j = llama3_style();  // a few holes are fine
  j["model"]["vocab"]["near"] = int64_t(j["model"]["vocab"].size()) + 20;
  EXPECT_EQ(error_of(write("t9.json", j.dump())), "(no error)");

  j = llama3_style();
  j["pre_tokenizer"] = nullptr;
  j["decoder"] = nullptr;
  EXPECT_NE(error_of(write("t6.json", j.dump())).find("neither ByteLevel nor SentencePiece"),
            std::string::npos);

  j = llama3_style();
  j["added_tokens"][0].erase("content");
  EXPECT_NE(error_of(write("t7.json", j.dump())).find("t7.json: added_tokens[0]: expected"),
            std::string::npos);

  const std::string good = write("good.json", llama3_style().dump());
  EXPECT_NE(error_of(good, write("c1.json", R"({"bos_token": "<nope>"})"))
                .find("c1.json: bos_token: '<nope>' is not a token"),
            std::string::npos);
  EXPECT_NE(error_of(good, write("c2.json", R"({"chat_template": 7})"))
                .find("c2.json: chat_template: expected"),
            std::string::npos);
  EXPECT_NE(error_of(good, write("c3.json", R"({"add_bos_token": "yes"})"))
                .find("c3.json: add_bos_token"),
            std::string::npos);
  EXPECT_EQ(error_of(good, write("c4.json", R"({"eos_token": null, "chat_template": "x"})")),
            "(no error)");
}

TEST_F(TokenizerJson, MalformedGgufNamesFileAndKey) {
  const std::string path = dir_.file("bad.gguf");
  auto error_of_gguf = [&](const std::function<void(GgufWriter&)>& edit) -> std::string {
    GgufWriter w;
    w.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
    w.set("tokenizer.ggml.tokens", GgufValue::string_array({"a", "b", "c"}));
    w.set("tokenizer.ggml.merges", GgufValue::string_array({"a b"}));
    edit(w);
    w.write(path);
    auto file = GgufFile::open(path);
    return test::error_or_none([&] { Tokenizer::from_gguf(*file); });
  };
  EXPECT_EQ(error_of_gguf([](GgufWriter&) {}), "(no error)");
  EXPECT_EQ(error_of_gguf([](GgufWriter& w) {
              w.set("tokenizer.ggml.token_type", GgufValue::i32_array({1, 1}));
            }),
            path + ": tokenizer.ggml.token_type: 2 entries for 3 tokens");
  EXPECT_EQ(
      error_of_gguf([](GgufWriter& w) { w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(3)); }),
      path + ": tokenizer.ggml.bos_token_id: 3 is out of range (3 tokens)");
  EXPECT_EQ(error_of_gguf([](GgufWriter& w) {
              w.set("tokenizer.ggml.merges", GgufValue::string_array({"a b", "b x"}));
            }),
            path + ": tokenizer.ggml.merges[1]: 'b x' names unknown token 'x'");
  EXPECT_NE(error_of_gguf([](GgufWriter& w) {
              w.set("tokenizer.ggml.scores", GgufValue::string_array({"1", "2", "3"}));
            }).find("tokenizer.ggml.scores"),
            std::string::npos);

  GgufWriter none;
  none.set_string("general.architecture", "bitnet");
  none.write(path);
  EXPECT_EQ(Tokenizer::from_gguf(*GgufFile::open(path)), nullptr);
}

}  // namespace
}  // namespace trit::engine
