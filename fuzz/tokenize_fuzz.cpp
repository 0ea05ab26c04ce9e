// Text through two tokenizers, the shipped model's byte-level BPE (GPT-2 style, from its GGUF
// vocabulary) and a SentencePiece-style BPE with byte fallback (from a tokenizer.json): both
// must give back the bytes they were given (decode(encode(text)) == text; SentencePiece not
// for text holding its space marker U+2581), and the byte-level one also with special tokens
// parsed from the text.
#include <string>

#include "fuzz_input.h"
#include "io/gguf.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace trit::engine;

// "▁" + the byte tokens <0x00>..<0xFF> + a few merges.
std::unique_ptr<Tokenizer> sentencepiece_tokenizer() {
  std::string vocab = R"("<unk>": 0, "<s>": 1, "</s>": 2)";
  int id = 3;
  char hex[16];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(hex, sizeof hex, "<0x%02X>", b);
    vocab += ", \"" + std::string(hex) + "\": " + std::to_string(id++);
  }
  for (const char* t :
       {"\\u2581", "h", "i", "e", "y", "\\u2581h", "\\u2581hi", "ey", "\\u2581hey"}) {
    vocab += ", \"" + std::string(t) + "\": " + std::to_string(id++);
  }
  const std::string json = R"({
    "added_tokens": [{"id": 0, "content": "<unk>", "special": true},
                     {"id": 1, "content": "<s>", "special": true},
                     {"id": 2, "content": "</s>", "special": true}],
    "normalizer": {"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "\u2581"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    "pre_tokenizer": null,
    "decoder": {"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
      {"type": "ByteFallback"}, {"type": "Fuse"},
      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true,
      "vocab": {)" + vocab +
                           R"(},
      "merges": ["\u2581 h", "\u2581h i", "e y", "\u2581h ey"]}})";
  const std::string tj = trit::fuzz::write_input(
      "spm.json", reinterpret_cast<const uint8_t*>(json.data()), json.size());
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  tokenizer_json_to_gguf(tj, "", w);
  const std::string path = trit::fuzz::scratch_dir() + "/spm.gguf";
  w.write(path);
  return Tokenizer::from_gguf(*GgufFile::open(path));
}

// Aborts, printing both texts escaped, when `back` is not `text`.
void expect_same(const Tokenizer& tok, std::string_view text, const std::string& back,
                 const char* how) {
  if (back == text) return;
  auto hex = [](std::string_view s) {
    std::string out;
    char b[4];
    for (unsigned char c : s) std::snprintf(b, sizeof b, "%02x ", c), out += b;
    return out;
  };
  std::fprintf(stderr, "%s tokenizer, %s: the text\n  %s\ncame back as\n  %s\n",
               std::string(tok.model_name()).c_str(), how, hex(text).c_str(), hex(back).c_str());
  std::abort();
}

void round_trip(const Tokenizer& tok, std::string_view text) {
  // SentencePiece writes spaces as U+2581, so that character in the text comes back a space.
  const bool spm = tok.model_name() != "gpt2";
  if (!spm || text.find("\xE2\x96\x81") == std::string_view::npos) {
    expect_same(tok, text, tok.decode(tok.encode(text, false, false)), "plain");
  }
  // With special tokens parsed, decoding with special text shown gives the text back too; not
  // for SentencePiece, which puts a space before text that follows a special token (as
  // llama.cpp and transformers' legacy Llama tokenizer do).
  const std::vector<int32_t> ids = tok.encode(text, false, true);
  if (!spm) {
    expect_same(tok, text, tok.decode(ids, true), "special tokens parsed");
  } else {
    (void)tok.decode(ids, true);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto model = Model::load(trit::fuzz::shipped_model());
  static const auto spm = sentencepiece_tokenizer();
  const std::string_view text = trit::fuzz::as_text(data, size);
  round_trip(*model->tokenizer(), text);
  round_trip(*spm, text);
  return 0;
}
