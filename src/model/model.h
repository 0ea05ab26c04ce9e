// A BitNet b1.58 model loaded from GGUF: hyperparameters, tokenizer and the weights of every
// block, checked against each other. Weights stay in the memory-mapped file whenever the
// compute kernels can use their layout in place.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/kernels.h"
#include "model/hparams.h"

namespace trit {

class GgufFile;
class Tokenizer;
struct LoraAdapter;
struct LoraSet;

// A linear layer of a block, times out_scale (the optional per-tensor `.scale` of llama.cpp's
// bitnet files). Ternary (the usual case): y = (T . q(x)) * w_scale / s_x. Float (a merged
// model, see below): y = W x with the un-quantised x, whatever --act-quant says.
//
// Float (f32/f16/bf16) linear weights in a file mean one of two things, told apart by the
// metadata key trit.linear_weights:
//   - absent: float master weights (Hugging Face checkpoints, `trit convert --type f16`, which
//     writes T * scale): ternarised by absmean at load (DESIGN section 2) and run as ternary
//     layers, so such a file gives the same logits as its ternary conversion;
//   - "merged": weights with LoRA adapters folded in (`trit merge`, model/merge.h), used as the
//     float matrices they are. Ternary layers of such a file stay ternary.
// Any other value is an error naming the file and the key.
struct LinearWeight {
  std::string name;
  TernaryMatrix m;  // ternary weights; m.n_in and m.n_out give the shape of either kind
  FloatMatrix f;    // float weights (f.data not null) of a merged model
  float out_scale = 1.0f;
  bool is_float() const { return f.data != nullptr; }
};

struct BlockWeights {
  const float* attn_norm = nullptr;      // (n_embd)
  const float* attn_sub_norm = nullptr;  // (n_embd)
  const float* ffn_norm = nullptr;       // (n_embd)
  const float* ffn_sub_norm = nullptr;   // (n_ff)
  LinearWeight q, k, v, o, gate, up, down;
};

struct ModelWeights {
  FloatMatrix token_embd;  // (n_vocab, n_embd)
  FloatMatrix output;      // the LM head: token_embd when tied
  const float* output_norm = nullptr;
  std::vector<BlockWeights> blocks;
};

class Model {
 public:
  using Warn = std::function<void(const std::string&)>;
  // Opens and checks a model; warnings (e.g. a defaulted activation) go to warn.
  static std::unique_ptr<Model> load(const std::string& path, const Warn& warn = nullptr);
  ~Model();

  const HParams& hparams() const { return hp_; }
  const ModelWeights& weights() const { return w_; }
  const GgufFile& file() const { return *file_; }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }  // null when the file has none
  const std::string& path() const;

  // The LoRA adapter stored in the file by `trit merge --mode attach` (model/merge.h), or null;
  // its user scale; and the set that applies it, resolved against this model (null when the
  // file holds none). model_forward applies embedded_lora() when ForwardOptions::lora is null;
  // callers that attach more adapters put the embedded one into their own set (cli load_model).
  const LoraAdapter* embedded_adapter() const { return embedded_.get(); }
  float embedded_adapter_scale() const { return embedded_scale_; }
  const LoraSet* embedded_lora() const { return embedded_lora_.get(); }

 private:
  Model() = default;
  const float* load_f32_vector(const std::string& name, int64_t n);
  LinearWeight load_linear(int64_t layer, const std::string& what);
  FloatMatrix load_float_matrix(const std::string& name, int64_t n_in, int64_t n_out);

  HParams hp_;
  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelWeights w_;
  std::vector<std::vector<uint8_t>> owned_;  // weights converted at load (TQ1_0, f16 norms, ...)
  bool merged_linears_ = false;              // trit.linear_weights = "merged"
  std::unique_ptr<LoraAdapter> embedded_;
  float embedded_scale_ = 1.0f;
  std::unique_ptr<LoraSet> embedded_lora_;
};

}  // namespace trit
