// Random BitNet models of a given shape (`trit create --random`), for tests and benchmarks.
// Tensor data is generated chunk by chunk from a fast PRNG and streamed to disk, so a 13B file
// needs a few megabytes of memory, and the same seed always gives the same bytes.
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "model/hparams.h"

namespace trit::engine {

class GgufWriter;

struct CreateOptions {
  HParams hp;                    // shape; hp.tied_head false adds output.weight
  DType type = DType::TQ2_0;     // the seven linear layers: TQ1_0, TQ2_0 or I2_S
  DType embd_type = DType::F16;  // token_embd and output: F32, F16, BF16, Q8_0 or Q6_K
  uint64_t seed = 42;
  std::string name = "trit-random";  // general.name
};

struct CreateResult {
  uint64_t file_bytes = 0;
  uint64_t n_tensors = 0;
  uint64_t n_f16_linears = 0;  // linear layers of a width the type cannot hold, written as f16
  double seconds = 0;
};

// Writes a model with random weights to `path` (via "<path>.tmp", renamed at the end):
// ternary codes uniform over {-1, 0, +1} with one fp16 scale 1/sqrt(n_in) for every block,
// embeddings normal(0, 0.5), norm weights 1 plus small noise, and a byte-level tokenizer when
// n_vocab >= 259. Throws trit::Error when the shape does not fit the types' block sizes.
CreateResult create_random_model(const CreateOptions& options, const std::string& path);

// Reads hyperparameters from a JSON file: trit's names (n_vocab, n_embd, n_ff, n_layer,
// n_head, n_head_kv, n_ctx, rope_theta, rms_eps, act, tied) or Hugging Face config.json names
// (vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
// num_key_value_heads, max_position_embeddings, rms_norm_eps, hidden_act,
// tie_word_embeddings). Throws trit::Error naming the file and field.
HParams hparams_from_config_json(const std::string& path);

// The minimal byte-level tokenizer of random models: the 256 GPT-2 byte characters (ids 0..255
// = byte values), <|begin_of_text|> (bos, 256), <|end_of_text|> (eos, 257), <|eot_id|> (258),
// then normal tokens " a", " b", ..., " z", " aa", ... up to n_vocab; no merges. Needs n_vocab >=
// 259.
void write_byte_tokenizer(GgufWriter& out, int64_t n_vocab);

// general.file_type for a model whose linear layers have this type (llama.cpp's
// LLAMA_FTYPE_MOSTLY_TQ1_0 36 and TQ2_0 37; bitnet.cpp's I2_S files use 40).
uint32_t file_type_for(DType ternary_type);

}  // namespace trit::engine
