// Tokenizers read from GGUF metadata (tokenizer.ggml.*): byte-level BPE ("gpt2", llama-3
// style, as in BitNet b1.58 2B4T) and SentencePiece-style BPE ("llama", as in the 1bitLLM
// models), with special tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trit::engine {

class GgufFile;
class GgufWriter;

// What tokenizer.ggml.* holds, decoupled from the file so tests can build tokenizers directly.
struct TokenizerData {
  std::string model;  // "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE)
  std::string pre;    // pre-tokenizer name: "llama-bpe", "default", ...
  std::vector<std::string> tokens;
  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte (may be empty: all normal)
  std::vector<int32_t> token_types;
  std::vector<float> scores;        // SentencePiece merge priorities (may be empty for gpt2)
  std::vector<std::string> merges;  // "left right", highest priority first (gpt2)
  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, pad = -1;
  bool add_bos = false;
  bool add_space_prefix = true;  // tokenizer.ggml.add_space_prefix ("llama": a space before text)
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Throws trit::Error (naming `where`) when the data is inconsistent.
  static std::unique_ptr<Tokenizer> create(const TokenizerData& data, std::string_view where);

  // nullptr when the file has no tokenizer.ggml.model; throws trit::Error naming the file
  // and key on malformed tokenizer metadata (lengths disagree, ids out of range, ...).
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& file);

  // parse_special: text such as "<|eot_id|>" becomes that control token, not its characters.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos,
                                      bool parse_special) const = 0;
  // The bytes of one token as it appears in text (may be part of a UTF-8 character);
  // control tokens give their text only when special is true.
  virtual std::string token_to_piece(int32_t id, bool special = false) const = 0;
  std::string decode(const std::vector<int32_t>& ids, bool special = false) const;

  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> find_token(std::string_view text) const = 0;
  virtual std::string_view model_name() const = 0;  // "gpt2" or "llama"

  int32_t bos() const { return bos_; }  // -1 when none
  int32_t eos() const { return eos_; }  // -1 when none
  bool add_bos_default() const { return add_bos_; }
  // End of generation: eos, eot (<|eot_id|>, <|im_end|>, <|end_of_text|> ...) and eom tokens.
  bool is_end_of_generation(int32_t id) const;

 protected:
  int32_t bos_ = -1;
  int32_t eos_ = -1;
  bool add_bos_ = false;
  std::vector<int32_t> eog_ids_;
  bool strip_leading_space_ = false;  // decode() drops the space the encoder put before text
};

// Reads a Hugging Face tokenizer.json (BPE models: byte-level like llama-3 and GPT-2, or
// SentencePiece-style with byte fallback) and, when given, tokenizer_config.json (bos/eos,
// add_bos_token, chat_template), and writes the equivalent tokenizer.ggml.* keys and
// tokenizer.chat_template. Throws trit::Error naming the file and field on bad input.
void tokenizer_json_to_gguf(const std::string& tokenizer_json_path,
                            const std::string& tokenizer_config_path, GgufWriter& out);

}  // namespace trit::engine
